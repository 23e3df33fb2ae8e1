"""The image-engine contract: what a Bake asks of the profile that builds its images.

The bake executor (pipeline/executors/bake.py) plans a bake and reports it; an image engine does the
work, on one profile: it checks the Packer template, finds an image baked earlier by its bake key,
builds one with Packer (streamed, read back from the manifest post-processor), runs the testinfra
checks against it (or lets a stand-in be checked in its place), keeps it (tags it) or discards it,
says whether a recorded image still exists, answers whether what it talks to is there, and sweeps
what a killed bake left. The profile modules hand the engines out (`ProfileModule.image_engine`);
tests use `pipeline.testing.FakeImageEngine`.

Implementations: `docker.py` (Packer's docker builder, the Docker engine, labels and tags) and
`ami.py` (Packer's amazon-ebs builder, EC2 through pipeline/engines/aws/session.py, with the docker
source of the same template as its checked stand-in). What a bake may leave behind is written down
in its journal (`journal.py`) before it is made.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pipeline.engines.docker_client import LABEL_PREFIX
from pipeline.errors import StageFailedError, TemplateError

if TYPE_CHECKING:
    from pipeline.engines.image_checks import CheckReport
    from pipeline.engines.images.journal import Journal
    from pipeline.engines.packer import TemplateInfo
    from pipeline.model import Profile
    from pipeline.stages.bake import Bake

LABEL = LABEL_PREFIX
KEY_LABEL = f"{LABEL}.bake-key"
"""The Docker label, and the AMI tag, that carries an image's bake key."""
RUN_LABEL = f"{LABEL}.run-id"
PIPELINE_LABEL = f"{LABEL}.pipeline"
STAGE_LABEL = f"{LABEL}.stage"
RUN_UUID_LABEL = f"{LABEL}.packer-run-uuid"
SHORT_KEY = 12
"""Characters of the key in a local image's tag (`<repository>:<short key>`)."""
PACKER_OUTPUT = "packer-manifest.json"
"""The manifest post-processor's default output file, which a build run by hand leaves behind."""
IDENTITY_VARIABLE = "bake_labels"
"""A template variable the framework fills with the bake's identity (`io.pipeline.pipeline=...
io.pipeline.stage=... io.pipeline.run-id=...`) when the template declares it. A template that puts
it in its docker source's `changes` (`LABEL ... ${var.bake_labels}`) has Packer's own commit carry
the identity, so an image committed as the bake died is found by its labels on any Docker engine."""


def _ignore(text: str) -> None:
    pass


def packer_env_vars(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`PKR_VAR_*` variables: Packer reads them too, so they are part of the key."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in sorted(env.items()) if k.startswith("PKR_VAR_")}


def framework_variables(declared: Iterable[str], offered: Mapping[str, str], user: Mapping[str, str]) -> dict[str, str]:
    """The variables a build gets: the user's, plus those the framework offers that the template
    declares (`base_image`, `manifest`, `aws_endpoint`...). Packer rejects undeclared `-var`s."""
    names = set(declared)
    chosen = {k: v for k, v in offered.items() if k in names and k not in user}
    return {**chosen, **user}


def source_of(bake: Bake, profile: Profile) -> str:
    """The Packer source `bake` builds on `profile` (TemplateError, exit 2, when it names none)."""
    source = bake.sources.get(profile)
    if not source:
        raise TemplateError(
            f"stage {bake.name!r} names no Packer source for the {profile} profile",
            hint=f"add it: Bake(sources={{'{profile}': 'TYPE.NAME', ...}})",
        )
    return source


@dataclass
class BakeJob:
    """One bake as an engine sees it: the stage, the template, the run it belongs to (its identity),
    its journal, and the channels it reports through."""

    bake: Bake
    pipeline: str
    run_id: str
    root: Path
    """Folder of the definition file (the template and the checks are relative to it)."""
    stage_dir: Path
    """Where the stage keeps its files in the run folder (manifests, Packer's log, checks.xml)."""
    journal: Journal
    log: Callable[[str], None] = _ignore
    step: Callable[[str], None] = _ignore
    secrets: Mapping[str, str] = field(default_factory=dict)
    deadline: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    force: bool = False
    """Bake again even when an image with the key exists (`--force`)."""

    @property
    def stage(self) -> str:
        return self.bake.name

    @property
    def repository(self) -> str:
        """Where local images of the stage are tagged: `image_name`, else `<pipeline>-<stage>`."""
        return self.bake.image_name or f"{self.pipeline}-{self.bake.name}"

    def identity(self, run_id: str | None = None) -> dict[str, str]:
        """The labels that tie what a bake makes to it (run `run_id`, default this one)."""
        return {PIPELINE_LABEL: self.pipeline, STAGE_LABEL: self.stage, RUN_LABEL: run_id or self.run_id}

    def failed(self, message: str, *, hint: str | None = None, log_tail: str = "") -> StageFailedError:
        return StageFailedError(self.stage, message, hint=hint, log_tail=log_tail)


@dataclass(frozen=True)
class Found:
    """An image baked earlier with the same key (its checks passed then)."""

    image: str
    run_uuid: str = ""


@dataclass(frozen=True)
class Built:
    """What one `packer build` made, not yet kept: `image` is what the checks run against and what
    `keep` names (an engine may have put a layer on Packer's `artifact`)."""

    image: str
    artifact: str
    run_uuid: str
    seconds: float


@dataclass(frozen=True)
class KeyMaterial:
    """What an engine adds to a bake's key: the base image it starts from, and where it builds."""

    base_image_id: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


class ImageEngine(Protocol):
    """Builds, checks, finds and sweeps the images of one Bake on one profile."""

    @property
    def part(self) -> str:
        """Its name in a bake's journal (`docker`, `ami`)."""
        ...

    @property
    def noun(self) -> str:
        """What messages call its images ("image", "AMI")."""
        ...

    @property
    def source(self) -> str:
        """The Packer source it builds (`docker.web`)."""
        ...

    @property
    def checks_images(self) -> bool:
        """Whether the testinfra checks run against its own images (else against `stand_in`'s)."""
        ...

    @property
    def stand_in(self) -> ImageEngine | None:
        """An engine whose image, built by the same provisioning, is checked in this one's place
        before this one builds (the AMI's docker source); None: none is."""
        ...

    @property
    def where(self) -> str:
        """Where its images live, when the report should say it (an AWS region, an emulator)."""
        ...

    @property
    def emulated(self) -> bool:
        """An emulator answers in place of the real service."""
        ...

    def observed(self) -> dict[str, str]:
        """Real-world state a recorded result depends on (no side effect), e.g. the base image's id."""
        ...

    def ready(self, *, credentials: bool = True) -> None:
        """What it talks to answers (the Docker engine, the EC2 endpoint with the credentials; with
        `credentials=False` they are not known yet and are not checked). Raises a PipelineError."""
        ...

    def check_template(
        self,
        root: Path,
        *,
        remember: bool,
        step: Callable[[str], None] = _ignore,
        log: Callable[[str], None] = _ignore,
    ) -> TemplateInfo:
        """Everything about the stage's template (under the definition's folder `root`) that can be
        known before a side effect (TemplateError, exit 2)."""
        ...

    def exists(self, image: str, key: str | None = None) -> bool:
        """Whether a recorded image still exists (and, with `key`, carries that bake key)."""
        ...

    def given(self, job: BakeJob, image: str, origin: str) -> str:
        """An existing image named by the user (`origin` says where); the id to check, or a
        StageFailedError when it does not exist."""
        ...

    def key_material(self, job: BakeJob) -> KeyMaterial:
        """What it adds to the bake key; may make sure of the base image first."""
        ...

    def find(self, job: BakeJob, key: str) -> Found | None:
        """A kept image carrying `key`, named as the stage names it; None when there is none."""
        ...

    def sweep(self, job: BakeJob) -> list[str]:
        """Remove what dead bakes of the stage left (their journals); a note per dead bake."""
        ...

    def build(self, job: BakeJob, info: TemplateInfo, key: str) -> Built:
        """`packer build` of its source, streamed; the image is written down in the journal."""
        ...

    def check(self, job: BakeJob, image: str, *, what: str, aftermath: str) -> CheckReport:
        """The testinfra checks against `image`; a StageFailedError naming the failed ones."""
        ...

    def keep(self, job: BakeJob, built: Built, key: str, *, checks: str) -> str:
        """Make a built (and checked) image count: tag it. `checks` says how it was checked.
        Returns the image as the stage's output names it."""
        ...

    def discard(self, job: BakeJob, built: Built) -> None:
        """Remove a built image that will not be kept (its checks failed)."""
        ...

    def outputs(self) -> dict[str, str]:
        """Outputs of its own beyond image, key and run uuid (the AMI's region)."""
        ...

    def interrupted(self, job: BakeJob) -> bool:
        """Ctrl-C: remove what this bake started and did not keep. True when nothing is left."""
        ...
