"""Every strategy of the aws engine against a real moto server over HTTP, with the reference template.

The listener rule's weights, the canary slot's group and the web group's launch template are read
from moto at each step (through `on_event`, when the engine starts a window). A breach is made the
way AWS would show it: 5xx answers of the canary slot's target group in CloudWatch (moto's
put_metric_data), during the window. What moto cannot do (rollback triggers that fire,
UPDATE_ROLLBACK_COMPLETE) is tested with recorded responses in tests/unit/test_aws_strategies.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pipeline.engines.aws.engine import CloudFormationEngine
from pipeline.engines.stack import StackState
from pipeline.errors import HealthBreachError
from pipeline.model import AwsSettings
from pipeline.strategy import BlueGreen, Canary, Cutover, Group, Half, Health, Phased, Pilot, Rolling
from tests.integration.test_cloudformation import (  # the fixtures: one moto server, emptied for every test
    AMI_A,
    AMI_B,
    DEFAULTS,
    TEMPLATE,
    client,
    fresh_moto,
    moto_url,
)

pytestmark = pytest.mark.integration

__all__ = ["fresh_moto", "moto_url"]  # imported for pytest: they are fixtures of this module too

AMI_C = "ami-1e749f67"  # another image of moto's stock catalogue

IDLE = {"CanaryImageId": "", "CanaryCapacity": "0", "PrimaryWeight": "100", "CanaryWeight": "0"}
HEALTH = Health(max_error_rate=0.05, min_requests=10, min_p99_ms=100)


def engine(moto_url: str) -> CloudFormationEngine:
    return CloudFormationEngine(
        "hello-web", TEMPLATE, AwsSettings(endpoint_url=moto_url), poll_seconds=0.05, metrics_grace_seconds=0
    )


def resources(moto_url: str, stack: str) -> dict[str, str]:
    found = client(moto_url, "cloudformation").describe_stack_resources(StackName=stack)["StackResources"]
    return {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in found if r.get("LogicalResourceId")}


def snapshot(moto_url: str, stack: str) -> dict[str, Any]:
    """What serves now: the weighted rule's target groups and weights, each group's size and image."""
    ids = resources(moto_url, stack)
    elb, asg, ec2 = client(moto_url, "elbv2"), client(moto_url, "autoscaling"), client(moto_url, "ec2")
    rules = elb.describe_rules(ListenerArn=ids["Listener"])["Rules"]
    weighted = next(r for r in rules if len((r["Actions"][0].get("ForwardConfig") or {}).get("TargetGroups", [])) == 2)
    forward = weighted["Actions"][0]["ForwardConfig"]["TargetGroups"]
    by_arn = {ids["TargetGroup"]: "web", ids["CanaryTargetGroup"]: "canary"}
    weights = {by_arn[t["TargetGroupArn"]]: t["Weight"] for t in forward}
    sticky = weighted["Actions"][0]["ForwardConfig"].get("TargetGroupStickinessConfig") or {}
    group_rules = sorted(
        (
            int(r["Priority"]),
            c["HttpHeaderConfig"]["HttpHeaderName"],
            tuple(c["HttpHeaderConfig"]["Values"]),
            by_arn[r["Actions"][0]["TargetGroupArn"]],
        )
        for r in rules
        if not r.get("IsDefault") and r is not weighted
        for c in r["Conditions"]
        # moto updates a rule whose Condition turned false instead of deleting it, as AWS does: it
        # is left with an empty header name, which matches nothing. Counted as the absent rule.
        if c.get("Field") == "http-header" and c["HttpHeaderConfig"]["HttpHeaderName"]
    )
    groups: dict[str, Any] = {}
    for logical, lt, tg in (
        ("WebGroup", "LaunchTemplate", "TargetGroup"),
        ("CanaryGroup", "CanaryLaunchTemplate", "CanaryTargetGroup"),
    ):
        group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[ids[logical]])["AutoScalingGroups"][0]
        version = ec2.describe_launch_template_versions(LaunchTemplateId=ids[lt], Versions=["$Latest"])
        image = version["LaunchTemplateVersions"][0]["LaunchTemplateData"]["ImageId"]
        groups[logical] = (group["DesiredCapacity"], image, group["TargetGroupARNs"] == [ids[tg]])
    return {
        "weights": (weights["web"], weights["canary"]),
        "web": groups["WebGroup"],
        "canary": groups["CanaryGroup"],
        "sticky": sticky.get("DurationSeconds") if sticky.get("Enabled") in (True, "true") else None,
        "rules": group_rules,
    }


def all_groups(moto_url: str) -> list[str]:
    return [
        g["AutoScalingGroupName"]
        for g in client(moto_url, "autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]
    ]


def put_metrics(moto_url: str, stack: str, *, canary: tuple[int, int], web: tuple[int, int]) -> None:
    """(requests, 5xx) of each target group, as the load balancer reports them to CloudWatch."""
    ids = resources(moto_url, stack)
    balancer = ids["LoadBalancer"].split(":loadbalancer/")[-1]
    data = []
    for logical, (requests, errors) in (("CanaryTargetGroup", canary), ("TargetGroup", web)):
        dims = [
            {"Name": "TargetGroup", "Value": ids[logical].rsplit(":", 1)[-1]},
            {"Name": "LoadBalancer", "Value": balancer},
        ]
        data += [
            {"MetricName": "RequestCount", "Dimensions": dims, "Value": requests, "Unit": "Count"},
            {"MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": dims, "Value": errors, "Unit": "Count"},
        ]
    client(moto_url, "cloudwatch").put_metric_data(Namespace="AWS/ApplicationELB", MetricData=data)


def at_windows(action: Callable[[str], None]) -> Callable[[str], None]:
    """An on_event that calls `action(event)` when the engine starts an observation window."""

    def on_event(text: str) -> None:
        if text.startswith("observing "):
            action(text)

    return on_event


def assert_finished(moto_url: str, stack: str, state: StackState, image: str) -> None:
    assert state.image == image
    assert dict(state.parameters) == {**DEFAULTS, "ImageId": image, **IDLE}
    now = snapshot(moto_url, stack)
    assert now["weights"] == (100, 0)
    assert now["web"][:2] == (2, image)
    assert now["canary"][0] == 0
    assert (now["sticky"], now["rules"]) == (None, [])  # no stickiness, no group rule
    assert len(all_groups(moto_url)) == 2  # the web group and the (empty) slot: nothing duplicated


# --- the slot strategies ----------------------------------------------------------------------------


def test_a_canary_moves_the_weights_step_by_step_then_the_web_group_takes_the_new_image(moto_url: str) -> None:
    aws = engine(moto_url)
    stack = "hello-web-canary"
    aws.deploy(stack, AMI_A)
    seen: list[dict[str, Any]] = []

    state = aws.deploy(
        stack,
        AMI_B,
        strategy=Canary(steps=(10, 50, 100), observe_seconds=0),
        on_event=at_windows(lambda _: seen.append(snapshot(moto_url, stack))),
    )

    assert [s["weights"] for s in seen] == [(90, 10), (50, 50), (0, 100)]
    assert [s["canary"][:2] for s in seen] == [(1, AMI_B), (1, AMI_B), (2, AMI_B)]
    assert all(s["web"][:2] == (2, AMI_A) for s in seen)  # the old version serves beside it, untouched
    assert all(s["canary"][2] and s["web"][2] for s in seen)  # each group in its own target group
    assert_finished(moto_url, stack, state, AMI_B)
    report = state.report
    assert report is not None
    assert (report.strategy, report.image, report.previous_image) == ("canary", AMI_B, AMI_A)
    assert [round(s.new_share, 2) for s in report.steps] == [0.1, 0.5, 1.0]
    assert not report.rolled_back


@pytest.mark.parametrize(
    ("strategy", "weights", "capacity"),
    [
        (Pilot(observe_seconds=0), (1, 1), 1),
        (Half(observe_seconds=0), (1, 1), 1),
        (BlueGreen(observe_seconds=0, keep_old_seconds=0), (0, 100), 2),
    ],
    ids=["pilot", "half", "blue-green"],
)
def test_pilot_half_and_blue_green_use_the_slot_with_their_own_shares(
    moto_url: str, strategy: Pilot | Half | BlueGreen, weights: tuple[int, int], capacity: int
) -> None:
    aws = engine(moto_url)
    stack = f"hello-web-{strategy.kind}"
    aws.deploy(stack, AMI_A)
    seen: list[dict[str, Any]] = []

    state = aws.deploy(
        stack, AMI_B, strategy=strategy, on_event=at_windows(lambda _: seen.append(snapshot(moto_url, stack)))
    )

    assert [(s["weights"], s["canary"][:2], s["web"][:2]) for s in seen] == [(weights, (capacity, AMI_B), (2, AMI_A))]
    assert_finished(moto_url, stack, state, AMI_B)
    assert state.report is not None
    assert state.report.strategy == strategy.kind


def test_a_healthy_blue_green_window_is_judged_from_cloudwatch(moto_url: str) -> None:
    aws = engine(moto_url)
    stack = "hello-web-bg-ok"
    aws.deploy(stack, AMI_A)

    state = aws.deploy(
        stack,
        AMI_B,
        strategy=BlueGreen(observe_seconds=1, keep_old_seconds=0),
        health=HEALTH,
        on_event=at_windows(lambda _: put_metrics(moto_url, stack, canary=(40, 0), web=(0, 0))),
    )

    assert_finished(moto_url, stack, state, AMI_B)
    report = state.report
    assert report is not None
    assert [s.verdict for s in report.steps] == ["passed"]
    assert (report.new.requests, report.new.errors) == (40, 0)


def test_blue_green_keeps_the_old_set_warm_and_unrouted_until_its_time_is_up(moto_url: str) -> None:
    """After the switch the web group keeps the old image at full size (weight 0) for
    keep_old_seconds, watched; only then does it take the new image."""
    aws = engine(moto_url)
    stack = "hello-web-bg-warm"
    aws.deploy(stack, AMI_A)
    seen: list[tuple[str, dict[str, Any]]] = []

    def look_then_report_healthy(text: str) -> None:
        seen.append((text, snapshot(moto_url, stack)))
        put_metrics(moto_url, stack, canary=(40, 0), web=(0, 0))

    state = aws.deploy(
        stack,
        AMI_B,
        strategy=BlueGreen(observe_seconds=1, keep_old_seconds=2),
        health=HEALTH,
        on_event=at_windows(look_then_report_healthy),
    )

    assert [text for text, _ in seen] == [
        "observing blue-green: switch to 2 green instance(s) for 1 s",
        f"observing blue-green: the old set ({AMI_A}) kept warm for 1 s",
    ]
    for _, now in seen:  # the green set serves everything; the blue set is still there, unrouted
        assert (now["weights"], now["canary"][:2], now["web"][:2]) == ((0, 100), (2, AMI_B), (2, AMI_A))
    assert_finished(moto_url, stack, state, AMI_B)
    report = state.report
    assert report is not None
    assert [s.verdict for s in report.steps] == ["passed", "passed"]
    assert report.steps[-1].what == f"blue-green: the old set ({AMI_A}) kept warm"


def test_a_breach_while_the_old_set_is_warm_switches_back_to_it_at_once(moto_url: str) -> None:
    aws = engine(moto_url)
    stack = "hello-web-bg-back"
    aws.deploy(stack, AMI_A)
    windows: list[str] = []

    def release_goes_bad_after_the_switch(text: str) -> None:
        windows.append(text)
        failed = 0 if len(windows) == 1 else 12  # healthy in the first window, failing in the warm one
        put_metrics(moto_url, stack, canary=(40, failed), web=(0, 0))

    with pytest.raises(HealthBreachError) as caught:
        aws.deploy(
            stack,
            AMI_B,
            strategy=BlueGreen(observe_seconds=1, keep_old_seconds=3),
            health=HEALTH,
            on_event=at_windows(release_goes_bad_after_the_switch),
        )

    assert len(windows) == 2
    report = caught.value.report
    assert report is not None
    assert report.rolled_back
    assert [s.verdict for s in report.steps] == ["passed", "breach"]
    assert report.steps[-1].what == f"blue-green: the old set ({AMI_A}) kept warm"
    assert "error rate 30.0% of the new version" in report.breach
    # Back on the old set, which never stopped: the web group still runs the old image.
    assert dict(aws.describe(stack).parameters) == {**DEFAULTS, "ImageId": AMI_A, **IDLE}
    now = snapshot(moto_url, stack)
    assert (now["weights"], now["web"][:2], now["canary"][0]) == ((100, 0), (2, AMI_A), 0)


def test_a_breach_routes_back_to_the_old_version_empties_the_slot_and_says_why(moto_url: str) -> None:
    aws = engine(moto_url)
    stack = "hello-web-bad"
    aws.deploy(stack, AMI_A)
    seen: list[dict[str, Any]] = []

    def bad_release(_: str) -> None:
        seen.append(snapshot(moto_url, stack))
        put_metrics(moto_url, stack, canary=(40, 12), web=(360, 0))

    with pytest.raises(HealthBreachError) as caught:
        aws.deploy(
            stack,
            AMI_B,
            strategy=Canary(steps=(10, 100), observe_seconds=1),
            health=HEALTH,
            on_event=at_windows(bad_release),
        )

    assert [s["weights"] for s in seen] == [(90, 10)]  # caught at the first step
    report = caught.value.report
    assert report is not None
    assert report.rolled_back
    assert "error rate 30.0% of the new version is above the limit 5.0%" in report.breach
    assert (report.steps[-1].verdict, report.steps[-1].new.errors, report.steps[-1].old.requests) == ("breach", 12, 360)
    assert report.time_to_detect is not None
    assert report.time_to_restore is not None
    assert "health breach at canary 10%" in str(caught.value)
    after = aws.describe(stack)
    assert dict(after.parameters) == {**DEFAULTS, "ImageId": AMI_A, **IDLE}
    now = snapshot(moto_url, stack)
    assert (now["weights"], now["web"][:2], now["canary"][0]) == ((100, 0), (2, AMI_A), 0)


def test_under_an_emulator_without_metrics_a_window_is_not_judged_rather_than_a_breach(moto_url: str) -> None:
    """moto has no load balancer to count requests: a window with no metric at all for either
    version is 'not observed' (the emulator's limit), so the chain can rehearse a canary on moto.
    On AWS the same silence is a breach: the new version could not be judged."""
    aws = engine(moto_url)
    stack = "hello-web-quiet"
    aws.deploy(stack, AMI_A)
    events: list[str] = []

    state = aws.deploy(stack, AMI_B, strategy=Pilot(observe_seconds=1), health=HEALTH, on_event=events.append)

    assert_finished(moto_url, stack, state, AMI_B)
    assert state.report is not None
    assert [s.verdict for s in state.report.steps] == ["not observed"]
    assert any("no load balancer metrics" in e for e in events)


def test_a_canary_interrupted_mid_sequence_is_finished_by_the_next_deploy(moto_url: str) -> None:
    aws = engine(moto_url)
    stack = "hello-web-crash"
    aws.deploy(stack, AMI_A)

    class Crash(Exception):
        pass

    def crash_at_50(text: str) -> None:
        if "canary 50%" in text:
            raise Crash

    with pytest.raises(Crash):
        aws.deploy(
            stack, AMI_B, strategy=Canary(steps=(10, 50, 100), observe_seconds=0), on_event=at_windows(crash_at_50)
        )
    left = aws.describe(stack).parameters
    assert (left["ImageId"], left["CanaryImageId"], left["CanaryWeight"]) == (AMI_A, AMI_B, "50")

    events: list[str] = []
    seen: list[dict[str, Any]] = []

    def record(text: str) -> None:
        events.append(text)
        if text.startswith("observing "):
            seen.append(snapshot(moto_url, stack))

    state = aws.deploy(stack, AMI_B, strategy=Canary(steps=(10, 50, 100), observe_seconds=0), on_event=record)

    assert any("going on at canary 50%" in e for e in events)
    assert [s["weights"] for s in seen] == [(50, 50), (0, 100)]  # never back to 10 %
    assert_finished(moto_url, stack, state, AMI_B)
    again = aws.deploy(stack, AMI_B, strategy=Canary(steps=(10, 50, 100), observe_seconds=0))
    assert again == state
    assert again.report is not None
    assert again.report.strategy == "none"


def test_a_slot_left_by_another_version_is_emptied_before_a_deploy_uses_it(moto_url: str) -> None:
    """A crash mid-canary of B, then a release of C (or a default rolling deploy): traffic goes
    back to the web group first, the slot is emptied, then C goes its own way."""
    aws = engine(moto_url)
    stack = "hello-web-other"
    aws.deploy(stack, AMI_A)

    def crash(_: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        aws.deploy(stack, AMI_B, strategy=Canary(steps=(50, 100), observe_seconds=0), on_event=at_windows(crash))
    events: list[str] = []

    state = aws.deploy(stack, AMI_C, strategy=Pilot(observe_seconds=0), on_event=events.append)

    assert any("holds another version" in e for e in events)
    assert_finished(moto_url, stack, state, AMI_C)

    with pytest.raises(KeyboardInterrupt):
        aws.deploy(stack, AMI_B, strategy=Canary(steps=(50, 100), observe_seconds=0), on_event=at_windows(crash))
    rolled = aws.deploy(stack, AMI_A)  # a plain rolling deploy (e.g. the rollback stage) cleans up too
    assert_finished(moto_url, stack, rolled, AMI_A)


# --- traffic shaping: a sticky canary, a phased rollout by user groups -----------------------------------

INTERNAL = Group(name="internal", header="X-User-Group", values=("internal", "staff"))
BETA = Group(name="beta", header="X-Beta", values=("1",))


def test_a_sticky_canary_keeps_users_on_one_target_group_until_the_last_step(moto_url: str) -> None:
    """The weighted rule's target-group stickiness is on at every step below 100 % (set with the
    weights, after the slot is healthy) and off at 100 % and after: a user stays on the version it
    got for the whole step and never flips back while the canary runs."""
    aws = engine(moto_url)
    stack = "hello-web-sticky"
    aws.deploy(stack, AMI_A)
    seen: list[dict[str, Any]] = []

    state = aws.deploy(
        stack,
        AMI_B,
        strategy=Canary(steps=(10, 50, 100), observe_seconds=0, sticky=True),
        on_event=at_windows(lambda _: seen.append(snapshot(moto_url, stack))),
    )

    assert [(s["weights"], s["sticky"]) for s in seen] == [((90, 10), 86400), ((50, 50), 86400), ((0, 100), None)]
    assert all(s["rules"] == [] for s in seen)
    assert_finished(moto_url, stack, state, AMI_B)
    assert state.report is not None
    assert [s.what for s in state.report.steps] == ["sticky canary 10%", "sticky canary 50%", "sticky canary 100%"]


def test_a_breach_in_a_sticky_canary_turns_stickiness_off_with_the_weights(moto_url: str) -> None:
    """Users held on the canary's target group by stickiness must leave it at once: the update
    that sets the weights back to 100 : 0 also switches stickiness off."""
    aws = engine(moto_url)
    stack = "hello-web-sticky-bad"
    aws.deploy(stack, AMI_A)
    routed_back: list[dict[str, Any]] = []

    def record(text: str) -> None:
        if text.startswith("observing "):
            assert snapshot(moto_url, stack)["sticky"] == 86400
            put_metrics(moto_url, stack, canary=(40, 12), web=(360, 0))
        if text.startswith(f"stack {stack} updated: back to {AMI_A}"):
            routed_back.append(snapshot(moto_url, stack))

    with pytest.raises(HealthBreachError):
        aws.deploy(
            stack,
            AMI_B,
            strategy=Canary(steps=(10, 100), observe_seconds=1, sticky=True),
            health=HEALTH,
            on_event=record,
        )

    # One update: weights 100 : 0 and stickiness off, while the slot still runs (emptied after).
    [back] = routed_back
    assert (back["weights"], back["sticky"], back["canary"][0]) == ((100, 0), None, 1)
    now = snapshot(moto_url, stack)
    assert (now["weights"], now["sticky"], now["canary"][0]) == ((100, 0), None, 0)
    assert dict(aws.describe(stack).parameters) == {**DEFAULTS, "ImageId": AMI_A, **IDLE}


def test_a_phased_rollout_adds_a_header_rule_per_group_then_sends_everyone(moto_url: str) -> None:
    aws = engine(moto_url)
    stack = "hello-web-phased"
    aws.deploy(stack, AMI_A)
    seen: list[dict[str, Any]] = []

    state = aws.deploy(
        stack,
        AMI_B,
        strategy=Phased(groups=(INTERNAL, BETA), observe_seconds=0),
        on_event=at_windows(lambda _: seen.append(snapshot(moto_url, stack))),
    )

    internal = (1, "X-User-Group", ("internal", "staff"), "canary")
    beta = (2, "X-Beta", ("1",), "canary")
    assert [s["rules"] for s in seen] == [[internal], [internal, beta], []]
    assert [s["weights"] for s in seen] == [(100, 0), (100, 0), (0, 100)]  # nobody else before the last phase
    assert [s["canary"][:2] for s in seen] == [(1, AMI_B), (1, AMI_B), (2, AMI_B)]
    assert all(s["web"][:2] == (2, AMI_A) for s in seen)
    assert_finished(moto_url, stack, state, AMI_B)
    assert state.report is not None
    assert state.report.strategy == "phased"
    assert [s.what for s in state.report.steps] == [
        "phase 1: internal on the canary slot",
        "phase 2: internal, beta on the canary slot",
        "phase 3: everyone on the canary slot",
    ]


def test_a_breach_in_a_phase_removes_the_group_rules_with_the_weights(moto_url: str) -> None:
    aws = engine(moto_url)
    stack = "hello-web-phased-bad"
    aws.deploy(stack, AMI_A)
    seen: list[dict[str, Any]] = []
    routed_back: list[dict[str, Any]] = []

    def record(text: str) -> None:
        if text.startswith("observing "):
            seen.append(snapshot(moto_url, stack))
            put_metrics(moto_url, stack, canary=(40, 12), web=(360, 0))
        if text.startswith(f"stack {stack} updated: back to {AMI_A}"):
            routed_back.append(snapshot(moto_url, stack))

    with pytest.raises(HealthBreachError) as caught:
        aws.deploy(
            stack, AMI_B, strategy=Phased(groups=(INTERNAL, BETA), observe_seconds=1), health=HEALTH, on_event=record
        )

    assert [len(s["rules"]) for s in seen] == [1]  # caught in the first phase
    [back] = routed_back  # the group's rule goes in the update that routes everyone back, before the slot empties
    assert (back["weights"], back["rules"], back["canary"][0]) == ((100, 0), [], 1)
    assert "health breach at phase 1: internal" in str(caught.value)
    now = snapshot(moto_url, stack)
    assert (now["weights"], now["rules"], now["canary"][0]) == ((100, 0), [], 0)
    assert dict(aws.describe(stack).parameters) == {**DEFAULTS, "ImageId": AMI_A, **IDLE}


def test_a_phased_rollout_interrupted_in_its_second_phase_goes_on_there(moto_url: str) -> None:
    """Resumed at the phase it was in (never narrower: a group that had the new version keeps it)."""
    aws = engine(moto_url)
    stack = "hello-web-phased-crash"
    aws.deploy(stack, AMI_A)
    strategy = Phased(groups=(INTERNAL, BETA), observe_seconds=0)

    class Crash(Exception):
        pass

    def crash_in_phase_2(text: str) -> None:
        if "phase 2" in text:
            raise Crash

    with pytest.raises(Crash):
        aws.deploy(stack, AMI_B, strategy=strategy, on_event=at_windows(crash_in_phase_2))
    left = aws.describe(stack).parameters
    assert (left["Group1Header"], left["Group2Header"], left["CanaryImageId"]) == ("X-User-Group", "X-Beta", AMI_B)
    events: list[str] = []
    seen: list[dict[str, Any]] = []

    def record(text: str) -> None:
        events.append(text)
        if text.startswith("observing "):
            seen.append(snapshot(moto_url, stack))

    state = aws.deploy(stack, AMI_B, strategy=strategy, on_event=record)

    assert any("going on at phase 2" in e for e in events), events
    assert [len(s["rules"]) for s in seen] == [2, 0]
    assert_finished(moto_url, stack, state, AMI_B)


# --- rolling and cutover ------------------------------------------------------------------------------


def test_cutover_and_rolling_set_the_update_policy_parameters_for_one_deploy_only(moto_url: str) -> None:
    aws = engine(moto_url)
    stack = "hello-web-roll"
    aws.deploy(stack, AMI_A)

    cut = aws.deploy(stack, AMI_B, strategy=Cutover())
    assert (cut.parameters["RollingMaxBatchSize"], cut.parameters["RollingMinInService"]) == ("2", "0")
    assert cut.report is not None
    assert cut.report.strategy == "cutover"

    rolled = aws.deploy(stack, AMI_C, strategy=Rolling(batch_size=2, min_in_service=1, observe_seconds=30))
    assert (
        rolled.parameters["RollingMaxBatchSize"],
        rolled.parameters["RollingMinInService"],
        rolled.parameters["RollingPauseTime"],
    ) == ("2", "1", "PT30S")

    default = aws.deploy(stack, AMI_A)  # the template's own values again
    assert dict(default.parameters) == {**DEFAULTS, "ImageId": AMI_A}


def test_rolling_with_health_makes_rollback_trigger_alarms_for_the_update_only(moto_url: str) -> None:
    aws = engine(moto_url)
    stack = "hello-web-alarms"
    aws.deploy(stack, AMI_A)
    cloudwatch = client(moto_url, "cloudwatch")
    during: list[list[dict[str, Any]]] = []

    def look(text: str) -> None:
        if text.startswith("rollback triggers:"):
            during.append(cloudwatch.describe_alarms(AlarmNamePrefix=f"{stack}-pipeline-")["MetricAlarms"])

    state = aws.deploy(stack, AMI_B, strategy=Rolling(observe_seconds=60), health=HEALTH, on_event=look)

    assert state.image == AMI_B
    [alarms] = during
    assert [a["AlarmName"] for a in alarms] == [f"{stack}-pipeline-error-rate"]  # no baseline: no p99 alarm
    error_rate = alarms[0]
    assert error_rate["Threshold"] == 0.05
    expression = next(m for m in error_rate["Metrics"] if "Expression" in m)["Expression"]
    assert expression == "IF(requests >= 10, errors / requests, 0)"
    dims = {d["Name"] for d in error_rate["Metrics"][0]["MetricStat"]["Metric"]["Dimensions"]}
    assert dims == {"TargetGroup", "LoadBalancer"}
    assert cloudwatch.describe_alarms(AlarmNamePrefix=f"{stack}-pipeline-")["MetricAlarms"] == []  # deleted after


def test_delete_removes_alarms_a_killed_deploy_left_behind(moto_url: str) -> None:
    aws = engine(moto_url)
    stack = "hello-web-leftover"
    aws.deploy(stack, AMI_A)
    cloudwatch = client(moto_url, "cloudwatch")

    def killed(text: str) -> None:
        if text.startswith("rollback triggers:"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        aws.deploy(stack, AMI_B, strategy=Cutover(observe_seconds=60), health=HEALTH, on_event=killed)
    assert [a["AlarmName"] for a in cloudwatch.describe_alarms()["MetricAlarms"]] == [f"{stack}-pipeline-error-rate"]

    aws.delete(stack)

    assert cloudwatch.describe_alarms()["MetricAlarms"] == []


def test_a_strategy_without_a_window_judges_nothing_and_puts_no_alarm(moto_url: str) -> None:
    """What every stage passes by default (a rolling update, Health() thresholds) observes nothing,
    as on the local engine: no CloudWatch alarm, no rollback trigger, no CloudWatch permission needed."""
    aws = engine(moto_url)
    stack = "hello-web-default"
    aws.deploy(stack, AMI_A)
    events: list[str] = []

    state = aws.deploy(stack, AMI_B, strategy=Rolling(), health=Health(), on_event=events.append)

    assert state.image == AMI_B
    assert not [e for e in events if e.startswith("rollback triggers:")]
    assert client(moto_url, "cloudwatch").describe_alarms()["MetricAlarms"] == []
    assert state.report is not None
    assert [s.verdict for s in state.report.steps] == ["not observed"]
