"""Replicas (the AutoScaling group's instances): started, health-checked before the balancer may
take them, restarted by Docker only once they have passed, stopped and removed after the drain.

A replica that dies on start is not restarted: it keeps its exit status and output, which the
error shows. Once it passes the target group's health check, its restart policy becomes
`unless-stopped` (a crash or an engine restart brings it back).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pipeline.engines.docker_stack.database import replica_environment
from pipeline.engines.docker_stack.flag_store import environment as flag_store_environment
from pipeline.engines.docker_stack.labels import L_IMAGE, L_IMAGE_ID, L_PARAMETERS, L_SPEC, ROLE_REPLICA, StackId
from pipeline.engines.stack import OnEvent
from pipeline.engines.topology import Topology
from pipeline.errors import StackOperationError
from pipeline.faults import checkpoint
from pipeline.hashing import digest

HEALTH_INTERVAL = 0.1
"""Seconds between health checks of a starting replica (the template's interval is for AWS)."""
STOP_TIMEOUT = 10
WARM_MARK = "/tmp/.pipeline-warm"
"""Inside a warm replica: its timer stops it at the deadline while this file exists."""


class ReplicaFailed(Exception):
    """A replica did not pass its health check (it exited, or was not healthy in time)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True)
class Release:
    """What a stack's replicas run: an image, with the template's topology and parameters."""

    image: str
    """As the caller named it (a tag or an id)."""
    image_id: str
    topo: Topology

    @cached_property
    def spec(self) -> str:
        """Digest of what makes a replica what it is: replicas with another spec are replaced."""
        topo = self.topo
        launch = {name: topo.parameters.get(name, "") for name in topo.launch_parameters}
        what: dict[str, object] = {
            "image": self.image_id,
            "port": topo.target_port,
            "health_port": topo.health_port,
            "launch": launch,
        }
        if topo.flag_store is not None:  # the replicas are told where the store is
            what["flag_store"] = [topo.flag_store.replicas, topo.flag_store.port]
        return digest(what)[:16]

    @cached_property
    def parameters(self) -> dict[str, str]:
        """The template parameters the stack runs with (the image parameter is the image)."""
        return {k: v for k, v in self.topo.parameters.items() if k != self.topo.image_parameter}


def restart_with_engine(replicas: list[Any]) -> None:
    """Replicas that passed their health check are restarted by Docker from now on (after a crash
    or an engine restart); before it they are not, so one that dies on start stays dead, with its
    exit status. Idempotent: a re-run adopting a replica a killed run started sets it too."""
    for replica in replicas:
        if replica.attrs.get("HostConfig", {}).get("RestartPolicy", {}).get("Name") != "unless-stopped":
            replica.update(restart_policy={"Name": "unless-stopped"})


class Replicas:
    """One deployment's replicas of `release`: started in parallel and health-checked, stopped in
    the background (`finish` waits for those). `phase` names what replicas are started for
    (`create`, `batch-<n>`, ...) in the fault-injection checkpoints."""

    def __init__(
        self, client: Any, stack: StackId, release: Release, on_event: OnEvent, *, phase: str = "launch"
    ) -> None:
        self.client = client
        self.stack = stack
        self.release = release
        self.on_event = on_event
        self.phase = phase
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"deploy-{stack.name}")
        self._stops: list[Future[None]] = []

    @property
    def topo(self) -> Topology:
        return self.release.topo

    def launch(self, count: int) -> list[Any]:
        """Start `count` replicas and wait until each is healthy; on failure none is left running."""
        if count <= 0:
            return []
        futures = [self.pool.submit(self._start_one) for _ in range(count)]
        started = []
        errors = []
        for future in futures:
            try:
                started.append(future.result())
            except StackOperationError as exc:
                errors.append(exc)
        checks = {r.name: self.pool.submit(self.wait_healthy, r) for r in started}
        failure: ReplicaFailed | None = None
        for name, check in checks.items():
            try:
                check.result()
            except ReplicaFailed as exc:
                failure = failure or exc
                self.on_event(f"{name} is not healthy: {exc.reason}")
        if errors or failure is not None:
            for replica in started:
                with contextlib.suppress(Exception):
                    replica.remove(force=True, v=True)
            if errors:
                raise errors[0]
            assert failure is not None
            image = self.release.image
            raise StackOperationError(
                f"replica {failure.name} of image {image} did not become healthy: {failure.reason}",
                hint=f"the target group checks GET {self.topo.health_path} on port {self.topo.health_port}, "
                f"expecting {self.topo.health_codes}; run the image by hand to see why "
                f"(docker run --rm -p 127.0.0.1::{self.topo.target_port} {image})",
            )
        restart_with_engine(started)
        return started

    def _start_one(self) -> Any:
        import docker.errors

        name = f"{self.stack.name}-{secrets.token_hex(3)}"
        ports: dict[str, Any] = {f"{self.topo.target_port}/tcp": ("127.0.0.1", None)}
        if self.topo.health_port != self.topo.target_port:
            ports[f"{self.topo.health_port}/tcp"] = ("127.0.0.1", None)
        release = self.release
        labels = self.stack.labels(
            ROLE_REPLICA,
            **{
                L_IMAGE: release.image,
                L_IMAGE_ID: release.image_id,
                L_SPEC: release.spec,
                L_PARAMETERS: json.dumps(release.parameters, sort_keys=True),
            },
        )
        self.on_event(f"starting {name} ({release.image})")
        environment = {  # the stack's database and flag store, if it has them
            **replica_environment(self.client, self.stack),
            **flag_store_environment(self.stack, self.topo.flag_store),
        }
        try:
            container = self.client.containers.run(
                release.image_id,
                name=name,
                hostname=name,
                detach=True,
                network=self.stack.network,
                ports=ports,
                labels=labels,
                environment=environment,
                # not restarted until it has passed its health check (`restart_with_engine`):
                # a replica that dies on start keeps its exit status and output
                restart_policy={"Name": "no"},
                init=True,  # the image's server is not PID 1: SIGTERM stops it even without a handler
            )
        except docker.errors.DockerException as exc:
            raise StackOperationError(f"cannot start a replica of {release.image}: {exc}") from None
        checkpoint(f"local-stack:{self.stack.name}:{self.phase}:replica-started")
        return container

    def wait_healthy(self, replica: Any) -> None:
        """Until the replica passes the target group's health check (ReplicaFailed if it exits or
        is not healthy within the grace period)."""
        from pipeline.engines.http_check import request

        topo = self.topo
        started = time.monotonic()
        deadline = started + topo.grace_period
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
                raise ReplicaFailed(
                    replica.name,
                    what
                    + (f"; its last output:\n{logs}" if logs else "")
                    + '\n(an image baked by Packer\'s docker builder keeps ENTRYPOINT ["/bin/sh"] unless the '
                    "template's `changes` set one)",
                )
            if port is None:
                bindings = (replica.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(
                    f"{topo.health_port}/tcp"
                ) or []
                port = next((int(b["HostPort"]) for b in bindings if b.get("HostPort")), None)
            if port is not None:
                try:
                    status, _ = request(f"http://127.0.0.1:{port}{topo.health_path}", timeout=topo.health_timeout)
                except (OSError, ValueError) as exc:
                    successes, last = 0, str(exc) or type(exc).__name__
                except Exception as exc:  # http.client errors
                    successes, last = 0, f"{type(exc).__name__}: {exc}"
                else:
                    if topo.accepts(status):
                        successes += 1
                        if successes >= topo.healthy_threshold:
                            self.on_event(f"{replica.name} is healthy after {time.monotonic() - started:.1f} s")
                            return
                        continue
                    successes, last = 0, f"GET {topo.health_path} answered {status}"
            if time.monotonic() > deadline:
                raise ReplicaFailed(replica.name, f"not healthy within {topo.grace_period:g} s (last check: {last})")
            time.sleep(HEALTH_INTERVAL)

    def healthy_or_removed(self, replicas: list[Any]) -> list[Any]:
        """The replicas that pass their health check; the others are removed."""
        healthy = []
        for replica in replicas:
            try:
                self.wait_healthy(replica)
            except ReplicaFailed as exc:
                self.on_event(f"removing {replica.name}: {exc.reason}")
                replica.remove(force=True, v=True)
            else:
                healthy.append(replica)
        restart_with_engine(healthy)  # one a killed run started and left before it passed its check
        return healthy

    def restart(self, replicas: list[Any]) -> None:
        """Start stopped replicas again (a cutover going back) and wait until they are healthy."""
        for replica in replicas:
            with contextlib.suppress(Exception):
                replica.start()
        for replica in replicas:
            with contextlib.suppress(ReplicaFailed):
                self.wait_healthy(replica)

    def stop_now(self, replicas: list[Any]) -> None:
        """Stop these replicas together (they are kept: a cutover may start them again)."""
        stops = [self.pool.submit(r.stop, timeout=STOP_TIMEOUT) for r in replicas]
        for stop in stops:
            with contextlib.suppress(Exception):
                stop.result()

    def stop_later(self, replica: Any, *, graceful: bool = True) -> None:
        """Stop (gracefully: SIGTERM, then the timeout) and remove the replica in the background."""

        def stop() -> None:
            import docker.errors

            with contextlib.suppress(docker.errors.NotFound):
                if graceful:
                    replica.stop(timeout=STOP_TIMEOUT)
                replica.remove(force=True, v=True)

        self._stops.append(self.pool.submit(stop))

    def finish_stops(self) -> None:
        """Wait for the replicas being stopped in the background."""
        for future in self._stops:
            try:
                future.result()
            except Exception as exc:  # best effort: a later deploy or delete removes it by label
                self.on_event(f"could not remove a replaced replica: {exc}")
        self._stops = []

    def close(self) -> None:
        self.finish_stops()
        self.pool.shutdown(wait=True)

    # --- a warm set (blue-green, the last canary step) ---
    def keep_warm(self, replicas: list[Any], until: float) -> None:
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

    def wake(self, replicas: list[Any]) -> None:
        """Back in service: cancel a warm replica's timer and restart it with the host again."""
        for replica in replicas:
            with contextlib.suppress(Exception):
                replica.exec_run(["/bin/rm", "-f", WARM_MARK])
            with contextlib.suppress(Exception):
                replica.update(restart_policy={"Name": "unless-stopped"})


__all__ = ["Release", "ReplicaFailed", "Replicas", "restart_with_engine"]
