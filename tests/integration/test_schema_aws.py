"""The live-schema template and the aws engine's database calls against AWS emulators over HTTP:
moto (ThreadedMotoServer) and MiniStack, each on 127.0.0.1.

What each emulator does with the template's AWS::RDS::DBInstance (found here, asserted below):
- moto: CloudFormation creates the instance (Engine, DBName, MasterUsername as given) with an
  endpoint address that resolves nowhere; `create_db_snapshot` / `describe_db_snapshots` /
  `delete_db_snapshot` work; a stack created with DBSnapshotIdentifier set gets an instance, but
  moto's CloudFormation does not restore it from the snapshot (the parameter is sent, and checked).
- MiniStack: CloudFormation creates the instance too; RDS snapshots are real records of its RDS API.
Neither runs a PostgreSQL server: the tests at the end send the engine's SQL (the masking of a test
stack restored from a snapshot, the contract's migration) to a real PostgreSQL server on 127.0.0.1
in the instance's place; everything else (stacks, groups, instances, snapshots) is moto's.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.aws.database import configured_groups
from pipeline.engines.aws.engine import CloudFormationEngine
from pipeline.engines.stack import DatabaseEndpoint, Replica, StackState
from pipeline.errors import StackOperationError, StageFailedError
from pipeline.executors.migrate import older_replicas
from pipeline.model import AwsSettings, Database, Sensitive
from pipeline.schema.migrations import Migrations
from pipeline.schema.revision import read_revision
from tests.conftest import REPO
from tests.integration.postgres import Server, postgres_server
from tests.integration.test_cloudformation import AMI_A, AMI_B, reset_moto, running_moto
from tests.integration.test_cloudformation_ministack import ministack_url  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "live-schema"
TEMPLATE = EXAMPLE / "templates" / "web.yaml"
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
    fleet = aws.fleet("live-schema-production")
    assert [r.image for r in fleet] == [AMI_A, AMI_A, AMI_A]
    assert fleet[-1] == Replica("launch template of the web group (2 instances)", AMI_A)


def web_group(url: str) -> dict[str, Any]:
    [group] = [
        g
        for g in client(url, "autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]
        if "-WebGroup-" in g["AutoScalingGroupName"]
    ]
    return dict(group)


def finish_the_rolling_update(url: str) -> None:
    """What AWS's rolling update does and moto's CloudFormation does not: point the web group at
    the launch template's latest version and replace its instances (Auto Scaling launches the
    replacements from that version)."""
    group = web_group(url)
    autoscaling = client(url, "autoscaling")
    template = group["LaunchTemplate"]["LaunchTemplateId"]
    autoscaling.update_auto_scaling_group(
        AutoScalingGroupName=group["AutoScalingGroupName"],
        LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
    )
    for instance in group["Instances"]:
        autoscaling.terminate_instance_in_auto_scaling_group(
            InstanceId=instance["InstanceId"], ShouldDecrementDesiredCapacity=False
        )


def test_the_fleet_is_the_instances_in_service_not_the_stacks_parameters_on_moto(moto_url: str) -> None:
    """moto's update of the launch template leaves the instances on the old image, as a rolling
    update of AWS that stopped before replacing any: the parameters say new, the instances old."""
    reset_moto(moto_url)
    aws = engine(moto_url)
    stack = "live-schema-production"
    aws.deploy(stack, AMI_A)
    aws.deploy(stack, AMI_B)
    assert configured_groups(aws.describe(stack), "ImageId") == [
        Replica("launch template of the web group (2 instances)", AMI_B)
    ]
    old = sorted(i["InstanceId"] for i in web_group(moto_url)["Instances"])
    assert len(old) == 2
    images = {
        i["InstanceId"]: i["ImageId"]
        for r in client(moto_url, "ec2").describe_instances(InstanceIds=old)["Reservations"]
        for i in r["Instances"]
    }
    assert set(images.values()) == {AMI_A}  # what EC2 says they run
    older = older_replicas(aws.fleet(stack), AMI_B)
    assert sorted(r.name for r in older) == [f"instance {i} of WebGroup" for i in old]
    assert {r.image for r in older} == {AMI_A}

    finish_the_rolling_update(moto_url)
    fleet = aws.fleet(stack)
    new = sorted(i["InstanceId"] for i in web_group(moto_url)["Instances"])
    assert len(new) == 2
    assert not set(new) & set(old)
    assert sorted(r.name for r in fleet if r.name.startswith("instance ")) == [f"instance {i} of WebGroup" for i in new]
    assert older_replicas(fleet, AMI_B) == []


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


def test_the_groups_configured_images_count_a_canary_slot_with_instances_warm_or_serving() -> None:
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
    assert configured_groups(state, "ImageId") == [
        Replica("launch template of the web group (2 instances)", "ami-new"),
        Replica("launch template of the canary slot (2 instances)", "ami-old", serving=False),
    ]
    idle = StackState(
        name="s", exists=True, parameters={"ImageId": "ami-new", "CanaryImageId": "", "CanaryCapacity": "0"}
    )
    assert configured_groups(idle, "ImageId") == [Replica("launch template of the web group", "ami-new")]


# --- against a real PostgreSQL in the RDS instance's place ----------------------------------------------
# moto's RDS has no data plane (its endpoint resolves nowhere), so the engine's SQL goes to a real
# PostgreSQL server on 127.0.0.1 instead: one database per stack, everything else as on moto.


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with postgres_server() as running:
        yield running


def reach_postgres(aws: CloudFormationEngine, server: Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Send the engine's SQL for each stack to a database of its own on `server`; returns the
    databases' URLs by stack (made on first use)."""
    urls: dict[str, str] = {}
    real = aws._database.endpoint

    def endpoint(state: StackState) -> DatabaseEndpoint | None:
        found = real(state)  # None unless the stack and its DatabaseAddress output exist on moto
        if found is None:
            return None
        name = re.sub(r"[^a-z0-9_]", "_", state.name)
        if state.name not in urls:
            urls[state.name] = server.create_database(name)
        return replace(found, host="127.0.0.1", port=server.port, user=server.user, password=server.password, name=name)

    monkeypatch.setattr(aws._database, "endpoint", endpoint)
    return urls


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as connection:
        return [tuple(r) for r in connection.execute(sql).fetchall()]


def like_production(url: str) -> None:
    """What restoring production's snapshot gives the test stack (moto copies no data): the
    example's 1.0.0 schema with real visits."""
    import psycopg

    Migrations(EXAMPLE / "migrations").upgrade(url, "expand")
    with psycopg.connect(url) as connection:
        connection.execute("INSERT INTO visits (agent) VALUES ('curl/8.5'), ('Mozilla/5.0 (Alice)'), (NULL)")


MASKS = (Sensitive(column="visits.agent", mask="'masked'"),)


def test_a_test_stack_restored_from_a_snapshot_is_masked_before_the_deploy_returns_on_moto(
    moto_url: str, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    reset_moto(moto_url)
    aws = CloudFormationEngine(
        "live-schema", TEMPLATE, AwsSettings(endpoint_url=moto_url), poll_seconds=0.05, database=Database(), masks=MASKS
    )
    urls = reach_postgres(aws, server, monkeypatch)
    production, test = "live-schema-production", "live-schema-test-20261205-2"
    events: list[str] = []
    aws.deploy(production, AMI_A, on_event=events.append)
    # Not restored from a snapshot: never masked, even by an engine that has masks.
    assert not [e for e in events if e.startswith("masking")]
    assert production not in urls
    snapshot = aws.snapshot_database(production, test)
    like_production(server.create_database(re.sub(r"[^a-z0-9_]", "_", test)))
    urls[test] = server.url(re.sub(r"[^a-z0-9_]", "_", test))

    aws.deploy(test, AMI_A, parameters=aws.database_parameters(snapshot), on_event=events.append)
    assert f"masking visits.agent in the database of {test} (postgresql://app@127.0.0.1:{server.port}/" in "\n".join(
        events
    )
    assert rows(urls[test], "SELECT agent FROM visits ORDER BY id") == [("masked",), ("masked",), ("masked",)]

    # A crash between the create and the masking: the re-run's deploy (the stack as created) masks.
    rows(urls[test], "UPDATE visits SET agent = 'leaked' RETURNING id")
    aws.deploy(test, AMI_A, parameters=aws.database_parameters(snapshot))
    assert {r[0] for r in rows(urls[test], "SELECT agent FROM visits")} == {"masked"}


def test_a_mask_that_fails_masks_nothing_and_stops_the_deploy_on_moto(
    moto_url: str, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    reset_moto(moto_url)
    masks = (*MASKS, Sensitive(column="greetings.text", mask="no_such_function()"))
    aws = CloudFormationEngine(
        "live-schema", TEMPLATE, AwsSettings(endpoint_url=moto_url), poll_seconds=0.05, database=Database(), masks=masks
    )
    urls = reach_postgres(aws, server, monkeypatch)
    production, test = "live-schema-production", "live-schema-test-20261205-3"
    aws.deploy(production, AMI_A)
    snapshot = aws.snapshot_database(production, test)
    name = re.sub(r"[^a-z0-9_]", "_", test)
    like_production(server.create_database(name))
    urls[test] = server.url(name)
    with pytest.raises(StackOperationError, match=r"masking the sensitive columns of .* failed: .*no_such_function"):
        aws.deploy(test, AMI_A, parameters=aws.database_parameters(snapshot))
    # One transaction: the first column's UPDATE is undone with the second's failure.
    assert "curl/8.5" in {r[0] for r in rows(urls[test], "SELECT agent FROM visits")}


def test_a_contract_is_refused_naming_the_instances_on_the_old_image_then_runs_on_moto(
    moto_url: str, server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The Migrate stage's executor against the aws engine: the fleet from moto, the database real."""
    from pipeline.executors.base import StageContext
    from pipeline.executors.migrate import MigrateExecutor
    from pipeline.ledger import Ledger
    from pipeline.loader import load
    from pipeline.stages import Migrate
    from pipeline.testing import FakeEngines

    reset_moto(moto_url)
    aws = engine(moto_url)
    urls = reach_postgres(aws, server, monkeypatch)
    production = "live-schema-production"
    aws.deploy(production, AMI_A)
    aws.deploy(production, AMI_B)  # the template says AMI_B; moto's instances still run AMI_A
    root = tmp_path / "service"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("golden"))
    for release in ("1.1.0", "1.2.0"):
        for path in (EXAMPLE / "next-releases" / release / "migrations" / "versions").glob("*.py"):
            shutil.copy2(path, root / "migrations" / "versions" / path.name)
    endpoint = aws.database(production)
    assert endpoint is not None
    Migrations(root / "migrations").upgrade(endpoint.url, "expand")
    spec = load(root / "pipelinefile.py").spec
    contract = spec.stage("contract")
    assert isinstance(contract, Migrate)

    def context() -> StageContext:
        return StageContext(
            pipeline=spec,
            stage=contract,
            root=root,
            run_id="run-1",
            run_dir=tmp_path / "run",
            profile="aws",
            upstream={"bake": {"image": AMI_B}},
            ledger=Ledger(root),
            engines=FakeEngines(aws),
        )

    old = sorted(i["InstanceId"] for i in web_group(moto_url)["Instances"])
    with pytest.raises(StageFailedError) as refused:
        MigrateExecutor(contract).run(context())
    text = str(refused.value)
    assert "contract refused on live-schema-production: 2 of 3 replicas run another image" in text
    for instance in old:
        assert f"instance {instance} of WebGroup ({AMI_A})" in text
    assert "nothing was changed" in text
    assert "c1_drop_text" not in read_revision(urls[production])
    assert "e2_message" in read_revision(urls[production])

    finish_the_rolling_update(moto_url)
    outputs = MigrateExecutor(contract).run(context())
    assert outputs["applied"] == "c1_drop_text"
    assert "text" not in {r[0] for r in rows(urls[production], "SELECT column_name FROM information_schema.columns WHERE table_name = 'greetings'")}  # fmt: skip
