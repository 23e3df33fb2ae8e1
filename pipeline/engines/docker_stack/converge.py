"""The plan of a deploy: from what the engine finds by label, bring the stack to the release.

- Nothing serves yet: bring up all replicas at once, then the balancer (a creation).
- The balancer serves: tidy what an interrupted update left, then nothing to do, a scale change,
  a switch back to a warm set, or the strategy's rollout (rollout.py). A health breach rolls back
  and raises HealthBreachError; a batch that never became healthy after others were switched
  rolls the stack back to the old release and raises StackOperationError.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.engines.deploy_report import DeployReport
from pipeline.engines.docker_stack import rollout, shaped_rollout
from pipeline.engines.docker_stack.balancer import create_network
from pipeline.engines.docker_stack.balancer_config import config_parameters, servers, warm_set
from pipeline.engines.docker_stack.deployment import Deployment
from pipeline.engines.docker_stack.labels import L_LISTEN, L_SPEC, Observed, observe, running
from pipeline.engines.docker_stack.shaping import mirror_set
from pipeline.engines.docker_stack.windows import Breached, breach_message
from pipeline.errors import HealthBreachError, StackOperationError
from pipeline.faults import checkpoint
from pipeline.strategy import BlueGreen, Canary, Cutover, DarkLaunch, Phased, Strategy


def converge(d: Deployment) -> DeployReport:
    """Run the deployment `d`; returns its report (see the module docstring)."""
    try:
        observed = observe(d.client, d.stack)
        network = observed.network or create_network(d.client, d.stack, d.on_event)
        _remove_strays(d, observed)
        lb = observed.lb
        if lb is not None and lb.labels.get(L_LISTEN) != str(d.topo.listener_port):
            d.on_event(
                f"the template's listener port changed to {d.topo.listener_port}: replacing the load "
                "balancer (requests fail while it restarts)"
            )
            lb.remove(force=True)
            lb = None
        if lb is not None and running(lb):
            _roll(d, lb, observed.replicas)
        else:
            d.kind = "create"
            _create(d, network, lb, observed.replicas)
        return d.report()
    finally:
        d.close()


def _remove_strays(d: Deployment, observed: Observed) -> None:
    for container in observed.strays:
        d.on_event(f"removing {container.name} (unknown role)")
        container.remove(force=True, v=True)


def _create(d: Deployment, network: Any, lb: Any, replicas: list[Any]) -> None:
    """No balancer serves yet: bring up all replicas at once, then the balancer."""
    spec = d.release.spec
    good = [r for r in replicas if running(r) and r.labels.get(L_SPEC) == spec][: d.topo.desired]
    for replica in replicas:
        if replica not in good:
            d.on_event(f"removing {replica.name}")
            replica.remove(force=True, v=True)
    checked = d.replicas.healthy_or_removed(good)
    d.replicas.phase = "create"
    new = d.replicas.launch(d.topo.desired - len(checked))
    checkpoint(f"local-stack:{d.name}:create:launched", "local-stack:create:launched")
    names = [r.name for r in checked + new]
    if lb is None:
        lb = d.balancer.create(network, names, image=d.lb_image)
    else:
        d.balancer.write(lb, names)
        d.on_event(f"starting {lb.name}")
        lb.start()
        lb.reload()
    d.balancer.wait_ready(lb)


def _roll(d: Deployment, lb: Any, replicas: list[Any]) -> None:
    """The balancer serves: move to the new image as the strategy says, never routing to a
    replica that is not healthy."""
    config = d.balancer.load(lb)
    d.old_parameters = config_parameters(config)
    replicas = _drop_dark_set(d, config, replicas)
    names, until = warm_set(config)
    spec = d.release.spec
    warm = [r for r in replicas if r.name in names and running(r)]
    replicas = [r for r in replicas if r not in warm]
    d.balancer.warm = (tuple(r.name for r in warm), until) if warm else None
    if warm and until > time.time() and all(r.labels.get(L_SPEC) == spec for r in warm):
        if rollout.switch_back(d, lb, warm, replicas):
            return
        rollout.drop_warm(d, warm, "it is not healthy any more")
        warm = []
    good, old = _settle(d, lb, replicas)
    if warm and (old or until <= time.time()):
        rollout.drop_warm(d, warm, "its time is up" if until <= time.time() else "another version replaces the stack")
    if not good and not old:  # nothing left to route to: start over like a creation
        d.kind = "create"
        d.route(lb, d.replicas.launch(d.topo.desired), retire=[])
        return
    if not old and len(good) == d.topo.desired:
        d.kind = "none"
        d.route(lb, good, retire=[])  # the parameters line may change (e.g. MaxSize)
        d.on_event(f"{d.name} already runs {d.image} on {len(good)} replicas: nothing to do")
        return
    if not old:  # only a scale change
        d.kind = "scale"
        rollout.rolling(d, lb, good, old)
        return
    d.previous = old[0]
    if good and _shapes_users(d.strategy):
        good = _start_over(d, lb, good, old)
    d.begin(lb, good, old)
    try:
        _carry_out(d, lb, good, old)
    except Breached as breach:
        d.end(lb)
        report = d.report(breach=breach.reason, detected=breach.detected, restored=breach.restored)
        raise HealthBreachError(
            breach_message(d.name, breach.what, report),
            report=report,
            hint=f"{d.name} runs {report.previous_image} again; fix the release (or, if the thresholds are "
            "too strict for this service, relax the stage's health=Health(...))",
        ) from None
    except rollout.BatchFailed as failed:
        _roll_back(d, lb, failed.error)
    finally:
        d.end(lb)


def _carry_out(d: Deployment, lb: Any, good: list[Any], old: list[Any]) -> None:
    """The strategy's rollout, from routed `good` (new) and `old` replicas."""
    strategy = d.strategy
    if isinstance(strategy, DarkLaunch):
        shaped_rollout.dark_launch(d, lb, good, old, strategy)
    elif isinstance(strategy, Phased):
        shaped_rollout.phased(d, lb, good, old, strategy)
    elif isinstance(strategy, Canary):
        rollout.canary(d, lb, good, old, strategy)
    elif isinstance(strategy, BlueGreen):
        rollout.blue_green(d, lb, good, old, strategy)
    elif isinstance(strategy, Cutover):
        rollout.cutover(d, lb, good, old)
    else:
        batch, min_in, _ = rollout.batches(strategy, d.topo)
        d.on_event(
            f"{strategy.kind}: moving {len(old)} replica(s) of {d.name} to {d.image} "
            f"(batches of {batch}, at least {min_in} in service)"
        )
        rollout.rolling(d, lb, good, old)


def _drop_dark_set(d: Deployment, config: str, replicas: list[Any]) -> list[Any]:
    """A dark set an interrupted dark launch left (the configuration mirrors to it) never answered
    a user and was never judged to the end: it goes, and this deploy starts afresh."""
    names = set(mirror_set(config))
    dark = [r for r in replicas if r.name in names]
    if dark:
        d.on_event(f"removing the dark set an interrupted dark launch left: {', '.join(r.name for r in dark)}")
        for replica in dark:
            d.replicas.stop_later(replica, graceful=False)
    return [r for r in replicas if r.name not in names]


def _shapes_users(strategy: Strategy) -> bool:
    """Whether the strategy promises which users reach the new version when (a dark launch: none
    before its window; a phased rollout: each group only in its phase; a sticky canary)."""
    return isinstance(strategy, DarkLaunch | Phased) or (isinstance(strategy, Canary) and strategy.sticky)


def _start_over(d: Deployment, lb: Any, good: list[Any], old: list[Any]) -> list[Any]:
    """New replicas an interrupted deploy routed: users would reach them outside the promise of
    this strategy, so they leave the balancer and the rollout starts over from its first step."""
    d.on_event(
        f"an interrupted deploy left {len(good)} replica(s) of {d.image} routed; {d.strategy.kind} starts over, "
        "so they leave the balancer first"
    )
    d.route(lb, old, retire=good)
    return []


def _settle(d: Deployment, lb: Any, replicas: list[Any]) -> tuple[list[Any], list[Any]]:
    """Tidy what an interrupted update may have left; returns the routed (good, old) replicas."""
    routed = set(servers(d.balancer.load(lb)))
    spec = d.release.spec
    dead = [r for r in replicas if not running(r)]
    alive = [r for r in replicas if running(r)]
    # Running but not routed: left by an interrupted update. Routed only once healthy again.
    unrouted_good = [r for r in alive if r.name not in routed and r.labels.get(L_SPEC) == spec]
    unrouted_old = [r for r in alive if r.name not in routed and r.labels.get(L_SPEC) != spec]
    good = [r for r in alive if r.name in routed and r.labels.get(L_SPEC) == spec]
    old = [r for r in alive if r.name in routed and r.labels.get(L_SPEC) != spec]
    for replica in dead + unrouted_old:
        d.on_event(f"removing {replica.name} ({replica.status}, not in service)")
        d.replicas.stop_later(replica, graceful=False)
    good += d.replicas.healthy_or_removed(unrouted_good)
    if (dead or unrouted_good or unrouted_old) and (good or old):
        d.route(lb, good + old, retire=[])
    return good, old


def _roll_back(d: Deployment, lb: Any, error: StackOperationError) -> None:
    """A new replica never became healthy after earlier batches were switched: go back to the
    image the stack ran (a rolling deployment of the old release), then report."""
    image = d.previous_image()
    d.on_event(f"update failed ({error}); rolling {d.name} back to {image}")
    d.replicas.finish_stops()
    d.handed_over = True
    d.windows.close()
    try:
        back = d.again(d.previous_release())
        try:
            _roll(back, lb, observe(d.client, d.stack).replicas)
        finally:
            back.close()
    except StackOperationError as again:
        raise StackOperationError(
            f"update of {d.name} to {d.image} failed ({error}), and so did the rollback to {image}: {again}",
            hint="inspect the stack with `docker ps --filter label=io.pipeline.stack=" + d.name + "`",
        ) from None
    raise StackOperationError(
        f"update of {d.name} to {d.image} failed and was rolled back to {image}: {error}", hint=error.hint
    ) from None


__all__ = ["converge"]
