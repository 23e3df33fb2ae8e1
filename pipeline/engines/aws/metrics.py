"""CloudWatch as the judge of a deploy: observation windows read the load balancer's metrics per
target group (the new version in the canary slot, the old one in the web group) and
`http_check.judge` decides; for rolling and cutover updates, alarms on the same metrics are
CloudFormation's rollback triggers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from pipeline.engines import http_check
from pipeline.engines.aws import plans
from pipeline.engines.aws.operations import DeployRun, StackOperations
from pipeline.engines.deploy_report import VersionStats
from pipeline.engines.stack import OnEvent
from pipeline.errors import CloudFormationError
from pipeline.strategy import Health


class HealthMetrics:
    """The health of a deploy, from CloudWatch: windows, the old version's baseline, and alarms."""

    def __init__(self, stacks: StackOperations) -> None:
        self.stacks = stacks
        self.pacing = stacks.pacing

    def observe(
        self, run: DeployRun, step: plans.SlotStep, window: float, health: Health | None, baseline: VersionStats
    ) -> tuple[http_check.Verdict | None, VersionStats, VersionStats]:
        """One observation window: CloudWatch metrics of the slot's target group (the new version)
        and the web group's (the old one, or the baseline when it got too little traffic), judged
        by `http_check.judge` as they come in. No `health`: the window only paces the step."""
        since = self.pacing.now()
        start = self.pacing.clock()
        run.on_event(f"observing {step.what} for {window:g} s")
        primary, canary, balancer = self.stacks.slot_arns(run.stack_id)
        while True:
            elapsed = self.pacing.clock() - start
            final = elapsed >= window
            if health is None and not final:
                self.pacing.sleep(window - elapsed)
                continue
            new, old = self.window_stats(canary, primary, balancer, since)
            if health is None:
                return None, new, old
            judged_old = old if old.requests >= health.min_requests else baseline
            verdict = http_check.judge(
                new, judged_old, health, final=final, exhausted=elapsed >= window + self.pacing.metrics_grace_seconds
            )
            if (
                verdict.state == "breach"
                and self.stacks.session.target("cloudwatch").emulated
                and not new.requests
                and not old.requests
            ):
                # moto and friends have no load balancer to count requests: nothing to judge, and
                # that is the emulator's limit, not the release's (like the emulated verify checks)
                run.on_event(f"{step.what}: the emulator reported no load balancer metrics: window not judged")
                return None, new, old
            if verdict.state != "wait":
                run.on_event(f"{step.what}: {verdict.state}; {verdict.numbers}")
                return verdict, new, judged_old
            self.pacing.sleep(
                min(self.pacing.poll_seconds, window - elapsed) if not final else self.pacing.poll_seconds
            )

    def window_stats(
        self, canary: str | None, primary: str | None, balancer: str | None, since: datetime
    ) -> tuple[VersionStats, VersionStats]:
        if canary is None or primary is None or balancer is None:
            return VersionStats(), VersionStats()
        end = self.pacing.now() + timedelta(seconds=1)
        new_dims, old_dims = plans.dimensions(canary, balancer), plans.dimensions(primary, balancer)
        results = self.stacks.session.call(
            "cloudwatch",
            "get_metric_data",
            MetricDataQueries=plans.count_queries("new", new_dims) + plans.count_queries("old", old_dims),
            StartTime=since,
            EndTime=end,
        ).get("MetricDataResults", [])
        new = plans.stats_from(results, "new", self._p99(new_dims, since, end))
        old = plans.stats_from(results, "old", self._p99(old_dims, since, end))
        return new, old

    def _p99(self, dims: list[dict[str, str]], since: datetime, end: datetime) -> float | None:
        points = self.stacks.session.call(
            "cloudwatch",
            "get_metric_statistics",
            Namespace=plans.NAMESPACE,
            MetricName="TargetResponseTime",
            Dimensions=dims,
            StartTime=since,
            EndTime=end,
            Period=plans.METRIC_PERIOD,
            ExtendedStatistics=["p99"],
        ).get("Datapoints", [])
        return plans.p99_of(points)

    def baseline(self, run: DeployRun) -> VersionStats:
        """The web group's numbers over the last minutes before the change (the old version)."""
        primary, _, balancer = self.stacks.slot_arns(run.stack_id)
        if primary is None or balancer is None:
            return VersionStats()
        since = self.pacing.now() - timedelta(minutes=10)
        dims = plans.dimensions(primary, balancer)
        end = self.pacing.now() + timedelta(seconds=1)
        results = self.stacks.session.call(
            "cloudwatch",
            "get_metric_data",
            MetricDataQueries=plans.count_queries("old", dims),
            StartTime=since,
            EndTime=end,
        ).get("MetricDataResults", [])
        baseline = plans.stats_from(results, "old", self._p99(dims, since, end))
        run.on_event(f"baseline of the old version (last 10 minutes): {baseline.describe()}")
        return baseline

    def put_alarms(self, run: DeployRun, health: Health) -> list[tuple[str, str]]:
        """The rollback triggers of a rolling or cutover update: (name, ARN) of each alarm."""
        primary, _, balancer = self.stacks.slot_arns(run.stack_id)
        if primary is None or balancer is None:
            run.on_event("no target group or load balancer in the stack: no alarms, health not watched")
            return []
        baseline = self.baseline(run)
        requests = plans.alarm_requests(
            run.stack, plans.dimensions(primary, balancer), health, baseline.p99_ms if baseline.requests else None
        )
        for request in requests:
            self.stacks.session.call("cloudwatch", "put_metric_alarm", **request)
        names = [str(r["AlarmName"]) for r in requests]
        found = self.stacks.session.call("cloudwatch", "describe_alarms", AlarmNames=names).get("MetricAlarms", [])
        arns = {str(a["AlarmName"]): str(a["AlarmArn"]) for a in found}
        missing = [n for n in names if n not in arns]
        if missing:
            raise CloudFormationError(
                f"CloudWatch did not keep the alarm(s) {', '.join(missing)}",
                hint="check the cloudwatch:PutMetricAlarm permission; nothing was changed in the stack",
                stack=run.stack,
            )
        run.on_event(f"rollback triggers: {', '.join(names)}")
        return [(n, arns[n]) for n in names]

    def alarm_breach(self, alarms: Sequence[tuple[str, str]], exc: CloudFormationError) -> str:
        """What made CloudFormation roll back, when it was one of our alarms ('' otherwise)."""
        names = [n for n, _ in alarms]
        found = self.stacks.session.call("cloudwatch", "describe_alarms", AlarmNames=names).get("MetricAlarms", [])
        for alarm in found:
            if alarm.get("StateValue") == "ALARM":
                return f"alarm {alarm['AlarmName']} is in ALARM: {alarm.get('StateReason') or 'no reason given'}"
        text = f"{exc.reason or ''} {exc}"
        for name, arn in alarms:
            if name in text or arn in text:
                return f"alarm {name} triggered the rollback: {exc.reason or 'no reason given'}"
        return ""

    def delete_alarms(self, stack: str, on_event: OnEvent) -> None:
        """Delete the stack's rollback-trigger alarms; best effort (an alarm left behind costs
        little, triggers nothing outside an update, and the next deploy overwrites it)."""
        try:
            self.stacks.session.call("cloudwatch", "delete_alarms", AlarmNames=list(plans.alarm_names(stack)))
        except Exception as exc:
            on_event(f"could not delete the alarms of {stack} ({type(exc).__name__}: {exc})")


__all__ = ["HealthMetrics"]
