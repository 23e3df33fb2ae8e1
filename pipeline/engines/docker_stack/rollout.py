"""The strategies' rollouts, each a function of a Deployment (see docs/strategies.md):

- rolling, pilot, half: replace replicas in batches (the template's UpdatePolicy), never routing to
  one that is not healthy; an observation window after the batches the strategy names;
- canary: new replicas beside the old set, the traffic shifted by balancer weights step by step
  (a sticky canary splits users instead, by a cookie: shaping.py);
- blue-green: a full second set, then one switch; the old set stays warm for a switch back;
- cutover: stop the old set, then start the new one (downtime, measured).

Each step that routes new replicas ends in an observation window; a breach rolls back through the
Deployment's ways back. The fault-injection checkpoints keep their `local-stack:` names.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from pipeline.engines.docker_stack.balancer_config import canary_weights, servers
from pipeline.engines.docker_stack.deployment import Deployment
from pipeline.engines.docker_stack.labels import running
from pipeline.engines.docker_stack.shaping import Shaping
from pipeline.engines.docker_stack.windows import Breached
from pipeline.engines.topology import Topology
from pipeline.errors import StackOperationError
from pipeline.faults import checkpoint
from pipeline.strategy import BlueGreen, Canary, Half, Pilot, Rolling, Strategy

WARM_MARGIN = 5.0
"""An old set kept warm for an observation window stays this much longer (crash-safe deadline)."""


class BatchFailed(Exception):
    """A batch of new replicas never became healthy after earlier batches were switched: the plan
    rolls the whole stack back to the old release (internal)."""

    def __init__(self, error: StackOperationError) -> None:
        super().__init__(str(error))
        self.error = error


# --- rolling, pilot, half ---
def batches(strategy: Strategy, topo: Topology) -> tuple[int, int, list[int]]:
    """(batch size, minimum in service, sizes of the first batches) for rolling, pilot, half."""
    desired = topo.desired
    min_in = topo.min_in_service
    if isinstance(strategy, Rolling):
        batch = strategy.batch_size or (desired if topo.replacing else topo.max_batch)
        if strategy.min_in_service is not None:
            min_in = strategy.min_in_service
        return batch, min_in, []
    if isinstance(strategy, Pilot):
        return max(1, desired - 1), min_in, [1]
    if isinstance(strategy, Half):
        return max(1, desired - desired // 2), min_in, [max(1, desired // 2)]
    return desired, min_in, []


def _observe_after(strategy: Strategy, batch: int) -> bool:
    """Whether to observe after batch `batch` (1-based), when old replicas still serve."""
    if isinstance(strategy, Pilot | Half):
        return batch == 1
    return True


def rolling(d: Deployment, lb: Any, good: list[Any], old: list[Any]) -> None:
    """Batches: start new replicas (within MaxSize), route to them, drain and stop old ones."""
    topo = d.topo
    size, min_in_service, first = batches(d.strategy, topo)
    started: list[Any] = []
    previous = old[0] if old else None
    count = 0
    while True:
        need = topo.desired - len(good)
        if need <= 0 and not old:
            break
        step_started = time.monotonic()
        planned = first[count] if count < len(first) else size
        if need > 0:
            batch = min(planned, need)
            replacing = topo.replacing and isinstance(d.strategy, Rolling)
            room = batch if replacing else topo.max_size - len(good) - len(old)
            surge = min(batch, room)
            if surge <= 0:  # MaxSize reached: take old ones out first, keeping MinInstancesInService
                take = min(batch, len(old), len(good) + len(old) - min_in_service)
                if take <= 0:
                    raise StackOperationError(
                        f"cannot update {d.name}: MaxSize {topo.max_size} leaves no room for a new "
                        f"replica and MinInstancesInService {min_in_service} forbids removing one first",
                        hint=f"raise MaxSize or lower MinInstancesInService of {topo.group} in the template",
                    )
                retire, old = old[:take], old[take:]
                d.route(lb, good + old, retire=retire)
                continue
            d.replicas.phase = f"batch-{count + 1}"
            try:
                new = d.replicas.launch(surge)
            except StackOperationError as exc:
                if not started or previous is None:
                    raise StackOperationError(
                        f"update of {d.name} to {d.image} failed, nothing was switched: {exc}", hint=exc.hint
                    ) from None
                raise BatchFailed(exc) from None
            count += 1
            checkpoint(f"local-stack:{d.name}:batch-{count}:launched", f"local-stack:batch-{count}:launched")
            started += new
            good += new
            d.windows.assign(new, new=True)
            excess = max(0, len(good) + len(old) - topo.desired)
            retire, old = old[:excess], old[excess:]
        else:
            retire = list(old) if topo.replacing else old[:planned]
            old = old[len(retire) :]
        d.route(lb, good + old, retire=retire)
        d.windows.expose()
        checkpoint(f"local-stack:{d.name}:batch-{count}:routed", f"local-stack:batch-{count}:routed")
        _after_batch(d, lb, count, good, old, step_started)
    extra = good[topo.desired :]
    if extra:
        d.route(lb, good[: topo.desired], retire=extra)


def _after_batch(d: Deployment, lb: Any, batch: int, good: list[Any], old: list[Any], started: float) -> None:
    """Record the batch as a step; observe it (if the strategy says so) while old replicas
    still serve, and always after the first batch (a single replica's pilot has no second),
    rolling back on a breach."""
    share = len(good) / max(1, len(good) + len(old))
    what = f"{d.kind} batch {batch}: {len(good)} of {len(good) + len(old)} replicas on the new version"
    if not (old or batch == 1) or not _observe_after(d.strategy, batch):
        d.windows.record(what, share, started)
        return
    try:
        d.windows.window(what, share, started)
    except Breached as breach:
        d.breach(lb, breach, bad=list(good), keep=list(old))


# --- canary ---
def canary(d: Deployment, lb: Any, good: list[Any], old: list[Any], strategy: Canary) -> None:
    """New replicas beside the old set, the traffic shifted by balancer weights step by step
    (an observation window each); at 100% the old set stays warm until the last window passes."""
    desired = d.topo.desired
    new = list(good)
    for percent in strategy.steps:
        step_started = time.monotonic()
        want = desired if percent == 100 else min(desired, max(1, math.ceil(desired * percent / 100)))
        if len(new) < want:
            d.replicas.phase = f"canary-{percent}"
            try:
                fresh = d.replicas.launch(want - len(new))
            except StackOperationError as exc:
                d.abandon(lb, exc, new, old)
            new += fresh
            d.windows.assign(fresh, new=True)
        if percent < 100 and strategy.sticky:
            what = f"sticky canary {percent}% of the users: {len(new)} new replica(s) beside {len(old)} old"
            d.on_event(f"{what}: splitting users by their cookie")
            d.balancer.shaping = sticky_split(d, new, percent)
            d.route(lb, new + old, retire=[])
            d.on_event(f"{what}: each user stays on one version")
        elif percent < 100:
            weights = canary_weights([r.name for r in new], [r.name for r in old], percent)
            d.route(lb, new + old, retire=[], weights=weights)
            what = f"canary {percent}%: {len(new)} new replica(s) beside {len(old)} old"
            d.on_event(f"{what} (weights {_describe_weights(weights, new, old)})")
        else:
            until = time.time() + strategy.observe_seconds + WARM_MARGIN
            d.on_event(f"canary 100%: routing every request to {len(new)} new replica(s)")
            d.balancer.warm = (tuple(r.name for r in old), until)
            d.balancer.shaping = None
            d.route(lb, new, retire=[])
            d.replicas.keep_warm(old, until)
            what = f"canary 100%: {len(new)} new replica(s) take all the traffic, the old set stays warm"
            d.on_event(what)
        d.windows.expose()
        checkpoint(f"local-stack:{d.name}:canary-{percent}:routed")
        try:
            d.windows.window(what, percent / 100, step_started, seconds=strategy.observe_seconds)
        except Breached as breach:
            d.breach(lb, breach, bad=new, keep=old)
    d.balancer.warm = None
    d.route(lb, new, retire=old)


def sticky_split(d: Deployment, new: list[Any], percent: int) -> Shaping:
    """A sticky canary's split: `percent` % of the users (by the balancer's cookie) on `new`,
    drawn afresh for each release (the salt is the new image's id) but the same at every step."""
    salt = d.release.image_id.rsplit(":", 1)[-1][:12]
    return Shaping(new=tuple(r.name for r in new), percent=percent, salt=salt)


def _describe_weights(weights: Mapping[str, int], new: list[Any], old: list[Any]) -> str:
    if not new or not old:
        return "none"
    return f"{weights.get(new[0].name, 1)} per new replica, {weights.get(old[0].name, 1)} per old one"


# --- blue-green ---
def blue_green(d: Deployment, lb: Any, good: list[Any], old: list[Any], strategy: BlueGreen) -> None:
    """A full second (green) set, then one switch; the old (blue) set stays warm, unrouted,
    for keep_old_seconds (at least through the observation window) for an instant switch back."""
    step_started = time.monotonic()
    green = list(good)
    if len(green) < d.topo.desired:
        d.replicas.phase = "green"
        try:
            fresh = d.replicas.launch(d.topo.desired - len(green))
        except StackOperationError as exc:
            d.abandon(lb, exc, green, old)
        green += fresh
        d.windows.assign(fresh, new=True)
    checkpoint(f"local-stack:{d.name}:green:launched")
    switched = time.time()
    until = switched + max(strategy.keep_old_seconds, strategy.observe_seconds + WARM_MARGIN)
    d.balancer.warm = (tuple(r.name for r in old), until)
    d.route(lb, green, retire=[])
    d.windows.expose()
    checkpoint(f"local-stack:{d.name}:green:switched")
    what = f"blue-green: the balancer switched to {len(green)} new replica(s)"
    d.on_event(f"{what}; the old set stays warm until {_clock(until)}")
    try:
        d.windows.window(what, 1.0, step_started, seconds=strategy.observe_seconds)
    except Breached as breach:
        d.breach(lb, breach, bad=green, keep=old)
    if time.time() >= switched + strategy.keep_old_seconds:
        d.balancer.warm = None
        d.route(lb, green, retire=old)
        return
    d.replicas.keep_warm(old, until)


def switch_back(d: Deployment, lb: Any, warm: list[Any], current: list[Any]) -> bool:
    """The image asked for is the warm set's (a rollback soon after a blue-green switch): route
    to it again at once. False when it is not healthy any more (then deploy as usual)."""
    ready = d.replicas.healthy_or_removed(warm)
    if len(ready) < len(warm):
        return False
    d.kind = "switch-back"
    step_started = time.monotonic()
    routed = set(servers(d.balancer.config_text or ""))
    d.previous = next((r for r in current if r.name in routed and running(r)), None)
    d.on_event(f"switching {d.name} back to its warm set of {d.image}: {', '.join(r.name for r in ready)}")
    d.replicas.wake(ready)
    d.balancer.warm = None
    d.route(lb, ready, retire=[r for r in current if running(r)])
    d.windows.record("switch back to the warm set", 1.0, step_started)
    if len(ready) != d.topo.desired:
        rolling(d, lb, ready[: d.topo.desired], [])
    return True


def drop_warm(d: Deployment, warm: list[Any], why: str) -> None:
    """Remove a warm set (the next configuration written drops its line)."""
    d.on_event(f"removing the warm set {', '.join(r.name for r in warm)} ({why})")
    d.balancer.warm = None
    for replica in warm:
        d.replicas.stop_later(replica, graceful=False)


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


# --- cutover ---
def cutover(d: Deployment, lb: Any, good: list[Any], old: list[Any]) -> None:
    """Stop the old replicas, then start the new ones: the service is down in between (the
    downtime is measured: from the stop until the new version answers through the balancer)."""
    step_started = time.monotonic()
    d.on_event(f"cutover: stopping {len(old)} old replica(s); {d.name} is down until the new ones answer")
    down = time.monotonic()
    d.replicas.stop_now(old)
    checkpoint(f"local-stack:{d.name}:cutover:stopped")
    d.replicas.phase = "cutover"
    try:
        new = list(good) + d.replicas.launch(d.topo.desired - len(good))
    except StackOperationError as exc:
        d.restart_old(old)
        d.route(lb, old, retire=[], force=True)
        raise StackOperationError(
            f"update of {d.name} to {d.image} failed; the old replicas were started again: {exc}",
            hint=exc.hint,
        ) from None
    d.windows.assign(new, new=True)
    d.route(lb, new, retire=[])
    d.balancer.wait_ready(lb)
    d.downtime = time.monotonic() - down
    d.windows.expose()
    d.on_event(f"cutover: {len(new)} new replica(s) answer; downtime {d.downtime:.2f} s")
    checkpoint(f"local-stack:{d.name}:cutover:routed")
    try:
        d.windows.window(f"cutover: {len(new)} new replica(s) take all the traffic", 1.0, step_started)
    except Breached as breach:
        d.breach(lb, breach, bad=new, keep=old, restart=True)
    for replica in old:
        d.replicas.stop_later(replica, graceful=False)


__all__ = ["BatchFailed", "blue_green", "canary", "cutover", "drop_warm", "rolling", "sticky_split", "switch_back"]
