"""Bake: build a machine image with Packer and prove it with testinfra checks before anyone uses it.

How a bake runs (docs/bake.md has the whole story):

1. The template is checked before anything happens: `packer inspect` (its variables and sources),
   `packer validate`; a broken template is a TemplateError (bad input, exit 2).
2. The base image is made sure of (pulled, or derived from the registry's Debian image, or built
   from Debian's mirror with debootstrap).
3. The bake key is computed: template folder, provisioner scripts, checks, variables, source, the
   base image id. An image carrying that key in its label already exists? Then it is the result
   (this makes `run` idempotent on CI machines that have no ledger).
4. `packer build -machine-readable -only=<source>`, streamed: Packer's steps go to the live view,
   every line to the stage log. The artifact id comes from the manifest post-processor's entry for
   `last_run_uuid`.
5. The testinfra checks run against a throwaway container of the new image. When one fails, the
   image is removed and the stage fails naming the failed checks; nothing is recorded.
6. Only a checked image gets its tag (`<image_name>:<short key>`); its bake-key label is added by a
   label-only layer made before the checks run, and the cache only looks at tagged images.

On the aws profile, steps 2-6 run for the template's docker source (same provisioner scripts) to
check the provisioning, then the amazon-ebs source builds the AMI, which is tagged with its key.
The run report says which checks were emulated this way.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from pipeline.model import DEFAULT_BASE_IMAGE, AwsSettings, Profile, RelPath, Stage, StageOutputs

DEFAULT_SOURCES: dict[Profile, str] = {"local": "docker.web", "aws": "amazon-ebs.web"}
_IMAGE_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


class BakeOutputs(StageOutputs):
    """What a bake writes: the image later stages deploy, and what proves it."""

    image: str
    """The baked image: `<repository>:<short key>` (local) or an AMI id (aws)."""
    key: str = ""
    """The bake key: the content address of the inputs (empty for a given image)."""
    packer_run_uuid: str = ""
    """Packer's run id of the build that made the image (a cached image keeps its build's id)."""
    region: str = ""
    """Where the AMI lives (aws)."""
    checked_image: str = ""
    """The docker image the checks ran against on the aws profile (the AMI's stand-in)."""
    junit: str = ""
    """The checks' JUnit report, relative to the run folder."""


class Bake(Stage):
    """Build an image from a Packer template, then run testinfra checks against it.

    The docker source serves the local profile, the amazon-ebs source the aws profile. The result
    is cached by content: template, provisioner files, variables, base image and checks.

    Example:
        Bake(name="bake", template="images/web.pkr.hcl", checks="serverspec",
             variables={"version": "1.2.0"})
    """

    kind: Literal["bake"] = "bake"
    template: RelPath
    """Packer HCL2 template (`*.pkr.hcl`)."""
    sources: dict[Profile, str] = Field(default_factory=lambda: dict(DEFAULT_SOURCES))
    """Packer source to build per profile (`packer build -only=<source>`)."""
    variables: dict[str, str] = Field(default_factory=dict)
    """Packer variables (`-var name=value`); part of the cache key."""
    context: tuple[RelPath, ...] = ()
    """Extra files or folders the build reads (provisioner scripts); default: the template's folder."""
    checks: RelPath | None = None
    """testinfra checks (a file or a folder of test_*.py) run against the baked image."""
    base_image: str = DEFAULT_BASE_IMAGE
    """Docker base image (local profile, and the checks' container on aws). When it is missing: the
    default is derived from `debian:bookworm-slim` where a registry is reachable, else built from
    Debian's mirror with debootstrap (root); another `pipeline-*` name is built with debootstrap;
    any other name is pulled."""
    image_name: str | None = None
    """Repository name of the baked image; default `<pipeline>-<stage>`."""
    aws: AwsSettings = AwsSettings()
    """Region and endpoint of the aws profile's build (`AWS_ENDPOINT_URL` also sets the endpoint)."""
    use_image: dict[Profile, str] = Field(default_factory=dict)
    """An existing image to use instead of building one, per profile (e.g. `{"aws": "ami-0123..."}`
    where Packer cannot build an AMI). `PIPELINE_<STAGE>_USE_IMAGE` overrides it. It is still checked."""

    executor: ClassVar[str] = "pipeline.executors.bake:BakeExecutor"
    outputs: ClassVar[type[StageOutputs]] = BakeOutputs
    uses_profile: ClassVar[bool] = True
    runs_packer: ClassVar[bool] = True

    @field_validator("template")
    @classmethod
    def _hcl2(cls, value: str) -> str:
        if not value.endswith(".pkr.hcl"):
            raise ValueError(f"{value!r} must be a Packer HCL2 template ending in .pkr.hcl")
        return value

    @field_validator("image_name")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        if value is not None and not _IMAGE_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid Docker repository name: use lowercase letters, digits, '.', '_', "
                "'-' and '/' (e.g. 'hello-web')"
            )
        return value

    def files(self) -> tuple[str, ...]:
        folder = self.template.rsplit("/", 1)[0] if "/" in self.template else "."
        return (self.template, *(self.context or (folder,)), *((self.checks,) if self.checks else ()))

    def checks_in_docker(self) -> bool:
        """The checks run against the docker source's image: the image itself (local), or the AMI's
        stand-in (aws)."""
        return "local" in self.sources and self.checks is not None

    def docker_base_image(self) -> str:
        """`base_image`, unless the template's `base_image` variable names another."""
        return self.variables.get("base_image", self.base_image)

    def build_aws_settings(self) -> AwsSettings:
        return self.aws
