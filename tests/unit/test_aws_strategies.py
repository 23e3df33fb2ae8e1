"""The aws engine's strategies: the pure plan (steps, weights, parameters, alarms), what the engine
refuses, and, with botocore's Stubber on responses shaped like AWS's, what no emulator here does:
a rollback trigger's alarm firing during an update (UPDATE_ROLLBACK_COMPLETE -> HealthBreachError),
and the exact order of update-stack calls of a slot strategy whose window breaches.

moto runs the rest for real: tests/integration/test_cloudformation_strategies.py.
"""

from __future__ import annotations

from typing import Any

import pytest

boto3 = pytest.importorskip("boto3", reason="boto3 is in the [run] extra")
from botocore.stub import ANY, Stubber  # noqa: E402

from pipeline.engines.aws import plans  # noqa: E402
from pipeline.engines.aws.engine import CloudFormationEngine  # noqa: E402
from pipeline.engines.deploy_report import VersionStats  # noqa: E402
from pipeline.errors import EXIT_BAD_INPUT, BadInputError, CloudFormationError, HealthBreachError  # noqa: E402
from pipeline.model import AwsSettings  # noqa: E402
from pipeline.strategy import BlueGreen, Canary, Cutover, Half, Health, Pilot, Rolling  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.unit.test_cloudformation_stubbed import (  # noqa: E402
    NEW,
    OLD,
    PARAMS,
    STACK,
    STACK_ID,
    TEMPLATE,
    Fake,
    _params,
    predictable_tokens,
)

__all__ = ["predictable_tokens"]  # the autouse fixture: fixed ClientRequestTokens, no cached validation

WITHOUT_SLOT = REPO / "tests" / "data" / "web-without-canary-slot.yaml"
"""The reference template as it was before the canary slot and the rolling-update parameters."""
ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012"
WEB_TG = f"{ARN}:targetgroup/hello-TargetGroup-1A/0123456789abcdef"
CANARY_TG = f"{ARN}:targetgroup/hello-CanaryTargetGrou-2B/fedcba9876543210"
BALANCER = f"{ARN}:loadbalancer/app/hello-LoadBalancer-3C/00aa11bb22cc33dd"
HEALTH = Health(max_error_rate=0.01, max_p99_ratio=2.0, min_p99_ms=20, min_requests=20)


# --- the plan, pure -----------------------------------------------------------------------------------


def test_canary_steps_give_the_new_version_exactly_the_steps_share() -> None:
    steps = plans.slot_steps(Canary(steps=(10, 50, 100)), 2)
    assert [(s.capacity, s.primary_weight, s.canary_weight) for s in steps] == [(1, 90, 10), (1, 50, 50), (2, 0, 100)]
    assert [s.share for s in steps] == [0.1, 0.5, 1.0]
    assert [s.capacity for s in plans.slot_steps(Canary(steps=(10, 50, 100)), 4)] == [1, 2, 4]
    assert plans.slot_steps(Canary(steps=(10, 50, 100)), 2)[0].values(NEW) == {
        "CanaryImageId": NEW,
        "CanaryCapacity": "1",
        "PrimaryWeight": "90",
        "CanaryWeight": "10",
    }


@pytest.mark.parametrize(
    ("strategy", "n", "expected"),
    [
        (Pilot(), 4, (1, 3, 1)),  # one instance, weighted as one of four
        (Pilot(), 1, (1, 0, 1)),
        (Half(), 4, (2, 2, 2)),
        (Half(), 3, (1, 2, 1)),
        (BlueGreen(), 3, (3, 0, 100)),  # a full green set, then all traffic at once
    ],
)
def test_pilot_half_and_blue_green_are_one_step_each(strategy: Any, n: int, expected: tuple[int, int, int]) -> None:
    [step] = plans.slot_steps(strategy, n)
    assert (step.capacity, step.primary_weight, step.canary_weight) == expected


def test_an_interrupted_sequence_goes_on_where_the_slot_is_never_backwards() -> None:
    steps = plans.slot_steps(Canary(steps=(10, 50, 100)), 2)
    assert plans.resume_index(steps, plans.IDLE_SLOT) == 0
    launched_10 = {**steps[0].values(NEW), "PrimaryWeight": "100", "CanaryWeight": "0"}
    assert plans.resume_index(steps, launched_10) == 0
    assert plans.resume_index(steps, steps[1].values(NEW)) == 1
    assert plans.resume_index(steps, {**steps[2].values(NEW), "PrimaryWeight": "50", "CanaryWeight": "50"}) == 2
    assert plans.resume_index(steps, steps[2].values(NEW)) == 2


def test_rolling_and_cutover_are_update_policy_parameters() -> None:
    assert plans.rolling_values(None, 2) == {}
    assert plans.rolling_values(Rolling(), 2) == {}
    assert plans.rolling_values(Cutover(), 3) == {"RollingMaxBatchSize": "3", "RollingMinInService": "0"}
    assert plans.rolling_values(Rolling(batch_size=2, min_in_service=0, observe_seconds=90.5), 4) == {
        "RollingMaxBatchSize": "2",
        "RollingMinInService": "0",
        "RollingPauseTime": "PT91S",
    }
    assert plans.monitoring_minutes(Rolling(observe_seconds=90)) == 2
    assert plans.monitoring_minutes(None) == 0


def test_cloudwatch_numbers_become_version_stats() -> None:
    results = [
        {"Id": "newrequests", "Values": [30.0, 10.0]},
        {"Id": "newerrors", "Values": [4.0]},
        {"Id": "oldrequests", "Values": []},
    ]
    assert plans.stats_from(results, "new", 0.0123) == VersionStats(requests=40, errors=4, p50_ms=0.0, p99_ms=12.3)
    assert plans.stats_from(results, "old", None) == VersionStats()
    points = [{"ExtendedStatistics": {"p99": 0.01}}, {"ExtendedStatistics": {"p99": 0.03}}, {"Unit": "Seconds"}]
    assert plans.p99_of(points) == 0.03
    assert plans.p99_of([{"Unit": "Seconds"}]) is None  # moto keeps no percentiles
    assert plans.dimensions(CANARY_TG, BALANCER) == [
        {"Name": "TargetGroup", "Value": "targetgroup/hello-CanaryTargetGrou-2B/fedcba9876543210"},
        {"Name": "LoadBalancer", "Value": "app/hello-LoadBalancer-3C/00aa11bb22cc33dd"},
    ]


# --- what the engine refuses, before anything changes ----------------------------------------------


def _engine(template: Any) -> CloudFormationEngine:
    def no_client(service: str) -> Any:
        raise AssertionError(f"check_strategy must not call AWS ({service})")

    return CloudFormationEngine("hello-web", template, AwsSettings(), environ={}, client_factory=no_client)


@pytest.mark.parametrize(
    "strategy",
    [None, Rolling(), Rolling(batch_size=2, observe_seconds=30), Cutover(), Pilot(), Half(), Canary(), BlueGreen()],
)
def test_the_reference_template_takes_every_strategy(strategy: Any) -> None:
    _engine(TEMPLATE).check_strategy(strategy, HEALTH)


def test_a_template_without_the_canary_slot_is_refused_naming_what_it_lacks() -> None:
    engine = _engine(WITHOUT_SLOT)
    engine.check_strategy(None)
    engine.check_strategy(Rolling(), HEALTH)  # the default rolling update, with rollback triggers: fine
    with pytest.raises(BadInputError) as caught:
        engine.check_strategy(Canary())
    error = caught.value
    assert error.exit_code == EXIT_BAD_INPUT
    assert "cannot carry out canary" in error.message
    assert "CanaryImageId, CanaryCapacity, PrimaryWeight, CanaryWeight" in error.message
    assert "canary-slot" in error.message
    assert error.hint is not None
    assert "templates/web.yaml" in error.hint
    with pytest.raises(BadInputError, match=r"rolling with values of its own .* RollingMaxBatchSize"):
        engine.check_strategy(Rolling(batch_size=2))
    with pytest.raises(BadInputError, match="cutover"):
        engine.check_strategy(Cutover())


# --- recorded responses -------------------------------------------------------------------------------


class StrategyFake(Fake):
    """The stubbed clients of test_cloudformation_stubbed, plus CloudWatch and ELBv2."""

    def __init__(self) -> None:
        super().__init__()
        for name in ("cloudwatch", "elbv2"):
            self.clients[name] = boto3.client(
                name, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
            )
            self.stubs[name] = Stubber(self.clients[name])
        self.cw = self.stubs["cloudwatch"]
        self.elb = self.stubs["elbv2"]
        self.engine.metrics_grace_seconds = 0.0
        self.updates: list[dict[str, str]] = []

    def at(self, status: str, values: dict[str, str]) -> dict[str, Any]:
        stack = self.stack(status)
        stack["Parameters"] = _params(values)
        return stack

    def expect_resources(self) -> None:
        resources = [
            ("TargetGroup", "AWS::ElasticLoadBalancingV2::TargetGroup", WEB_TG),
            ("CanaryTargetGroup", "AWS::ElasticLoadBalancingV2::TargetGroup", CANARY_TG),
            ("LoadBalancer", "AWS::ElasticLoadBalancingV2::LoadBalancer", BALANCER),
            ("WebGroup", "AWS::AutoScaling::AutoScalingGroup", "hello-WebGroup-1XYZ"),
        ]
        self.cfn.add_response(
            "describe_stack_resources",
            {
                "StackResources": [
                    {
                        "StackName": STACK,
                        "StackId": STACK_ID,
                        "LogicalResourceId": logical,
                        "PhysicalResourceId": physical,
                        "ResourceType": kind,
                        "Timestamp": self.stack("UPDATE_COMPLETE")["CreationTime"],
                        "ResourceStatus": "UPDATE_COMPLETE",
                    }
                    for logical, kind, physical in resources
                ]
            },
            {"StackName": STACK_ID},
        )

    def expect_metrics(self, sums: dict[str, float], p99s: list[float | None]) -> None:
        self.cw.add_response(
            "get_metric_data",
            {
                "MetricDataResults": [
                    {"Id": key, "Label": key, "Values": [value], "StatusCode": "Complete"}
                    for key, value in sums.items()
                ]
            },
            {"MetricDataQueries": ANY, "StartTime": ANY, "EndTime": ANY},
        )
        for p99 in p99s:
            points = [] if p99 is None else [{"Unit": "Seconds", "ExtendedStatistics": {"p99": p99}}]
            self.cw.add_response(
                "get_metric_statistics",
                {"Label": "TargetResponseTime", "Datapoints": points},
                {
                    "Namespace": "AWS/ApplicationELB",
                    "MetricName": "TargetResponseTime",
                    "Dimensions": ANY,
                    "StartTime": ANY,
                    "EndTime": ANY,
                    "Period": 60,
                    "ExtendedStatistics": ["p99"],
                },
            )

    def expect_update(
        self,
        values: dict[str, str],
        *,
        final: str = "UPDATE_COMPLETE",
        rollback: dict[str, Any] | None = None,
        events: list[dict[str, Any]] | None = None,
    ) -> None:
        """One update-stack to `values` and its wait, ending in `final`."""
        self.updates.append(values)
        self.expect_events([])  # the marker: no earlier event matters here
        expected: dict[str, Any] = {
            "StackName": STACK_ID,
            "TemplateBody": TEMPLATE.read_text(),
            "Parameters": _params(values),
            "Capabilities": [],
            "ClientRequestToken": "pipeline-update-0001",
        }
        if rollback is not None:
            expected["RollbackConfiguration"] = rollback
        self.cfn.add_response("update_stack", {"StackId": STACK_ID}, expected)
        self.expect_events(events or [])
        self.expect_describe(STACK_ID, self.at(final, values if final == "UPDATE_COMPLETE" else PARAMS))
        self.expect_events(events or [])


def test_a_rollback_trigger_that_fires_is_a_health_breach_with_the_alarm_and_its_reason() -> None:
    """Rolling with health: alarms on the web group's target group become the update's rollback
    triggers; CloudFormation rolls back when one goes to ALARM; the engine says which, and why,
    and deletes the alarms."""
    error_alarm, p99_alarm = f"{STACK}-pipeline-error-rate", f"{STACK}-pipeline-p99"
    alarm_arn = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:"
    with StrategyFake() as fake:
        fake.expect_validation()
        fake.expect_describe(STACK, fake.stack("UPDATE_COMPLETE"))
        fake.expect_resources()  # alarms: which target group
        fake.expect_resources()  # the baseline
        fake.expect_metrics({"oldrequests": 600, "olderrors": 0}, [0.004])
        web = plans.dimensions(WEB_TG, BALANCER)
        fake.cw.add_response("put_metric_alarm", {}, plans.alarm_requests(STACK, web, HEALTH, 4.0)[0])
        fake.cw.add_response(
            "put_metric_alarm",
            {},
            {
                "AlarmName": p99_alarm,
                "AlarmDescription": ANY,
                "Namespace": "AWS/ApplicationELB",
                "Dimensions": web,
                "MetricName": "TargetResponseTime",
                "ExtendedStatistic": "p99",
                "Period": 60,
                "Threshold": 0.02,  # 2 x 4 ms is under min_p99_ms: 20 ms
                "EvaluationPeriods": 1,
                "DatapointsToAlarm": 1,
                "TreatMissingData": "notBreaching",
                "ComparisonOperator": "GreaterThanThreshold",
            },
        )
        fake.cw.add_response(
            "describe_alarms",
            {"MetricAlarms": [{"AlarmName": n, "AlarmArn": alarm_arn + n} for n in (error_alarm, p99_alarm)]},
            {"AlarmNames": [error_alarm, p99_alarm]},
        )
        rollback = [
            fake.event(STACK, "UPDATE_IN_PROGRESS", "User Initiated", token="pipeline-update-0001"),
            fake.event(
                STACK,
                "UPDATE_ROLLBACK_IN_PROGRESS",
                f"The following alarm(s) are in ALARM state: [{alarm_arn}{error_alarm}]",
                token="pipeline-update-0001",
            ),
            fake.event(STACK, "UPDATE_ROLLBACK_COMPLETE", token="pipeline-update-0001"),
        ]
        fake.expect_update(
            {**PARAMS, "ImageId": NEW, "RollingPauseTime": "PT60S"},
            final="UPDATE_ROLLBACK_COMPLETE",
            rollback={
                "RollbackTriggers": [
                    {"Arn": alarm_arn + error_alarm, "Type": "AWS::CloudWatch::Alarm"},
                    {"Arn": alarm_arn + p99_alarm, "Type": "AWS::CloudWatch::Alarm"},
                ],
                "MonitoringTimeInMinutes": 1,
            },
            events=list(reversed(rollback)),
        )
        fake.cw.add_response(
            "describe_alarms",
            {
                "MetricAlarms": [
                    {
                        "AlarmName": error_alarm,
                        "AlarmArn": alarm_arn + error_alarm,
                        "StateValue": "ALARM",
                        "StateReason": "Threshold Crossed: 1 datapoint [0.3 (23/11/26 10:02:00)] was greater than "
                        "the threshold (0.01).",
                    },
                    {"AlarmName": p99_alarm, "AlarmArn": alarm_arn + p99_alarm, "StateValue": "OK"},
                ]
            },
            {"AlarmNames": [error_alarm, p99_alarm]},
        )
        fake.cw.add_response("delete_alarms", {}, {"AlarmNames": [error_alarm, p99_alarm]})

        with pytest.raises(HealthBreachError) as caught:
            fake.engine.deploy(STACK, NEW, strategy=Rolling(observe_seconds=60), health=HEALTH)
        fake.done()

    error = caught.value
    assert error.exit_code == 1
    assert f"alarm {error_alarm} is in ALARM: Threshold Crossed" in error.message
    assert f"rolled the stack back to {OLD} (UPDATE_ROLLBACK_COMPLETE)" in error.message
    report = error.report
    assert report is not None
    assert (report.strategy, report.image, report.previous_image, report.rolled_back) == ("rolling", NEW, OLD, True)
    assert report.breach.startswith(f"alarm {error_alarm} is in ALARM")


def test_a_rollback_without_an_alarm_in_alarm_stays_a_cloudformation_error() -> None:
    error_alarm = f"{STACK}-pipeline-error-rate"
    arn = f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{error_alarm}"
    with StrategyFake() as fake:
        fake.expect_validation()
        fake.expect_describe(STACK, fake.stack("UPDATE_COMPLETE"))
        fake.expect_resources()
        fake.expect_resources()
        fake.expect_metrics({"oldrequests": 0, "olderrors": 0}, [None])  # no baseline: no p99 alarm
        fake.cw.add_response("put_metric_alarm", {}, None)
        fake.cw.add_response(
            "describe_alarms", {"MetricAlarms": [{"AlarmName": error_alarm, "AlarmArn": arn}]}, {"AlarmNames": ANY}
        )
        failed = [
            fake.event(
                "WebGroup", "UPDATE_FAILED", "Received 0 SUCCESS signal(s) out of 1", token="pipeline-update-0001"
            )
        ]
        fake.expect_update(
            {**PARAMS, "ImageId": NEW, "RollingMaxBatchSize": "2", "RollingMinInService": "0"},
            final="UPDATE_ROLLBACK_COMPLETE",
            rollback={
                "RollbackTriggers": [{"Arn": arn, "Type": "AWS::CloudWatch::Alarm"}],
                "MonitoringTimeInMinutes": 1,
            },
            events=failed,
        )
        fake.cw.add_response(
            "describe_alarms",
            {"MetricAlarms": [{"AlarmName": error_alarm, "AlarmArn": arn, "StateValue": "OK"}]},
            {"AlarmNames": ANY},
        )
        fake.cw.add_response("delete_alarms", {}, None)

        with pytest.raises(CloudFormationError) as caught:
            fake.engine.deploy(STACK, NEW, strategy=Cutover(observe_seconds=60), health=HEALTH)
        fake.done()

    assert not isinstance(caught.value, HealthBreachError)
    assert "Received 0 SUCCESS signal(s)" in caught.value.message


def test_a_breaching_pilot_routes_back_before_it_empties_the_slot() -> None:
    """The exact update-stack sequence: launch the slot, route to it, judge the window from
    CloudWatch (the same judge as the local engine), then weights 100:0 *before* the slot's
    instances go, then HealthBreachError with the numbers."""
    with StrategyFake() as fake:
        fake.expect_validation()
        fake.expect_describe(STACK, fake.stack("UPDATE_COMPLETE"))
        fake.expect_resources()
        fake.expect_metrics({"oldrequests": 900, "olderrors": 0}, [0.005])  # the baseline
        base = {**PARAMS, "ImageId": OLD}
        launched = {**base, "CanaryImageId": NEW, "CanaryCapacity": "1", "PrimaryWeight": "100", "CanaryWeight": "0"}
        fake.expect_update(launched)
        fake.expect_resources()
        fake.elb.add_response(
            "describe_target_health",
            {
                "TargetHealthDescriptions": [
                    {"Target": {"Id": "i-0abc", "Port": 80}, "TargetHealth": {"State": "healthy"}}
                ]
            },
            {"TargetGroupArn": CANARY_TG},
        )
        routed = {**launched, "PrimaryWeight": "1", "CanaryWeight": "1"}
        fake.expect_update(routed)
        fake.expect_resources()
        fake.expect_metrics({"newrequests": 50, "newerrors": 15, "oldrequests": 50, "olderrors": 0}, [0.004, 0.005])
        fake.expect_update({**routed, "PrimaryWeight": "100", "CanaryWeight": "0"})
        fake.expect_update({**base, **plans.IDLE_SLOT})

        with pytest.raises(HealthBreachError) as caught:
            fake.engine.deploy(STACK, NEW, strategy=Pilot(observe_seconds=1), health=HEALTH)
        fake.done()

    weights = [(u["CanaryImageId"], u["CanaryCapacity"], u["PrimaryWeight"], u["CanaryWeight"]) for u in fake.updates]
    assert weights == [(NEW, "1", "100", "0"), (NEW, "1", "1", "1"), (NEW, "1", "100", "0"), ("", "0", "100", "0")]
    assert all(u["ImageId"] == OLD for u in fake.updates)  # the web group never left the old version
    report = caught.value.report
    assert report is not None
    assert report.rolled_back
    assert report.strategy == "pilot"
    assert "error rate 30.0% of the new version is above the limit 1.0%" in report.breach
    assert "the old version failed 0 of 50" in report.breach
    [step] = report.steps
    assert (step.verdict, step.new_share, step.new.requests, step.new.errors) == ("breach", 0.5, 50, 15)
    assert report.time_to_detect is not None
    assert report.time_to_restore is not None
    assert "health breach at pilot" in caught.value.message


def test_new_instances_that_never_get_healthy_fail_the_deploy_with_the_slot_emptied() -> None:
    """AWS's AutoScaling update completes before the load balancer routes to the new instances:
    the engine waits for them to pass the target group's health check, never routes to them if
    they do not, and empties the slot before it fails (exit 1), saying why."""
    with StrategyFake() as fake:
        fake.engine.healthy_timeout_seconds = 5.0
        fake.expect_validation()
        fake.expect_describe(STACK, fake.stack("UPDATE_COMPLETE"))
        base = {**PARAMS, "ImageId": OLD}
        launched = {**base, "CanaryImageId": NEW, "CanaryCapacity": "2", "PrimaryWeight": "100", "CanaryWeight": "0"}
        fake.expect_update(launched)
        fake.expect_resources()
        unhealthy = {
            "TargetHealthDescriptions": [
                {
                    "Target": {"Id": f"i-0{n}", "Port": 80},
                    "TargetHealth": {"State": "unhealthy", "Reason": "Target.ResponseCodeMismatch"},
                }
                for n in (1, 2)
            ]
        }
        for _ in range(5):  # polled at 0, 1, 2.5, 4.75 and 8.1 s (fake clock): then past the 5 s deadline
            fake.elb.add_response("describe_target_health", unhealthy, {"TargetGroupArn": CANARY_TG})
        fake.expect_update({**base, **plans.IDLE_SLOT})

        with pytest.raises(CloudFormationError) as caught:
            fake.engine.deploy(STACK, NEW, strategy=BlueGreen(observe_seconds=0))
        fake.done()

    error = caught.value
    assert not isinstance(error, HealthBreachError)
    assert error.exit_code == 1
    assert "has 0 of 2 healthy targets running" in error.message
    assert "Target.ResponseCodeMismatch" in error.message
    assert f"traffic is back on the web group ({OLD}) and the canary slot is empty" in error.message
    assert [u["CanaryWeight"] for u in fake.updates] == ["0", "0"]  # never routed to them
