"""One deployment of a release onto a stack: its parts (replicas, balancer, observation windows),
what it tells the report, and the ways back to the old version that every strategy shares.

The strategies (rollout.py) and the plan (converge.py) drive a Deployment; it holds no plan of
its own.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from pipeline.engines.deploy_report import DeployReport
from pipeline.engines.docker_stack.balancer import Balancer, lb_port
from pipeline.engines.docker_stack.labels import L_IMAGE, L_IMAGE_ID, L_PARAMETERS, StackId, json_labels, running
from pipeline.engines.docker_stack.replicas import Release, Replicas
from pipeline.engines.docker_stack.windows import Breached, Windows
from pipeline.engines.stack import OnEvent
from pipeline.engines.topology import Topology
from pipeline.errors import StackOperationError
from pipeline.strategy import Health, Rolling, Strategy

TopologyOf = Callable[[Mapping[str, str] | None], Topology]
"""The template's topology with these parameters (the engine's `topology`)."""


class Deployment:
    """One convergence of a stack toward a release: create, roll, scale, or nothing at all."""

    def __init__(
        self,
        client: Any,
        stack: StackId,
        release: Release,
        *,
        lb_image: str,
        on_event: OnEvent,
        topology: TopologyOf,
        strategy: Strategy | None = None,
        health: Health | None = None,
        lb_files: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.stack = stack
        self.release = release
        self.lb_image = lb_image
        self.on_event = on_event
        self.topology = topology
        self.strategy: Strategy = strategy if strategy is not None else Rolling()
        self.replicas = Replicas(client, stack, release, on_event)
        self.balancer = Balancer(client, stack, release.topo, release.parameters, on_event)
        self.balancer.files = dict(lb_files or {})
        self.balancer.alert = bool(lb_files)
        self.windows = Windows(self.strategy, health, on_event)
        self.handed_over = False
        """A rollback deployment took over the balancer (after a replica failed): hands off."""
        # What the report says.
        self.started = time.monotonic()
        self.kind: str = self.strategy.kind
        self.downtime: float | None = None
        self.previous: Any = None
        """A replica of the old version (its labels say which image to go back to)."""
        self.old_parameters: dict[str, str] = {}

    @property
    def topo(self) -> Topology:
        return self.release.topo

    @property
    def image(self) -> str:
        return self.release.image

    @property
    def name(self) -> str:
        """The stack's name."""
        return self.stack.name

    def again(self, release: Release) -> Deployment:
        """A deployment of another release onto the same stack (a rollback's), with the default strategy."""
        return Deployment(
            self.client,
            self.stack,
            release,
            lb_image=self.lb_image,
            on_event=self.on_event,
            topology=self.topology,
            lb_files=self.balancer.files,
        )

    def close(self) -> None:
        """Wait for the replicas being stopped, and free the threads."""
        self.replicas.close()

    def route(
        self,
        lb: Any,
        serving: list[Any],
        *,
        retire: list[Any],
        weights: Mapping[str, int] | None = None,
        force: bool = False,
    ) -> None:
        """Point the balancer at `serving` (with `weights`, else evenly), reload gracefully,
        drain, then stop `retire`. `force`: reload even if the file is the same."""
        self.balancer.route(lb, serving, weights=weights, force=force)
        for replica in retire:
            self.on_event(f"drained {replica.name}: stopping it")
            self.replicas.stop_later(replica)

    # --- health signals ---
    def begin(self, lb: Any, good: list[Any], old: list[Any]) -> None:
        """Before the first change: the balancer logs which replica answers each request (the
        report's numbers), and, when the strategy observes, a probe sends steady load and the old
        version's numbers are taken as the baseline."""
        self.balancer.stable = [r.name for r in old]
        windows = self.windows
        if not windows.open_log(lb, self.topo.target_port, self.stack.network):
            return
        windows.assign(old, new=False)
        windows.assign(good, new=True)
        self.balancer.log = True
        self.route(lb, good + old, retire=[], weights=self.balancer.weights)
        self.on_event(f"{lb.name} logs which replica answers each request (the deployment's health signals)")
        if windows.observing:
            windows.take_baseline(f"http://127.0.0.1:{lb_port(lb)}/")

    def end(self, lb: Any) -> None:
        """After the last change (or a rollback): stop the probe, read the last numbers, and stop
        logging (one more graceful reload). Safe to call twice."""
        self.windows.close()
        self.balancer.stable = None
        if self.balancer.log and not self.handed_over:
            self.balancer.log = False
            try:
                self.route(lb, self.balancer.serving, retire=[], weights=self.balancer.weights)
            except StackOperationError as exc:  # the routing is right; only the log stays on
                self.on_event(f"could not switch the balancer's request log off: {exc}")

    def report(self, *, breach: str = "", detected: float | None = None, restored: float | None = None) -> DeployReport:
        new, old, served = self.windows.numbers()
        previous = None
        if self.previous is not None:
            previous = str(self.previous.labels.get(L_IMAGE) or self.previous.labels.get(L_IMAGE_ID) or "") or None
        exposed = self.windows.exposed
        return DeployReport(
            strategy=self.kind,
            image=self.image,
            previous_image=previous,
            steps=tuple(self.windows.steps),
            new=new,
            old=old,
            served=served,
            seconds=time.monotonic() - self.started,
            downtime_seconds=self.downtime,
            rolled_back=bool(breach),
            breach=breach,
            time_to_detect=(detected - exposed) if detected is not None and exposed is not None else None,
            time_to_restore=(restored - detected) if restored is not None and detected is not None else None,
        )

    # --- the ways back ---
    def previous_image(self) -> str:
        if self.previous is None:
            return "the old version"
        return str(self.previous.labels.get(L_IMAGE) or self.previous.labels.get(L_IMAGE_ID))

    def previous_release(self) -> Release:
        """The old version: its image and the parameters it ran with."""
        previous = self.previous
        topo = self.topology(self.old_parameters or json_labels(previous.labels.get(L_PARAMETERS)))
        return Release(self.previous_image(), str(previous.labels.get(L_IMAGE_ID)), topo)

    def breach(self, lb: Any, error: Breached, *, bad: list[Any], keep: list[Any], restart: bool = False) -> NoReturn:
        """Roll back after a breach: route to the old version's replicas still running (`keep`: at
        once; `restart`: they are stopped, start them first), or start old ones again; then the new
        replicas go. Raises Breached again with the times of detection and restore."""
        detected = time.monotonic()
        previous = self.previous_image()
        self.on_event(f"health breach at {error.what}: {error.reason}")
        self.on_event(f"rolling {self.name} back to {previous}")
        if restart:
            self.restart_old(keep)
        restored = self.restore(lb, bad=bad, keep=keep)
        self.on_event(f"{self.name} is back on {previous} ({restored - detected:.2f} s after the breach)")
        raise Breached(error.what, error.reason, detected, restored) from None

    def restore(self, lb: Any, *, bad: list[Any], keep: list[Any]) -> float:
        """Route to the old version only; returns time.monotonic() when the balancer does."""
        alive = []
        for replica in keep:
            with contextlib.suppress(Exception):
                replica.reload()
            if running(replica):
                alive.append(replica)
        self.balancer.warm = None
        self.balancer.weights = {}
        self.balancer.shaping = None
        if alive:
            self.replicas.wake(alive)
            self.route(lb, alive, retire=bad)
            restored = time.monotonic()
            if len(alive) < self.topo.desired:
                more = self.relaunch_old(self.topo.desired - len(alive))
                self.route(lb, alive + more, retire=[])
            return restored
        more = self.relaunch_old(self.topo.desired)
        self.route(lb, more, retire=bad)
        return time.monotonic()

    def relaunch_old(self, count: int) -> list[Any]:
        """Start `count` replicas of the old image (with the old parameters), healthy."""
        if self.previous is None or count <= 0:
            return []
        back = Replicas(self.client, self.stack, self.previous_release(), self.on_event, phase="restore")
        try:
            started = back.launch(count)
        finally:
            back.pool.shutdown(wait=True)
        self.windows.assign(started, new=False)
        return started

    def restart_old(self, replicas: list[Any]) -> None:
        """Start stopped old replicas again (a cutover going back) and wait until they are healthy."""
        self.replicas.restart(replicas)
        if self.windows.log is not None:
            for replica in replicas:
                with contextlib.suppress(Exception):
                    replica.reload()
            self.windows.assign(replicas, new=False)

    def abandon(self, lb: Any, error: StackOperationError, new: list[Any], old: list[Any]) -> NoReturn:
        """A new replica never became healthy while the old set still runs (canary, blue-green):
        route to the old set only (if the new one had traffic), remove the new replicas, report."""
        routed = {r.name for r in self.balancer.serving}
        if any(r.name in routed for r in new):
            self.restore(lb, bad=new, keep=old)
        else:
            for replica in new:
                self.replicas.stop_later(replica, graceful=False)
        raise StackOperationError(
            f"update of {self.name} to {self.image} failed; {self.previous_image()} serves as before: {error}",
            hint=error.hint,
        ) from None


__all__ = ["Deployment", "TopologyOf"]
