"""The aws engine against MiniStack, an emulator that does reach CloudFormation's rollback states.

moto never produces UPDATE_ROLLBACK_COMPLETE or ROLLBACK_COMPLETE; MiniStack does, with AWS-like
event sequences, so the engine's handling of them is exercised against a real server here (and
against recorded responses in tests/unit/test_cloudformation_stubbed.py). MiniStack comes with
the dev extra (`pip install ministack==1.5.33`; it pins its own botocore). It runs on 127.0.0.1 only.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.engines.aws.engine import CloudFormationEngine
from pipeline.errors import CloudFormationError
from pipeline.model import AwsSettings, Verify
from tests.conftest import REPO, need

pytestmark = pytest.mark.integration

QUEUE = """\
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  ImageId:
    Type: String
  Delay:
    Type: Number
    Default: 0
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      DelaySeconds: !Ref Delay
      Tags:
        - Key: image
          Value: !Ref ImageId
Outputs:
  Url:
    Value: !GetAtt Queue.QueueUrl
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ministack_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    beside_python = Path(sys.executable).parent / "ministack"
    command = str(beside_python) if beside_python.exists() else shutil.which("ministack")
    need(
        command is not None and importlib.util.find_spec("ministack") is not None,
        "MiniStack is not installed (pip install ministack==1.5.33; the dev extra has it)",
    )
    assert command is not None
    port = _free_port()
    log = tmp_path_factory.mktemp("ministack") / "ministack.log"
    env = {**os.environ, "BIND_HOST": "127.0.0.1", "GATEWAY_PORT": str(port), "IOT_MTLS_ENABLED": "0"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [command], env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"MiniStack did not start; its log:\n{log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="module")
def images(ministack_url: str) -> list[str]:
    import boto3

    ec2 = boto3.client(
        "ec2", endpoint_url=ministack_url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    found = [i["ImageId"] for i in ec2.describe_images()["Images"]]
    assert len(found) >= 2, "MiniStack ships stock AMIs"
    return found


def engine(url: str, template: Path) -> CloudFormationEngine:
    return CloudFormationEngine("hello-web", template, AwsSettings(endpoint_url=url), poll_seconds=0.25)


@pytest.fixture
def queue_template(tmp_path: Path) -> Path:
    path = tmp_path / "queue.yaml"
    path.write_text(QUEUE)
    return path


def test_the_reference_stack_lives_and_dies_on_ministack(ministack_url: str, images: list[str]) -> None:
    aws = engine(ministack_url, REPO / "templates" / "web.yaml")
    first, second = images[0], images[1]
    events: list[str] = []

    created = aws.deploy("hello-web-mini", first, on_event=events.append)
    assert created.image == first
    assert any("WebGroup (AWS::AutoScaling::AutoScalingGroup) CREATE_COMPLETE" in e for e in events)

    updated = aws.deploy("hello-web-mini", second)
    assert updated.details["stack_status"] == "UPDATE_COMPLETE"
    report = aws.verify(updated, Verify())
    assert report.ok, report.detail
    assert report.real == ()
    assert any(check.endswith(f"version 2 ImageId {second}") for check in report.emulated)

    assert aws.deploy("hello-web-mini", second) == aws.describe("hello-web-mini")
    assert aws.stacks() == ["hello-web-mini"]
    aws.delete("hello-web-mini")
    assert not aws.describe("hello-web-mini").exists


def test_a_failed_update_rolls_back_and_names_the_resource(
    ministack_url: str, images: list[str], queue_template: Path
) -> None:
    aws = engine(ministack_url, queue_template)
    aws.deploy("queue-upd", images[0])

    with pytest.raises(CloudFormationError) as caught:
        aws.deploy("queue-upd", images[1], parameters={"Delay": "5000"})

    error = caught.value
    assert error.status == "UPDATE_ROLLBACK_COMPLETE"
    assert error.resource == "Queue (AWS::SQS::Queue)"
    assert error.reason is not None
    assert "DelaySeconds" in error.reason
    assert f"healthy on the previous version ({images[0]})" in error.message
    state = aws.describe("queue-upd")
    assert (state.image, state.parameters["Delay"], state.status) == (images[0], "0", "ready")
    assert aws.deploy("queue-upd", images[1]).image == images[1]  # a later update works
    aws.delete("queue-upd")


def test_a_failed_create_is_deleted_and_reported(ministack_url: str, images: list[str], queue_template: Path) -> None:
    aws = engine(ministack_url, queue_template)
    events: list[str] = []

    with pytest.raises(CloudFormationError) as caught:
        aws.deploy("queue-new", images[0], parameters={"Delay": "5000"}, on_event=events.append)

    assert caught.value.status == "ROLLBACK_COMPLETE"
    assert caught.value.deleted
    assert "DelaySeconds" in (caught.value.reason or "")
    assert not aws.describe("queue-new").exists
    assert any("deleted" in e for e in events)
    recreated = aws.deploy("queue-new", images[0])
    assert recreated.status == "ready"
    aws.delete("queue-new")
