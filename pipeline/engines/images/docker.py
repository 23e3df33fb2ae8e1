"""The Docker image engine: the local profile's bakes, and the checked stand-in of an AMI bake.

Packer's docker builder commits an image from the base image (`Bake.base_image`, made sure of first:
pulled, or built from Debian's mirror). A label layer on top of it, made by one `LABEL` instruction,
names it: bake key, pipeline, stage, run id, source, Packer's run uuid. The testinfra checks run
against a throwaway container of it (pipeline/engines/image_checks.py). Only a checked image gets its
tag, `<repository>:<short key>`, which is what makes it count: `find` looks at tagged images only.

Everything a bake makes is written in its journal before it exists (journal.py), and carries its run
id where Docker lets a label go, so what a killed bake left is found by that identity and removed
(docker_leftovers.py): by the bake itself on Ctrl-C or failed checks, by the next bake otherwise.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.engines.image_checks import CheckReport, remove_container, run_checks
from pipeline.engines.images.base import (
    IDENTITY_VARIABLE,
    KEY_LABEL,
    LABEL,
    PACKER_OUTPUT,
    RUN_LABEL,
    RUN_UUID_LABEL,
    SHORT_KEY,
    BakeJob,
    Built,
    Found,
    KeyMaterial,
    framework_variables,
)
from pipeline.engines.images.build import manifest_path, packer_build
from pipeline.engines.images.docker_leftovers import remove_leftovers
from pipeline.engines.images.template import check_template
from pipeline.engines.packer import Packer, TemplateInfo
from pipeline.errors import PipelineError
from pipeline.faults import checkpoint
from pipeline.stages.bake import Bake

if TYPE_CHECKING:
    import docker

ROLE = "bake"
"""`io.pipeline.role` of a baked image."""


def _ignore(text: str) -> None:
    pass


class DockerImageEngine:
    """Bakes `bake`'s Packer `source` (a docker builder) into the Docker engine at DOCKER_HOST."""

    part = "docker"
    noun = "image"
    checks_images = True
    stand_in = None
    where = ""
    emulated = False

    def __init__(
        self,
        bake: Bake,
        *,
        source: str,
        environ: Mapping[str, str] | None = None,
        client: docker.DockerClient | None = None,
    ) -> None:
        self.bake = bake
        self.source = source
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self._client = client
        self._containers: list[str] = []
        """Containers this bake started or saw Packer start (removed when it is done with them)."""

    @property
    def base_image(self) -> str:
        return self.bake.variables.get("base_image", self.bake.base_image)

    def template_variables(self, manifest: str, identity: str) -> dict[str, str]:
        """What the framework offers a template that declares it (docs/bake.md)."""
        return {"base_image": self.base_image, "pull_base": "false", "manifest": manifest, IDENTITY_VARIABLE: identity}

    # --- before a run ---------------------------------------------------------------------------------
    def observed(self) -> dict[str, str]:
        import docker.errors

        try:
            return {"base_image": str(self._docker().api.inspect_image(self.base_image)["Id"])}
        except docker.errors.ImageNotFound:
            return {"base_image": "missing"}

    def ready(self, *, credentials: bool = True) -> None:
        # An engine that does not answer: docker_client's one error, the same for every stage and
        # command (docs/reliability.md, the fault table).
        self._docker()

    def check_template(
        self,
        root: Path,
        *,
        remember: bool,
        step: Callable[[str], None] = _ignore,
        log: Callable[[str], None] = _ignore,
    ) -> TemplateInfo:
        offered = self.template_variables(PACKER_OUTPUT, f"{RUN_LABEL}=validate")
        packer = Packer(env=dict(self.bake.env))
        return check_template(
            self.bake, packer, root, sources=[self.source], offered=offered, remember=remember, step=step, log=log
        )

    def exists(self, image: str, key: str | None = None) -> bool:
        import docker.errors

        try:
            attrs = self._docker().api.inspect_image(image)
        except docker.errors.ImageNotFound:
            return False
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        return key is None or labels.get(KEY_LABEL) == key

    # --- a bake ---------------------------------------------------------------------------------------
    def given(self, job: BakeJob, image: str, origin: str) -> str:
        import docker.errors

        try:
            return str(self._docker().images.get(image).id)
        except docker.errors.ImageNotFound:
            raise job.failed(
                f"the image {image!r} given by {origin} does not exist",
                hint="build it first, or unset the override to let the stage bake",
            ) from None

    def key_material(self, job: BakeJob) -> KeyMaterial:
        from pipeline.engines.base_image import ensure_base_image

        job.step(f"base image {self.base_image}")
        return KeyMaterial(base_image_id=ensure_base_image(self.base_image, on_line=job.log))

    def find(self, job: BakeJob, key: str) -> Found | None:
        # Tagged ones only: a labelled image gets its tag after its checks passed.
        found = self._docker().images.list(filters={"label": f"{KEY_LABEL}={key}", "dangling": False})
        if not found:
            return None
        image, tag = found[0], key[:SHORT_KEY]
        ref = f"{job.repository}:{tag}"
        if ref not in (image.tags or []):
            image.tag(job.repository, tag)
        return Found(ref, (image.labels or {}).get(RUN_UUID_LABEL, ""))

    def sweep(self, job: BakeJob) -> list[str]:
        notes = []
        for dead in job.journal.dead():
            swept = remove_leftovers(self._docker(), dead, job.identity(dead.run_id), part=self.part, log=job.log)
            if swept.removed:
                notes.append(f"removed what a bake killed in run {dead.run_id} left: {', '.join(swept.removed)}")
            if swept.kept:
                notes.append(f"kept what a bake killed in run {dead.run_id} left ({'; '.join(swept.kept)})")
            else:
                dead.forget(self.part)
                dead.close_if_empty()
        return notes

    def build(self, job: BakeJob, info: TemplateInfo, key: str) -> Built:
        identity = " ".join(f"{k}={v}" for k, v in job.identity().items())
        offered = self.template_variables(str(manifest_path(job, self.source)), identity)
        variables = framework_variables(info.variables, offered, self.bake.variables)
        packer = Packer(env={**self.bake.env, **job.secrets})
        try:
            run = packer_build(
                job,
                packer,
                part=self.part,
                source=self.source,
                variables=variables,
                on_container=self._containers.append,
            )
        finally:
            self._remove_containers(job.log)
        job.journal.record(self.part, "images", run.artifact)
        checkpoint(f"bake:{job.stage}:built")
        labels = {
            f"{LABEL}.role": ROLE,
            KEY_LABEL: key,
            **job.identity(),
            f"{LABEL}.source": self.source,
            RUN_UUID_LABEL: run.run_uuid,
        }
        return Built(self._label(job, run.artifact, labels), run.artifact, run.run_uuid, run.seconds)

    def _label(self, job: BakeJob, artifact: str, labels: Mapping[str, str]) -> str:
        """One label layer on Packer's image (untagged); returns its id. One `LABEL` instruction
        makes one layer (labels passed to the build API become one layer each), and every layer
        of it, and the builder's container, carries the bake's identity."""
        job.step("labelling the image")
        line = " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in sorted(labels.items()))
        dockerfile = f"FROM {artifact}\nLABEL {line}\n".encode()
        client = self._docker()
        image = ""
        for chunk in client.api.build(fileobj=io.BytesIO(dockerfile), rm=True, forcerm=True, pull=False, decode=True):
            if "Running in " in str(chunk.get("stream", "")):  # the builder's container exists
                checkpoint(f"bake:{job.stage}:labelling")
            if "error" in chunk:
                raise job.failed(f"cannot label {artifact[:19]}: {str(chunk['error']).strip()}")
            image = str((chunk.get("aux") or {}).get("ID") or image)
        if not image:
            raise job.failed(f"labelling {artifact[:19]} gave no image")
        checkpoint(f"bake:{job.stage}:labelled")
        job.journal.record(self.part, "images", image)
        return image

    def check(self, job: BakeJob, image: str, *, what: str, aftermath: str) -> CheckReport:
        checks_rel = self.bake.checks or ""
        junit = job.stage_dir / "checks.xml"
        job.step(f"checks: {checks_rel} against {what}")
        report = run_checks(
            image,
            job.root / checks_rel,
            junit=junit,
            variables=self.bake.variables,
            labels=job.identity(),
            on_line=job.log,
            on_step=job.step,
            deadline=job.deadline,
            cancel=job.cancel,
            client=self._docker(),
            started=self._containers.append,
        )
        if not report.ok:
            for line in report.container_log.splitlines():
                job.log(f"container: {line}")
            raise job.failed(
                f"{len(report.failed)} of {report.total} image checks failed:\n{report.failure_list()}\n{aftermath}",
                hint=f"JUnit report: {junit}. To look by hand: docker run -d -p 127.0.0.1::80 IMAGE, then "
                f"PIPELINE_CHECK_URL=http://127.0.0.1:PORT PIPELINE_VAR_<NAME>=... "
                f"pytest {checks_rel} --hosts=docker://CONTAINER",
                log_tail=report.container_log,
            )
        job.log(f"checks: {report.summary()} against {what} in {report.seconds:.1f} s")
        return report

    def keep(self, job: BakeJob, built: Built, key: str, *, checks: str) -> str:
        ref = f"{job.repository}:{key[:SHORT_KEY]}"
        job.step(f"tagging {ref}")
        self._docker().api.tag(built.image, job.repository, key[:SHORT_KEY])
        return ref

    def discard(self, job: BakeJob, built: Built) -> None:
        self.interrupted(job)

    def outputs(self) -> dict[str, str]:
        return {}

    def interrupted(self, job: BakeJob) -> bool:
        """Remove what this bake made and did not tag (found as a dead bake's would be)."""
        swept = remove_leftovers(self._docker(), job.journal, job.identity(), part=self.part, log=job.log)
        self._containers.clear()
        if swept.kept:
            return False
        job.journal.forget(self.part)
        return True

    # --- helpers --------------------------------------------------------------------------------------
    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            from pipeline.engines.docker_client import shared

            self._client = shared()
        return self._client

    def _remove_containers(self, log: Callable[[str], None]) -> None:
        """Remove the containers Packer named (a build stopped by a deadline or Ctrl-C may leave its
        build container behind); those already gone are skipped."""
        for container in list(self._containers):
            try:
                remove_container(self._docker(), container)
            except PipelineError as exc:  # best effort; say so
                log(f"could not remove container {container[:12]}: {exc}")
            else:
                self._containers.remove(container)
