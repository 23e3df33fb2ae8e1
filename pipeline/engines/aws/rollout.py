"""Carrying out a deployment strategy on a stack with CloudFormation updates.

- None / rolling / cutover: one update-stack with the strategy's rolling-update parameters; with
  `health`, CloudWatch alarms as the update's rollback triggers.
- pilot, half, canary (sticky or not), blue-green, phased: a sequence of updates of the canary
  slot (see `plans`), each window judged from CloudWatch; a breach routes everything back to the
  web group (weights 100 : 0, no stickiness, no group rule), empties the slot, then HealthBreachError.

The stack's parameters are the durable state of a deploy: a deploy killed at any point is finished
(or cleaned up) by the next one from what `describe_stacks` says.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from pipeline.engines import http_check
from pipeline.engines.aws import plans
from pipeline.engines.aws.metrics import HealthMetrics
from pipeline.engines.aws.operations import DeployRun, StackOperations
from pipeline.engines.aws.session import DataPlane, http_reaches
from pipeline.engines.deploy_report import DeployReport, DeployStep, VersionStats
from pipeline.engines.stack import StackState
from pipeline.engines.user_load import User, UserLoad
from pipeline.errors import CloudFormationError, HealthBreachError, PipelineError
from pipeline.strategy import BlueGreen, Health, Phased, Strategy


class Rollout:
    """Moves a stack to a new image by a strategy, watching its health as it goes."""

    def __init__(self, stacks: StackOperations, metrics: HealthMetrics, *, data_plane: DataPlane = "auto") -> None:
        self.stacks = stacks
        self.metrics = metrics
        self.session = stacks.session
        self.pacing = stacks.pacing
        self.data_plane = data_plane

    def rolling(self, run: DeployRun, strategy: Strategy | None, health: Health | None) -> StackState:
        """Rolling or cutover: one update-stack; with `health`, alarms as its rollback triggers."""
        kind = strategy.kind if strategy is not None else "rolling"
        previous = run.parameters().get(self.stacks.template.image_parameter)
        if plans.slot_active(run.parameters()):
            self._empty_slot(run, "an interrupted deploy left the canary slot in use")
        if self.stacks.up_to_date(run.current, run.desired):
            run.on_event(f"stack {run.stack} already runs {run.image} with these parameters: nothing to do")
            return replace(self.stacks.state(run.stack, run.current), report=run.report("none", previous))
        alarms: list[tuple[str, str]] = []
        rollback: dict[str, Any] | None = None
        if health is not None:
            alarms = self.metrics.put_alarms(run, health)
            rollback = {
                "RollbackTriggers": [{"Arn": arn, "Type": "AWS::CloudWatch::Alarm"} for _, arn in alarms],
                "MonitoringTimeInMinutes": plans.monitoring_minutes(strategy),
            }
        what = None
        if kind == "cutover":
            what = f"cutover to {run.image}: every instance at once, none kept in service"
        step_started = self.pacing.clock()
        try:
            with self._probing(run, health):
                final = self.stacks.update(
                    run.stack,
                    run.image,
                    run.current,
                    run.desired,
                    run.capabilities,
                    run.on_event,
                    what=what,
                    rollback_configuration=rollback,
                )
        except CloudFormationError as exc:
            breach = (
                self.metrics.alarm_breach(alarms, exc) if alarms and exc.status == "UPDATE_ROLLBACK_COMPLETE" else ""
            )
            if not breach:
                raise
            seconds = self.pacing.clock() - run.started
            report = DeployReport(
                strategy=kind,
                image=run.image,
                previous_image=previous,
                steps=(DeployStep(f"{kind} update", 1.0, self.pacing.clock() - step_started, "breach"),),
                seconds=seconds,
                rolled_back=True,
                breach=breach,
            )
            raise HealthBreachError(
                f"health breach during the {kind} update of {run.stack} to {run.image}: {breach}; CloudFormation "
                f"rolled the stack back to {previous} (UPDATE_ROLLBACK_COMPLETE) in {seconds:.1f} s",
                hint="the alarm's metrics cover the whole target group (old and new instances); see the "
                "alarm's history in CloudWatch, fix the release and re-run",
                report=report,
            ) from None
        finally:
            if alarms:
                self.metrics.delete_alarms(run.stack, run.on_event)
        step = DeployStep(
            what or f"{kind} update",
            1.0,
            self.pacing.clock() - step_started,
            "passed" if alarms else "not observed",
        )
        state = self.stacks.state(run.stack, final)
        return replace(state, report=run.report(kind, previous, steps=(step,)))

    def in_slot(self, run: DeployRun, strategy: Strategy, health: Health | None) -> StackState:
        """Pilot, half, canary, blue-green: the new version in the canary slot, step by step."""
        image, p = run.image, plans
        now = run.parameters()
        old = now.get(self.stacks.template.image_parameter) or ""
        steps = p.slot_steps(strategy, plans.as_int(run.desired.get(p.CAPACITY_PARAMETER), 1))
        slot_image = now.get(p.CANARY_IMAGE, "")
        if old == image:
            if slot_image == image:  # interrupted while finishing: the web group already runs it
                self._finish(run, steps[-1])
                return replace(self.stacks.state(run.stack, run.current), report=run.report(strategy.kind, old))
            if p.slot_active(now):
                self._empty_slot(run, "an interrupted deploy left the canary slot in use")
            if self.stacks.up_to_date(run.current, run.desired):
                run.on_event(f"stack {run.stack} already runs {image} with these parameters: nothing to do")
                return replace(self.stacks.state(run.stack, run.current), report=run.report("none", old))
            run.apply(run.desired, f"parameters other than the image ({image} runs already)")
            return replace(self.stacks.state(run.stack, run.current), report=run.report(strategy.kind, old))
        if slot_image not in ("", image) or (slot_image == "" and p.slot_active(now)):
            self._empty_slot(run, f"the canary slot holds another version ({slot_image or 'none'})")
            now = run.parameters()
            slot_image = ""
        start = p.resume_index(steps, now) if slot_image == image else 0
        if start:
            run.on_event(
                f"the canary slot already runs {image} (an interrupted deploy): going on at {steps[start].what}"
            )
        base = {**run.desired, self.stacks.template.image_parameter: old}
        routing = p.routing_of(now) if slot_image else p.traffic_back(run.desired)
        with self._probing(run, health, strategy):
            try:
                records = self._slot_steps(run, strategy, health, steps[start:], base, routing, old)
                if isinstance(strategy, BlueGreen):
                    records += self._keep_warm(run, strategy, health, steps[-1], records, old)
            except CloudFormationError as exc:
                raise self._abandoned(run, old, exc) from exc
        self._finish(run, steps[-1])
        return replace(
            self.stacks.state(run.stack, run.current), report=run.report(strategy.kind, old, steps=tuple(records))
        )

    def _slot_steps(
        self,
        run: DeployRun,
        strategy: Strategy,
        health: Health | None,
        steps: Sequence[plans.SlotStep],
        base: Mapping[str, str],
        routing: Mapping[str, str],
        old: str,
    ) -> list[DeployStep]:
        """Each step: the slot grows (on the previous step's routing), then the routing gives it
        the step's share (weights; a sticky canary's stickiness; a phase's group rules), a window."""
        p, image = plans, run.image
        baseline = self.metrics.baseline(run) if health is not None else VersionStats()
        records: list[DeployStep] = []
        window = p.observe_seconds(strategy)
        for step in steps:
            step_started = self.pacing.clock()
            launch = {**base, **step.values(image), **routing}
            run.apply(launch, f"{step.what}: {step.capacity} instance(s) of {image} in the canary slot")
            self._wait_healthy(run, step.capacity)
            routing = {**p.traffic_back(base), **step.routes()}
            run.apply({**base, **step.values(image), **routing}, f"{step.what}: {_describe(step, old)}")
            routed = self.pacing.clock()
            verdict, new_stats, old_stats = self.metrics.observe(run, step, window, health, baseline)
            state = "not observed" if verdict is None else {"pass": "passed"}.get(verdict.state, verdict.state)
            records.append(
                DeployStep(step.what, step.share, self.pacing.clock() - step_started, state, new_stats, old_stats)
            )
            if verdict is not None and verdict.state == "breach":
                self._restore(run, strategy, step, records, verdict.reason, routed, old)
        return records

    def _keep_warm(
        self,
        run: DeployRun,
        strategy: BlueGreen,
        health: Health | None,
        last: plans.SlotStep,
        records: list[DeployStep],
        old: str,
    ) -> list[DeployStep]:
        """Blue-green: after the switch, the old (blue) set, the web group still on the old image,
        stays at full size and unrouted until `keep_old_seconds` have passed since the switch; the
        green set's health is watched all that time, and a breach is an instant switch back (a
        weights change: the old instances never stopped). Only then does `_finish` move the web
        group to the new image. The deploy holds for that time (nothing runs after it to end the
        warm period); an interrupted hold is resumed by the next deploy like any other step."""
        hold = strategy.keep_old_seconds - strategy.observe_seconds
        if hold <= 0:
            return []
        started = self.pacing.clock()
        switched = started - strategy.observe_seconds
        warm = plans.SlotStep(
            f"blue-green: the old set ({old}) kept warm", last.capacity, last.primary_weight, last.canary_weight
        )
        run.on_event(f"keeping the old set ({old}) warm for {hold:g} s more, for an instant switch back")
        baseline = self.metrics.baseline(run) if health is not None else VersionStats()
        verdict, new_stats, old_stats = self.metrics.observe(run, warm, hold, health, baseline)
        state = "not observed" if verdict is None else {"pass": "passed"}.get(verdict.state, verdict.state)
        step = DeployStep(warm.what, warm.share, self.pacing.clock() - started, state, new_stats, old_stats)
        if verdict is not None and verdict.state == "breach":
            self._restore(run, strategy, warm, [*records, step], verdict.reason, switched, old)
        return [step]

    def _restore(
        self,
        run: DeployRun,
        strategy: Strategy,
        step: plans.SlotStep,
        records: list[DeployStep],
        reason: str,
        routed: float,
        old: str,
    ) -> None:
        """After a breach: every request to the web group (the old version) first, then the slot
        emptied; raises HealthBreachError with the report."""
        decided = self.pacing.clock()
        run.on_event(f"health breach at {step.what}: {reason}; routing everything back to {old}")
        slot = run.parameters()
        run.apply(
            {
                **run.desired,
                self.stacks.template.image_parameter: old,
                **_pick(slot, plans.SLOT_PARAMETERS),
                **plans.traffic_back(run.desired),
            },
            f"back to {old}: weights 100 : 0",
        )
        restored = self.pacing.clock()
        run.apply({**run.desired, self.stacks.template.image_parameter: old}, "emptying the canary slot")
        report = run.report(
            strategy.kind,
            old,
            steps=tuple(records),
            rolled_back=True,
            breach=reason,
            time_to_detect=decided - routed,
            time_to_restore=restored - decided,
        )
        raise HealthBreachError(
            f"health breach at {step.what} ({strategy.kind} of {run.stack} to {run.image}): {reason}; "
            f"rolled back to {old} in {restored - decided:.1f} s (detected {decided - routed:.1f} s after the "
            "new version took traffic)",
            hint="the numbers are the load balancer's CloudWatch metrics per target group; fix the release and re-run",
            report=report,
        )

    def _abandoned(self, run: DeployRun, old: str, exc: CloudFormationError) -> CloudFormationError:
        """A step failed (an update CloudFormation rolled back, new instances never healthy): the
        traffic goes back to the web group (the old version) and the slot is emptied, as after a
        breach, so a failed deploy leaves no share of the traffic on the new version. Best effort:
        if that fails too, the next deploy does it (the slot is in the stack's parameters)."""
        try:
            self._empty_slot(run, f"the {run.image} deploy failed ({exc.message})")
            after = f"traffic is back on the web group ({old}) and the canary slot is empty"
        except PipelineError as cleanup:
            after = f"emptying the canary slot failed too ({cleanup.message}); the next deploy empties it"
        return CloudFormationError(
            f"{exc.message}; {after}",
            hint=exc.hint,
            stack=exc.stack,
            status=exc.status,
            resource=exc.resource,
            reason=exc.reason,
        )

    def _finish(self, run: DeployRun, last: plans.SlotStep) -> None:
        """The web group moves to the new image while the slot serves, then takes all traffic
        back, then the slot is emptied. Each step is skipped when the stack is already there."""
        p, image = plans, run.image
        now = run.parameters()
        slot = _pick(now, p.SLOT_PARAMETERS) if now.get(p.CANARY_IMAGE) == image else last.values(image)
        if now.get(self.stacks.template.image_parameter) != image:
            move = {**run.desired, **slot}
            idle = plans.as_int(slot.get(p.PRIMARY_WEIGHT), 0) == 0
            if idle and p.ROLLING_BATCH in move and p.ROLLING_MIN_IN_SERVICE in move:
                move[p.ROLLING_BATCH] = str(max(1, plans.as_int(run.desired.get(p.CAPACITY_PARAMETER), 1)))
                move[p.ROLLING_MIN_IN_SERVICE] = "0"  # it gets no traffic: replace it at once
            run.apply(move, f"the web group to {image} while the canary slot serves")
        if plans.as_int(slot.get(p.CANARY_WEIGHT), 0) != 0:
            back = p.traffic_back(run.desired)
            run.apply({**run.desired, **slot, **back}, f"all traffic to the web group ({image})")
            slot = {**slot, **back}
        run.apply(dict(run.desired), "emptying the canary slot")

    def _empty_slot(self, run: DeployRun, why: str) -> None:
        """Traffic back to the web group, then no instance in the slot (two updates: the weights
        change before the slot's instances go)."""
        run.on_event(f"{why}: emptying it")
        now = run.parameters()
        # what the stack runs now (the template's new parameters at their values): only the slot changes
        base = {**run.desired, **{k: v for k, v in now.items() if k in run.desired}}
        back = plans.traffic_back(base)
        if any(now.get(name, value) != value for name, value in back.items()):
            run.apply({**base, **back}, "weights 100 : 0")
        run.apply({**base, **back, **plans.IDLE_SLOT}, "emptying the canary slot")

    @contextmanager
    def _probing(self, run: DeployRun, health: Health | None, strategy: Strategy | None = None) -> Iterator[None]:
        """With `health`, where the stack's URL is reachable (real AWS): `requests_per_second`
        through the balancer for the whole deploy, so every window has requests to judge even on
        an idle service (the load balancer's metrics count them like the users'). A phased
        rollout's probe also sends half as many again as a member of each group (its header), so
        the canary slot has requests in every phase."""
        url = self.stacks.state(run.stack, run.current).url
        reachable = http_reaches(self.data_plane, url, self.session.endpoint("cloudformation"))
        if health is None or not url or not reachable:
            yield
            return
        run.on_event(f"probe: {health.requests_per_second:g} requests/s through {url} during the deploy")
        with contextlib.ExitStack() as probes:
            probes.enter_context(http_check.LoadClient(url, rate=health.requests_per_second, timeout=5.0))
            if isinstance(strategy, Phased):
                members = [User(g.name, headers={str(g.header): g.values[0]}) for g in strategy.groups]
                probes.enter_context(UserLoad(url, members, rate=health.requests_per_second / 2, timeout=5.0))
            yield

    def _wait_healthy(self, run: DeployRun, count: int) -> None:
        """Until `count` targets of the slot's target group pass its health check (AWS routes to
        nothing else). Under an emulator that registers no targets, skipped with a note."""
        _, canary, _ = self.stacks.slot_arns(run.stack_id)
        if canary is None:
            return
        deadline = self.pacing.clock() + min(self.pacing.timeout_seconds, self.pacing.healthy_timeout_seconds)
        delay = min(1.0, self.pacing.poll_seconds)
        while True:
            health = self.session.call("elbv2", "describe_target_health", TargetGroupArn=canary).get(
                "TargetHealthDescriptions", []
            )
            healthy = [t for t in health if (t.get("TargetHealth") or {}).get("State") == "healthy"]
            if len(healthy) >= count:
                run.on_event(f"canary slot: {len(healthy)} healthy target(s)")
                return
            if not health and self.session.target("elbv2").emulated:
                run.on_event(
                    "canary slot: the emulator registered no targets (it launches no instances); not waited for"
                )
                return
            if self.pacing.clock() >= deadline:
                reasons = sorted({str((t.get("TargetHealth") or {}).get("Reason") or "") for t in health} - {""})
                raise CloudFormationError(
                    f"the canary slot of {run.stack} has {len(healthy)} of {count} healthy targets running "
                    f"{run.image} after {min(self.pacing.timeout_seconds, self.pacing.healthy_timeout_seconds):g} s"
                    + (f" ({', '.join(reasons)})" if reasons else ""),
                    hint="the new image does not pass the target group's health check: fix it and re-run",
                    stack=run.stack,
                    status="UPDATE_COMPLETE",
                    reason="targets not healthy",
                )
            self.pacing.sleep(delay)
            delay = min(self.pacing.poll_seconds, delay * 1.5)


def _pick(values: Mapping[str, str], names: Sequence[str]) -> dict[str, str]:
    return {k: values[k] for k in names if k in values}


def _describe(step: plans.SlotStep, old: str) -> str:
    text = f"weights {step.primary_weight} (web group, {old}) : {step.canary_weight} (canary slot)"
    routing = dict(step.routing)
    if routing.get(plans.STICKY, "0") != "0":
        text += f", each user kept on one target group for {routing[plans.STICKY]} s"
    if step.groups:
        text += f"; {step.groups} group rule(s) forward to the canary slot"
    return text


__all__ = ["Rollout"]
