"""What the control plane says about a deployed stack: its status, the image its launch template
runs, and (on real AWS) the group's instances on that version, InService and healthy. The engine
adds HTTP through the balancer where the data plane is real."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.engines.aws.session import AwsSession
from pipeline.engines.stack import OnEvent

Check = tuple[str, bool, str]
"""(what was checked, whether it holds, why not)."""


def control_plane_checks(
    session: AwsSession, raw: Mapping[str, Any], image: str | None, *, rollout: bool, on_event: OnEvent
) -> list[Check]:
    checks: list[Check] = []
    status = raw["StackStatus"]
    checks.append((f"stack status {status}", status in {"CREATE_COMPLETE", "UPDATE_COMPLETE"}, f"stack is {status}"))
    resources = session.call("cloudformation", "describe_stack_resources", StackName=raw["StackId"]).get(
        "StackResources", []
    )
    template_id = _resource(resources, "AWS::EC2::LaunchTemplate", "LaunchTemplate")
    group = _resource(resources, "AWS::AutoScaling::AutoScalingGroup", "WebGroup")
    latest: str | None = None
    if template_id is None:
        on_event("no launch template in the stack: image check skipped")
    else:
        versions = session.call(
            "ec2", "describe_launch_template_versions", LaunchTemplateId=template_id, Versions=["$Latest"]
        ).get("LaunchTemplateVersions", [])
        found = versions[0]["LaunchTemplateData"].get("ImageId") if versions else None
        latest = str(versions[0]["VersionNumber"]) if versions else None
        checks.append(
            (
                f"launch template {template_id} version {latest} ImageId {found}",
                image is None or found == image,
                f"launch template runs {found}, expected {image}",
            )
        )
    if rollout and group is not None and latest is not None:
        groups = session.call("autoscaling", "describe_auto_scaling_groups", AutoScalingGroupNames=[group]).get(
            "AutoScalingGroups", []
        )
        if groups:
            checks.append(_rollout_check(groups[0], latest))
    for name, ok, _ in checks:
        on_event(f"{'ok' if ok else 'FAILED'}: {name}")
    return checks


def _resource(resources: Sequence[Mapping[str, Any]], kind: str, preferred: str) -> str | None:
    matching = [r for r in resources if r.get("ResourceType") == kind and r.get("PhysicalResourceId")]
    for r in matching:
        if r.get("LogicalResourceId") == preferred:
            return str(r["PhysicalResourceId"])
    return str(matching[0]["PhysicalResourceId"]) if matching else None


def _rollout_check(group: Mapping[str, Any], latest: str) -> Check:
    name = str(group.get("AutoScalingGroupName"))
    wanted = int(group.get("DesiredCapacity", 0))
    version = str((group.get("LaunchTemplate") or {}).get("Version", ""))
    good = [
        i
        for i in group.get("Instances", [])
        if str((i.get("LaunchTemplate") or {}).get("Version", "")) == latest
        and i.get("LifecycleState") == "InService"
        and i.get("HealthStatus") == "Healthy"
    ]
    ok = version == latest and len(good) >= wanted
    why = (
        f"group {name} uses launch template version {version or '?'}, {len(good)} of {wanted} instances "
        f"InService and healthy on version {latest}"
    )
    return (f"group {name}: {len(good)}/{wanted} instances on launch template version {latest}", ok, why)


__all__ = ["Check", "control_plane_checks"]
