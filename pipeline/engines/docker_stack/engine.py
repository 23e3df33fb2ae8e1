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

This module is the StackEngine facade. The package, by concern: labels.py (names, labels, the
stack as found), converge.py (the plan of a deploy), rollout.py (the strategies), deployment.py
(one deploy's parts and the ways back), replicas.py, balancer.py and balancer_config.py (the nginx
container, its image and its configuration), access_log.py and windows.py (the health signals and
the observation windows).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.engines.base_image import DEFAULT_BASE_IMAGE
from pipeline.engines.docker_client import shared as shared_client
from pipeline.engines.docker_stack.balancer_config import (
    ALERT_MARKER,
    config_parameters,
    has_alert_route,
    servers,
    warm_set,
)
from pipeline.engines.docker_stack.labels import (
    L_IMAGE,
    L_IMAGE_ID,
    L_PARAMETERS,
    L_PIPELINE,
    L_SPEC,
    L_STACK,
    ROLE_REPLICA,
    StackId,
    json_labels,
    observe,
    pipeline_filters,
    running,
)
from pipeline.engines.stack import BaseStackEngine, DatabaseEndpoint, OnEvent, Replica, StackState, VerifyReport
from pipeline.engines.topology import Topology, load_template, topology
from pipeline.errors import BadInputError, LockHeldError, StackOperationError
from pipeline.locks import FileLock, cache_dir, describe_holder
from pipeline.model import Profile, Sensitive, Verify
from pipeline.strategy import Health, Strategy

# The parts that act on Docker (balancer, replicas, database, flag store, rollout) are imported by
# the methods that use them: `pipeline validate` builds this engine only to read the template's
# topology, and must not pay for the deploy machinery (and http.client, ssl) on every start.

LOCK_TIMEOUT = 900.0
"""Seconds a deploy or delete waits for another one of the same stack."""


def _ignore(text: str) -> None:
    pass


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
        masks: Sequence[Sensitive] = (),
        flags: Mapping[str, Any] | None = None,
        alert_token: str | None = None,
        alert_secret: str | None = None,
        environment: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.alert_token = alert_token
        """The environment's alert token: the balancer then serves the alert route (alert.py)."""
        self.alert_secret = alert_secret
        """The variable the environment's `alert_secret` names: a deploy refuses to start without
        its token (it would rebuild the balancer without the alert route)."""
        self.environment = environment
        """The environment's name, for errors."""
        self.flags = dict(flags or {})
        """Values a new flag starts with in the stack's flag store (when the template has one)."""
        self.template = template
        self.masks = tuple(masks)
        """Columns masked when a stack's database is seeded from a snapshot (the definition's)."""
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

    def _id(self, stack: str) -> StackId:
        return StackId(self.pipeline, stack)

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

    # ------------------------------------------------------------------ the protocol
    def stacks(self) -> list[str]:
        import docker.errors

        try:
            containers = self.client.containers.list(all=True, filters=pipeline_filters(self.pipeline), sparse=True)
            networks = self.client.networks.list(filters=pipeline_filters(self.pipeline))
        except docker.errors.DockerException as exc:
            raise StackOperationError(f"cannot list stacks from the Docker engine: {exc}") from None
        names = {str(c.attrs.get("Labels", {}).get(L_STACK, "")) for c in containers}
        names |= {str(n.attrs.get("Labels", {}).get(L_STACK, "")) for n in networks}
        return sorted(n for n in names if n)

    def describe(self, stack: str) -> StackState:
        from pipeline.engines.docker_stack.balancer import lb_port, read_config
        from pipeline.engines.docker_stack.flag_store import observed_addresses

        observed = observe(self.client, self._id(stack))
        if not observed.exists:
            return StackState(name=stack, exists=False)
        config = read_config(observed.lb) if observed.lb is not None else ""
        warm_names, warm_until = warm_set(config)
        warm = [r for r in observed.replicas if running(r) and r.name in warm_names]
        serving = [r for r in observed.replicas if running(r) and r not in warm]
        specs = {r.labels.get(L_SPEC) for r in serving}
        image: str | None = None
        image_id = ""
        parameters: dict[str, str] = {}
        if serving and len(specs) == 1:
            first = serving[0]
            image_id = str(first.labels.get(L_IMAGE_ID, ""))
            image = self._name_for(str(first.labels.get(L_IMAGE, "")), image_id)
            parameters = json_labels(first.labels.get(L_PARAMETERS))
        parameters = config_parameters(config) or parameters
        url = None
        port = lb_port(observed.lb) if observed.lb is not None else None
        if port is not None:
            url = f"http://127.0.0.1:{port}/"
        in_service = servers(config) if observed.lb is not None and running(observed.lb) else []
        if observed.lb is None or not running(observed.lb) or not serving:
            status = "failed"
        elif image is None or sorted(r.name for r in serving) != sorted(in_service):
            status = "updating"
        else:
            status = "ready"
        details = {
            "replicas": str(len(serving)),
            "replica_names": ",".join(r.name for r in serving),
            "in_service": ",".join(in_service),
            "load_balancer": observed.lb.name if observed.lb is not None else "",
            "network": observed.network.name if observed.network is not None else "",
            "image_id": image_id,
        }
        if warm:
            details["warm"] = ",".join(r.name for r in warm)
            details["warm_image"] = ",".join(sorted({str(r.labels.get(L_IMAGE, "")) for r in warm}))
            details["warm_until"] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(warm_until))
        if has_alert_route(config):
            details["alert_route"] = "/.pipeline/alert"
            details["alert"] = "raised" if self._alert_raised(observed.lb) else "clear"
        store = observed_addresses(observed, None)
        if store:
            details["flags_master"] = store.get("0", "")
            details["flags_replicas"] = ",".join(a for i, a in sorted(store.items()) if i != "0")
        if len({r.labels.get(L_IMAGE_ID) for r in serving}) > 1:
            details["images"] = ",".join(sorted({str(r.labels.get(L_IMAGE, "")) for r in serving}))
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
            observed = observe(self.client, self._id(stack))
            if not observed.exists:
                self._delete_data(stack, on_event)  # a delete killed after its containers went
                lock.remove_on_release = True
                return
            containers = [
                c
                for c in (observed.lb, *observed.replicas, *observed.flag_store, *observed.strays, *observed.services)
                if c is not None
            ]

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
            self._delete_data(stack, on_event)
            lock.remove_on_release = True  # the stack is gone: so is its lock file

    def _delete_data(self, stack: str, on_event: OnEvent) -> None:
        """What the stack owns outside its containers and network: the database's volume and
        snapshot, the flag store's volume. Also on a re-run of a delete killed after the containers
        went (the stack is then found by nothing else)."""
        from pipeline.engines.docker_stack import database as db
        from pipeline.engines.docker_stack.flag_store import delete_volume

        db.delete(self.client, self._id(stack), on_event=on_event)
        delete_volume(self.client, self._id(stack), on_event=on_event)

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
        from pipeline.engines.docker_stack import database as db
        from pipeline.engines.docker_stack.alert import alert_files, ensure_agent
        from pipeline.engines.docker_stack.converge import converge
        from pipeline.engines.docker_stack.deployment import Deployment
        from pipeline.engines.docker_stack.replicas import Release

        self._check_alert_token()
        topo = self.topology(parameters)
        image_id = self._image_id(image)
        lb_image = self.ensure_lb_image(on_event=on_event)
        with self._lock(stack, purpose=f"deploying {image} to stack {stack}", on_event=on_event):
            self._check_names(stack)
            if topo.database is not None:
                db.ensure(
                    self.client,
                    self._id(stack),
                    topo.database,
                    base_image=self.base_image,
                    masks=self.masks,
                    on_event=on_event,
                )
            self._flag_store(stack, topo, on_event)
            lb_files = alert_files(self._id(stack), self.alert_token, topo.flag_store)
            deployment = Deployment(
                self.client,
                self._id(stack),
                Release(image, image_id, topo),
                lb_image=lb_image,
                on_event=on_event,
                topology=self.topology,
                strategy=strategy,
                health=health,
                lb_files=lb_files,
            )
            report = converge(deployment)
            lb = observe(self.client, self._id(stack)).lb
            if lb is not None and running(lb):
                ensure_agent(lb, lb_files, on_event)
        return replace(self.describe(stack), report=report)

    # ------------------------------------------------------------------ the database and the fleet
    def fleet(self, stack: str) -> list[Replica]:
        """Every running replica with its image: routed ones, and a warm set kept for a switch back."""
        from pipeline.engines.docker_stack.balancer import read_config

        observed = observe(self.client, self._id(stack))
        config = read_config(observed.lb) if observed.lb is not None else ""
        warm_names, _ = warm_set(config)
        found = []
        for replica in observed.replicas:
            if not running(replica) or replica.labels.get("io.pipeline.role") != ROLE_REPLICA:
                continue
            image = self._name_for(str(replica.labels.get(L_IMAGE, "")), str(replica.labels.get(L_IMAGE_ID, "")))
            found.append(Replica(name=replica.name, image=image, serving=replica.name not in warm_names))
        return found

    def database(self, stack: str) -> DatabaseEndpoint | None:
        from pipeline.engines.docker_stack import database as db

        shape = self.topology().database
        return db.endpoint(self.client, self._id(stack), shape) if shape is not None else None

    def prepare_database(self, stack: str, *, on_event: OnEvent = _ignore) -> DatabaseEndpoint | None:
        """The stack's database, made (with its network) ahead of the rest of the stack."""
        from pipeline.engines.docker_stack import database as db

        shape = self.topology().database
        if shape is None:
            return None
        with self._lock(stack, purpose=f"preparing the database of stack {stack}", on_event=on_event):
            self._check_names(stack)
            db.ensure(self.client, self._id(stack), shape, base_image=self.base_image, masks=(), on_event=on_event)
        return db.endpoint(self.client, self._id(stack), shape)

    def database_parameters(self, snapshot: str | None) -> dict[str, str]:
        shape = self.topology().database
        if shape is None or shape.snapshot_parameter is None:
            return {}
        return {shape.snapshot_parameter: snapshot or ""}

    def snapshot_database(self, stack: str, name: str, *, on_event: OnEvent = _ignore) -> str:
        from pipeline.engines.docker_stack import database as db

        shape = self.topology().database
        if shape is None:
            return super().snapshot_database(stack, name, on_event=on_event)
        return db.snapshot(self.client, self._id(stack), shape, name, on_event=on_event)

    def _alert_raised(self, lb: Any) -> bool:
        import docker.errors

        try:
            lb.get_archive(ALERT_MARKER)
        except docker.errors.NotFound:
            return False
        return True

    def _flag_store(self, stack: str, topo: Topology, on_event: OnEvent) -> None:
        """The stack's flag store as the template says, before any replica that reads it starts."""
        from pipeline.engines.docker_stack.balancer import create_network
        from pipeline.engines.docker_stack.flag_store import converge_flag_store

        observed = observe(self.client, self._id(stack))
        if topo.flag_store is None and not observed.flag_store:
            return
        if observed.network is None and topo.flag_store is not None:
            observed.network = create_network(self.client, self._id(stack), on_event)
        converge_flag_store(
            self.client,
            self._id(stack),
            topo.flag_store,
            observed,
            base_image=self.base_image,
            flags=self.flags,
            on_event=on_event,
        )

    def ready(self, stack: str) -> None:
        """The Docker engine answers (ToolMissingError naming it and the fix if not), and the alert
        token is there when the environment declares one (BadInputError). No change."""
        self._check_alert_token()
        _ = self.client

    def check_deploy(
        self, stack: str, image: str, *, parameters: Mapping[str, str] | None = None, on_event: OnEvent = _ignore
    ) -> None:
        self._check_alert_token()

    def _check_alert_token(self) -> None:
        """Refuse (exit 2) to deploy an environment that declares an alert route without its token:
        the balancer would be rebuilt without the route, and the monitor's call would go unanswered."""
        if self.alert_secret and not self.alert_token:
            where = f"environment {self.environment!r}" if self.environment else f"stacks of {self.pipeline}"
            raise BadInputError(
                f"{where} declares an alert route (alert_secret={self.alert_secret!r}), but {self.alert_secret} is "
                "not set: a deploy would rebuild the balancer without the route",
                hint=f"export {self.alert_secret}=<token> (on CI: the secret {self.alert_secret}, which the rendered "
                "job binds), or remove alert_secret from the environment",
            )

    def _check_names(self, stack: str) -> None:
        """Before anything is created: the names the stack will take (`<stack>-lb`, `<stack>-net`)
        are not held by a container or network outside it, which would stop a creation half-way."""
        import docker.errors

        names = self._id(stack)
        wanted = {names.balancer: "container", names.network: "network"}
        try:
            found = [
                *(("container", c) for c in self.client.containers.list(all=True, filters={"name": names.balancer})),
                *(("network", n) for n in self.client.networks.list(names=[names.network])),
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
        from pipeline.engines.docker_stack.balancer import ensure_lb_image

        return ensure_lb_image(self.client, self.base_image, on_event=on_event)


__all__ = ["DockerStackEngine"]
