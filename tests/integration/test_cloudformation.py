"""The aws engine against a real moto server on 127.0.0.1, over HTTP, with the reference template.

What moto cannot do (rollback states, failed resources, "No updates are to be performed") is tested
with recorded responses in tests/unit/test_cloudformation_stubbed.py.
"""

from __future__ import annotations

import http.server
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.aws.engine import CloudFormationEngine
from pipeline.errors import EXIT_BAD_INPUT, CloudFormationError, CredentialsError, TemplateError
from pipeline.model import AwsSettings, Verify
from tests.conftest import REPO, need

pytestmark = pytest.mark.integration

TEMPLATE = REPO / "templates" / "web.yaml"
AMI_A = "ami-03cf127a"  # in moto's stock catalogue (and the template's Default)
AMI_B = "ami-12c6146b"
DEFAULTS = {
    "ImageId": AMI_A,
    "InstanceType": "t3.micro",
    "DesiredCapacity": "2",
    "MinSize": "2",
    "MaxSize": "4",
    "HostedZoneName": "",
    "RollingMaxBatchSize": "1",
    "RollingMinInService": "1",
    "RollingPauseTime": "PT2M",
    "CanaryImageId": "",
    "CanaryCapacity": "0",
    "PrimaryWeight": "100",
    "CanaryWeight": "0",
    "CanaryStickySeconds": "0",
    "Group1Header": "",
    "Group1Values": "",
    "Group2Header": "",
    "Group2Values": "",
    "Group3Header": "",
    "Group3Values": "",
}


@contextmanager
def running_moto() -> Iterator[str]:
    """A moto server on 127.0.0.1 (a free port) serving the AWS API over HTTP; yields its URL.

    Skips (or fails under PIPELINE_REQUIRE_TOOLS=1) when moto[server] is not installed. moto's
    state lives in the process, shared by every server it runs: reset it with `reset_moto`."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        need(False, f"moto[server] is not installed ({exc})")
        raise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def reset_moto(moto_url: str) -> None:
    """Forget every resource (an empty account); moto's stock AMIs come back."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"), timeout=10).close()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with running_moto() as url:
        yield url


@pytest.fixture(autouse=True)
def fresh_moto(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from an empty emulator, with dummy credentials and no stray AWS settings."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    reset_moto(moto_url)


def engine(
    moto_url: str, template: Path = TEMPLATE, pipeline: str = "hello-web", **kwargs: Any
) -> CloudFormationEngine:
    settings = AwsSettings(endpoint_url=moto_url)
    return CloudFormationEngine(pipeline, template, settings, poll_seconds=0.05, **kwargs)


def client(moto_url: str, service: str, region: str = "us-east-1") -> Any:
    import boto3

    return boto3.client(service, endpoint_url=moto_url, region_name=region)


def stack_names(moto_url: str) -> list[str]:
    return [s["StackName"] for s in client(moto_url, "cloudformation").describe_stacks()["Stacks"]]


def event_ids(moto_url: str, stack: str) -> list[str]:
    events = client(moto_url, "cloudformation").describe_stack_events(StackName=stack)["StackEvents"]
    return [e["EventId"] for e in events]


def latest_template_image(moto_url: str, stack: str) -> tuple[str, int]:
    cfn, ec2 = client(moto_url, "cloudformation"), client(moto_url, "ec2")
    # (moto's describe_stack_resource fails after an update of a stack with a conditional resource)
    resources = cfn.describe_stack_resources(StackName=stack)["StackResources"]
    lt = next(r["PhysicalResourceId"] for r in resources if r.get("LogicalResourceId") == "LaunchTemplate")
    version = ec2.describe_launch_template_versions(LaunchTemplateId=lt, Versions=["$Latest"])
    data = version["LaunchTemplateVersions"][0]
    return data["LaunchTemplateData"]["ImageId"], data["VersionNumber"]


# --- create, describe, update, no-op, delete --------------------------------------------------------


def test_create_then_describe_reads_the_real_stack(moto_url: str) -> None:
    events: list[str] = []
    aws = engine(moto_url)

    state = aws.deploy("hello-web-test-1", AMI_A, on_event=events.append)

    assert state.exists
    assert state.image == AMI_A
    assert state.status == "ready"
    assert state.url is not None
    assert state.url.startswith("http://")
    assert dict(state.parameters) == DEFAULTS
    assert state.details["stack_status"] == "CREATE_COMPLETE"
    assert any("hello-web-test-1 (AWS::CloudFormation::Stack) CREATE_COMPLETE" in e for e in events)
    assert aws.describe("hello-web-test-1") == state
    raw = client(moto_url, "cloudformation").describe_stacks(StackName="hello-web-test-1")["Stacks"][0]
    assert {"Key": "pipeline", "Value": "hello-web"} in raw["Tags"]
    assert aws.describe("no-such-stack").exists is False


def test_parameters_are_defaults_then_given_then_the_image(moto_url: str) -> None:
    state = engine(moto_url).deploy(
        "hello-web-params", AMI_B, parameters={"DesiredCapacity": "3", "ImageId": AMI_A, "InstanceType": "t3.small"}
    )
    assert dict(state.parameters) == {**DEFAULTS, "ImageId": AMI_B, "DesiredCapacity": "3", "InstanceType": "t3.small"}
    assert latest_template_image(moto_url, "hello-web-params") == (AMI_B, 1)


def test_update_moves_the_launch_template_to_the_new_image_and_back(moto_url: str) -> None:
    aws = engine(moto_url)
    aws.deploy("hello-web-upd", AMI_A)
    events: list[str] = []

    state = aws.deploy("hello-web-upd", AMI_B, on_event=events.append)

    assert state.image == AMI_B
    assert state.details["stack_status"] == "UPDATE_COMPLETE"
    assert latest_template_image(moto_url, "hello-web-upd") == (AMI_B, 2)
    streamed = [e for e in events if "(AWS::CloudFormation::Stack)" in e]
    assert [e.split(" ", 1)[1] for e in streamed] == [
        "hello-web-upd (AWS::CloudFormation::Stack) UPDATE_IN_PROGRESS: User Initiated",
        "hello-web-upd (AWS::CloudFormation::Stack) UPDATE_COMPLETE",
    ]  # only this operation's events: none of the create's

    rolled_back = aws.deploy("hello-web-upd", AMI_A)
    assert rolled_back.image == AMI_A
    assert latest_template_image(moto_url, "hello-web-upd") == (AMI_A, 3)


def test_a_repeated_deploy_changes_nothing(moto_url: str) -> None:
    aws = engine(moto_url)
    first = aws.deploy("hello-web-same", AMI_A, parameters={"DesiredCapacity": "3"})
    before = event_ids(moto_url, "hello-web-same")
    events: list[str] = []

    again = aws.deploy("hello-web-same", AMI_A, parameters={"DesiredCapacity": "3"}, on_event=events.append)

    assert again == first
    assert event_ids(moto_url, "hello-web-same") == before  # no update was started
    assert any("nothing to do" in e for e in events)
    assert latest_template_image(moto_url, "hello-web-same") == (AMI_A, 1)


def test_a_changed_parameter_alone_is_an_update(moto_url: str) -> None:
    aws = engine(moto_url)
    aws.deploy("hello-web-cap", AMI_A)
    state = aws.deploy("hello-web-cap", AMI_A, parameters={"DesiredCapacity": "3"})
    assert state.parameters["DesiredCapacity"] == "3"
    assert state.details["stack_status"] == "UPDATE_COMPLETE"


def test_delete_waits_until_gone_and_a_missing_stack_is_fine(moto_url: str) -> None:
    aws = engine(moto_url)
    aws.deploy("hello-web-del", AMI_A)
    events: list[str] = []

    aws.delete("hello-web-del", on_event=events.append)

    assert aws.describe("hello-web-del").exists is False
    assert "hello-web-del" not in stack_names(moto_url)
    assert aws.stacks() == []
    aws.delete("hello-web-del")  # again: nothing to do, no error
    assert aws.deploy("hello-web-del", AMI_B).image == AMI_B  # the name can be used again


def test_stacks_lists_only_this_pipelines_stacks(moto_url: str) -> None:
    mine, theirs = engine(moto_url, pipeline="hello-web"), engine(moto_url, pipeline="other")
    mine.deploy("hello-web-a", AMI_A)
    mine.deploy("hello-web-b", AMI_A)
    theirs.deploy("other-a", AMI_A)
    client(moto_url, "cloudformation").create_stack(
        StackName="untagged", TemplateBody=TEMPLATE.read_text(), Parameters=[]
    )
    assert mine.stacks() == ["hello-web-a", "hello-web-b"]
    assert theirs.stacks() == ["other-a"]


def test_delete_refuses_a_stack_this_pipeline_did_not_create(moto_url: str) -> None:
    client(moto_url, "cloudformation").create_stack(StackName="hand-made", TemplateBody=TEMPLATE.read_text())
    engine(moto_url, pipeline="other").deploy("other-stack", AMI_A)
    aws = engine(moto_url)
    with pytest.raises(CloudFormationError, match="not created by pipeline 'hello-web'"):
        aws.delete("hand-made")
    with pytest.raises(CloudFormationError, match="'other'"):
        aws.delete("other-stack")
    assert {"hand-made", "other-stack"} <= set(stack_names(moto_url))


def test_endpoint_region_and_credentials_come_from_the_environment(
    moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    environ = {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "from-secrets",
        "AWS_SECRET_ACCESS_KEY": "from-secrets",
    }
    aws = CloudFormationEngine("hello-web", TEMPLATE, AwsSettings(), environ=environ, poll_seconds=0.05)
    assert (aws.endpoint_url, aws.region, aws.emulator) == (moto_url, "eu-west-1", True)
    state = aws.deploy("hello-web-eu", AMI_A)
    assert ":eu-west-1:" in state.details["stack_id"]
    pinned = CloudFormationEngine("p", TEMPLATE, AwsSettings(region="ap-south-1"), environ=environ)
    assert pinned.region == "ap-south-1"  # the definition wins over the environment


def test_an_emulator_needs_no_credentials_and_aws_is_never_sent_a_request_without(
    moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert not engine(moto_url).describe("hello-web-x").exists  # dummy keys: emulators accept any
    aws = CloudFormationEngine("hello-web", TEMPLATE, AwsSettings())
    with pytest.raises(CredentialsError) as caught:
        aws.describe("hello-web-x")
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert caught.value.message == (
        "no usable AWS credentials for AWS CloudFormation (us-east-1): Unable to locate credentials"
    )
    assert caught.value.hint is not None
    assert "AWS_ACCESS_KEY_ID" in caught.value.hint


# --- validation before any change -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "image", "message"),
    [
        ({"Nope": "1"}, AMI_A, "declares no parameter Nope"),
        ({"InstanceType": "m5.24xlarge"}, AMI_A, "is not one of"),
        ({"DesiredCapacity": "11"}, AMI_A, "above MaxValue"),
        ({"DesiredCapacity": "two"}, AMI_A, "not a number"),
        ({}, "us-east-1:ami-03cf127a", "not Packer's region:ami"),
        ({}, "ami-0000000000dead000", "does not exist"),
    ],
)
def test_bad_parameters_or_images_change_nothing(
    moto_url: str, parameters: dict[str, str], image: str, message: str
) -> None:
    aws = engine(moto_url)
    aws.deploy("hello-web-v", AMI_A)
    before = event_ids(moto_url, "hello-web-v")
    with pytest.raises(TemplateError, match=message) as caught:
        aws.deploy("hello-web-v", image, parameters=parameters)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert event_ids(moto_url, "hello-web-v") == before
    with pytest.raises(TemplateError):
        aws.deploy("hello-web-new", image, parameters=parameters)
    assert "hello-web-new" not in stack_names(moto_url)


def test_a_template_cfn_lint_rejects_changes_nothing(moto_url: str, tmp_path: Path) -> None:
    engine(moto_url).deploy("hello-web-lint", AMI_A)
    before = event_ids(moto_url, "hello-web-lint")
    broken = tmp_path / "web.yaml"
    broken.write_text(TEMPLATE.read_text().replace("      HealthCheckPath: /health", "      HealthCheckPat: /health"))

    with pytest.raises(TemplateError) as caught:
        engine(moto_url, template=broken).deploy("hello-web-lint", AMI_B)

    assert "cfn-lint error" in caught.value.message
    assert "E3002" in caught.value.message
    assert f"{broken}:" in caught.value.message  # names the file and line
    assert event_ids(moto_url, "hello-web-lint") == before
    assert engine(moto_url).describe("hello-web-lint").image == AMI_A


def test_unreadable_templates_are_bad_input(moto_url: str, tmp_path: Path) -> None:
    syntax = tmp_path / "syntax.yaml"
    syntax.write_text("Resources:\n  X: [\n")
    with pytest.raises(TemplateError, match=r"syntax\.yaml:\d+:\d+: not valid YAML"):
        engine(moto_url, template=syntax).deploy("s", AMI_A)
    with pytest.raises(TemplateError, match="cannot read template"):
        engine(moto_url, template=tmp_path / "missing.yaml").deploy("s", AMI_A)
    no_image = tmp_path / "no-image.yaml"
    no_image.write_text("Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n")
    with pytest.raises(TemplateError, match="no parameter 'ImageId'"):
        engine(moto_url, template=no_image).deploy("s", AMI_A)
    assert stack_names(moto_url) == []


def test_a_bad_stack_name_is_bad_input(moto_url: str) -> None:
    with pytest.raises(Exception, match="not a valid CloudFormation stack name") as caught:
        engine(moto_url).deploy("9_bad", AMI_A)
    assert getattr(caught.value, "exit_code", None) == EXIT_BAD_INPUT


# --- verification on the emulator ------------------------------------------------------------------


def test_verify_on_the_emulator_checks_the_control_plane_and_says_so(moto_url: str) -> None:
    aws = engine(moto_url)
    aws.deploy("hello-web-ver", AMI_A)
    state = aws.deploy("hello-web-ver", AMI_B)
    events: list[str] = []

    report = aws.verify(state, Verify(expect_text="Hello World"), on_event=events.append)

    assert report.ok, report.detail
    assert report.real == ()
    assert report.requests == 0  # the made-up *.elb.amazonaws.com name is never requested
    assert report.emulated[0] == "stack status UPDATE_COMPLETE"
    assert report.emulated[1].endswith(f"version 2 ImageId {AMI_B}")
    assert "emulated" in report.detail
    assert any("not requested" in e for e in events)

    wrong = aws.verify(type(state)(name=state.name, exists=True, image=AMI_A), Verify())
    assert not wrong.ok
    assert wrong.failures == 1
    assert f"launch template runs {AMI_B}, expected {AMI_A}" in wrong.detail

    assert not aws.verify(type(state)(name="hello-web-gone", exists=False), Verify()).ok


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"Hello World 1.0.0\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hello_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_verify_requests_a_loopback_url_for_real(moto_url: str, tmp_path: Path, hello_server: int) -> None:
    template = tmp_path / "loopback.yaml"
    template.write_text(
        "AWSTemplateFormatVersion: '2010-09-09'\n"
        "Parameters:\n"
        "  ImageId:\n"
        "    Type: AWS::EC2::Image::Id\n"
        f"    Default: {AMI_A}\n"
        "Resources:\n"
        "  Marker:\n"
        "    Type: AWS::SSM::Parameter\n"
        "    Properties:\n"
        "      Name: !Sub /${AWS::StackName}/image\n"
        "      Type: String\n"
        "      Value: !Ref ImageId\n"
        "Outputs:\n"
        "  Url:\n"
        f"    Value: http://127.0.0.1:{hello_server}/\n"
    )
    aws = engine(moto_url, template=template)
    state = aws.deploy("loopback", AMI_A)

    good = aws.verify(state, Verify(expect_text="Hello World 1.0.0", requests=5, wait_seconds=5))
    assert good.ok, good.detail
    assert good.requests == 5  # the first good answer counts as the first of the 5
    assert good.failures == 0
    assert good.real == (f"HTTP GET http://127.0.0.1:{hello_server}/ x5, expecting 200 with 'Hello World 1.0.0'",)
    assert good.emulated == ("stack status CREATE_COMPLETE",)

    bad = aws.verify(state, Verify(expect_text="Hello World 2.0.0", requests=3, wait_seconds=0.5))
    assert not bad.ok
    assert "does not contain 'Hello World 2.0.0'" in bad.detail
    assert bad.failures > 0
    assert bad.failures > 0


def test_check_deploy_makes_the_deploys_checks_and_changes_nothing(moto_url: str) -> None:
    """Promote calls it before committing the image, so bad input leaves no commit to revert."""
    aws = engine(moto_url)
    aws.check_deploy("hello-web-check", AMI_A, parameters={"DesiredCapacity": "3"})
    assert stack_names(moto_url) == []
    with pytest.raises(TemplateError, match="does not exist"):
        aws.check_deploy("hello-web-check", "ami-0000000000dead000")
    with pytest.raises(TemplateError, match="above MaxValue"):
        aws.check_deploy("hello-web-check", AMI_A, parameters={"DesiredCapacity": "11"})
    with pytest.raises(Exception, match="not a valid CloudFormation stack name"):
        aws.check_deploy("9_bad", AMI_A)
    assert stack_names(moto_url) == []
