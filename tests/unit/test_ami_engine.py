"""The AMI image engine's EC2 side against moto in this process (`mock_aws`: no server, no Packer):
finding an AMI by its bake key, keeping (tagging) one, whether a recorded one exists, and sweeping
what a killed aws bake built and did not tag. Packer's amazon-ebs builds run against a moto server
in tests/integration/test_bake.py and tests/e2e/test_aws_chain.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

moto = pytest.importorskip("moto", reason="moto is in the [dev] extra")
boto3 = pytest.importorskip("boto3", reason="boto3 is in the [run] extra")

from pipeline.engines.aws.session import AwsSession  # noqa: E402
from pipeline.engines.images.ami import KEY_TAG, AmiImageEngine  # noqa: E402
from pipeline.engines.images.base import BakeJob, Built  # noqa: E402
from pipeline.engines.images.journal import Journal  # noqa: E402
from pipeline.errors import StageFailedError  # noqa: E402
from pipeline.model import AwsSettings  # noqa: E402
from pipeline.stages.bake import Bake  # noqa: E402

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@pytest.fixture
def ec2(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    with moto.mock_aws():
        yield boto3.client("ec2", region_name="us-east-1")


def _ami(ec2: Any, tags: dict[str, str] | None = None) -> str:
    source = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=source, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ami = str(
        ec2.create_image(InstanceId=instance, Name=f"baked-{len(ec2.describe_images(Owners=['self'])['Images'])}")[
            "ImageId"
        ]
    )
    if tags:
        ec2.create_tags(Resources=[ami], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    return ami


def _engine(ec2: Any) -> AmiImageEngine:
    bake = Bake(name="bake", template="images/web.pkr.hcl", sources={"aws": "amazon-ebs.web"})
    session = AwsSession(AwsSettings(), ENV, client_factory=lambda service: ec2)
    return AmiImageEngine(bake, source="amazon-ebs.web", session=session)


def _job(tmp_path: Path, engine: AmiImageEngine, run_id: str = "run-2") -> BakeJob:
    return BakeJob(
        bake=engine.bake,
        pipeline="shop",
        run_id=run_id,
        root=tmp_path,
        stage_dir=tmp_path / "run" / "stages" / "bake",
        journal=Journal.open(tmp_path / ".pipeline", "shop", "bake", run_id),
    )


def test_a_kept_ami_is_found_by_its_key_and_names_its_run(ec2: Any, tmp_path: Path) -> None:
    engine = _engine(ec2)
    job = _job(tmp_path, engine)
    ami = _ami(ec2)
    assert engine.find(job, "k" * 32) is None  # not tagged yet: it does not count
    kept = engine.keep(job, Built(ami, f"us-east-1:{ami}", "uuid-1", 1.0), "k" * 32, checks="emulated: web:1")
    assert kept == ami
    found = engine.find(job, "k" * 32)
    assert found is not None
    assert (found.image, found.run_uuid) == (ami, "uuid-1")
    tags = {t["Key"]: t["Value"] for t in ec2.describe_images(ImageIds=[ami])["Images"][0]["Tags"]}
    assert tags[KEY_TAG] == "k" * 32
    assert tags["io.pipeline.run-id"] == "run-2"
    assert tags["io.pipeline.checks"] == "emulated: web:1"


def test_whether_a_recorded_or_given_ami_exists(ec2: Any, tmp_path: Path) -> None:
    engine = _engine(ec2)
    ami = _ami(ec2)
    assert engine.exists(ami)
    assert not engine.exists("ami-00000000")
    assert engine.given(_job(tmp_path, engine), ami, "use_image") == ami
    with pytest.raises(
        StageFailedError, match="the AMI ami-00000000 given by use_image does not exist in AWS us-east-1"
    ):
        engine.given(_job(tmp_path, engine), "ami-00000000", "use_image")


def test_the_sweep_deregisters_what_a_dead_bake_built_and_did_not_tag(ec2: Any, tmp_path: Path) -> None:
    engine = _engine(ec2)
    untagged = _ami(ec2)
    tagged = _ami(ec2, {KEY_TAG: "k" * 32})
    dead = Journal.open(tmp_path / ".pipeline", "shop", "bake", "run-1")
    dead.record("ami", "images", untagged)
    dead.record("ami", "images", tagged)  # died after tagging it: it counts
    dead.record("ami", "manifests", str(tmp_path / "no-manifest.json"))  # Packer never got that far
    notes = engine.sweep(_job(tmp_path, engine))
    assert notes == [f"removed what a bake killed in run run-1 left: AMI {untagged}"]
    remaining = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert untagged not in remaining
    assert tagged in remaining
    assert not dead.folder.exists()


def test_the_sweep_leaves_a_dead_bakes_docker_part_to_the_docker_engine(ec2: Any, tmp_path: Path) -> None:
    engine = _engine(ec2)
    dead = Journal.open(tmp_path / ".pipeline", "shop", "bake", "run-1")
    dead.record("docker", "images", "sha256:1")
    assert engine.sweep(_job(tmp_path, engine)) == []
    assert dead.entries("docker") == {"images": ["sha256:1"]}


def test_what_the_ami_adds_to_the_plan(ec2: Any, tmp_path: Path) -> None:
    engine = _engine(ec2)
    assert engine.observed() == {"base_image": "none", "aws_region": "us-east-1", "aws_endpoint": ""}
    assert engine.key_material(_job(tmp_path, engine)).extra == {"region": "us-east-1", "endpoint": ""}
    assert engine.outputs() == {"region": "us-east-1"}
    assert (engine.stand_in, engine.checks_images, engine.where) == (None, False, "AWS us-east-1")
