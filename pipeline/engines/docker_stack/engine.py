"""The local profile's stack engine: the template's topology in miniature, on this machine's Docker.

A stack is:
- a bridge network `<stack>-net` (the VPC),
- N replicas of the image (the AutoScaling group), each on that network, its port also published
  on a random 127.0.0.1 port so the engine can health-check it before the balancer takes it,
- one nginx container `<stack>-lb` (the load balancer), built from the base image, listening on
  the template's listener port and published on a 127.0.0.1 port that stays the same for the
  stack's life: the URL does not change across updates.

Everything carries labels (`io.pipeline.pipeline`, `.stack`, `.role`, `.image`, ...): the engine
finds the stack by label every time and keeps nothing in memory, so a crash half-way through an
update is repaired by the next `deploy` (or removed by `delete`).

An update replaces replicas in batches (the template's UpdatePolicy): start a batch of new
replicas, wait until each passes the target group's health check, rewrite the balancer's upstream
list and reload it gracefully (SIGHUP: new workers take new connections, old workers finish their
requests), wait until the old workers have exited (the drain), then stop the replaced replicas.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import secrets
import socket
import tarfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from pipeline.engines.base_image import DEFAULT_BASE_IMAGE
from pipeline.engines.docker_client import shared as shared_client
from pipeline.engines.docker_stack.access_log import LOG_PATH
from pipeline.engines.docker_stack.access_log import AccessLog as _Watch
from pipeline.engines.docker_stack.balancer_config import canary_weights, render_config
from pipeline.engines.docker_stack.balancer_config import config_parameters as _config_parameters
from pipeline.engines.docker_stack.balancer_config import servers as _servers
from pipeline.engines.docker_stack.balancer_config import warm_set as _warm_set
from pipeline.engines.docker_stack.labels import (
    L_ENGINE,
    L_IMAGE,
    L_IMAGE_ID,
    L_LISTEN,
    L_PARAMETERS,
    L_PIPELINE,
    L_PORT,
    L_ROLE,
    L_SPEC,
    L_STACK,
    ROLE_LB,
    ROLE_LB_IMAGE,
    ROLE_NETWORK,
    ROLE_REPLICA,
)
from pipeline.engines.docker_stack.labels import json_labels as _json_labels
from pipeline.engines.docker_stack.labels import running as _running
from pipeline.engines.http_check import judge
from pipeline.engines.stack import (
    BaseStackEngine,
    DeployReport,
    DeployStep,
    OnEvent,
    StackState,
    VerifyReport,
    VersionStats,
)
from pipeline.engines.topology import Topology, load_template, topology
from pipeline.errors import HealthBreachError, LockHeldError, StackOperationError
from pipeline.faults import checkpoint
from pipeline.hashing import digest
from pipeline.locks import FileLock, cache_dir, describe_holder
from pipeline.model import Profile, Verify
from pipeline.strategy import BlueGreen, Canary, Cutover, Half, Health, Pilot, Rolling, Strategy

LB_REPOSITORY = "pipeline-lb"
CONFIG_PATH = "/etc/nginx/nginx.conf"

HEALTH_INTERVAL = 0.1
"""Seconds between health checks of a starting replica (the template's interval is for AWS)."""
RELOAD_TIMEOUT = 10.0
"""Seconds the balancer may take to start workers with a new configuration."""
RELOAD_CHECK = 1.0
"""After this long without new workers, the balancer's log is read for a configuration error."""
LB_READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10
LOCK_TIMEOUT = 900.0
POLL = 0.25
"""Seconds between reads of that log during an observation window."""
BASELINE_MAX = 10.0
"""Longest wait for the old version's baseline (min_requests answers) before the first change."""
EXTEND_MIN = 10.0
"""A window short of min_requests to the new version may run this much longer (or observe_seconds)."""
WARM_MARGIN = 5.0
"""An old set kept warm for an observation window stays this much longer (crash-safe deadline)."""
WARM_MARK = "/tmp/.pipeline-warm"
"""Inside a warm replica: its timer stops it at the deadline while this file exists."""


def _ignore(text: str) -> None:
    pass


class _ReplicaFailed(Exception):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


@dataclass
class _Observed:
    """The stack as the Docker engine reports it right now."""

    network: Any = None
    lb: Any = None
    replicas: list[Any] = field(default_factory=list)
    strays: list[Any] = field(default_factory=list)
    """Containers of the stack with an unknown role (left by another version): removed on delete."""

    @property
    def exists(self) -> bool:
        return bool(self.network or self.lb or self.replicas or self.strays)


class DockerStackEngine(BaseStackEngine):
    """StackEngine for the local profile (Docker). See the module docstring."""

    profile: Profile = "local"

    def __init__(
        self,
        pipeline: str,
        template: Path,
        *,
        base_image: str | None = None,
        client: Any = None,
        lock_dir: Path | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.template = template
        self.base_image = base_image or os.environ.get("PIPELINE_BASE_IMAGE") or DEFAULT_BASE_IMAGE
        self._client = client
        self._lock_dir = lock_dir

    # ------------------------------------------------------------------ plumbing
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = shared_client()
        return self._client

    def topology(self, parameters: Mapping[str, str] | None = None) -> Topology:
        """The template's shape with `parameters` applied (TemplateError if the engine cannot run it)."""
        return topology(load_template(self.template), parameters, source=str(self.template))

    def check_template(self) -> None:
        """Preflight: the template is one this engine can run (TemplateError naming the resource if
        not). No Docker call."""
        self.topology()

    def _labels(self, stack: str, role: str, **extra: str) -> dict[str, str]:
        return {L_PIPELINE: self.pipeline, L_STACK: stack, L_ROLE: role, L_ENGINE: "local", **extra}

    def _filters(self, stack: str | None = None) -> dict[str, list[str]]:
        labels = [f"{L_PIPELINE}={self.pipeline}"]
        if stack is not None:
            labels.append(f"{L_STACK}={stack}")
        return {"label": labels}

    @contextlib.contextmanager
    def _lock(self, stack: str, *, purpose: str, on_event: OnEvent) -> Iterator[FileLock]:
        """One deploy or delete per stack at a time on this machine (a flock: freed if we die).

        Set `remove_on_release` on the lock when the stack is gone (its lock file would be an
        orphan); a process waiting for it then locks the new file at the path."""
        base = self._lock_dir or cache_dir() / "stacks"
        lock = FileLock(base / f"{self.pipeline}.{stack}.lock", purpose=purpose, wait=LOCK_TIMEOUT)
        try:
            lock.acquire()
        except LockHeldError as exc:
            who = describe_holder(exc.holder) if exc.holder else "another process"
            raise StackOperationError(
                f"stack {stack} is busy: {who} has been deploying or deleting it for {LOCK_TIMEOUT:g} s",
                hint="wait for it to finish, or stop it",
            ) from None
        if lock.took_over:
            on_event(
                f"took over the lock of stack {stack}: its holder (pid {lock.took_over.get('pid', '?')}) is no "
                "longer running"
            )
        try:
            yield lock
        finally:
            lock.release()

    def _observe(self, stack: str) -> _Observed:
        import docker.errors

        observed = _Observed()
        try:
            containers = self.client.containers.list(all=True, filters=self._filters(stack), ignore_removed=True)
            networks = self.client.networks.list(filters=self._filters(stack))
        except docker.errors.DockerException as exc:
            raise StackOperationError(f"cannot read stack {stack} from the Docker engine: {exc}") from None
        for container in containers:
            role = container.labels.get(L_ROLE)
            if role == ROLE_LB and observed.lb is None:
                observed.lb = container
            elif role == ROLE_REPLICA:
                observed.replicas.append(container)
            else:
                observed.strays.append(container)
        observed.replicas.sort(key=lambda c: str(c.attrs.get("Created", "")))
        for network in networks:
            if network.attrs.get("Labels", {}).get(L_ROLE) == ROLE_NETWORK and observed.network is None:
                observed.network = network
        return observed

    # ------------------------------------------------------------------ the protocol
    def stacks(self) -> list[str]:
        import docker.errors

        try:
            containers = self.client.containers.list(all=True, filters=self._filters(), sparse=True)
            networks = self.client.networks.list(filters=self._filters())
        except docker.errors.DockerException as exc:
            raise StackOperationError(f"cannot list stacks from the Docker engine: {exc}") from None
        names = {str(c.attrs.get("Labels", {}).get(L_STACK, "")) for c in containers}
        names |= {str(n.attrs.get("Labels", {}).get(L_STACK, "")) for n in networks}
        return sorted(n for n in names if n)

    def describe(self, stack: str) -> StackState:
        observed = self._observe(stack)
        if not observed.exists:
            return StackState(name=stack, exists=False)
        config = self._read_config(observed.lb) if observed.lb is not None else ""
        warm_names, warm_until = _warm_set(config)
        warm = [r for r in observed.replicas if _running(r) and r.name in warm_names]
        running = [r for r in observed.replicas if _running(r) and r not in warm]
        specs = {r.labels.get(L_SPEC) for r in running}
        image: str | None = None
        image_id = ""
        parameters: dict[str, str] = {}
        if running and len(specs) == 1:
            first = running[0]
            image_id = str(first.labels.get(L_IMAGE_ID, ""))
            image = self._name_for(str(first.labels.get(L_IMAGE, "")), image_id)
            parameters = _json_labels(first.labels.get(L_PARAMETERS))
        parameters = _config_parameters(config) or parameters
        url = None
        port = self._lb_port(observed.lb) if observed.lb is not None else None
        if port is not None:
            url = f"http://127.0.0.1:{port}/"
        in_service = _servers(config) if observed.lb is not None and _running(observed.lb) else []
        if observed.lb is None or not _running(observed.lb) or not running:
            status = "failed"
        elif image is None or sorted(r.name for r in running) != sorted(in_service):
            status = "updating"
        else:
            status = "ready"
        details = {
            "replicas": str(len(running)),
            "replica_names": ",".join(r.name for r in running),
            "in_service": ",".join(in_service),
            "load_balancer": observed.lb.name if observed.lb is not None else "",
            "network": observed.network.name if observed.network is not None else "",
            "image_id": image_id,
        }
        if warm:
            details["warm"] = ",".join(r.name for r in warm)
            details["warm_image"] = ",".join(sorted({str(r.labels.get(L_IMAGE, "")) for r in warm}))
            details["warm_until"] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(warm_until))
        if len({r.labels.get(L_IMAGE_ID) for r in running}) > 1:
            details["images"] = ",".join(sorted({str(r.labels.get(L_IMAGE, "")) for r in running}))
        return StackState(
            name=stack, exists=True, image=image, url=url, status=status, parameters=parameters, details=details
        )

    def _name_for(self, reference: str, image_id: str) -> str:
        """The name a replica was deployed with, if it still means the same image; else the id."""
        import docker.errors

        if not reference or reference == image_id:
            return image_id
        try:
            current = str(self.client.images.get(reference).id)
        except docker.errors.DockerException:
            return image_id
        return reference if current == image_id else image_id

    def verify(self, state: StackState, check: Verify, *, on_event: OnEvent = _ignore) -> VerifyReport:
        from pipeline.engines.http_check import verify

        if not state.url:
            return VerifyReport(
                ok=False, requests=0, failures=0, detail=f"stack {state.name} has no load balancer URL ({state.status})"
            )
        return verify(state.url, check, on_event=on_event)

    def delete(self, stack: str, *, on_event: OnEvent = _ignore) -> None:
        import docker.errors

        with self._lock(stack, purpose=f"deleting stack {stack}", on_event=on_event) as lock:
            observed = self._observe(stack)
            if not observed.exists:
                lock.remove_on_release = True
                return
            containers = [c for c in (observed.lb, *observed.replicas, *observed.strays) if c is not None]

            def remove(container: Any) -> None:
                on_event(f"removing {container.name}")
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True, v=True)

            with ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"delete-{stack}") as pool:
                for done in [pool.submit(remove, c) for c in containers]:
                    done.result()
            if observed.network is not None:
                on_event(f"removing network {observed.network.name}")
                try:
                    observed.network.remove()
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as exc:
                    raise StackOperationError(
                        f"cannot remove network {observed.network.name} of stack {stack}: {exc.explanation or exc}",
                        hint=f"a container that is not part of the stack is attached to it: docker network inspect {observed.network.name}",
                    ) from None
            lock.remove_on_release = True  # the stack is gone: so is its lock file

    def deploy(
        self,
        stack: str,
        image: str,
        *,
        parameters: Mapping[str, str] | None = None,
        on_event: OnEvent = _ignore,
        strategy: Strategy | None = None,
        health: Health | None = None,
    ) -> StackState:
        """Create the stack or move it to `image` with `strategy` (default: rolling, as the
        template's UpdatePolicy says), judging `health` in the strategy's observation windows.
        The returned state's `report` says what was done; a health breach rolls back first, then
        raises HealthBreachError. See docs/strategies.md."""
        topo = self.topology(parameters)
        image_id = self._image_id(image)
        lb_image = self.ensure_lb_image(on_event=on_event)
        with self._lock(stack, purpose=f"deploying {image} to stack {stack}", on_event=on_event):
            self._check_names(stack)
            report = _Deployment(
                self, stack, topo, image, image_id, lb_image, on_event, strategy=strategy, health=health
            ).run()
        return replace(self.describe(stack), report=report)

    def ready(self, stack: str) -> None:
        """The Docker engine answers (ToolMissingError naming it and the fix if not). No change."""
        _ = self.client

    def _check_names(self, stack: str) -> None:
        """Before anything is created: the names the stack will take (`<stack>-lb`, `<stack>-net`)
        are not held by a container or network outside it, which would stop a creation half-way."""
        import docker.errors

        wanted = {f"{stack}-lb": "container", f"{stack}-net": "network"}
        try:
            found = [
                *(("container", c) for c in self.client.containers.list(all=True, filters={"name": f"{stack}-lb"})),
                *(("network", n) for n in self.client.networks.list(names=[f"{stack}-net"])),
            ]
        except docker.errors.DockerException as exc:
            raise StackOperationError(f"cannot read stack {stack} from the Docker engine: {exc}") from None
        for kind, thing in found:
            if wanted.get(thing.name) != kind:
                continue
            labels = (thing.attrs.get("Config") or {}).get("Labels") or thing.attrs.get("Labels") or {}
            if labels.get(L_PIPELINE) == self.pipeline and labels.get(L_STACK) == stack:
                continue
            remove = "docker rm -f" if kind == "container" else "docker network rm"
            raise StackOperationError(
                f"cannot deploy stack {stack}: a {kind} named {thing.name} already exists and is not part of it "
                "(the stack would take that name); nothing was changed",
                hint=f"remove or rename it ({remove} {thing.name}) if it is not needed, or give the pipeline "
                "another name",
            )

    # ------------------------------------------------------------------ images
    def _image_id(self, image: str) -> str:
        import docker.errors

        try:
            return str(self.client.images.get(image).id)
        except docker.errors.ImageNotFound:
            raise StackOperationError(
                f"image {image!r} does not exist on this machine",
                hint="bake it first (pipeline run local --only bake), or name an image `docker images` lists",
            ) from None
        except docker.errors.DockerException as exc:
            raise StackOperationError(f"cannot look up image {image!r}: {exc}") from None

    def ensure_lb_image(self, *, on_event: OnEvent = _ignore) -> str:
        """The balancer image (nginx on the base image), built once per machine; returns its tag."""
        import docker.errors

        from pipeline.engines.base_image import ensure_base_image

        dockerfile = (resources.files("pipeline.engines.docker_stack") / "lb" / "Dockerfile").read_text()
        try:
            base_id = str(self.client.images.get(self.base_image).id)
        except docker.errors.ImageNotFound:
            on_event(f"base image {self.base_image} is missing: building it")
            base_id = ensure_base_image(self.base_image, on_line=on_event)
        tag = f"{LB_REPOSITORY}:{digest({'dockerfile': dockerfile, 'base': base_id})[:12]}"
        with contextlib.suppress(docker.errors.ImageNotFound):
            self.client.images.get(tag)
            return tag
        # one builder per machine; the others wait, then use its image
        with FileLock(cache_dir() / "lb-image.lock", purpose=f"building {tag}", wait=None):
            with contextlib.suppress(docker.errors.ImageNotFound):
                self.client.images.get(tag)
                return tag
            on_event(f"building the load balancer image {tag} (nginx from Debian's mirror)")
            try:
                self.client.images.build(
                    fileobj=io.BytesIO(dockerfile.encode()),
                    tag=tag,
                    buildargs={"BASE": self.base_image},
                    labels={L_ROLE: ROLE_LB_IMAGE, L_ENGINE: "local"},
                    rm=True,
                    forcerm=True,
                )
            except docker.errors.BuildError as exc:
                tail = "\n".join(str(c.get("stream", c.get("error", ""))).rstrip() for c in exc.build_log)[-2000:]
                raise StackOperationError(
                    f"building the load balancer image failed: {exc.msg}\n{tail}",
                    hint="the build installs nginx with apt-get from Debian's mirror: check that containers reach it",
                ) from None
            self._prune_lb_images(keep=tag)
        return tag

    def _prune_lb_images(self, keep: str) -> None:
        """Older balancer images (another base image or Dockerfile) that no container uses."""
        import docker.errors

        used = {str(c.attrs.get("ImageID", "")) for c in self.client.containers.list(all=True, sparse=True)}
        for img in self.client.images.list(filters={"label": f"{L_ROLE}={ROLE_LB_IMAGE}"}):
            if keep in img.tags or img.id in used:
                continue
            with contextlib.suppress(docker.errors.APIError):
                self.client.images.remove(img.id)

    # ------------------------------------------------------------------ the balancer
    @staticmethod
    def _lb_port(lb: Any) -> int | None:
        listen = lb.labels.get(L_LISTEN, "80")
        bindings = (lb.attrs.get("HostConfig", {}).get("PortBindings") or {}).get(f"{listen}/tcp") or []
        for binding in bindings:
            if binding.get("HostPort"):
                return int(binding["HostPort"])
        ports = (lb.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{listen}/tcp") or []
        for binding in ports:
            if binding.get("HostPort"):
                return int(binding["HostPort"])
        return None

    @staticmethod
    def _read_config(lb: Any) -> str:
        import docker.errors

        try:
            stream, _ = lb.get_archive(CONFIG_PATH)
        except docker.errors.NotFound:
            return ""
        data = b"".join(stream)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member)
                if handle is not None:
                    return handle.read().decode()
        return ""

    def _routed(self, lb: Any) -> list[str]:
        """Replica names the balancer's configuration routes to."""
        return _servers(self._read_config(lb))


def _describe_weights(weights: Mapping[str, int], new: list[Any], old: list[Any]) -> str:
    if not new or not old:
        return "none"
    return f"{weights.get(new[0].name, 1)} per new replica, {weights.get(old[0].name, 1)} per old one"


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def _breach_message(stack: str, what: str, report: DeployReport) -> str:
    text = (
        f"health breach at {what} ({report.strategy} of {stack} to {report.image}): {report.breach}; "
        f"rolled back to {report.previous_image}"
    )
    if report.time_to_restore is not None:
        text += f" in {report.time_to_restore:.2f} s"
    if report.time_to_detect is not None:
        text += f" (the breach was detected {report.time_to_detect:.1f} s after the new version took traffic)"
    if report.served is not None:
        text += f"; {report.served.errors} of {report.served.requests} requests through the balancer failed during the change"
    return text


def _tar(name: str, text: str) -> bytes:
    buffer = io.BytesIO()
    data = text.encode()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(time.time())
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Breached(Exception):
    """A window's verdict was a breach and the stack is back on the old version (internal)."""

    def __init__(self, what: str, reason: str, detected: float | None = None, restored: float | None = None) -> None:
        super().__init__(reason)
        self.what = what
        self.reason = reason
        self.detected = detected
        self.restored = restored


def _restart_with_engine(replicas: list[Any]) -> None:
    """Replicas that passed their health check are restarted by Docker from now on (after a crash
    or an engine restart); before it they are not, so one that dies on start stays dead, with its
    exit status. Idempotent: a re-run adopting a replica a killed run started sets it too."""
    for replica in replicas:
        if replica.attrs.get("HostConfig", {}).get("RestartPolicy", {}).get("Name") != "unless-stopped":
            replica.update(restart_policy={"Name": "unless-stopped"})


class _Deployment:
    """One convergence of a stack toward an image: create, roll, scale, or nothing at all."""

    def __init__(
        self,
        engine: DockerStackEngine,
        stack: str,
        topo: Topology,
        image: str,
        image_id: str,
        lb_image: str,
        on_event: OnEvent,
        *,
        strategy: Strategy | None = None,
        health: Health | None = None,
    ) -> None:
        self.engine = engine
        self.client = engine.client
        self.stack = stack
        self.topo = topo
        self.image = image
        self.image_id = image_id
        self.lb_image = lb_image
        self.on_event = on_event
        self.strategy: Strategy = strategy if strategy is not None else Rolling()
        self.health = health
        launch = {name: topo.parameters.get(name, "") for name in topo.launch_parameters}
        self.spec = digest(
            {"image": image_id, "port": topo.target_port, "health_port": topo.health_port, "launch": launch}
        )[:16]
        self.parameters = {k: v for k, v in topo.parameters.items() if k != topo.image_parameter}
        self._stops: list[Future[None]] = []
        self._config_text: str | None = None
        """The balancer's nginx.conf as this deployment last read or wrote it."""
        self._phase = "launch"
        """What replicas are started for (`create`, `batch-<n>`): part of the checkpoint names."""
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"deploy-{stack}")
        # What the next configuration says besides the servers (see render_config).
        self._weights: dict[str, int] = {}
        self._warm: tuple[tuple[str, ...], float] | None = None
        self._log = False
        self._serving: list[Any] = []
        """The replicas the balancer routes to, as this deployment last wrote it."""
        self._handed_over = False
        """A rollback deployment took over the balancer (after a replica failed): hands off."""
        # What the report says.
        self._started = time.monotonic()
        self._kind: str = self.strategy.kind
        self._steps: list[DeployStep] = []
        self._watch: _Watch | None = None
        self._baseline = VersionStats()
        self._windows: list[tuple[float, float]] = []
        """(start, end) of every observation window, in epoch seconds."""
        self._exposed: float | None = None
        """time.monotonic() when the new version first took traffic."""
        self._downtime: float | None = None
        self._previous: Any = None
        """A replica of the old version (its labels say which image to go back to)."""
        self._old_parameters: dict[str, str] = {}

    # --- the plan ---
    def run(self) -> DeployReport:
        try:
            observed = self.engine._observe(self.stack)
            network = observed.network or self._create_network()
            self._remove_strays(observed)
            lb = observed.lb
            if lb is not None and lb.labels.get(L_LISTEN) != str(self.topo.listener_port):
                self.on_event(
                    f"the template's listener port changed to {self.topo.listener_port}: replacing the load "
                    "balancer (requests fail while it restarts)"
                )
                lb.remove(force=True)
                lb = None
            if lb is not None and _running(lb):
                self._roll(lb, observed.replicas)
            else:
                self._kind = "create"
                self._create(network, lb, observed.replicas)
            return self._report()
        finally:
            self._finish_stops()
            self._pool.shutdown(wait=True)

    def _report(
        self, *, breach: str = "", detected: float | None = None, restored: float | None = None
    ) -> DeployReport:
        watch = self._watch
        new = old = VersionStats()
        served = None
        if watch is not None:
            new = watch.stats_in(self._windows, new=True)
            old = watch.stats_in(self._windows, new=False)
            served = watch.served_stats()
        previous = None
        if self._previous is not None:
            previous = str(self._previous.labels.get(L_IMAGE) or self._previous.labels.get(L_IMAGE_ID) or "") or None
        return DeployReport(
            strategy=self._kind,
            image=self.image,
            previous_image=previous,
            steps=tuple(self._steps),
            new=new,
            old=old,
            served=served,
            seconds=time.monotonic() - self._started,
            downtime_seconds=self._downtime,
            rolled_back=bool(breach),
            breach=breach,
            time_to_detect=(detected - self._exposed) if detected is not None and self._exposed is not None else None,
            time_to_restore=(restored - detected) if restored is not None and detected is not None else None,
        )

    def _remove_strays(self, observed: _Observed) -> None:
        for container in observed.strays:
            self.on_event(f"removing {container.name} (unknown role)")
            container.remove(force=True, v=True)

    def _create(self, network: Any, lb: Any, replicas: list[Any]) -> None:
        """No balancer serves yet: bring up all replicas at once, then the balancer."""
        good = [r for r in replicas if _running(r) and r.labels.get(L_SPEC) == self.spec][: self.topo.desired]
        for replica in replicas:
            if replica not in good:
                self.on_event(f"removing {replica.name}")
                replica.remove(force=True, v=True)
        checked = self._healthy_or_removed(good)
        self._phase = "create"
        new = self._launch(self.topo.desired - len(checked))
        checkpoint(f"local-stack:{self.stack}:create:launched", "local-stack:create:launched")
        servers = [r.name for r in checked + new]
        if lb is None:
            lb = self._create_lb(network, servers)
        else:
            self._write_config(lb, servers)
            self.on_event(f"starting {lb.name}")
            lb.start()
            lb.reload()
        self._wait_lb_ready(lb)

    def _roll(self, lb: Any, replicas: list[Any]) -> None:
        """The balancer serves: move to the new image as the strategy says, never routing to a
        replica that is not healthy."""
        self._config_text = self.engine._read_config(lb)
        self._old_parameters = _config_parameters(self._config_text)
        names, until = _warm_set(self._config_text)
        warm = [r for r in replicas if r.name in names and _running(r)]
        replicas = [r for r in replicas if r not in warm]
        self._warm = (tuple(r.name for r in warm), until) if warm else None
        if warm and until > time.time() and all(r.labels.get(L_SPEC) == self.spec for r in warm):
            if self._switch_back(lb, warm, replicas):
                return
            self._drop_warm(warm, "it is not healthy any more")
            warm = []
        good, old = self._settle(lb, replicas)
        if warm and (old or until <= time.time()):
            self._drop_warm(warm, "its time is up" if until <= time.time() else "another version replaces the stack")
        if not good and not old:  # nothing left to route to: start over like a creation
            self._kind = "create"
            self._route(lb, self._launch(self.topo.desired), retire=[])
            return
        if not old and len(good) == self.topo.desired:
            self._kind = "none"
            self._route(lb, good, retire=[])  # the parameters line may change (e.g. MaxSize)
            self.on_event(f"{self.stack} already runs {self.image} on {len(good)} replicas: nothing to do")
            return
        if not old:  # only a scale change
            self._kind = "scale"
            self._converge(lb, good, old)
            return
        self._previous = old[0]
        self._begin(lb, good, old)
        kind = self.strategy.kind
        try:
            if isinstance(self.strategy, Canary):
                self._canary(lb, good, old, self.strategy)
            elif isinstance(self.strategy, BlueGreen):
                self._blue_green(lb, good, old, self.strategy)
            elif isinstance(self.strategy, Cutover):
                self._cutover(lb, good, old)
            else:
                batch, min_in, _ = self._batches()
                self.on_event(
                    f"{kind}: moving {len(old)} replica(s) of {self.stack} to {self.image} "
                    f"(batches of {batch}, at least {min_in} in service)"
                )
                self._converge(lb, good, old)
        except _Breached as breach:
            self._end(lb)
            report = self._report(breach=breach.reason, detected=breach.detected, restored=breach.restored)
            raise HealthBreachError(
                _breach_message(self.stack, breach.what, report),
                report=report,
                hint=f"{self.stack} runs {report.previous_image} again; fix the release (or, if the thresholds are "
                "too strict for this service, relax the stage's health=Health(...))",
            ) from None
        finally:
            self._end(lb)

    def _settle(self, lb: Any, replicas: list[Any]) -> tuple[list[Any], list[Any]]:
        """Tidy what an interrupted update may have left; returns the routed (good, old) replicas."""
        self._config_text = self.engine._read_config(lb)
        routed = set(_servers(self._config_text))
        dead = [r for r in replicas if not _running(r)]
        alive = [r for r in replicas if _running(r)]
        # Running but not routed: left by an interrupted update. Routed only once healthy again.
        unrouted_good = [r for r in alive if r.name not in routed and r.labels.get(L_SPEC) == self.spec]
        unrouted_old = [r for r in alive if r.name not in routed and r.labels.get(L_SPEC) != self.spec]
        good = [r for r in alive if r.name in routed and r.labels.get(L_SPEC) == self.spec]
        old = [r for r in alive if r.name in routed and r.labels.get(L_SPEC) != self.spec]
        for replica in dead + unrouted_old:
            self.on_event(f"removing {replica.name} ({replica.status}, not in service)")
            self._stop_later(replica, graceful=False)
        good += self._healthy_or_removed(unrouted_good)
        if (dead or unrouted_good or unrouted_old) and (good or old):
            self._route(lb, good + old, retire=[])
        return good, old

    # --- observation ---
    def _observing(self) -> bool:
        return self.health is not None and self.strategy.observe_seconds > 0

    def _begin(self, lb: Any, good: list[Any], old: list[Any]) -> None:
        """Before the first change: the balancer logs which replica answers each request (the
        report's numbers), and, when the strategy observes, a probe sends steady load and the old
        version's numbers are taken as the baseline."""
        watch = _Watch(lb, self.topo.target_port, f"{self.stack}-net", self.on_event)
        try:
            watch.truncate()
        except StackOperationError as exc:
            self.on_event(f"no health signals for this update: {exc}")
            return
        self._watch = watch
        watch.assign(old, new=False)
        watch.assign(good, new=True)
        self._log = True
        self._route(lb, good + old, retire=[], weights=self._weights)
        self.on_event(f"{lb.name} logs which replica answers each request (the deployment's health signals)")
        if not self._observing():
            return
        assert self.health is not None
        url = f"http://127.0.0.1:{DockerStackEngine._lb_port(lb)}/"
        watch.start_probe(url, self.health.requests_per_second)
        begin = time.time()
        deadline = time.monotonic() + BASELINE_MAX
        while time.monotonic() < deadline:
            time.sleep(POLL)
            watch.read()
            if watch.stats(begin, new=False).requests >= self.health.min_requests:
                break
        self._baseline = watch.stats(begin, new=False)
        self.on_event(f"baseline of the old version: {self._baseline.describe()}")

    def _end(self, lb: Any) -> None:
        """After the last change (or a rollback): stop the probe, read the last numbers, and stop
        logging (one more graceful reload). Safe to call twice."""
        watch = self._watch
        if watch is not None and not watch.closed:
            watch.close()
        if self._log and not self._handed_over:
            self._log = False
            try:
                self._route(lb, self._serving, retire=[], weights=self._weights)
            except StackOperationError as exc:  # the routing is right; only the log stays on
                self.on_event(f"could not switch the balancer's request log off: {exc}")

    def _expose(self) -> None:
        if self._exposed is None:
            self._exposed = time.monotonic()

    def _window(self, what: str, share: float, started: float) -> None:
        """One observation window after a step: judge the health signals; on a breach roll back
        (the caller's `restore`) and raise _Breached. Records the step either way."""
        seconds = self.strategy.observe_seconds
        watch = self._watch
        if seconds <= 0:
            self._steps.append(DeployStep(what, share, time.monotonic() - started))
            return
        if watch is None or self.health is None:
            self.on_event(f"{what}: waiting {seconds:g} s (no health thresholds to watch)")
            time.sleep(seconds)
            self._steps.append(DeployStep(what, share, time.monotonic() - started))
            return
        health = self.health
        self.on_event(f"{what}: observing for {seconds:g} s")
        begin = time.time()
        end = begin + seconds
        give_up = end + max(EXTEND_MIN, seconds)
        waited = False
        while True:
            time.sleep(POLL)
            watch.read()
            now = time.time()
            new = watch.stats(begin, new=True)
            same = watch.stats(begin, new=False)
            old = same if same.requests >= health.min_requests else self._baseline
            verdict = judge(new, old, health, final=now >= end, exhausted=now >= give_up)
            if verdict.state == "wait":
                if now >= end and not waited:
                    waited = True
                    self.on_event(
                        f"{what}: {new.requests} requests reached the new version, {health.min_requests} are "
                        "needed: observing longer"
                    )
                continue
            self._windows.append((begin, now))
            outcome = "passed" if verdict.state == "pass" else "breach"
            self._steps.append(DeployStep(what, share, time.monotonic() - started, outcome, new, old))
            if verdict.state == "pass":
                self.on_event(f"{what}: healthy ({verdict.numbers})")
                return
            raise _Breached(what, verdict.reason)

    def _breach(self, lb: Any, error: _Breached, *, bad: list[Any], keep: list[Any], restart: bool = False) -> NoReturn:
        """Roll back after a breach: route to the old version's replicas still running (`keep`: at
        once; `restart`: they are stopped, start them first), or start old ones again; then the new
        replicas go. Raises _Breached again with the times of detection and restore."""
        detected = time.monotonic()
        previous = self._previous_image()
        self.on_event(f"health breach at {error.what}: {error.reason}")
        self.on_event(f"rolling {self.stack} back to {previous}")
        if restart:
            self._restart(keep)
        restored = self._restore(lb, bad=bad, keep=keep)
        self.on_event(f"{self.stack} is back on {previous} ({restored - detected:.2f} s after the breach)")
        raise _Breached(error.what, error.reason, detected, restored) from None

    def _previous_image(self) -> str:
        if self._previous is None:
            return "the old version"
        return str(self._previous.labels.get(L_IMAGE) or self._previous.labels.get(L_IMAGE_ID))

    def _restore(self, lb: Any, *, bad: list[Any], keep: list[Any]) -> float:
        """Route to the old version only; returns time.monotonic() when the balancer does."""
        alive = []
        for replica in keep:
            with contextlib.suppress(Exception):
                replica.reload()
            if _running(replica):
                alive.append(replica)
        self._warm = None
        self._weights = {}
        if alive:
            self._wake(alive)
            self._route(lb, alive, retire=bad)
            restored = time.monotonic()
            if len(alive) < self.topo.desired:
                more = self._relaunch_old(self.topo.desired - len(alive))
                self._route(lb, alive + more, retire=[])
            return restored
        more = self._relaunch_old(self.topo.desired)
        self._route(lb, more, retire=bad)
        return time.monotonic()

    def _relaunch_old(self, count: int) -> list[Any]:
        """Start `count` replicas of the old image (with the old parameters), healthy."""
        if self._previous is None or count <= 0:
            return []
        previous = self._previous
        topo = self.engine.topology(self._old_parameters or _json_labels(previous.labels.get(L_PARAMETERS)))
        back = _Deployment(
            self.engine,
            self.stack,
            topo,
            self._previous_image(),
            str(previous.labels.get(L_IMAGE_ID)),
            self.lb_image,
            self.on_event,
        )
        back._phase = "restore"
        try:
            started = back._launch(count)
        finally:
            back._pool.shutdown(wait=True)
        if self._watch is not None:
            self._watch.assign(started, new=False)
        return started

    # --- rolling, pilot, half ---
    def _batches(self) -> tuple[int, int, list[int]]:
        """(batch size, minimum in service, sizes of the first batches) for rolling, pilot, half."""
        desired = self.topo.desired
        strategy = self.strategy
        min_in = self.topo.min_in_service
        if isinstance(strategy, Rolling):
            batch = strategy.batch_size or (desired if self.topo.replacing else self.topo.max_batch)
            if strategy.min_in_service is not None:
                min_in = strategy.min_in_service
            return batch, min_in, []
        if isinstance(strategy, Pilot):
            return max(1, desired - 1), min_in, [1]
        if isinstance(strategy, Half):
            return max(1, desired - desired // 2), min_in, [max(1, desired // 2)]
        return desired, min_in, []

    def _observe_after(self, batch: int) -> bool:
        """Whether to observe after batch `batch` (1-based), when old replicas still serve."""
        if isinstance(self.strategy, Pilot | Half):
            return batch == 1
        return True

    def _converge(self, lb: Any, good: list[Any], old: list[Any]) -> None:
        """Batches: start new replicas (within MaxSize), route to them, drain and stop old ones."""
        size, min_in_service, first = self._batches()
        started: list[Any] = []
        previous = old[0] if old else None
        batches = 0
        while True:
            need = self.topo.desired - len(good)
            if need <= 0 and not old:
                break
            step_started = time.monotonic()
            planned = first[batches] if batches < len(first) else size
            if need > 0:
                batch = min(planned, need)
                replacing = self.topo.replacing and isinstance(self.strategy, Rolling)
                room = batch if replacing else self.topo.max_size - len(good) - len(old)
                surge = min(batch, room)
                if surge <= 0:  # MaxSize reached: take old ones out first, keeping MinInstancesInService
                    take = min(batch, len(old), len(good) + len(old) - min_in_service)
                    if take <= 0:
                        raise StackOperationError(
                            f"cannot update {self.stack}: MaxSize {self.topo.max_size} leaves no room for a new "
                            f"replica and MinInstancesInService {min_in_service} forbids removing one first",
                            hint=f"raise MaxSize or lower MinInstancesInService of {self.topo.group} in the template",
                        )
                    retire, old = old[:take], old[take:]
                    self._route(lb, good + old, retire=retire)
                    continue
                self._phase = f"batch-{batches + 1}"
                try:
                    new = self._launch(surge)
                except StackOperationError as exc:
                    self._fail(lb, exc, started, previous)
                batches += 1
                checkpoint(
                    f"local-stack:{self.stack}:batch-{batches}:launched", f"local-stack:batch-{batches}:launched"
                )
                started += new
                good += new
                if self._watch is not None:
                    self._watch.assign(new, new=True)
                excess = max(0, len(good) + len(old) - self.topo.desired)
                retire, old = old[:excess], old[excess:]
            else:
                retire = list(old) if self.topo.replacing else old[:planned]
                old = old[len(retire) :]
            self._route(lb, good + old, retire=retire)
            self._expose()
            checkpoint(f"local-stack:{self.stack}:batch-{batches}:routed", f"local-stack:batch-{batches}:routed")
            self._after_batch(lb, batches, good, old, step_started)
        extra = good[self.topo.desired :]
        if extra:
            self._route(lb, good[: self.topo.desired], retire=extra)

    def _after_batch(self, lb: Any, batch: int, good: list[Any], old: list[Any], started: float) -> None:
        """Record the batch as a step; observe it (if the strategy says so) while old replicas
        still serve, and always after the first batch (a single replica's pilot has no second),
        rolling back on a breach."""
        share = len(good) / max(1, len(good) + len(old))
        what = f"{self._kind} batch {batch}: {len(good)} of {len(good) + len(old)} replicas on the new version"
        if not (old or batch == 1) or not self._observe_after(batch):
            self._steps.append(DeployStep(what, share, time.monotonic() - started))
            return
        try:
            self._window(what, share, started)
        except _Breached as breach:
            self._breach(lb, breach, bad=list(good), keep=list(old))

    def _fail(self, lb: Any, error: StackOperationError, started: list[Any], previous: Any) -> NoReturn:
        """A new replica never became healthy: go back to the image the stack ran, then report."""
        if not started or previous is None:
            raise StackOperationError(
                f"update of {self.stack} to {self.image} failed, nothing was switched: {error}",
                hint=error.hint,
            ) from None
        image = str(previous.labels.get(L_IMAGE) or previous.labels.get(L_IMAGE_ID))
        self.on_event(f"update failed ({error}); rolling {self.stack} back to {image}")
        self._finish_stops()
        self._handed_over = True
        if self._watch is not None:
            self._watch.close()
        try:
            params = self._old_parameters or _json_labels(previous.labels.get(L_PARAMETERS))
            topo = self.engine.topology(params)
            back = _Deployment(
                self.engine, self.stack, topo, image, str(previous.labels.get(L_IMAGE_ID)), self.lb_image, self.on_event
            )
            try:
                back._roll(lb, self.engine._observe(self.stack).replicas)
            finally:
                back._finish_stops()
                back._pool.shutdown(wait=True)
        except StackOperationError as again:
            raise StackOperationError(
                f"update of {self.stack} to {self.image} failed ({error}), and so did the rollback to {image}: {again}",
                hint="inspect the stack with `docker ps --filter label=io.pipeline.stack=" + self.stack + "`",
            ) from None
        raise StackOperationError(
            f"update of {self.stack} to {self.image} failed and was rolled back to {image}: {error}", hint=error.hint
        ) from None

    def _abandon(self, lb: Any, error: StackOperationError, new: list[Any], old: list[Any]) -> NoReturn:
        """A new replica never became healthy while the old set still runs (canary, blue-green):
        route to the old set only (if the new one had traffic), remove the new replicas, report."""
        routed = {r.name for r in self._serving}
        if any(r.name in routed for r in new):
            self._restore(lb, bad=new, keep=old)
        else:
            for replica in new:
                self._stop_later(replica, graceful=False)
        raise StackOperationError(
            f"update of {self.stack} to {self.image} failed; {self._previous_image()} serves as before: {error}",
            hint=error.hint,
        ) from None

    # --- canary ---
    def _canary(self, lb: Any, good: list[Any], old: list[Any], strategy: Canary) -> None:
        """New replicas beside the old set, the traffic shifted by balancer weights step by step
        (an observation window each); at 100% the old set stays warm until the last window passes."""
        desired = self.topo.desired
        new = list(good)
        for percent in strategy.steps:
            step_started = time.monotonic()
            want = desired if percent == 100 else min(desired, max(1, math.ceil(desired * percent / 100)))
            if len(new) < want:
                self._phase = f"canary-{percent}"
                try:
                    fresh = self._launch(want - len(new))
                except StackOperationError as exc:
                    self._abandon(lb, exc, new, old)
                new += fresh
                if self._watch is not None:
                    self._watch.assign(fresh, new=True)
            if percent < 100:
                weights = canary_weights([r.name for r in new], [r.name for r in old], percent)
                self._route(lb, new + old, retire=[], weights=weights)
                what = f"canary {percent}%: {len(new)} new replica(s) beside {len(old)} old"
                self.on_event(f"{what} (weights {_describe_weights(weights, new, old)})")
            else:
                until = time.time() + strategy.observe_seconds + WARM_MARGIN
                self._warm = (tuple(r.name for r in old), until)
                self._route(lb, new, retire=[])
                self._keep_warm(old, until)
                what = f"canary 100%: {len(new)} new replica(s) take all the traffic, the old set stays warm"
                self.on_event(what)
            self._expose()
            checkpoint(f"local-stack:{self.stack}:canary-{percent}:routed")
            try:
                self._window(what, percent / 100, step_started)
            except _Breached as breach:
                self._breach(lb, breach, bad=new, keep=old)
        self._warm = None
        self._route(lb, new, retire=old)

    # --- blue-green ---
    def _blue_green(self, lb: Any, good: list[Any], old: list[Any], strategy: BlueGreen) -> None:
        """A full second (green) set, then one switch; the old (blue) set stays warm, unrouted,
        for keep_old_seconds (at least through the observation window) for an instant switch back."""
        step_started = time.monotonic()
        green = list(good)
        if len(green) < self.topo.desired:
            self._phase = "green"
            try:
                fresh = self._launch(self.topo.desired - len(green))
            except StackOperationError as exc:
                self._abandon(lb, exc, green, old)
            green += fresh
            if self._watch is not None:
                self._watch.assign(fresh, new=True)
        checkpoint(f"local-stack:{self.stack}:green:launched")
        switched = time.time()
        until = switched + max(strategy.keep_old_seconds, strategy.observe_seconds + WARM_MARGIN)
        self._warm = (tuple(r.name for r in old), until)
        self._route(lb, green, retire=[])
        self._expose()
        checkpoint(f"local-stack:{self.stack}:green:switched")
        what = f"blue-green: the balancer switched to {len(green)} new replica(s)"
        self.on_event(f"{what}; the old set stays warm until {_clock(until)}")
        try:
            self._window(what, 1.0, step_started)
        except _Breached as breach:
            self._breach(lb, breach, bad=green, keep=old)
        if time.time() >= switched + strategy.keep_old_seconds:
            self._warm = None
            self._route(lb, green, retire=old)
            return
        self._keep_warm(old, until)

    def _keep_warm(self, replicas: list[Any], until: float) -> None:
        """The old set stays running (unrouted) until `until`, without anyone waiting for it: each
        replica gets a timer of its own (a shell that stops it then, unless a switch back cancels
        it), and is not restarted when it stops. Where that cannot be set up (no shell in the
        image), the next deploy or delete removes it once its time is up."""
        seconds = max(0.0, until - time.time())
        for replica in replicas:
            try:
                replica.update(restart_policy={"Name": "no"})
                replica.exec_run(
                    [
                        "/bin/sh",
                        "-c",
                        f"touch {WARM_MARK} && sleep {seconds:.1f} && [ -e {WARM_MARK} ] && kill -TERM 1",
                    ],
                    detach=True,
                )
            except Exception as exc:  # best effort: the deadline is also in the balancer's config
                self.on_event(f"{replica.name} stays until the next deploy removes it (no timer: {exc})")

    def _wake(self, replicas: list[Any]) -> None:
        """Back in service: cancel a warm replica's timer and restart it with the host again."""
        for replica in replicas:
            with contextlib.suppress(Exception):
                replica.exec_run(["/bin/rm", "-f", WARM_MARK])
            with contextlib.suppress(Exception):
                replica.update(restart_policy={"Name": "unless-stopped"})

    def _switch_back(self, lb: Any, warm: list[Any], current: list[Any]) -> bool:
        """The image asked for is the warm set's (a rollback soon after a blue-green switch): route
        to it again at once. False when it is not healthy any more (then deploy as usual)."""
        ready = self._healthy_or_removed(warm)
        if len(ready) < len(warm):
            return False
        self._kind = "switch-back"
        step_started = time.monotonic()
        routed = set(_servers(self._config_text or ""))
        self._previous = next((r for r in current if r.name in routed and _running(r)), None)
        self.on_event(
            f"switching {self.stack} back to its warm set of {self.image}: {', '.join(r.name for r in ready)}"
        )
        self._wake(ready)
        self._warm = None
        self._route(lb, ready, retire=[r for r in current if _running(r)])
        self._steps.append(DeployStep("switch back to the warm set", 1.0, time.monotonic() - step_started))
        if len(ready) != self.topo.desired:
            self._converge(lb, ready[: self.topo.desired], [])
        return True

    def _drop_warm(self, warm: list[Any], why: str) -> None:
        """Remove a warm set (the next configuration written drops its line)."""
        self.on_event(f"removing the warm set {', '.join(r.name for r in warm)} ({why})")
        self._warm = None
        for replica in warm:
            self._stop_later(replica, graceful=False)

    # --- cutover ---
    def _cutover(self, lb: Any, good: list[Any], old: list[Any]) -> None:
        """Stop the old replicas, then start the new ones: the service is down in between (the
        downtime is measured: from the stop until the new version answers through the balancer)."""
        step_started = time.monotonic()
        self.on_event(f"cutover: stopping {len(old)} old replica(s); {self.stack} is down until the new ones answer")
        down = time.monotonic()
        stops = [self._pool.submit(r.stop, timeout=STOP_TIMEOUT) for r in old]
        for stop in stops:
            with contextlib.suppress(Exception):
                stop.result()
        checkpoint(f"local-stack:{self.stack}:cutover:stopped")
        self._phase = "cutover"
        try:
            new = list(good) + self._launch(self.topo.desired - len(good))
        except StackOperationError as exc:
            self._restart(old)
            self._route(lb, old, retire=[], force=True)
            raise StackOperationError(
                f"update of {self.stack} to {self.image} failed; the old replicas were started again: {exc}",
                hint=exc.hint,
            ) from None
        if self._watch is not None:
            self._watch.assign(new, new=True)
        self._route(lb, new, retire=[])
        self._wait_lb_ready(lb)
        self._downtime = time.monotonic() - down
        self._expose()
        self.on_event(f"cutover: {len(new)} new replica(s) answer; downtime {self._downtime:.2f} s")
        checkpoint(f"local-stack:{self.stack}:cutover:routed")
        try:
            self._window(f"cutover: {len(new)} new replica(s) take all the traffic", 1.0, step_started)
        except _Breached as breach:
            self._breach(lb, breach, bad=new, keep=old, restart=True)
        for replica in old:
            self._stop_later(replica, graceful=False)

    def _restart(self, replicas: list[Any]) -> None:
        """Start stopped old replicas again (a cutover going back) and wait until they are healthy."""
        for replica in replicas:
            with contextlib.suppress(Exception):
                replica.start()
        for replica in replicas:
            with contextlib.suppress(_ReplicaFailed):
                self._wait_healthy(replica)
        if self._watch is not None:
            for replica in replicas:
                with contextlib.suppress(Exception):
                    replica.reload()
            self._watch.assign(replicas, new=False)

    # --- replicas ---
    def _launch(self, count: int) -> list[Any]:
        """Start `count` replicas and wait until each is healthy; on failure none is left running."""
        if count <= 0:
            return []
        futures = [self._pool.submit(self._start_one) for _ in range(count)]
        started = []
        errors = []
        for future in futures:
            try:
                started.append(future.result())
            except StackOperationError as exc:
                errors.append(exc)
        checks = {r.name: self._pool.submit(self._wait_healthy, r) for r in started}
        failure: _ReplicaFailed | None = None
        for name, check in checks.items():
            try:
                check.result()
            except _ReplicaFailed as exc:
                failure = failure or exc
                self.on_event(f"{name} is not healthy: {exc.reason}")
        if errors or failure is not None:
            for replica in started:
                with contextlib.suppress(Exception):
                    replica.remove(force=True, v=True)
            if errors:
                raise errors[0]
            assert failure is not None
            raise StackOperationError(
                f"replica {failure.name} of image {self.image} did not become healthy: {failure.reason}",
                hint=f"the target group checks GET {self.topo.health_path} on port {self.topo.health_port}, "
                f"expecting {self.topo.health_codes}; run the image by hand to see why "
                f"(docker run --rm -p 127.0.0.1::{self.topo.target_port} {self.image})",
            )
        _restart_with_engine(started)
        return started

    def _start_one(self) -> Any:
        import docker.errors

        name = f"{self.stack}-{secrets.token_hex(3)}"
        ports: dict[str, Any] = {f"{self.topo.target_port}/tcp": ("127.0.0.1", None)}
        if self.topo.health_port != self.topo.target_port:
            ports[f"{self.topo.health_port}/tcp"] = ("127.0.0.1", None)
        labels = self.engine._labels(
            self.stack,
            ROLE_REPLICA,
            **{
                L_IMAGE: self.image,
                L_IMAGE_ID: self.image_id,
                L_SPEC: self.spec,
                L_PARAMETERS: json.dumps(self.parameters, sort_keys=True),
            },
        )
        self.on_event(f"starting {name} ({self.image})")
        try:
            container = self.client.containers.run(
                self.image_id,
                name=name,
                hostname=name,
                detach=True,
                network=f"{self.stack}-net",
                ports=ports,
                labels=labels,
                # not restarted until it has passed its health check (`_restart_with_engine`):
                # a replica that dies on start keeps its exit status and output
                restart_policy={"Name": "no"},
                init=True,  # the image's server is not PID 1: SIGTERM stops it even without a handler
            )
        except docker.errors.DockerException as exc:
            raise StackOperationError(f"cannot start a replica of {self.image}: {exc}") from None
        checkpoint(f"local-stack:{self.stack}:{self._phase}:replica-started")
        return container

    def _wait_healthy(self, replica: Any) -> None:
        from pipeline.engines.http_check import request

        started = time.monotonic()
        deadline = started + self.topo.grace_period
        port: int | None = None
        successes = 0
        last = "not checked yet"
        while True:
            replica.reload()
            state = replica.attrs.get("State", {})
            restarts = int(replica.attrs.get("RestartCount", 0))
            if replica.status in ("exited", "dead") or restarts > 0:
                logs = replica.logs(tail=15).decode(errors="replace").strip()
                what = (
                    f"the container exited (status {state.get('ExitCode')})"
                    if replica.status in ("exited", "dead", "restarting")
                    else f"the container exited and was restarted {restarts} time(s)"  # its status is gone
                )
                raise _ReplicaFailed(
                    replica.name,
                    what
                    + (f"; its last output:\n{logs}" if logs else "")
                    + '\n(an image baked by Packer\'s docker builder keeps ENTRYPOINT ["/bin/sh"] unless the '
                    "template's `changes` set one)",
                )
            if port is None:
                bindings = (replica.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(
                    f"{self.topo.health_port}/tcp"
                ) or []
                port = next((int(b["HostPort"]) for b in bindings if b.get("HostPort")), None)
            if port is not None:
                try:
                    status, _ = request(
                        f"http://127.0.0.1:{port}{self.topo.health_path}", timeout=self.topo.health_timeout
                    )
                except (OSError, ValueError) as exc:
                    successes, last = 0, str(exc) or type(exc).__name__
                except Exception as exc:  # http.client errors
                    successes, last = 0, f"{type(exc).__name__}: {exc}"
                else:
                    if self.topo.accepts(status):
                        successes += 1
                        if successes >= self.topo.healthy_threshold:
                            self.on_event(f"{replica.name} is healthy after {time.monotonic() - started:.1f} s")
                            return
                        continue
                    successes, last = 0, f"GET {self.topo.health_path} answered {status}"
            if time.monotonic() > deadline:
                raise _ReplicaFailed(
                    replica.name, f"not healthy within {self.topo.grace_period:g} s (last check: {last})"
                )
            time.sleep(HEALTH_INTERVAL)

    def _healthy_or_removed(self, replicas: list[Any]) -> list[Any]:
        healthy = []
        for replica in replicas:
            try:
                self._wait_healthy(replica)
            except _ReplicaFailed as exc:
                self.on_event(f"removing {replica.name}: {exc.reason}")
                replica.remove(force=True, v=True)
            else:
                healthy.append(replica)
        _restart_with_engine(healthy)  # one a killed run started and left before it passed its check
        return healthy

    def _stop_later(self, replica: Any, *, graceful: bool = True) -> None:
        def stop() -> None:
            import docker.errors

            with contextlib.suppress(docker.errors.NotFound):
                if graceful:
                    replica.stop(timeout=STOP_TIMEOUT)
                replica.remove(force=True, v=True)

        self._stops.append(self._pool.submit(stop))

    def _finish_stops(self) -> None:
        for future in self._stops:
            try:
                future.result()
            except Exception as exc:  # best effort: a later deploy or delete removes it by label
                self.on_event(f"could not remove a replaced replica: {exc}")
        self._stops = []

    # --- network and balancer ---
    def _create_network(self) -> Any:
        import docker.errors

        name = f"{self.stack}-net"
        self.on_event(f"creating network {name}")
        labels = self.engine._labels(self.stack, ROLE_NETWORK, **{L_PORT: str(_free_port())})
        try:
            return self.client.networks.create(name, driver="bridge", labels=labels, check_duplicate=True)
        except docker.errors.APIError as exc:
            raise StackOperationError(
                f"cannot create network {name}: {exc.explanation or exc}",
                hint=f"a network named {name} may exist outside this pipeline: docker network inspect {name}",
            ) from None

    def _create_lb(self, network: Any, servers: list[str]) -> Any:
        import docker.errors

        name = f"{self.stack}-lb"
        listen = self.topo.listener_port
        preferred = network.attrs.get("Labels", {}).get(L_PORT)
        labels = self.engine._labels(self.stack, ROLE_LB, **{L_LISTEN: str(listen)})
        for port in ([int(preferred)] if preferred else []) + [None]:
            try:
                lb = self.client.containers.create(
                    self.lb_image,
                    name=name,
                    detach=True,
                    network=network.name,
                    ports={f"{listen}/tcp": ("127.0.0.1", port)},
                    labels=labels,
                    restart_policy={"Name": "unless-stopped"},
                )
            except docker.errors.APIError as exc:
                raise StackOperationError(
                    f"cannot create the load balancer {name}: {exc.explanation or exc}",
                    hint=f"if a container named {name} exists outside this pipeline, remove or rename it",
                ) from None
            self._put_config(lb, self._config(servers))
            try:
                lb.start()
            except docker.errors.APIError as exc:
                lb.remove(force=True)
                if port is not None and "allocated" in str(exc):
                    self.on_event(f"port {port} is taken: publishing the load balancer on another one")
                    continue
                raise StackOperationError(f"cannot start the load balancer {name}: {exc.explanation or exc}") from None
            lb.reload()
            self.on_event(f"load balancer {name} listens on http://127.0.0.1:{DockerStackEngine._lb_port(lb)}/")
            return lb
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_lb_ready(self, lb: Any) -> None:
        from pipeline.engines.http_check import request

        port = DockerStackEngine._lb_port(lb)
        deadline = time.monotonic() + LB_READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            lb.reload()
            if lb.status in ("exited", "dead"):
                break
            try:
                status, _ = request(f"http://127.0.0.1:{port}{self.topo.health_path}", timeout=2)
                if self.topo.accepts(status):
                    return
                last = f"status {status}"
            except Exception as exc:
                last = str(exc) or type(exc).__name__
            time.sleep(0.05)
        logs = lb.logs(tail=15).decode(errors="replace").strip()
        raise StackOperationError(
            f"the load balancer {lb.name} does not answer on 127.0.0.1:{port} ({last or lb.status})"
            + (f"; its log:\n{logs}" if logs else "")
        )

    def _config(self, servers: list[str]) -> str:
        return render_config(
            self.stack,
            self.topo,
            servers,
            self.parameters,
            weights=self._weights,
            warm=self._warm,
            log=LOG_PATH if self._log else None,
        )

    def _write_config(self, lb: Any, servers: list[str]) -> None:
        self._put_config(lb, self._config(servers))

    def _route(
        self,
        lb: Any,
        serving: list[Any],
        *,
        retire: list[Any],
        weights: Mapping[str, int] | None = None,
        force: bool = False,
    ) -> None:
        """Point the balancer at `serving` (with `weights`, else evenly), reload gracefully,
        drain, then stop `retire`. `force`: reload even if the file is the same (replicas that
        started again may have new addresses)."""
        names = [r.name for r in serving]
        self._weights = {name: weight for name, weight in (weights or {}).items() if name in names}
        text = self._config(names) if names else ""
        if self._config_text is None:
            self._config_text = self.engine._read_config(lb)
        if text and (text != self._config_text or force):
            previous = self._config_text
            self._put_config(lb, text)
            try:
                self._reload(lb)
            except StackOperationError:
                if previous:  # the old workers still serve the old configuration: keep the file in step
                    self._put_config(lb, previous)
                raise
            changed = sorted(names) != sorted(_servers(previous)) or _config_parameters(text) != _config_parameters(
                previous
            )
            if changed or force:
                self.on_event(f"{lb.name} routes to {', '.join(sorted(names))}")
        if names:
            self._serving = list(serving)
        for replica in retire:
            self.on_event(f"drained {replica.name}: stopping it")
            self._stop_later(replica)

    def _put_config(self, lb: Any, text: str) -> None:
        lb.put_archive(os.path.dirname(CONFIG_PATH), _tar(os.path.basename(CONFIG_PATH), text))
        self._config_text = text

    def _reload(self, lb: Any) -> None:
        """SIGHUP (graceful reload), then wait until every worker of the old configuration has exited.

        nginx applies a new configuration by starting new workers and letting the old ones finish
        their requests; one it cannot load leaves the old workers serving and says why in its log."""
        before = _workers(lb)
        since = int(time.time()) - 1
        lb.kill(signal="SIGHUP")
        started = time.monotonic()
        applied = False
        drain = self.topo.deregistration_delay
        while True:
            current = _workers(lb)
            old_left = {pid: title for pid, title in current.items() if pid in before}
            fresh = [pid for pid, title in current.items() if pid not in before and "shutting down" not in title]
            if fresh:
                applied = True
            if applied and not old_left:
                return
            waited = time.monotonic() - started
            if not applied and waited > RELOAD_CHECK:
                logs = lb.logs(since=since).decode(errors="replace").strip()
                errors = [line for line in logs.splitlines() if "[emerg]" in line]
                if errors or waited > RELOAD_TIMEOUT:
                    raise StackOperationError(
                        f"the load balancer {lb.name} did not apply its new configuration"
                        + (f": {errors[-1]}" if errors else f" within {RELOAD_TIMEOUT:g} s")
                    )
            if applied and waited > drain + RELOAD_TIMEOUT:
                self.on_event(f"drain of {lb.name} took longer than {drain:g} s: cutting remaining requests")
                return
            time.sleep(0.05)


def _workers(lb: Any) -> dict[str, str]:
    """{pid: process title} of the balancer's nginx worker processes."""
    top = lb.top()
    titles = top.get("Titles") or []
    try:
        pid_col = titles.index("PID")
        cmd_col = titles.index("CMD") if "CMD" in titles else len(titles) - 1
    except ValueError:
        return {}
    found = {}
    for row in top.get("Processes") or []:
        title = str(row[cmd_col])
        if "nginx: worker process" in title:
            found[str(row[pid_col])] = title
    return found


__all__ = ["DockerStackEngine", "render_config"]
