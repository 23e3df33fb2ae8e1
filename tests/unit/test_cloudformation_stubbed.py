"""The aws engine on real AWS's behaviours that no emulator here reproduces, with botocore's Stubber.

The responses are shaped like CloudFormation's (stack and event fields, status sequences and
reasons as AWS writes them); the Stubber checks every request's parameters against the service
model and the order of calls, and fails on any call that was not expected.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3", reason="boto3 is in the [run] extra")
from botocore.stub import ANY, Stubber  # noqa: E402

from pipeline.engines.aws import operations, session, template  # noqa: E402
from pipeline.engines.aws.engine import CloudFormationEngine  # noqa: E402
from pipeline.engines.stack import StackState  # noqa: E402
from pipeline.errors import (  # noqa: E402
    EXIT_BAD_INPUT,
    CloudFormationError,
    CredentialsError,
    StackOperationError,
    TemplateError,
)
from pipeline.model import AwsSettings, Verify  # noqa: E402
from tests.conftest import REPO  # noqa: E402

TEMPLATE = REPO / "templates" / "web.yaml"
STACK = "hello-web-production"
STACK_ID = (
    "arn:aws:cloudformation:us-east-1:123456789012:stack/hello-web-production/5b5d1e60-2a6f-11ef-9f2e-0affe3e3c1b9"
)
OLD = "ami-03cf127a"
NEW = "ami-0fedcba9876543210"
T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
PARAMS = {
    "ImageId": OLD,
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


class Fake:
    """Stubbed clients, a fake clock and the engine that uses them."""

    def __init__(self, *, timeout: float = 600.0, endpoint: str | None = None) -> None:
        self.clients = {
            name: boto3.client(name, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
            for name in ("cloudformation", "ec2", "autoscaling")
        }
        self.stubs = {name: Stubber(client) for name, client in self.clients.items()}
        self.cfn = self.stubs["cloudformation"]
        self.ec2 = self.stubs["ec2"]
        self.asg = self.stubs["autoscaling"]
        self.now = 0.0
        self.sleeps: list[float] = []
        self.events: list[str] = []
        self.engine = CloudFormationEngine(
            "hello-web",
            TEMPLATE,
            AwsSettings(endpoint_url=endpoint),
            environ={},
            poll_seconds=5.0,
            timeout_seconds=timeout,
            client_factory=self.clients.__getitem__,
            sleep=self._sleep,
            clock=lambda: self.now,
        )
        self._counter = 0

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __enter__(self) -> Fake:
        for stub in self.stubs.values():
            stub.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        for stub in self.stubs.values():
            stub.deactivate()

    def done(self) -> None:
        for stub in self.stubs.values():
            stub.assert_no_pending_responses()

    # --- recorded-shape responses -------------------------------------------------------------

    def event(
        self, logical: str, status: str, reason: str | None = None, *, kind: str | None = None, token: str | None = None
    ) -> dict[str, Any]:
        self._counter += 1
        event: dict[str, Any] = {
            "StackId": STACK_ID,
            "EventId": f"{logical}-{status}-{self._counter:04d}" if logical != STACK else f"evt-{self._counter:04d}",
            "StackName": STACK,
            "LogicalResourceId": logical,
            "PhysicalResourceId": STACK_ID if logical == STACK else f"phys-{logical}",
            "ResourceType": kind or ("AWS::CloudFormation::Stack" if logical == STACK else _KINDS[logical]),
            "Timestamp": T0 + timedelta(seconds=self._counter),
            "ResourceStatus": status,
        }
        if reason:
            event["ResourceStatusReason"] = reason
        if token:
            event["ClientRequestToken"] = token
        return event

    def stack(self, status: str, image: str = OLD, reason: str | None = None, **params: str) -> dict[str, Any]:
        values = {**PARAMS, "ImageId": image, **params}
        stack: dict[str, Any] = {
            "StackId": STACK_ID,
            "StackName": STACK,
            "CreationTime": T0,
            "StackStatus": status,
            "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()],
            "Outputs": [
                {
                    "OutputKey": "Url",
                    "OutputValue": "http://hello-web-LoadBalancer-1A2B3C.us-east-1.elb.amazonaws.com/",
                },
                {"OutputKey": "GroupName", "OutputValue": "hello-web-production-WebGroup-1XYZ"},
            ],
            "Tags": [{"Key": "pipeline", "Value": "hello-web"}],
        }
        if reason:
            stack["StackStatusReason"] = reason
        return stack

    def expect_validation(self, image: str = NEW) -> None:
        self.cfn.add_response("validate_template", {"Parameters": [], "Capabilities": []}, {"TemplateBody": ANY})
        self.ec2.add_response(
            "describe_images", {"Images": [{"ImageId": image, "State": "available"}]}, {"ImageIds": [image]}
        )

    def expect_describe(self, name: str, stack: dict[str, Any] | None) -> None:
        if stack is None:
            self.cfn.add_client_error(
                "describe_stacks",
                service_error_code="ValidationError",
                service_message=f"Stack with id {name} does not exist",
                http_status_code=400,
                expected_params={"StackName": name},
            )
        else:
            self.cfn.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": name})

    def expect_events(self, newest_first: list[dict[str, Any]]) -> None:
        self.cfn.add_response("describe_stack_events", {"StackEvents": newest_first}, {"StackName": STACK_ID})


_KINDS = {
    "Vpc": "AWS::EC2::VPC",
    "LaunchTemplate": "AWS::EC2::LaunchTemplate",
    "WebGroup": "AWS::AutoScaling::AutoScalingGroup",
    "LoadBalancer": "AWS::ElasticLoadBalancingV2::LoadBalancer",
    "TargetGroup": "AWS::ElasticLoadBalancingV2::TargetGroup",
}


@pytest.fixture(autouse=True)
def predictable_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operations, "_token", lambda kind: f"pipeline-{kind}-0001")
    template._VALIDATED.clear()


def _params(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(values.items())]


def _update_call(fake: Fake, image: str = NEW) -> None:
    fake.cfn.add_response(
        "update_stack",
        {"StackId": STACK_ID},
        {
            "StackName": STACK_ID,
            "TemplateBody": TEMPLATE.read_text(),
            "Parameters": _params({**PARAMS, "ImageId": image}),
            "Capabilities": [],
            "ClientRequestToken": "pipeline-update-0001",
        },
    )


# --- failed updates -------------------------------------------------------------------------------


def test_update_rollback_complete_names_the_failed_resource_and_the_healthy_old_version() -> None:
    with Fake() as fake:
        token = "pipeline-update-0001"
        earlier = [fake.event(STACK, "CREATE_COMPLETE", token="pipeline-create-0001")]
        started = [
            fake.event(STACK, "UPDATE_IN_PROGRESS", "User Initiated", token=token),
            fake.event("LaunchTemplate", "UPDATE_IN_PROGRESS", token=token),
            fake.event("LaunchTemplate", "UPDATE_COMPLETE", token=token),
            fake.event("WebGroup", "UPDATE_IN_PROGRESS", token=token),
            fake.event(
                "WebGroup",
                "UPDATE_IN_PROGRESS",
                "Rolling update initiated. Terminating 2 obsolete instance(s) in batches of 1, while keeping at "
                "least 1 instance(s) in service. Waiting on resource signals with a timeout of PT2M when new "
                "instances are added to the autoscaling group.",
                token=token,
            ),
        ]
        unrelated = fake.event("Vpc", "UPDATE_COMPLETE", token="someone-elses-token")
        failed = [
            fake.event("TargetGroup", "UPDATE_FAILED", "Resource update cancelled", token=token),
            fake.event(
                "WebGroup",
                "UPDATE_FAILED",
                "Failed to receive 1 resource signal(s) for the current batch.  Each resource signal timeout is "
                "counted as a FAILURE.",
                token=token,
            ),
            fake.event(
                STACK,
                "UPDATE_ROLLBACK_IN_PROGRESS",
                "The following resource(s) failed to update: [WebGroup].",
                token=token,
            ),
            fake.event("WebGroup", "UPDATE_COMPLETE", token=token),
            fake.event(STACK, "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", token=token),
            fake.event(STACK, "UPDATE_ROLLBACK_COMPLETE", token=token),
        ]
        fake.expect_validation()
        fake.expect_describe(STACK, fake.stack("UPDATE_COMPLETE"))
        fake.expect_events(list(reversed(earlier)))  # the marker: newest event before the update
        _update_call(fake)
        fake.expect_events(list(reversed(earlier + started)))
        fake.expect_describe(STACK_ID, fake.stack("UPDATE_IN_PROGRESS", NEW))
        fake.expect_events(list(reversed(earlier + started + [unrelated, *failed])))
        fake.expect_describe(STACK_ID, fake.stack("UPDATE_ROLLBACK_COMPLETE", OLD))
        fake.expect_events(list(reversed(earlier + started + [unrelated, *failed])))

        with pytest.raises(CloudFormationError) as caught:
            fake.engine.deploy(STACK, NEW, on_event=fake.events.append)
        fake.done()

    error = caught.value
    assert isinstance(error, StackOperationError)
    assert error.exit_code == 1
    assert error.status == "UPDATE_ROLLBACK_COMPLETE"
    assert error.resource == "WebGroup (AWS::AutoScaling::AutoScalingGroup)"
    assert error.reason is not None
    assert error.reason.startswith("Failed to receive 1 resource signal(s)")
    assert f"healthy on the previous version ({OLD})" in error.message
    assert "resource WebGroup (AWS::AutoScaling::AutoScalingGroup): Failed to receive" in error.message
    streamed = [e.split(" ", 1)[1] for e in fake.events if e[:2].isdigit()]
    assert streamed[0] == f"{STACK} (AWS::CloudFormation::Stack) UPDATE_IN_PROGRESS: User Initiated"
    assert streamed[-1] == f"{STACK} (AWS::CloudFormation::Stack) UPDATE_ROLLBACK_COMPLETE"
    assert len(streamed) == len(started) + len(failed)  # each once, in order; not the create's, not others'
    assert not any("Vpc" in e for e in streamed)


def test_update_rollback_failed_is_reported_with_the_continue_update_rollback_fix() -> None:
    with Fake() as fake:
        token = "pipeline-update-0001"
        marker = fake.event(STACK, "UPDATE_COMPLETE")
        new = [
            fake.event(STACK, "UPDATE_IN_PROGRESS", "User Initiated", token=token),
            fake.event(
                "WebGroup",
                "UPDATE_FAILED",
                "Instance failed to launch: The image id '[ami-0fedcba9876543210]' does not exist",
                token=token,
            ),
            fake.event(
                STACK,
                "UPDATE_ROLLBACK_IN_PROGRESS",
                "The following resource(s) failed to update: [WebGroup].",
                token=token,
            ),
            fake.event(
                "WebGroup",
                "UPDATE_FAILED",
                "Resource handler returned message: \"The security group 'sg-0a1b2c3d' does not exist\"",
                token=token,
            ),
            fake.event(
                STACK, "UPDATE_ROLLBACK_FAILED", "The following resource(s) failed to update: [WebGroup].", token=token
            ),
        ]
        fake.expect_validation()
        fake.expect_describe(STACK, fake.stack("UPDATE_COMPLETE"))
        fake.expect_events([marker])
        _update_call(fake)
        fake.expect_events([*list(reversed(new)), marker])
        fake.expect_describe(STACK_ID, fake.stack("UPDATE_ROLLBACK_FAILED", NEW))
        fake.expect_events([*list(reversed(new)), marker])

        with pytest.raises(CloudFormationError) as caught:
            fake.engine.deploy(STACK, NEW)
        fake.done()

    error = caught.value
    assert error.status == "UPDATE_ROLLBACK_FAILED"
    assert "and so did the rollback of WebGroup" in error.message
    assert error.reason is not None
    assert "does not exist" in error.reason
    assert error.hint is not None
    assert (
        f"aws cloudformation continue-update-rollback --stack-name {STACK} --region us-east-1 --resources-to-skip WebGroup"
        in error.hint
    )


def test_a_stack_already_in_update_rollback_failed_is_refused_before_any_change() -> None:
    with Fake() as fake:
        fake.expect_validation()
        fake.expect_describe(
            STACK,
            fake.stack("UPDATE_ROLLBACK_FAILED", reason="The following resource(s) failed to update: [WebGroup]."),
        )

        with pytest.raises(CloudFormationError) as caught:
            fake.engine.deploy(STACK, NEW)
        fake.done()  # no update_stack: the Stubber would have failed on it

    assert caught.value.status == "UPDATE_ROLLBACK_FAILED"
    assert caught.value.hint is not None
    assert f"continue-update-rollback --stack-name {STACK}" in caught.value.hint


@pytest.mark.parametrize(
    ("status", "fix"),
    [("UPDATE_FAILED", "rollback-stack"), ("CREATE_FAILED", "rollback-stack"), ("DELETE_FAILED", "FORCE_DELETE_STACK")],
)
def test_other_stuck_states_are_refused_with_their_fix(status: str, fix: str) -> None:
    with Fake() as fake:
        fake.expect_validation()
        fake.expect_describe(STACK, fake.stack(status, reason="something failed"))
        with pytest.raises(CloudFormationError) as caught:
            fake.engine.deploy(STACK, NEW)
        fake.done()
    assert caught.value.status == status
    assert caught.value.hint is not None
    assert fix in caught.value.hint


# --- failed creates and ROLLBACK_COMPLETE -----------------------------------------------------------


def _delete_sequence(fake: Fake, marker: dict[str, Any]) -> None:
    fake.expect_events([marker])
    fake.cfn.add_response("delete_stack", {}, {"StackName": STACK_ID, "ClientRequestToken": "pipeline-delete-0001"})
    gone = [
        fake.event(STACK, "DELETE_IN_PROGRESS", "User Initiated", token="pipeline-delete-0001"),
        fake.event(STACK, "DELETE_COMPLETE", token="pipeline-delete-0001"),
    ]
    fake.expect_events([*list(reversed(gone)), marker])
    fake.expect_describe(STACK_ID, fake.stack("DELETE_COMPLETE"))
    fake.expect_events([*list(reversed(gone)), marker])


def test_a_failed_create_is_rolled_back_then_deleted_and_reported() -> None:
    with Fake() as fake:
        token = "pipeline-create-0001"
        history = [
            fake.event(STACK, "CREATE_IN_PROGRESS", "User Initiated", token=token),
            fake.event("Vpc", "CREATE_COMPLETE", token=token),
            fake.event("LoadBalancer", "CREATE_FAILED", "Resource creation cancelled", token=token),
            fake.event(
                "LaunchTemplate",
                "CREATE_FAILED",
                'Resource handler returned message: "You are not authorized to perform this operation. '
                '(Service: Ec2, Status Code: 403, Request ID: 4c1e...)"',
                token=token,
            ),
            fake.event(
                STACK,
                "ROLLBACK_IN_PROGRESS",
                "The following resource(s) failed to create: [LaunchTemplate, LoadBalancer]. Rollback requested by user.",
                token=token,
            ),
            fake.event("Vpc", "DELETE_COMPLETE", token=token),
            fake.event(STACK, "ROLLBACK_COMPLETE", token=token),
        ]
        # AWS lists LoadBalancer's cancellation first here; the real cause is LaunchTemplate's
        fake.expect_validation()
        fake.expect_describe(STACK, None)
        fake.cfn.add_response(
            "create_stack",
            {"StackId": STACK_ID},
            {
                "StackName": STACK,
                "TemplateBody": ANY,
                "Parameters": _params({**PARAMS, "ImageId": NEW}),
                "Capabilities": [],
                "Tags": [{"Key": "pipeline", "Value": "hello-web"}],
                "OnFailure": "ROLLBACK",
                "ClientRequestToken": token,
            },
        )
        fake.expect_events(list(reversed(history)))
        fake.expect_describe(STACK_ID, fake.stack("ROLLBACK_COMPLETE", NEW))
        fake.expect_events(list(reversed(history)))
        _delete_sequence(fake, history[-1])

        with pytest.raises(CloudFormationError) as caught:
            fake.engine.deploy(STACK, NEW, on_event=fake.events.append)
        fake.done()

    error = caught.value
    assert error.deleted is True
    assert error.status == "ROLLBACK_COMPLETE"
    assert error.resource == "LaunchTemplate (AWS::EC2::LaunchTemplate)"
    assert "You are not authorized" in (error.reason or "")
    assert "the failed stack has been deleted" in error.message
    assert any(e.endswith(f"stack {STACK} deleted") for e in fake.events)


def test_a_stack_left_in_rollback_complete_is_deleted_then_created_again() -> None:
    with Fake() as fake:
        old = fake.event(STACK, "ROLLBACK_COMPLETE")
        fake.expect_validation()
        fake.expect_describe(
            STACK, fake.stack("ROLLBACK_COMPLETE", reason="The following resource(s) failed to create: [WebGroup].")
        )
        _delete_sequence(fake, old)
        fake.cfn.add_response(
            "create_stack",
            {"StackId": STACK_ID},
            {
                "StackName": STACK,
                "TemplateBody": ANY,
                "Parameters": ANY,
                "Capabilities": [],
                "Tags": ANY,
                "OnFailure": "ROLLBACK",
                "ClientRequestToken": "pipeline-create-0001",
            },
        )
        created = [
            fake.event(STACK, "CREATE_IN_PROGRESS", "User Initiated", token="pipeline-create-0001"),
            fake.event(STACK, "CREATE_COMPLETE", token="pipeline-create-0001"),
        ]
        fake.expect_events(list(reversed(created)))
        fake.expect_describe(STACK_ID, fake.stack("CREATE_COMPLETE", NEW))
        fake.expect_events(list(reversed(created)))

        state = fake.engine.deploy(STACK, NEW, on_event=fake.events.append)
        fake.done()

    assert state.image == NEW
    assert state.status == "ready"
    assert any("is in ROLLBACK_COMPLETE" in e and "deleting it, then creating it again" in e for e in fake.events)


# --- no-op, waiting, timeouts ---------------------------------------------------------------------------


def test_no_updates_are_to_be_performed_is_success() -> None:
    with Fake() as fake:
        fake.expect_validation(OLD)
        fake.expect_describe(STACK, fake.stack("UPDATE_COMPLETE"))
        # same parameters, but the deployed template text differs (e.g. a comment): ask CloudFormation
        fake.cfn.add_response(
            "get_template", {"TemplateBody": "# older comment\n" + TEMPLATE.read_text()}, {"StackName": STACK_ID}
        )
        fake.expect_events([fake.event(STACK, "UPDATE_COMPLETE")])
        fake.cfn.add_client_error(
            "update_stack",
            service_error_code="ValidationError",
            service_message="No updates are to be performed.",
            http_status_code=400,
        )
        fake.expect_describe(STACK, fake.stack("UPDATE_COMPLETE"))

        state = fake.engine.deploy(STACK, OLD, on_event=fake.events.append)
        fake.done()

    assert state.image == OLD
    assert state.status == "ready"
    assert f"stack {STACK}: no updates are to be performed" in fake.events


def test_an_operation_left_running_is_waited_for_before_deciding() -> None:
    with Fake() as fake:
        fake.expect_validation(OLD)
        fake.expect_describe(STACK, fake.stack("UPDATE_IN_PROGRESS"))
        marker = fake.event(STACK, "UPDATE_IN_PROGRESS", "User Initiated", token="an-earlier-run")
        fake.expect_events([marker])
        done = fake.event(STACK, "UPDATE_COMPLETE", token="an-earlier-run")
        fake.expect_events([done, marker])
        fake.expect_describe(STACK_ID, fake.stack("UPDATE_COMPLETE"))
        fake.expect_events([done, marker])
        fake.expect_describe(STACK, fake.stack("UPDATE_COMPLETE"))
        fake.cfn.add_response("get_template", {"TemplateBody": TEMPLATE.read_text()}, {"StackName": STACK_ID})

        state = fake.engine.deploy(STACK, OLD, on_event=fake.events.append)
        fake.done()

    assert state.image == OLD
    assert any("an earlier operation" in e for e in fake.events)
    assert any("nothing to do" in e for e in fake.events)


def test_a_rollout_longer_than_the_deadline_is_reported_with_what_to_do() -> None:
    with Fake(timeout=3.0) as fake:
        marker = fake.event(STACK, "UPDATE_COMPLETE")
        fake.engine.poll_seconds = 1.0
        fake.expect_validation()
        fake.expect_describe(STACK, fake.stack("UPDATE_COMPLETE"))
        fake.expect_events([marker])
        _update_call(fake)
        for _ in range(4):  # t = 0, 1, 2, 3: the deadline passes at 3
            fake.expect_events([marker])
            fake.expect_describe(STACK_ID, fake.stack("UPDATE_IN_PROGRESS", NEW))

        with pytest.raises(CloudFormationError) as caught:
            fake.engine.deploy(STACK, NEW)
        fake.done()

    assert caught.value.status == "UPDATE_IN_PROGRESS"
    assert "still UPDATE_IN_PROGRESS" in caught.value.message
    assert caught.value.hint is not None
    assert "re-run to keep waiting" in caught.value.hint
    assert max(fake.sleeps) <= 1.0


def test_polling_backs_off_up_to_poll_seconds() -> None:
    with Fake() as fake:
        marker = fake.event(STACK, "UPDATE_COMPLETE")
        fake.expect_validation()
        fake.expect_describe(STACK, fake.stack("UPDATE_COMPLETE"))
        fake.expect_events([marker])
        _update_call(fake)
        for _ in range(7):
            fake.expect_events([marker])
            fake.expect_describe(STACK_ID, fake.stack("UPDATE_IN_PROGRESS", NEW))
        fake.expect_events([marker])
        fake.expect_describe(STACK_ID, fake.stack("UPDATE_COMPLETE", NEW))
        fake.expect_events([marker])

        state = fake.engine.deploy(STACK, NEW)
        fake.done()

    assert state.image == NEW
    assert fake.sleeps[0] == 1.0
    assert fake.sleeps == sorted(fake.sleeps)
    assert fake.sleeps[-1] == 5.0


# --- delete, errors ------------------------------------------------------------------------------------


def test_delete_failed_is_reported_with_the_resource_and_the_fix() -> None:
    with Fake() as fake:
        marker = fake.event(STACK, "UPDATE_COMPLETE")
        fake.expect_describe(STACK, fake.stack("UPDATE_COMPLETE"))
        fake.expect_events([marker])
        fake.cfn.add_response("delete_stack", {}, {"StackName": STACK_ID, "ClientRequestToken": "pipeline-delete-0001"})
        token = "pipeline-delete-0001"
        events = [
            fake.event(STACK, "DELETE_IN_PROGRESS", "User Initiated", token=token),
            fake.event(
                "Vpc",
                "DELETE_FAILED",
                "The vpc 'vpc-0a1b2c3d4e5f' has dependencies and cannot be deleted.",
                token=token,
            ),
            fake.event(STACK, "DELETE_FAILED", "The following resource(s) failed to delete: [Vpc].", token=token),
        ]
        fake.expect_events([*list(reversed(events)), marker])
        fake.expect_describe(STACK_ID, fake.stack("DELETE_FAILED"))
        fake.expect_events([*list(reversed(events)), marker])

        with pytest.raises(CloudFormationError) as caught:
            fake.engine.delete(STACK)
        fake.done()

    assert caught.value.status == "DELETE_FAILED"
    assert caught.value.resource == "Vpc (AWS::EC2::VPC)"
    assert caught.value.hint is not None
    assert "FORCE_DELETE_STACK" in caught.value.hint


def test_access_denied_says_it_is_about_credentials() -> None:
    with Fake() as fake:
        fake.cfn.add_client_error(
            "describe_stacks",
            service_error_code="AccessDenied",
            service_message="User: arn:aws:iam::123456789012:user/ci is not authorized to perform: cloudformation:DescribeStacks",
            http_status_code=403,
        )
        with pytest.raises(CredentialsError) as caught:
            fake.engine.describe(STACK)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert caught.value.message.startswith("AWS CloudFormation (us-east-1) denied DescribeStacks: AccessDenied: ")
    assert caught.value.hint is not None
    assert "lack this permission" in caught.value.hint


# --- verification on real AWS --------------------------------------------------------------------------


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"Hello World 1.2.0"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hello_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _expect_control_plane(fake: Fake, url: str | None, instance_version: str) -> None:
    stack = fake.stack("UPDATE_COMPLETE", NEW)
    if url:
        stack["Outputs"][0]["OutputValue"] = url
    else:
        del stack["Outputs"][0]
    fake.expect_describe(STACK, stack)
    fake.cfn.add_response(
        "describe_stack_resources",
        {
            "StackResources": [
                {
                    "LogicalResourceId": lid,
                    "PhysicalResourceId": pid,
                    "ResourceType": kind,
                    "Timestamp": T0,
                    "ResourceStatus": "UPDATE_COMPLETE",
                }
                for lid, pid, kind in [
                    ("LaunchTemplate", "lt-0abc", "AWS::EC2::LaunchTemplate"),
                    ("WebGroup", "hello-web-production-WebGroup-1XYZ", "AWS::AutoScaling::AutoScalingGroup"),
                ]
            ]
        },
        {"StackName": STACK_ID},
    )
    fake.ec2.add_response(
        "describe_launch_template_versions",
        {
            "LaunchTemplateVersions": [
                {"LaunchTemplateId": "lt-0abc", "VersionNumber": 3, "LaunchTemplateData": {"ImageId": NEW}}
            ]
        },
        {"LaunchTemplateId": "lt-0abc", "Versions": ["$Latest"]},
    )
    instance = {
        "AvailabilityZone": "us-east-1a",
        "LifecycleState": "InService",
        "HealthStatus": "Healthy",
        "ProtectedFromScaleIn": False,
        "LaunchTemplate": {"LaunchTemplateId": "lt-0abc", "Version": instance_version},
    }
    fake.asg.add_response(
        "describe_auto_scaling_groups",
        {
            "AutoScalingGroups": [
                {
                    "AutoScalingGroupName": "hello-web-production-WebGroup-1XYZ",
                    "LaunchTemplate": {"LaunchTemplateId": "lt-0abc", "Version": "3"},
                    "MinSize": 2,
                    "MaxSize": 4,
                    "DesiredCapacity": 2,
                    "DefaultCooldown": 300,
                    "AvailabilityZones": ["us-east-1a", "us-east-1b"],
                    "HealthCheckType": "ELB",
                    "CreatedTime": T0,
                    "Instances": [{**instance, "InstanceId": f"i-0{n}"} for n in (1, 2)],
                }
            ]
        },
        {"AutoScalingGroupNames": ["hello-web-production-WebGroup-1XYZ"]},
    )


def test_verify_on_aws_checks_the_rollout_and_the_url_for_real(hello_url: str) -> None:
    with Fake() as fake:
        _expect_control_plane(fake, hello_url, instance_version="3")
        report = fake.engine.verify(
            StackState(name=STACK, exists=True, image=NEW), Verify(expect_text="Hello World 1.2.0", requests=3)
        )
        fake.done()
    assert report.ok, report.detail
    assert report.emulated == ()
    assert report.real == (
        "stack status UPDATE_COMPLETE",
        f"launch template lt-0abc version 3 ImageId {NEW}",
        "group hello-web-production-WebGroup-1XYZ: 2/2 instances on launch template version 3",
        f"HTTP GET {hello_url} x3, expecting 200 with 'Hello World 1.2.0'",
    )
    assert (report.requests, report.failures) == (3, 0)


def test_verify_on_aws_fails_while_instances_still_run_the_old_version(hello_url: str) -> None:
    with Fake() as fake:
        _expect_control_plane(fake, hello_url, instance_version="2")
        report = fake.engine.verify(StackState(name=STACK, exists=True, image=NEW), Verify(requests=2))
        fake.done()
    assert not report.ok
    assert report.failures == 1
    assert "0 of 2 instances InService and healthy on version 3" in report.detail


def test_verify_on_aws_fails_without_a_url_to_request() -> None:
    with Fake() as fake:
        _expect_control_plane(fake, None, instance_version="3")
        report = fake.engine.verify(StackState(name=STACK, exists=True, image=NEW), Verify())
        fake.done()
    assert not report.ok
    assert report.requests == 0
    assert "Url output: the stack has no Url output" in report.detail


def test_emulator_detection() -> None:
    assert not session.is_emulator_endpoint(None)
    assert not session.is_emulator_endpoint("https://cloudformation.us-east-1.amazonaws.com")
    assert not session.is_emulator_endpoint("https://cloudformation-fips.us-gov-west-1.amazonaws.com")
    assert session.is_emulator_endpoint("http://127.0.0.1:5000")
    assert session.is_emulator_endpoint("http://localstack:4566")
    elb = "http://web-1.us-east-1.elb.amazonaws.com/"
    assert session.data_plane_is_real(elb, None)
    assert not session.data_plane_is_real(elb, "http://127.0.0.1:5000")
    assert session.data_plane_is_real("http://127.0.0.1:8080/", "http://127.0.0.1:5000")
    assert session.data_plane_is_real("http://web.localhost:8080/", "http://127.0.0.1:5000")
    assert not session.data_plane_is_real(None, None)


def test_the_template_parameter_checks_need_no_aws(tmp_path: Path) -> None:
    engine = CloudFormationEngine("p", TEMPLATE, AwsSettings(), environ={})
    assert engine.plan(NEW) == {**PARAMS, "ImageId": NEW}
    assert engine.plan(NEW, {"MaxSize": "6"})["MaxSize"] == "6"


def _no_client(service: str) -> Any:
    raise AssertionError(f"check_template made a {service} client: it must work offline")


def test_check_template_is_offline_and_names_what_is_wrong(tmp_path: Path) -> None:
    """The stack stages' preflight (and `pipeline validate --profile aws`): cfn-lint and the image
    parameter, with no AWS client (no credentials, no endpoint, no network)."""
    CloudFormationEngine("p", TEMPLATE, AwsSettings(), environ={}, client_factory=_no_client).check_template()

    def check(text: str) -> str:
        path = tmp_path / "web.yaml"
        path.write_text(text)
        engine = CloudFormationEngine("p", path, AwsSettings(), environ={}, client_factory=_no_client)
        with pytest.raises(TemplateError) as caught:
            engine.check_template()
        assert caught.value.exit_code == 2
        return caught.value.message

    original = TEMPLATE.read_text()
    assert "E3002" in check(original.replace("      HealthCheckPath: /health", "      HealthCheckPat: /health"))
    assert "no parameter 'ImageId'" in check("Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n")
    assert "not valid YAML" in check("Resources:\n  X: [\n")
    assert "TemplateBody limit" in check(original + "#" * 52_000 + "\n")
    missing = CloudFormationEngine("p", tmp_path / "absent.yaml", AwsSettings(), environ={}, client_factory=_no_client)
    with pytest.raises(TemplateError, match="cannot read template"):
        missing.check_template()
