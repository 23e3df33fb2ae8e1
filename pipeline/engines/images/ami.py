"""The AMI image engine (aws profile): Packer's amazon-ebs builder makes the AMI, EC2 (through the one
AWS session, pipeline/engines/aws/session.py) finds, tags and sweeps it.

An AMI cannot be checked without starting an instance, so its checks run against a stand-in: the
template's docker source, built by the same provisioner scripts, baked and checked by the Docker
image engine before the AMI is built (docs/bake.md, "The aws profile"). A built AMI counts once it
carries its bake key as a tag (`io.pipeline.bake-key`); `find` looks only at AMIs of this account
that do. What a killed bake built and did not tag (an AMI in its journal or its manifest) is
deregistered, with its snapshots, by the next aws bake of the stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.engines.aws.session import AwsSession, botocore_exceptions
from pipeline.engines.images.base import (
    KEY_LABEL,
    LABEL,
    PACKER_OUTPUT,
    RUN_UUID_LABEL,
    BakeJob,
    Built,
    Found,
    KeyMaterial,
    framework_variables,
)
from pipeline.engines.images.build import manifest_path, packer_build
from pipeline.engines.images.docker import DockerImageEngine
from pipeline.engines.images.journal import Journal
from pipeline.engines.images.template import check_template
from pipeline.engines.packer import Packer, TemplateInfo, read_manifest, split_ami_artifact
from pipeline.errors import PipelineError
from pipeline.stages.bake import Bake

if TYPE_CHECKING:
    from pipeline.engines.image_checks import CheckReport

KEY_TAG = KEY_LABEL
"""The AMI tag that carries the bake key."""


def _ignore(text: str) -> None:
    pass


class AmiImageEngine:
    """Bakes `bake`'s amazon-ebs `source` into EC2; `docker` is the engine of the template's docker
    source, checked in the AMI's place when the stage has checks."""

    part = "ami"
    noun = "AMI"
    checks_images = False

    def __init__(
        self,
        bake: Bake,
        *,
        source: str,
        environ: Mapping[str, str] | None = None,
        docker: DockerImageEngine | None = None,
        session: AwsSession | None = None,
    ) -> None:
        self.bake = bake
        self.source = source
        self.session = session or AwsSession(bake.aws, environ)
        self.docker = docker
        self.stand_in = docker if docker is not None and bake.checks else None
        target = self.session.target("ec2")
        self.emulated = target.emulated
        self.where = f"the emulator at {target.endpoint}" if target.emulated else f"AWS {target.region}"

    def template_variables(self, manifest: str) -> dict[str, str]:
        target = self.session.target("ec2")
        return {"manifest": manifest, "aws_region": target.region, "aws_endpoint": target.endpoint or ""}

    # --- before a run ---------------------------------------------------------------------------------
    def observed(self) -> dict[str, str]:
        target = self.session.target("ec2")
        # The checked stand-in's base image is part of what the result depends on; none without one
        # (an AMI-only bake needs no Docker engine).
        base = self.stand_in.observed()["base_image"] if self.stand_in is not None else "none"
        return {"base_image": base, "aws_region": target.region, "aws_endpoint": target.endpoint or ""}

    def ready(self, *, credentials: bool = True) -> None:
        if self.stand_in is not None:
            self.stand_in.ready()
        if credentials:
            self.session.check_access("ec2")

    def check_template(
        self,
        root: Path,
        *,
        remember: bool,
        step: Callable[[str], None] = _ignore,
        log: Callable[[str], None] = _ignore,
    ) -> TemplateInfo:
        sources = [self.source]
        offered = self.template_variables(PACKER_OUTPUT)
        if self.docker is not None:  # the same template's docker source is checked too
            sources.append(self.docker.source)
            offered = {**self.docker.template_variables(PACKER_OUTPUT, f"{LABEL}.run-id=validate"), **offered}
        packer = Packer(env=dict(self.bake.env))
        return check_template(
            self.bake, packer, root, sources=sources, offered=offered, remember=remember, step=step, log=log
        )

    def exists(self, image: str, key: str | None = None) -> bool:
        ec2 = self.session.client("ec2", probe=True)  # a check: give up after a few attempts
        try:
            images = ec2.describe_images(ImageIds=[image])["Images"]
        except botocore_exceptions().ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "").startswith("InvalidAMIID"):
                return False
            raise
        return any(i.get("State") in ("available", "pending") for i in images)

    # --- a bake ---------------------------------------------------------------------------------------
    def given(self, job: BakeJob, image: str, origin: str) -> str:
        if not self.exists(image):
            raise job.failed(
                f"the AMI {image} given by {origin} does not exist in {self.where}",
                hint="check the id and the region, or unset the override to let the stage bake",
            )
        return image

    def key_material(self, job: BakeJob) -> KeyMaterial:
        target = self.session.target("ec2")
        return KeyMaterial(extra={"region": target.region, "endpoint": target.endpoint or ""})

    def find(self, job: BakeJob, key: str) -> Found | None:
        ec2 = self.session.client("ec2")
        images = ec2.describe_images(Owners=["self"], Filters=[{"Name": f"tag:{KEY_TAG}", "Values": [key]}])["Images"]
        ready = [i for i in images if i.get("State") == "available"]
        if not ready:
            return None
        newest = sorted(ready, key=lambda i: i.get("CreationDate", ""))[-1]
        return Found(str(newest["ImageId"]), _tags(newest).get(RUN_UUID_LABEL, ""))

    def sweep(self, job: BakeJob) -> list[str]:
        notes = []
        for dead in job.journal.dead():
            removed = self._remove_untagged(dead, job.log)
            if removed:
                notes.append(f"removed what a bake killed in run {dead.run_id} left: {', '.join(removed)}")
            dead.forget(self.part)
            dead.close_if_empty()
        return notes

    def build(self, job: BakeJob, info: TemplateInfo, key: str) -> Built:
        variables = framework_variables(
            info.variables, self.template_variables(str(manifest_path(job, self.source))), self.bake.variables
        )
        packer = Packer(env={**self.bake.env, **job.secrets, **self.session.credentials("ec2")})
        run = packer_build(job, packer, part=self.part, source=self.source, variables=variables)
        _, ami = split_ami_artifact(run.artifact, self.session.region)
        job.journal.record(self.part, "images", ami)
        return Built(ami, run.artifact, run.run_uuid, run.seconds)

    def check(self, job: BakeJob, image: str, *, what: str, aftermath: str) -> CheckReport:
        raise PipelineError(f"an AMI is not checked itself: its stand-in is ({self.bake.name})")

    def keep(self, job: BakeJob, built: Built, key: str, *, checks: str) -> str:
        tags = {
            KEY_TAG: key,
            **job.identity(),
            RUN_UUID_LABEL: built.run_uuid,
            f"{LABEL}.checks": checks,
        }
        self.session.client("ec2").create_tags(
            Resources=[built.image], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
        )
        job.log(f"tagged {built.image} with {KEY_TAG}={key}")
        return built.image

    def discard(self, job: BakeJob, built: Built) -> None:
        self._remove_untagged(job.journal, job.log)

    def outputs(self) -> dict[str, str]:
        return {"region": self.session.region}

    def interrupted(self, job: BakeJob) -> bool:
        # Packer, stopped, removes what it made; an AMI it finished stays in the journal, untagged,
        # for the next bake's sweep (deregistering takes EC2 calls a second Ctrl-C should not wait on).
        return self.stand_in.interrupted(job) if self.stand_in is not None else True

    # --- helpers --------------------------------------------------------------------------------------
    def _remove_untagged(self, journal: Journal, log: Callable[[str], None]) -> list[str]:
        """Deregister the AMIs a bake wrote down (or Packer's manifest names) that carry no bake key."""
        entries = journal.entries(self.part)
        amis = list(entries.get("images", []))
        for manifest in entries.get("manifests", []):
            try:
                amis.append(split_ami_artifact(read_manifest(Path(manifest)).artifact_id, self.session.region)[1])
            except (PipelineError, OSError, ValueError):
                continue
        ec2 = self.session.client("ec2")
        removed = []
        for ami in dict.fromkeys(amis):
            try:
                found = ec2.describe_images(ImageIds=[ami])["Images"]
            except botocore_exceptions().ClientError:
                continue  # gone
            for image in found:
                if KEY_TAG in _tags(image):
                    continue  # tagged: it counts
                ec2.deregister_image(ImageId=ami)
                for mapping in image.get("BlockDeviceMappings") or []:
                    snapshot = (mapping.get("Ebs") or {}).get("SnapshotId")
                    if snapshot:
                        ec2.delete_snapshot(SnapshotId=snapshot)
                log(f"deregistered {ami} (run {journal.run_id} built it and did not tag it)")
                removed.append(f"AMI {ami}")
        return removed


def _tags(image: Mapping[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t["Value"]) for t in image.get("Tags") or []}
