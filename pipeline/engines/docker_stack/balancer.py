"""The stack's load balancer: one nginx container `<stack>-lb` on the stack network, published on
a 127.0.0.1 port that stays the same for the stack's life; its image (nginx on the base image,
built once per machine); and the network it shares with the replicas.

Routing changes are graceful: the engine writes a new nginx.conf (balancer_config.py) into the
container and sends SIGHUP; nginx starts new workers with it and lets the old ones finish their
requests (the drain), and one it cannot load leaves the old workers serving and says why in its log.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import tarfile
import time
from collections.abc import Mapping
from typing import Any

from pipeline.engines.docker_stack.access_log import LOG_PATH
from pipeline.engines.docker_stack.balancer_config import Warm, config_parameters, render_config, servers
from pipeline.engines.docker_stack.labels import (
    L_LISTEN,
    L_PORT,
    L_ROLE,
    ROLE_LB,
    ROLE_LB_IMAGE,
    ROLE_NETWORK,
    StackId,
)
from pipeline.engines.docker_stack.service_image import ServiceImage, ensure_service_image, tar_archive
from pipeline.engines.docker_stack.shaping import Shaping
from pipeline.engines.stack import OnEvent
from pipeline.engines.topology import Topology
from pipeline.errors import StackOperationError

LB_REPOSITORY = "pipeline-lb"
CONFIG_PATH = "/etc/nginx/nginx.conf"
RELOAD_TIMEOUT = 10.0
"""Seconds the balancer may take to start workers with a new configuration."""
RELOAD_CHECK = 1.0
"""After this long without new workers, the balancer's log is read for a configuration error."""
LB_READY_TIMEOUT = 30.0


class Balancer:
    """One deployment's hand on the stack's balancer. It keeps what the next configuration says
    besides the servers (`weights`, the `warm` set, whether the request `log` is on) and the
    configuration as it last read or wrote it, so that an unchanged one is not reloaded."""

    def __init__(
        self, client: Any, stack: StackId, topo: Topology, parameters: Mapping[str, str], on_event: OnEvent
    ) -> None:
        self.client = client
        self.stack = stack
        self.topo = topo
        self.parameters = dict(parameters)
        self.on_event = on_event
        self.weights: dict[str, int] = {}
        self.warm: Warm | None = None
        self.log = False
        self.shaping: Shaping | None = None
        """A sticky split, user groups or a mirror (shaping.py); None: weights alone."""
        self.alert = False
        """Serve the alert route (the environment has an alert token)."""
        self.stable: list[str] | None = None
        """The stable version's replicas while a deployment runs (the alert routes to them)."""
        self.files: dict[str, str] = {}
        """Files put into a new balancer before it starts (the alert agent and its settings)."""
        self.config_text: str | None = None
        """The balancer's nginx.conf as this deployment last read or wrote it."""
        self.serving: list[Any] = []
        """The replicas the balancer routes to, as this deployment last wrote it."""

    def load(self, lb: Any) -> str:
        """Read the balancer's configuration (and remember it)."""
        self.config_text = read_config(lb)
        return self.config_text

    def config(self, names: list[str]) -> str:
        return render_config(
            self.stack.name,
            self.topo,
            names,
            self.parameters,
            weights=self.weights,
            warm=self.warm,
            log=LOG_PATH if self.log else None,
            shaping=self.shaping,
            alert=self.alert,
            stable=self.stable,
        )

    def write(self, lb: Any, names: list[str]) -> None:
        """Put the configuration for `names` into the balancer (no reload: it is not running)."""
        self.put(lb, self.config(names))

    def put(self, lb: Any, text: str) -> None:
        lb.put_archive(os.path.dirname(CONFIG_PATH), tar_archive({os.path.basename(CONFIG_PATH): text.encode()}))
        self.config_text = text

    def route(
        self, lb: Any, serving: list[Any], *, weights: Mapping[str, int] | None = None, force: bool = False
    ) -> None:
        """Point the balancer at `serving` (with `weights`, else evenly) and reload gracefully,
        returning once the old workers have drained. `force`: reload even if the file is the same
        (replicas that started again may have new addresses)."""
        names = [r.name for r in serving]
        self.weights = {name: weight for name, weight in (weights or {}).items() if name in names}
        text = self.config(names) if names else ""
        if self.config_text is None:
            self.config_text = read_config(lb)
        if text and (text != self.config_text or force):
            previous = self.config_text
            self.put(lb, text)
            try:
                self.reload(lb)
            except StackOperationError:
                if previous:  # the old workers still serve the old configuration: keep the file in step
                    self.put(lb, previous)
                raise
            changed = sorted(names) != sorted(servers(previous)) or config_parameters(text) != config_parameters(
                previous
            )
            if changed or force:
                self.on_event(f"{lb.name} routes to {', '.join(sorted(names))}")
        if names:
            self.serving = list(serving)

    def reload(self, lb: Any) -> None:
        """SIGHUP (graceful reload), then wait until every worker of the old configuration has exited.

        nginx applies a new configuration by starting new workers and letting the old ones finish
        their requests; one it cannot load leaves the old workers serving and says why in its log."""
        before = workers(lb.top())
        since = int(time.time()) - 1
        lb.kill(signal="SIGHUP")
        started = time.monotonic()
        applied = False
        drain = self.topo.deregistration_delay
        while True:
            current = workers(lb.top())
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

    def create(self, network: Any, names: list[str], *, image: str) -> Any:
        """Create and start the balancer (of `image`) routing to `names`, on the port the network
        remembers when it is free (else another one)."""
        import docker.errors

        name = self.stack.balancer
        listen = self.topo.listener_port
        preferred = network.attrs.get("Labels", {}).get(L_PORT)
        labels = self.stack.labels(ROLE_LB, **{L_LISTEN: str(listen)})
        for port in ([int(preferred)] if preferred else []) + [None]:
            try:
                lb = self.client.containers.create(
                    image,
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
            self.write(lb, names)
            for path, text in self.files.items():
                lb.put_archive(os.path.dirname(path), tar_archive({os.path.basename(path): text.encode()}))
            try:
                lb.start()
            except docker.errors.APIError as exc:
                lb.remove(force=True)
                if port is not None and "allocated" in str(exc):
                    self.on_event(f"port {port} is taken: publishing the load balancer on another one")
                    continue
                raise StackOperationError(f"cannot start the load balancer {name}: {exc.explanation or exc}") from None
            lb.reload()
            self.on_event(f"load balancer {name} listens on http://127.0.0.1:{lb_port(lb)}/")
            return lb
        raise AssertionError("unreachable")  # pragma: no cover

    def wait_ready(self, lb: Any) -> None:
        """Until the balancer answers the health path through a replica (StackOperationError
        with its log if it does not)."""
        from pipeline.engines.http_check import request

        port = lb_port(lb)
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


def create_network(client: Any, stack: StackId, on_event: OnEvent) -> Any:
    """The stack network (the VPC); it remembers a free 127.0.0.1 port for the balancer."""
    import docker.errors

    name = stack.network
    on_event(f"creating network {name}")
    labels = stack.labels(ROLE_NETWORK, **{L_PORT: str(_free_port())})
    try:
        return client.networks.create(name, driver="bridge", labels=labels, check_duplicate=True)
    except docker.errors.APIError as exc:
        raise StackOperationError(
            f"cannot create network {name}: {exc.explanation or exc}",
            hint=f"a network named {name} may exist outside this pipeline: docker network inspect {name}",
        ) from None


def lb_port(lb: Any) -> int | None:
    """The 127.0.0.1 port the balancer container publishes its listener on."""
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


def read_config(lb: Any) -> str:
    """The balancer's nginx.conf ("" if it has none)."""
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


def workers(top: Mapping[str, Any]) -> dict[str, str]:
    """{pid: process title} of the nginx worker processes in a container's `top`."""
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


# --- the balancer's image ---
LB_IMAGE = ServiceImage(
    folder="lb",
    files={"Dockerfile": "dockerfile"},
    repository=LB_REPOSITORY,
    role=ROLE_LB_IMAGE,
    noun="load balancer image",
    software="nginx",
    package="nginx",
)


def ensure_lb_image(client: Any, base_image: str, *, on_event: OnEvent) -> str:
    """The balancer image (nginx on the base image), built once per machine; returns its tag."""
    return ensure_service_image(
        client, base_image, LB_IMAGE, on_event=on_event, after_build=lambda tag: _prune_lb_images(client, keep=tag)
    )


def _prune_lb_images(client: Any, keep: str) -> None:
    """Older balancer images (another base image or Dockerfile) that no container uses."""
    import docker.errors

    used = {str(c.attrs.get("ImageID", "")) for c in client.containers.list(all=True, sparse=True)}
    for img in client.images.list(filters={"label": f"{L_ROLE}={ROLE_LB_IMAGE}"}):
        if keep in img.tags or img.id in used:
            continue
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(img.id)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


__all__ = ["Balancer", "create_network", "ensure_lb_image", "lb_port", "read_config", "workers"]
