"""The aws profile's flag store against the emulators' control planes: the feature-flags example's
template declares an ElastiCache replication group (a primary and two read replicas), passes its
endpoint to the instances (UserData of both launch templates: the web group's and the canary
slot's) and names it in an output that `pipeline flag` finds.

What each emulator shows (checked here):
- MiniStack creates the stack with the replication group (AWS::ElastiCache::ReplicationGroup is
  one of its CloudFormation resources), answers describe_replication_groups with the group, its
  three member clusters and a primary endpoint, resolves !GetAtt FlagStore.PrimaryEndPoint.* in
  the outputs, and deletes it with the stack. No Redis answers at that endpoint (control plane only).
- moto (5.x, over HTTP) serves ElastiCache's API (create/describe/delete_replication_group), with
  one member cluster whatever NumCacheClusters says; its CloudFormation has no ElastiCache resource
  and refuses the template ("Fn::GetAtt references undefined resource FlagStore"). So the calls are
  tested on moto, the template on MiniStack; both facts are asserted, so a newer moto that adds
  either shows up here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.aws.engine import CloudFormationEngine
from pipeline.model import AwsSettings
from tests.conftest import REPO
from tests.integration.test_cloudformation import moto_url, reset_moto  # noqa: F401  (fixtures)
from tests.integration.test_cloudformation_ministack import credentials, images, ministack_url  # noqa: F401

pytestmark = pytest.mark.integration

TEMPLATE = REPO / "examples" / "feature-flags" / "templates" / "web.yaml"


def client(service: str, url: str) -> Any:
    import boto3

    return boto3.client(
        service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )


def launch_template_user_data(url: str, stack: str) -> dict[str, str]:
    """{logical id: decoded UserData} of the stack's launch templates, from EC2."""
    import base64

    resources = client("cloudformation", url).describe_stack_resources(StackName=stack)["StackResources"]
    ec2 = client("ec2", url)
    found = {}
    for resource in resources:
        if resource["ResourceType"] == "AWS::EC2::LaunchTemplate":
            versions = ec2.describe_launch_template_versions(LaunchTemplateId=resource["PhysicalResourceId"])
            data = versions["LaunchTemplateVersions"][-1]["LaunchTemplateData"]
            found[resource["LogicalResourceId"]] = base64.b64decode(data.get("UserData", "")).decode()
    return found


def test_the_template_makes_a_replication_group_whose_endpoint_the_pipeline_finds(
    ministack_url: str,  # noqa: F811
    images: list[str],  # noqa: F811
    tmp_path: Path,
) -> None:
    from pipeline import Bake, Environment, Flag, Pipeline, Promote
    from pipeline.flags.locate import flag_endpoint

    aws = CloudFormationEngine("ff", TEMPLATE, AwsSettings(endpoint_url=ministack_url), poll_seconds=0.25)
    events: list[str] = []
    state = aws.deploy("ff-production", images[0], on_event=events.append)
    assert any("FlagStore (AWS::ElastiCache::ReplicationGroup) CREATE_COMPLETE" in e for e in events)
    groups = client("elasticache", ministack_url).describe_replication_groups()["ReplicationGroups"]
    assert len(groups) == 1
    group = groups[0]
    assert len(group["MemberClusters"]) == 3  # a primary and two read replicas
    primary = group["NodeGroups"][0]["PrimaryEndpoint"]
    endpoint = state.details["output.FlagStoreEndpoint"]
    assert endpoint == f"{primary['Address']}:{primary['Port']}"
    # the instances get it through the launch template's UserData
    template = json.loads(json.dumps(client("cloudformation", ministack_url).get_template(StackName="ff-production")))
    assert "PIPELINE_FLAGS_MASTER=${FlagStore.PrimaryEndPoint.Address}" in str(template["TemplateBody"])
    # both launch templates (the web group's and the canary slot's) as EC2 holds them: the endpoint resolved
    user_data = launch_template_user_data(ministack_url, "ff-production")
    assert sorted(user_data) == ["CanaryLaunchTemplate", "LaunchTemplate"]
    for name, script in user_data.items():
        assert f"PIPELINE_FLAGS_MASTER={primary['Address']}:{primary['Port']}" in script, (name, script)

    # `pipeline flag` finds the store from the stack's output (reachable from inside the VPC only)
    root = tmp_path
    (root / "templates").mkdir()
    (root / "templates" / "web.yaml").write_text(TEMPLATE.read_text())
    with Pipeline(
        "ff",
        flags=[Flag(name="new-feature")],
        environments=[Environment(name="production", template="templates/web.yaml")],
        profile="aws",
    ) as p:
        Bake(name="bake", template="images/web.pkr.hcl") >> Promote(name="promote", image="bake")
    spec = p.spec
    environ = {"AWS_ENDPOINT_URL": ministack_url, "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}
    found = flag_endpoint(spec, spec.environment("production"), "aws", root, environ=environ)
    assert found.master == endpoint
    aws.delete("ff-production")
    assert client("elasticache", ministack_url).describe_replication_groups()["ReplicationGroups"] == []


def test_moto_serves_the_replication_group_calls(moto_url: str) -> None:  # noqa: F811
    elasticache = client("elasticache", moto_url)
    elasticache.create_replication_group(
        ReplicationGroupId="ff-flags",
        ReplicationGroupDescription="Feature flags of the web service",
        Engine="redis",
        CacheNodeType="cache.t3.micro",
        NumCacheClusters=3,
        Port=6379,
    )
    group = elasticache.describe_replication_groups(ReplicationGroupId="ff-flags")["ReplicationGroups"][0]
    assert group["Status"] in ("creating", "available")
    assert group["MemberClusters"] == ["ff-flags-001"]  # moto: one member, whatever NumCacheClusters says
    elasticache.delete_replication_group(ReplicationGroupId="ff-flags")


def test_motos_cloudformation_cannot_make_the_replication_group(moto_url: str) -> None:  # noqa: F811
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="undefined resource FlagStore"):
        client("cloudformation", moto_url).create_stack(StackName="ff", TemplateBody=TEMPLATE.read_text())
