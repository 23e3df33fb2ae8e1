"""The reference CloudFormation template is cfn-lint clean and keeps the shape the engines rely on."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.engines.aws.template import lint_template
from pipeline.engines.cfn_template import parse_template
from pipeline.engines.git_promote import read_default
from pipeline.errors import TemplateError
from tests.conftest import REPO

TEMPLATE = REPO / "templates" / "web.yaml"

cfnlint_api = pytest.importorskip("cfnlint.api", reason="cfn-lint is in the [run] extra")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return parse_template(TEMPLATE.read_text(), source=str(TEMPLATE))


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_cfn_lint_finds_nothing_at_all(region: str) -> None:
    matches = cfnlint_api.lint(TEMPLATE.read_text(), regions=[region])
    assert [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches] == []


def test_the_engines_lint_reports_errors_with_file_and_line(tmp_path: Any) -> None:
    assert lint_template(TEMPLATE.read_text(), source="web.yaml") == []
    broken = TEMPLATE.read_text().replace("MinInstancesInService:", "MinInstancesInServise:")
    with pytest.raises(TemplateError, match=r"web\.yaml:\d+: E\d{4}"):
        lint_template(broken, source="web.yaml")


def test_the_image_parameter_says_what_production_runs(doc: dict[str, Any]) -> None:
    image = doc["Parameters"]["ImageId"]
    assert image["Type"] == "AWS::EC2::Image::Id"
    assert read_default(TEMPLATE.read_text()) == image["Default"]
    launch = doc["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert launch["ImageId"] == {"Ref": "ImageId"}


def test_the_topology_the_local_engine_reads_is_there(doc: dict[str, Any]) -> None:
    resources = doc["Resources"]
    group = resources["WebGroup"]
    assert group["Type"] == "AWS::AutoScaling::AutoScalingGroup"
    assert group["Properties"]["DesiredCapacity"] == {"Ref": "DesiredCapacity"}
    # a new launch template version must change the group, or no rolling update happens
    assert group["Properties"]["LaunchTemplate"]["Version"] == {"Fn::GetAtt": ["LaunchTemplate", "LatestVersionNumber"]}
    assert set(group["UpdatePolicy"]["AutoScalingRollingUpdate"]) >= {"MaxBatchSize", "MinInstancesInService"}
    assert resources["Listener"]["Properties"]["Port"] == 80
    assert resources["TargetGroup"]["Properties"]["HealthCheckPath"].startswith("/")
    assert {"Url", "GroupName"} <= set(doc["Outputs"])
