"""The rollouts that shape traffic at the balancer beyond weights (see docs/strategies.md):

- dark launch: a full set of new replicas gets a mirror of every request (the balancer throws their
  answers away) and is judged on them before any user reaches it; then its `then` strategy
  (canary, blue-green, phased) routes users to that set;
- phased: the new version for groups of users first (a header or a cookie), one more group per
  phase, then everyone; the groups' requests are counted apart and each group is judged on its
  own as well as the new version as a whole.

A breach rolls back through the Deployment's ways back, as for every strategy: the mirror and the
groups go with the next routing (only the old set serves). The fault-injection checkpoints are
`local-stack:<stack>:dark:mirrored` and `local-stack:<stack>:phase-<n>:routed`.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

from pipeline.engines.docker_stack import rollout
from pipeline.engines.docker_stack.deployment import Deployment
from pipeline.engines.docker_stack.shaping import Shaping
from pipeline.engines.docker_stack.windows import Breached
from pipeline.errors import StackOperationError
from pipeline.faults import checkpoint
from pipeline.strategy import BlueGreen, Canary, DarkLaunch, Phased


def dark_launch(d: Deployment, lb: Any, good: list[Any], old: list[Any], strategy: DarkLaunch) -> None:
    """A full set of new replicas beside the old one, mirrored to and judged, unseen by users;
    then the `then` strategy routes users to it. `good` is empty: converge takes routed new
    replicas an interrupted run left out of the balancer first (a dark launch starts over)."""
    good = _mirrored(d, lb, old, strategy)
    then = strategy.then
    if isinstance(then, Canary):
        rollout.canary(d, lb, good, old, then)
    elif isinstance(then, BlueGreen):
        rollout.blue_green(d, lb, good, old, then)
    else:
        phased(d, lb, good, old, then)


def _mirrored(d: Deployment, lb: Any, old: list[Any], strategy: DarkLaunch) -> list[Any]:
    """The dark window: start the dark set, mirror every request to it, judge its answers."""
    step_started = time.monotonic()
    d.replicas.phase = "dark"
    try:
        dark = d.replicas.launch(d.topo.desired)
    except StackOperationError as exc:
        d.abandon(lb, exc, [], old)
    d.windows.assign(dark, new=True)
    d.windows.watch_mirror()
    methods = ", ".join(strategy.mirror_methods)
    what = f"dark launch: {len(dark)} new replica(s) get a copy of each {methods} request, answering nobody"
    d.on_event(f"{what}: mirroring")
    d.balancer.shaping = Shaping(mirror=tuple(r.name for r in dark), mirror_methods=strategy.mirror_methods)
    d.route(lb, old, retire=[], weights=d.balancer.weights)
    d.windows.expose()
    d.on_event(f"{d.stack.balancer} mirrors to {', '.join(r.name for r in dark)}")
    checkpoint(f"local-stack:{d.name}:dark:mirrored")
    try:
        d.windows.window(what, 0.0, step_started, seconds=strategy.observe_seconds)
    except Breached as breach:
        d.breach(lb, breach, bad=dark, keep=old)
    d.balancer.shaping = None  # the next routing (the `then` strategy's first step) ends the mirror
    return dark


def phased(d: Deployment, lb: Any, good: list[Any], old: list[Any], strategy: Phased) -> None:
    """Groups first, one more per phase, on half the fleet's worth of new replicas (at least one);
    then everyone, on a full set, the old set warm until the last window passes."""
    desired = d.topo.desired
    new = list(good)
    d.windows.watch_groups()
    for index in range(1, len(strategy.groups) + 1):
        step_started = time.monotonic()
        want = max(1, math.ceil(desired / 2))
        if len(new) < want:
            new += _launch(d, lb, f"phase-{index}", want - len(new), new, old)
        routed = strategy.groups[:index]
        names = ", ".join(g.name for g in routed)
        what = f"phase {index}: {names} on {len(new)} new replica(s), everyone else on {len(old)} old"
        d.on_event(f"{what}: routing")
        d.balancer.shaping = Shaping(
            new=tuple(r.name for r in new), groups=strategy.groups, routed=tuple(g.name for g in routed)
        )
        d.route(lb, new + old, retire=[])
        d.on_event(f"{what}: routed")
        d.windows.probe_groups(routed)
        d.windows.expose()
        checkpoint(f"local-stack:{d.name}:phase-{index}:routed")
        try:
            d.windows.window(what, 0.0, step_started, seconds=strategy.observe_seconds, groups=routed)
        except Breached as breach:
            d.breach(lb, breach, bad=new, keep=old)
        _measured_share(d)
    step_started = time.monotonic()
    if len(new) < desired:
        new += _launch(d, lb, "everyone", desired - len(new), new, old)
    until = time.time() + strategy.observe_seconds + rollout.WARM_MARGIN
    what = f"phase {len(strategy.groups) + 1}: everyone on {len(new)} new replica(s), the old set stays warm"
    d.on_event(f"{what}: routing")
    d.balancer.shaping = None
    d.windows.probe_groups(())
    d.balancer.warm = (tuple(r.name for r in old), until)
    d.route(lb, new, retire=[])
    d.replicas.keep_warm(old, until)
    d.on_event(f"{what}: routed")
    checkpoint(f"local-stack:{d.name}:phase-everyone:routed")
    try:
        d.windows.window(what, 1.0, step_started, seconds=strategy.observe_seconds)
    except Breached as breach:
        d.breach(lb, breach, bad=new, keep=old)
    d.balancer.warm = None
    d.route(lb, new, retire=old)


def _launch(d: Deployment, lb: Any, phase: str, count: int, new: list[Any], old: list[Any]) -> list[Any]:
    d.replicas.phase = phase
    try:
        fresh = d.replicas.launch(count)
    except StackOperationError as exc:
        d.abandon(lb, exc, new, old)
    d.windows.assign(fresh, new=True)
    return fresh


def _measured_share(d: Deployment) -> None:
    """A group phase's share of the traffic is what its groups sent: the window's numbers say."""
    steps = d.windows.steps
    if steps:
        step = steps[-1]
        total = step.new.requests + step.old.requests
        steps[-1] = replace(step, new_share=step.new.requests / total if total else 0.0)


__all__ = ["dark_launch", "phased"]
