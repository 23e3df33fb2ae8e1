"""The local engine's reading of CloudFormation templates: the reference template's topology,
parameters and overrides, CloudFormation's short-form tags, and clear errors (naming the resource)
for every shape the local engine cannot reproduce."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.topology import is_canary_slot, load_template, parse_template, resolve_parameters, topology
from pipeline.errors import TemplateError

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "templates" / "web.yaml"


@pytest.fixture
def web() -> dict[str, Any]:
    return copy.deepcopy(load_template(WEB))


def test_the_reference_template_runs_in_miniature(web: dict[str, Any]) -> None:
    topo = topology(web)
    assert (topo.desired, topo.min_size, topo.max_size) == (2, 2, 4)
    assert topo.listener_port == 80
    assert topo.target_port == 80
    assert topo.health_path == "/health"
    assert topo.health_port == 80
    assert topo.health_codes == "200"
    assert topo.healthy_threshold == 2
    assert (topo.max_batch, topo.min_in_service, topo.replacing) == (1, 1, False)
    assert topo.deregistration_delay == 10
    assert topo.grace_period == 60
    assert topo.image_parameter == "ImageId"
    assert topo.launch_parameters == ("InstanceType",)
    assert topo.group == "WebGroup"
    assert topo.parameters["DesiredCapacity"] == "2"


def test_short_form_tags_become_intrinsic_functions() -> None:
    data = parse_template(
        """
        Resources:
          A:
            Type: X
            Properties:
              Ref: !Ref Thing
              Att: !GetAtt Balancer.DNSName
              Sub: !Sub "${AWS::StackName}.${Zone}"
              Pick: !Select [1, !GetAZs ""]
              Cond: !Not [!Equals [!Ref Zone, ""]]
        """.replace("\n        ", "\n")
    )
    props = data["Resources"]["A"]["Properties"]
    assert props["Ref"] == {"Ref": "Thing"}
    assert props["Att"] == {"Fn::GetAtt": ["Balancer", "DNSName"]}
    assert props["Sub"] == {"Fn::Sub": "${AWS::StackName}.${Zone}"}
    assert props["Pick"] == {"Fn::Select": [1, {"Fn::GetAZs": ""}]}
    assert props["Cond"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "Zone"}, ""]}]}


def test_a_json_template_works_too(web: dict[str, Any]) -> None:
    assert topology(parse_template(json.dumps(web))) == topology(web)


def test_overrides_resolve_refs_and_keep_their_constraints(web: dict[str, Any]) -> None:
    assert topology(web, {"DesiredCapacity": "3"}).desired == 3
    with pytest.raises(TemplateError, match=r"parameter DesiredCapacity is 11, above its MaxValue 10"):
        topology(web, {"DesiredCapacity": "11", "MaxSize": "12"})
    with pytest.raises(TemplateError, match=r"parameter InstanceType is 'huge', not one of"):
        topology(web, {"InstanceType": "huge"})
    with pytest.raises(TemplateError, match=r"no parameter named 'Replicas'") as caught:
        topology(web, {"Replicas": "2"})
    assert caught.value.hint is not None
    assert "DesiredCapacity" in caught.value.hint


def test_sizes_must_make_sense(web: dict[str, Any]) -> None:
    with pytest.raises(
        TemplateError, match=r"WebGroup needs 1 <= MinSize \(2\) <= DesiredCapacity \(5\) <= MaxSize \(4\)"
    ):
        topology(web, {"DesiredCapacity": "5"})


def test_desired_capacity_defaults_to_min_size(web: dict[str, Any]) -> None:
    del web["Resources"]["WebGroup"]["Properties"]["DesiredCapacity"]
    assert topology(web, {"MinSize": "3"}).desired == 3


def test_update_policy_defaults_and_replacing_update(web: dict[str, Any]) -> None:
    group = web["Resources"]["WebGroup"]
    del group["UpdatePolicy"]
    topo = topology(web)
    assert (topo.max_batch, topo.min_in_service, topo.replacing) == (1, 0, False)
    group["UpdatePolicy"] = {"AutoScalingReplacingUpdate": {"WillReplace": True}}
    assert topology(web).replacing


def test_matcher_ranges_and_lists(web: dict[str, Any]) -> None:
    tg = web["Resources"]["TargetGroup"]["Properties"]
    tg["Matcher"] = {"HttpCode": "200-299"}
    topo = topology(web)
    assert topo.accepts(204)
    assert not topo.accepts(301)
    tg["Matcher"] = {"HttpCode": "200,302"}
    topo = topology(web)
    assert topo.accepts(302)
    assert not topo.accepts(301)
    tg["Matcher"] = {"HttpCode": "ok"}
    with pytest.raises(TemplateError, match=r"TargetGroup Matcher\.HttpCode 'ok'"):
        topology(web)


def test_health_check_port_and_defaults(web: dict[str, Any]) -> None:
    tg = web["Resources"]["TargetGroup"]["Properties"]
    tg["HealthCheckPort"] = "8080"
    for key in ("HealthCheckPath", "HealthyThresholdCount", "TargetGroupAttributes"):
        del tg[key]
    topo = topology(web)
    assert topo.health_port == 8080
    assert topo.health_path == "/"
    assert topo.healthy_threshold == 5
    assert topo.deregistration_delay == 300


# --- what the local engine refuses, naming the resource -----------------------------------------------


def _refuses(template: dict[str, Any], *fragments: str) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        topology(template, source="web.yaml")
    message = str(caught.value)
    assert message.startswith("web.yaml: ")
    for fragment in fragments:
        assert fragment in message
    return caught.value


def test_exactly_one_autoscaling_group(web: dict[str, Any]) -> None:
    web["Resources"]["OtherGroup"] = copy.deepcopy(web["Resources"]["WebGroup"])
    _refuses(web, "exactly one AWS::AutoScaling::AutoScalingGroup", "found WebGroup, OtherGroup")
    del web["Resources"]["OtherGroup"], web["Resources"]["WebGroup"]
    _refuses(web, "found none")


def test_an_https_listener_is_refused(web: dict[str, Any]) -> None:
    web["Resources"]["Listener"]["Properties"]["Protocol"] = "HTTPS"
    _refuses(web, "resource Listener is an HTTPS listener", "HTTP only")


def test_a_group_without_a_listener_is_refused(web: dict[str, Any]) -> None:
    del web["Resources"]["Listener"]
    _refuses(web, "exactly one HTTP listener forwarding to TargetGroup", "found none")


def test_a_classic_load_balancer_is_refused(web: dict[str, Any]) -> None:
    web["Resources"]["Old"] = {"Type": "AWS::ElasticLoadBalancing::LoadBalancer", "Properties": {}}
    _refuses(web, "resource Old is a classic load balancer")


def test_instance_refresh_is_refused(web: dict[str, Any]) -> None:
    web["Resources"]["WebGroup"]["UpdatePolicy"] = {"AutoScalingInstanceRefresh": {}}
    _refuses(web, "resource WebGroup uses UpdatePolicy AutoScalingInstanceRefresh")


def test_a_value_the_engine_cannot_resolve_names_its_property(web: dict[str, Any]) -> None:
    web["Resources"]["WebGroup"]["Properties"]["DesiredCapacity"] = {"Fn::If": ["Big", 4, 2]}
    _refuses(web, "resource WebGroup DesiredCapacity uses !If")
    web["Resources"]["WebGroup"]["Properties"]["DesiredCapacity"] = {"Ref": "Missing"}
    _refuses(web, "resource WebGroup DesiredCapacity refers to 'Missing'")


def test_a_literal_image_id_is_refused(web: dict[str, Any]) -> None:
    web["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["ImageId"] = "ami-12345678"
    _refuses(web, "resource LaunchTemplate ImageId must be a !Ref to a parameter")


def test_a_target_group_that_is_not_http_is_refused(web: dict[str, Any]) -> None:
    web["Resources"]["TargetGroup"]["Properties"]["Protocol"] = "TCP"
    _refuses(web, "resource TargetGroup uses protocol TCP")
    web["Resources"]["TargetGroup"]["Properties"]["Protocol"] = "HTTP"
    web["Resources"]["TargetGroup"]["Properties"]["HealthCheckEnabled"] = False
    _refuses(web, "resource TargetGroup disables health checks")


def test_min_instances_in_service_must_be_below_max_size(web: dict[str, Any]) -> None:
    web["Resources"]["WebGroup"]["UpdatePolicy"]["AutoScalingRollingUpdate"]["MinInstancesInService"] = 4
    _refuses(web, "MinInstancesInService (4) must be less than MaxSize (4)")


def test_two_target_groups_are_refused(web: dict[str, Any]) -> None:
    web["Resources"]["WebGroup"]["Properties"]["TargetGroupARNs"] = [{"Ref": "TargetGroup"}, {"Ref": "TargetGroup"}]
    _refuses(web, "resource WebGroup must name exactly one target group")


def test_unreadable_templates(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="does not exist"):
        load_template(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("Resources:\n  A: [1, 2\n")
    with pytest.raises(TemplateError, match=r"bad\.yaml:\d+:\d+: not valid YAML"):
        load_template(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("Parameters: {}\n")
    with pytest.raises(TemplateError, match="has no Resources section"):
        load_template(empty)


def test_parameters_without_a_default_need_an_override(web: dict[str, Any]) -> None:
    del web["Parameters"]["DesiredCapacity"]["Default"]
    assert "DesiredCapacity" not in resolve_parameters(web)
    _refuses(web, "resource WebGroup DesiredCapacity refers to 'DesiredCapacity'")
    assert topology(web, {"DesiredCapacity": "2"}).desired == 2


def test_the_canary_slot_of_the_reference_template_is_not_the_local_engines(web: dict[str, Any]) -> None:
    """The aws engine's second group, target group, weighted rule and group rules are marked as the
    canary slot: the local engine still finds the one web group, its target group and its listener."""
    slot = [name for name, res in web["Resources"].items() if is_canary_slot(res)]
    assert sorted(slot) == [
        "CanaryGroup",
        "CanaryLaunchTemplate",
        "CanaryTargetGroup",
        "GroupRule1",
        "GroupRule2",
        "GroupRule3",
        "WeightedRule",
    ]
    topo = topology(
        web,
        {"CanaryImageId": "ami-12c6146b", "CanaryCapacity": "2", "CanaryWeight": "50", "Group1Header": "X-User-Group"},
    )
    assert (topo.group, topo.desired, topo.listener_port, topo.health_path) == ("WebGroup", 2, 80, "/health")
    # the rolling parameters reach the local engine too
    topo = topology(web, {"RollingMaxBatchSize": "2", "RollingMinInService": "0"})
    assert (topo.max_batch, topo.min_in_service) == (2, 0)
    # a second group that is not marked is still refused
    del web["Resources"]["CanaryGroup"]["Metadata"]
    with pytest.raises(TemplateError, match="exactly one"):
        topology(web)


# --- the flag store (an ElastiCache replication group) -----------------------------------------------------


def _with_store(props: dict[str, object], params: dict[str, object] | None = None) -> dict[str, object]:
    from pipeline.engines.cfn_template import load_template

    template = load_template(REPO / "examples" / "feature-flags" / "templates" / "web.yaml")
    template["Resources"]["FlagStore"]["Properties"] = props
    template.setdefault("Parameters", {}).update(params or {})
    return template


def test_a_replication_group_is_a_master_and_its_read_replicas() -> None:
    from pipeline.engines.flag_store_shape import FlagStoreShape

    assert topology(_with_store({"NumCacheClusters": 3})).flag_store == FlagStoreShape("FlagStore", 2, 6379)
    assert topology(_with_store({"ReplicasPerNodeGroup": 1, "Port": 6380})).flag_store == FlagStoreShape(
        "FlagStore", 1, 6380
    )
    with_param = _with_store({"NumCacheClusters": {"Ref": "Copies"}}, {"Copies": {"Type": "Number", "Default": 2}})
    assert topology(with_param).flag_store == FlagStoreShape("FlagStore", 1, 6379)


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"NumNodeGroups": 2}, "cluster mode"),
        ({"Engine": "memcached"}, "the flag store is Redis"),
        ({"NumCacheClusters": 9}, "1 to 6 cache clusters"),
        ({"NumCacheClusters": {"Fn::If": ["x", 1, 2]}}, "use a literal or a !Ref"),
    ],
)
def test_a_flag_store_the_local_engine_cannot_run_is_refused(props: dict[str, object], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        topology(_with_store(props))


def test_the_reference_template_has_no_flag_store() -> None:
    from pipeline.engines.cfn_template import load_template

    assert topology(load_template(REPO / "templates" / "web.yaml")).flag_store is None


def test_every_launch_template_of_the_feature_flags_example_tells_its_instances_the_flag_store() -> None:
    """The web group's instances and the canary slot's (canary, blue-green) read the same store:
    both launch templates write its endpoints to flags.env, with the same UserData."""
    from pipeline.engines.cfn_template import load_template

    resources = load_template(REPO / "examples" / "feature-flags" / "templates" / "web.yaml")["Resources"]
    launch_templates = {
        name: r["Properties"]["LaunchTemplateData"]
        for name, r in resources.items()
        if r["Type"] == "AWS::EC2::LaunchTemplate"
    }
    assert sorted(launch_templates) == ["CanaryLaunchTemplate", "LaunchTemplate"]
    scripts = {name: data["UserData"]["Fn::Base64"]["Fn::Sub"] for name, data in launch_templates.items()}
    for name, script in scripts.items():
        assert "cat > /etc/hello-web/flags.env" in script, name
        assert "PIPELINE_FLAGS_MASTER=${FlagStore.PrimaryEndPoint.Address}:${FlagStore.PrimaryEndPoint.Port}" in script
        assert "PIPELINE_FLAGS_REPLICAS=${FlagStore.ReaderEndPoint.Address}:${FlagStore.ReaderEndPoint.Port}" in script
    assert scripts["CanaryLaunchTemplate"] == scripts["LaunchTemplate"]
