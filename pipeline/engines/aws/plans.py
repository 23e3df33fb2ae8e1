"""How the aws engine carries out each deployment strategy with CloudFormation: pure planning.

Everything a strategy changes is a template parameter, so the stack's parameters are the durable
state of a deployment: a re-run after a crash reads them and converges (never a second group,
never a duplicated resource). The reference template (templates/web.yaml) declares them:

- rolling / cutover: `RollingMaxBatchSize`, `RollingMinInService`, `RollingPauseTime`, used by the
  web group's `UpdatePolicy.AutoScalingRollingUpdate`. Health is watched by CloudFormation itself:
  CloudWatch alarms passed as rollback triggers of the update (`alarm_requests`).
- pilot, half, canary, blue-green: the *canary slot*, a second group (`CanaryGroup`, image
  `CanaryImageId`, size `CanaryCapacity`) in a second target group, and a listener rule that
  forwards to both target groups by weight (`PrimaryWeight`, `CanaryWeight`). Each step is an
  update of those parameters (`slot_steps`); the windows are judged from per-target-group
  CloudWatch metrics by the same `http_check.judge` the local engine uses.
- sticky canary: the weighted rule's target-group stickiness (`CanaryStickySeconds`, 0 = off);
- phased: listener rules before the weighted one that forward a group's requests (an http-header
  condition: `Group<n>Header`, `Group<n>Values`; empty = no rule) to the canary slot.
- dark launch: refused (`unsupported`): an ALB cannot mirror requests.

This module makes no AWS call: the engine (`engine.py`) does them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.engines.deploy_report import VersionStats
from pipeline.strategy import BlueGreen, Canary, Cutover, DarkLaunch, Half, Health, Phased, Pilot, Rolling, Strategy

CANARY_IMAGE = "CanaryImageId"
CANARY_CAPACITY = "CanaryCapacity"
PRIMARY_WEIGHT = "PrimaryWeight"
CANARY_WEIGHT = "CanaryWeight"
SLOT_PARAMETERS = (CANARY_IMAGE, CANARY_CAPACITY, PRIMARY_WEIGHT, CANARY_WEIGHT)
"""The canary slot's parameters: engine-owned (a value given by the caller is replaced)."""
IDLE_SLOT = {CANARY_IMAGE: "", CANARY_CAPACITY: "0", PRIMARY_WEIGHT: "100", CANARY_WEIGHT: "0"}
"""The slot outside a deploy: no instance, no traffic."""

ROLLING_BATCH = "RollingMaxBatchSize"
ROLLING_MIN_IN_SERVICE = "RollingMinInService"
ROLLING_PAUSE = "RollingPauseTime"
ROLLING_PARAMETERS = (ROLLING_BATCH, ROLLING_MIN_IN_SERVICE, ROLLING_PAUSE)
"""The web group's rolling-update parameters: engine-owned (the template's defaults unless the
strategy sets them), so a cutover's values never stick to the next deploy."""

STICKY = "CanaryStickySeconds"
"""The weighted rule's target-group stickiness during a sticky canary (seconds; 0 = off)."""
STICKY_SECONDS = 86400
"""A sticky canary's stickiness: longer than any rollout, so a user never flips back mid-rollout
(it is switched off at the last step and on a rollback)."""
MAX_GROUP_VALUES = 3
"""An ALB rule condition compares a header with at most three values."""


def group_parameters(index: int) -> tuple[str, str]:
    """(header, values) parameters of the `index`-th group rule (1-based)."""
    return f"Group{index}Header", f"Group{index}Values"


def shaping_idle(declared: Sequence[str] | Mapping[str, Any]) -> dict[str, str]:
    """The stickiness and the group rules, off: for the parameters the template declares."""
    idle = {STICKY: "0"}
    index = 1
    while group_parameters(index)[0] in declared:
        header, values = group_parameters(index)
        idle.update({header: "", values: ""})
        index += 1
    return {k: v for k, v in idle.items() if k in declared}


CAPACITY_PARAMETER = "DesiredCapacity"
SLOT_STRATEGIES = frozenset({"pilot", "half", "canary", "blue-green", "phased"})

NAMESPACE = "AWS/ApplicationELB"
METRIC_PERIOD = 60
"""Seconds: the finest period the load balancer's CloudWatch metrics have."""
TEMPLATE_HINT = (
    "declare them as templates/web.yaml does (`pipeline init` writes it): the canary slot's second "
    "group, target group and weighted listener rule, and the rolling-update parameters"
)


@dataclass(frozen=True)
class SlotStep:
    """One step of a slot strategy: the canary slot's size and the balancer's weights."""

    what: str
    capacity: int
    primary_weight: int
    canary_weight: int
    routing: tuple[tuple[str, str], ...] = ()
    """More parameters the step routes by, set with the weights (stickiness, group rules)."""

    @property
    def groups(self) -> int:
        """How many group rules the step routes to the slot."""
        return sum(1 for name, value in self.routing if name.endswith("Header") and value)

    @property
    def share(self) -> float:
        """The new version's share of the traffic."""
        total = self.primary_weight + self.canary_weight
        return self.canary_weight / total if total else 0.0

    def values(self, image: str) -> dict[str, str]:
        return {
            CANARY_IMAGE: image,
            CANARY_CAPACITY: str(self.capacity),
            PRIMARY_WEIGHT: str(self.primary_weight),
            CANARY_WEIGHT: str(self.canary_weight),
        }

    def routes(self) -> dict[str, str]:
        """The step's routing: the weights, and the stickiness or group rules it sets."""
        return {PRIMARY_WEIGHT: str(self.primary_weight), CANARY_WEIGHT: str(self.canary_weight), **dict(self.routing)}


def required_parameters(strategy: Strategy | None) -> tuple[str, ...]:
    """The template parameters the aws engine needs to carry out `strategy` (none for the default)."""
    if strategy is None or strategy == Rolling():
        return ()
    if isinstance(strategy, Rolling):
        needed: list[str] = []
        if strategy.batch_size is not None:
            needed.append(ROLLING_BATCH)
        if strategy.min_in_service is not None:
            needed.append(ROLLING_MIN_IN_SERVICE)
        if strategy.observe_seconds:
            needed.append(ROLLING_PAUSE)
        return tuple(needed)
    if isinstance(strategy, Cutover):
        return (ROLLING_BATCH, ROLLING_MIN_IN_SERVICE)
    if isinstance(strategy, DarkLaunch):
        return ()
    extra: tuple[str, ...] = ()
    if isinstance(strategy, Canary) and strategy.sticky:
        extra = (STICKY,)
    if isinstance(strategy, Phased):
        extra = tuple(name for i in range(1, len(strategy.groups) + 1) for name in group_parameters(i))
    return (*SLOT_PARAMETERS, CAPACITY_PARAMETER, *extra)


def unsupported(strategy: Strategy | None) -> str:
    """Why the ALB cannot carry out `strategy` whatever the template says ("" when it can)."""
    if isinstance(strategy, DarkLaunch):
        return (
            "an Application Load Balancer cannot mirror requests (a listener rule forwards, redirects or "
            "answers; VPC Traffic Mirroring copies packets to an appliance that cannot answer them), so the new "
            "version cannot be judged on a copy of the live traffic before users reach it"
        )
    if isinstance(strategy, Phased):
        for group in strategy.groups:
            if group.cookie is not None:
                return (
                    f"group {group.name} matches the cookie {group.cookie}: an ALB listener rule compares a "
                    "header's whole value (with * and ? wildcards), so it cannot match one cookie exactly among "
                    "the others; match a header instead"
                )
            if len(group.values) > MAX_GROUP_VALUES:
                return (
                    f"group {group.name} has {len(group.values)} values: an ALB listener rule condition "
                    f"compares at most {MAX_GROUP_VALUES}"
                )
    return ""


def missing_parameters(strategy: Strategy | None, declared: Sequence[str] | Mapping[str, Any]) -> list[str]:
    return [name for name in required_parameters(strategy) if name not in declared]


def iso_duration(seconds: float) -> str:
    """An ISO 8601 duration for CloudFormation's PauseTime (whole seconds, rounded up)."""
    return f"PT{math.ceil(seconds)}S"


def owned_defaults(declared: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The engine-owned parameters the template declares, at their defaults (the slot idle)."""
    values: dict[str, str] = {}
    for name in ROLLING_PARAMETERS:
        if name in declared and "Default" in declared[name]:
            values[name] = str(declared[name]["Default"])
    for name, idle in IDLE_SLOT.items():
        if name in declared:
            values[name] = idle
    values.update(shaping_idle(declared))
    return values


def rolling_values(strategy: Strategy | None, capacity: int) -> dict[str, str]:
    """The rolling-update parameters a rolling or cutover strategy sets (nothing: the defaults)."""
    if isinstance(strategy, Cutover):
        return {ROLLING_BATCH: str(max(1, capacity)), ROLLING_MIN_IN_SERVICE: "0"}
    if isinstance(strategy, Rolling):
        values: dict[str, str] = {}
        if strategy.batch_size is not None:
            values[ROLLING_BATCH] = str(strategy.batch_size)
        if strategy.min_in_service is not None:
            values[ROLLING_MIN_IN_SERVICE] = str(strategy.min_in_service)
        if strategy.observe_seconds:
            values[ROLLING_PAUSE] = iso_duration(strategy.observe_seconds)
        return values
    return {}


def slot_steps(strategy: Strategy, capacity: int) -> list[SlotStep]:
    """The canary slot's steps for a slot strategy and a web group of `capacity` instances.

    - canary: per step s %, ceil(N x s / 100) instances (at least 1), weights 100 - s : s;
    - pilot: 1 instance, weighted as one of N (weights N - 1 : 1);
    - half: floor(N / 2) instances (at least 1), weighted as half the fleet;
    - blue-green: N instances, then one switch (weights 0 : 100).
    """
    n = max(1, capacity)
    if isinstance(strategy, Canary) and strategy.sticky:
        return [
            SlotStep(
                f"sticky canary {s}%",
                max(1, math.ceil(n * s / 100)),
                100 - s,
                s,
                ((STICKY, str(STICKY_SECONDS if s < 100 else 0)),),
            )
            for s in strategy.steps
        ]
    if isinstance(strategy, Canary):
        return [SlotStep(f"canary {s}%", max(1, math.ceil(n * s / 100)), 100 - s, s) for s in strategy.steps]
    if isinstance(strategy, Phased):
        return phased_steps(strategy, n)
    if isinstance(strategy, Pilot):
        return [SlotStep(f"pilot: 1 new instance beside {n} old", 1, n - 1, 1)]
    if isinstance(strategy, Half):
        half = max(1, n // 2)
        return [SlotStep(f"half: {half} new instance(s) beside {n} old", half, max(0, n - half), half)]
    if isinstance(strategy, BlueGreen):
        return [SlotStep(f"blue-green: switch to {n} green instance(s)", n, 0, 100)]
    raise ValueError(f"{strategy.kind} is not carried out with the canary slot")


def phased_steps(strategy: Phased, n: int) -> list[SlotStep]:
    """One step per group (its rule, and the earlier groups' rules, forward to the slot of half the
    fleet; the weighted rule sends nobody there), then everyone (a full slot, weights 0 : 100)."""
    half = max(1, math.ceil(n / 2))
    steps = []
    for index in range(1, len(strategy.groups) + 1):
        routing: list[tuple[str, str]] = []
        for i, group in enumerate(strategy.groups, start=1):
            header, values = group_parameters(i)
            on = i <= index
            routing += [(header, str(group.header) if on else ""), (values, ",".join(group.values) if on else "")]
        names = ", ".join(g.name for g in strategy.groups[:index])
        steps.append(SlotStep(f"phase {index}: {names} on the canary slot", half, 100, 0, tuple(routing)))
    steps.append(SlotStep(f"phase {len(strategy.groups) + 1}: everyone on the canary slot", n, 0, 100))
    return steps


def observe_seconds(strategy: Strategy) -> float:
    return float(getattr(strategy, "observe_seconds", 0.0))


def resume_index(steps: Sequence[SlotStep], slot: Mapping[str, str]) -> int:
    """Where a sequence interrupted with the slot at `slot` (the stack's parameters) goes on: the
    first step that neither shrinks the slot nor lowers the new version's share (that step's
    window is observed again)."""
    capacity = as_int(slot.get(CANARY_CAPACITY))
    primary, canary = as_int(slot.get(PRIMARY_WEIGHT)), as_int(slot.get(CANARY_WEIGHT))
    share = canary / (primary + canary) if primary + canary else 0.0
    groups = sum(1 for name, value in slot.items() if name.startswith("Group") and name.endswith("Header") and value)
    for index, step in enumerate(steps):
        if step.capacity >= capacity and step.share >= share - 1e-9 and (step.groups >= groups or step.share >= 1):
            return index
    return len(steps) - 1


def slot_active(parameters: Mapping[str, str]) -> bool:
    """The canary slot has an image, instances or traffic (a deploy runs, or one was interrupted)."""
    idle = {**IDLE_SLOT, **shaping_idle(parameters)}
    return any(name in parameters and parameters[name] != value for name, value in idle.items())


def traffic_back(declared: Sequence[str] | Mapping[str, Any]) -> dict[str, str]:
    """Every request to the web group: weights 100 : 0, no stickiness, no group rule."""
    return {PRIMARY_WEIGHT: "100", CANARY_WEIGHT: "0", **shaping_idle(declared)}


def routing_of(parameters: Mapping[str, str]) -> dict[str, str]:
    """The routing a stack's parameters hold now: weights, stickiness, group rules."""
    names = (PRIMARY_WEIGHT, CANARY_WEIGHT, *shaping_idle(parameters))
    return {name: parameters[name] for name in names if name in parameters}


def as_int(value: str | None, default: int = 0) -> int:
    """A parameter's value as a number; `default` when it is absent or not a number."""
    try:
        return int(str(value))
    except ValueError:
        return default


# --- CloudWatch -------------------------------------------------------------------------------


def dimension_of(arn: str, kind: str) -> str:
    """The CloudWatch dimension value of a load balancer or target group ARN
    (`app/name/id`, `targetgroup/name/id`)."""
    marker = ":loadbalancer/" if kind == "LoadBalancer" else ":"
    return arn.rsplit(marker, maxsplit=1)[-1] if kind == "LoadBalancer" else arn.rsplit(marker, 1)[-1]


def dimensions(target_group: str, load_balancer: str) -> list[dict[str, str]]:
    return [
        {"Name": "TargetGroup", "Value": dimension_of(target_group, "TargetGroup")},
        {"Name": "LoadBalancer", "Value": dimension_of(load_balancer, "LoadBalancer")},
    ]


def count_queries(prefix: str, dims: list[dict[str, str]]) -> list[dict[str, Any]]:
    """get_metric_data queries for a target group's requests and 5xx answers (sums per minute)."""
    return [
        {
            "Id": f"{prefix}{key}",
            "MetricStat": {
                "Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dims},
                "Period": METRIC_PERIOD,
                "Stat": "Sum",
            },
            "ReturnData": True,
        }
        for key, metric in (("requests", "RequestCount"), ("errors", "HTTPCode_Target_5XX_Count"))
    ]


def stats_from(results: Sequence[Mapping[str, Any]], prefix: str, p99_seconds: float | None) -> VersionStats:
    """VersionStats of one target group from get_metric_data results and a p99 (seconds)."""
    sums = {str(r.get("Id")): sum(float(v) for v in r.get("Values") or [] if v is not None) for r in results}
    requests = round(sums.get(f"{prefix}requests", 0.0))
    errors = min(requests, round(sums.get(f"{prefix}errors", 0.0)))
    p99 = (p99_seconds or 0.0) * 1000.0
    return VersionStats(requests=requests, errors=errors, p50_ms=0.0, p99_ms=p99)


def p99_of(datapoints: Sequence[Mapping[str, Any]]) -> float | None:
    """The worst per-minute p99 (seconds) of get_metric_statistics datapoints; None without one."""
    values = [
        float(d["ExtendedStatistics"]["p99"])
        for d in datapoints
        if isinstance(d.get("ExtendedStatistics"), Mapping) and d["ExtendedStatistics"].get("p99") is not None
    ]
    return max(values) if values else None


def combine(stats: Sequence[VersionStats]) -> VersionStats:
    """Several windows' numbers as one (p99: the worst window's)."""
    seen = [s for s in stats if s.requests]
    if not seen:
        return VersionStats()
    return VersionStats(
        requests=sum(s.requests for s in seen),
        errors=sum(s.errors for s in seen),
        p50_ms=max(s.p50_ms for s in seen),
        p99_ms=max(s.p99_ms for s in seen),
    )


def alarm_names(stack: str) -> tuple[str, str]:
    """(error rate, p99) alarm names of a stack: fixed, so a re-run overwrites rather than adds."""
    return f"{stack}-pipeline-error-rate", f"{stack}-pipeline-p99"


def alarm_requests(
    stack: str, dims: list[dict[str, str]], health: Health, baseline_p99_ms: float | None
) -> list[dict[str, Any]]:
    """put_metric_alarm arguments for the rollback triggers of a rolling or cutover update.

    - error rate: 5xx / requests of the web group's target group, per minute, counted only from
      `min_requests` requests on (metric math), above `max_error_rate`;
    - p99: the target group's p99 `TargetResponseTime` above `max_p99_ratio` x the p99 measured
      before the update, never below `min_p99_ms` (no alarm without a baseline)."""
    error_name, p99_name = alarm_names(stack)
    metric = {"Namespace": NAMESPACE, "Dimensions": dims}
    common: dict[str, Any] = {
        "EvaluationPeriods": 1,
        "DatapointsToAlarm": 1,
        "TreatMissingData": "notBreaching",
        "ComparisonOperator": "GreaterThanThreshold",
    }
    requests: list[dict[str, Any]] = [
        {
            "AlarmName": error_name,
            "AlarmDescription": f"pipeline: {stack}'s new version fails more than {health.max_error_rate:.1%} "
            "of its requests during an update (a CloudFormation rollback trigger)",
            "Metrics": [
                {
                    "Id": "requests",
                    "MetricStat": {
                        "Metric": {**metric, "MetricName": "RequestCount"},
                        "Period": METRIC_PERIOD,
                        "Stat": "Sum",
                    },
                    "ReturnData": False,
                },
                {
                    "Id": "errors",
                    "MetricStat": {
                        "Metric": {**metric, "MetricName": "HTTPCode_Target_5XX_Count"},
                        "Period": METRIC_PERIOD,
                        "Stat": "Sum",
                    },
                    "ReturnData": False,
                },
                {
                    "Id": "rate",
                    "Expression": f"IF(requests >= {health.min_requests}, errors / requests, 0)",
                    "Label": "error rate",
                    "ReturnData": True,
                },
            ],
            "Threshold": health.max_error_rate,
            **common,
        }
    ]
    if baseline_p99_ms:
        limit_ms = max(health.max_p99_ratio * baseline_p99_ms, health.min_p99_ms)
        requests.append(
            {
                "AlarmName": p99_name,
                "AlarmDescription": f"pipeline: {stack}'s p99 above {limit_ms:.1f} ms during an update "
                "(a CloudFormation rollback trigger)",
                **metric,
                "MetricName": "TargetResponseTime",
                "ExtendedStatistic": "p99",
                "Period": METRIC_PERIOD,
                "Threshold": limit_ms / 1000.0,
                **common,
            }
        )
    return requests


def monitoring_minutes(strategy: Strategy | None) -> int:
    """MonitoringTimeInMinutes of the rollback configuration: the strategy's window, in minutes
    (rounded up; CloudFormation also watches the alarms during the whole update)."""
    seconds = observe_seconds(strategy) if strategy is not None else 0.0
    return min(180, math.ceil(seconds / 60))


__all__ = [
    "CANARY_CAPACITY",
    "CANARY_IMAGE",
    "CANARY_WEIGHT",
    "IDLE_SLOT",
    "PRIMARY_WEIGHT",
    "ROLLING_PARAMETERS",
    "SLOT_PARAMETERS",
    "SLOT_STRATEGIES",
    "STICKY",
    "SlotStep",
    "alarm_names",
    "alarm_requests",
    "as_int",
    "combine",
    "count_queries",
    "dimensions",
    "group_parameters",
    "missing_parameters",
    "monitoring_minutes",
    "owned_defaults",
    "p99_of",
    "phased_steps",
    "resume_index",
    "rolling_values",
    "routing_of",
    "shaping_idle",
    "slot_active",
    "slot_steps",
    "stats_from",
    "traffic_back",
    "unsupported",
]
