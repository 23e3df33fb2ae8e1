"""The live-schema template and the aws engine's database calls against AWS emulators over HTTP:
moto (ThreadedMotoServer) and MiniStack, each on 127.0.0.1.

What each emulator does with the template's AWS::RDS::DBInstance (found here, asserted below):
- moto: CloudFormation creates the instance (Engine, DBName, MasterUsername as given) with an
  endpoint address that resolves nowhere; `create_db_snapshot` / `describe_db_snapshots` /
  `delete_db_snapshot` work; a stack created with DBSnapshotIdentifier set gets an instance, but
  moto's CloudFormation does not restore it from the snapshot (the parameter is sent, and checked).
- MiniStack: CloudFormation creates the instance too; RDS snapshots are real records of its RDS API.
Neither runs a PostgreSQL server: migrations against the aws profile's database need real AWS (or
an endpoint this machine reaches); the local profile runs them for real (tests/e2e).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.engines.aws.database import fleet
from pipeline.engines.aws.engine import CloudFormationEngine
from pipeline.engines.stack import Replica, StackState
from pipeline.model import AwsSettings, Database
from tests.conftest import REPO
from tests.integration.test_cloudformation import AMI_A, reset_moto, running_moto
from tests.integration.test_cloudformation_ministack import ministack_url  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration

TEMPLATE = REPO / "examples" / "live-schema" / "templates" / "web.yaml"
PASSWORD = "s3cret-Passw0rd"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with running_moto() as url:
        yield url


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("DATABASE_PASSWORD", PASSWORD)


def engine(url: str, poll: float = 0.05) -> CloudFormationEngine:
    return CloudFormationEngine(
        "live-schema", TEMPLATE, AwsSettings(endpoint_url=url), poll_seconds=poll, database=Database()
    )


def client(url: str, service: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=url, region_name="us-east-1")


def test_the_template_makes_a_postgresql_instance_and_the_engine_finds_it_on_moto(moto_url: str) -> None:
    reset_moto(moto_url)
    aws = engine(moto_url)
    events: list[str] = []
    state = aws.deploy("live-schema-production", AMI_A, on_event=events.append)
    assert state.exists
    [instance] = client(moto_url, "rds").describe_db_instances()["DBInstances"]
    assert instance["Engine"] == "postgres"
    assert instance["DBName"] == "app"
    assert instance["MasterUsername"] == "app"
    endpoint = aws.database("live-schema-production")
    assert endpoint is not None
    assert endpoint.host == instance["Endpoint"]["Address"]
    assert (endpoint.user, endpoint.name, endpoint.password) == ("app", "app", PASSWORD)
    assert PASSWORD not in endpoint.where
    # The password goes to CloudFormation as a NoEcho parameter and never comes back, nor into events.
    described = client(moto_url, "cloudformation").describe_stacks(StackName="live-schema-production")
    sent = {p["ParameterKey"]: p["ParameterValue"] for p in described["Stacks"][0]["Parameters"]}
    assert "DatabasePassword" in sent
    assert PASSWORD not in repr(state) + "\n".join(events)
    assert aws.carried_parameters(state, "ImageId") is not None
    assert "DatabasePassword" not in (aws.carried_parameters(state, "ImageId") or {})
    assert aws.fleet("live-schema-production") == [Replica("web group (2 instances)", AMI_A)]


def test_a_test_stack_starts_from_a_snapshot_deleted_with_it_on_moto(moto_url: str) -> None:
    reset_moto(moto_url)
    aws = engine(moto_url)
    aws.deploy("live-schema-production", AMI_A)
    rds = client(moto_url, "rds")
    test = "live-schema-test-20261205-1"
    assert aws.snapshot_database("live-schema-production", test) == test
    [snapshot] = rds.describe_db_snapshots(DBSnapshotIdentifier=test)["DBSnapshots"]
    assert snapshot["Status"] == "available"
    assert aws.snapshot_database("live-schema-production", test) == test  # a re-run takes no second one
    manual = rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
    assert [s["DBSnapshotIdentifier"] for s in manual] == [test]
    parameters = aws.database_parameters(test)
    assert parameters == {"DatabaseSnapshot": test}
    aws.deploy(test, AMI_A, parameters=parameters)
    described = client(moto_url, "cloudformation").describe_stacks(StackName=test)["Stacks"][0]
    sent = {p["ParameterKey"]: p["ParameterValue"] for p in described["Parameters"]}
    assert sent["DatabaseSnapshot"] == test
    assert len(rds.describe_db_instances()["DBInstances"]) == 2
    aws.delete(test)
    assert not [s for s in rds.describe_db_snapshots()["DBSnapshots"] if s["DBSnapshotIdentifier"] == test]


def test_a_stack_without_a_database_instance_has_no_snapshot_to_take(moto_url: str) -> None:
    reset_moto(moto_url)
    from pipeline.errors import StackOperationError

    aws = engine(moto_url)
    with pytest.raises(StackOperationError, match="has no database instance"):
        aws.snapshot_database("live-schema-production", "nothing")
    assert aws.database("live-schema-production") is None


def test_the_template_makes_the_instance_and_snapshots_on_ministack(ministack_url: str) -> None:  # noqa: F811
    import boto3

    ec2 = boto3.client("ec2", endpoint_url=ministack_url, region_name="us-east-1")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    aws = engine(ministack_url, poll=0.25)
    stack = "live-schema-production"
    try:
        state = aws.deploy(stack, image)
        assert state.exists
        instances = client(ministack_url, "rds").describe_db_instances()["DBInstances"]
        assert [i["Engine"] for i in instances] == ["postgres"]
        endpoint = aws.database(stack)
        assert endpoint is not None
        assert (endpoint.user, endpoint.name) == ("app", "app")
        name = "live-schema-test-ministack"
        assert aws.snapshot_database(stack, name) == name
        statuses = [
            s["Status"]
            for s in client(ministack_url, "rds").describe_db_snapshots()["DBSnapshots"]
            if s["DBSnapshotIdentifier"] == name
        ]
        assert statuses == ["available"]
    finally:
        aws.delete(stack)


def test_the_fleet_counts_a_canary_slot_with_instances_warm_or_serving() -> None:
    state = StackState(
        name="s",
        exists=True,
        parameters={
            "ImageId": "ami-new",
            "DesiredCapacity": "2",
            "CanaryImageId": "ami-old",
            "CanaryCapacity": "2",
            "CanaryWeight": "0",
        },
    )
    assert fleet(state, "ImageId") == [
        Replica("web group (2 instances)", "ami-new"),
        Replica("canary slot (2 instances)", "ami-old", serving=False),
    ]
    idle = StackState(
        name="s", exists=True, parameters={"ImageId": "ami-new", "CanaryImageId": "", "CanaryCapacity": "0"}
    )
    assert fleet(idle, "ImageId") == [Replica("web group", "ami-new")]
