"""Bake: build a machine image with Packer and prove it with testinfra checks before anyone uses it."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from pipeline.model import Profile, RelPath, Stage

DEFAULT_SOURCES: dict[Profile, str] = {"local": "docker.web", "aws": "amazon-ebs.web"}


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
    base_image: str = "pipeline-base:bookworm"
    """Docker base image (local profile); built from Debian's mirror when it is missing."""
    image_name: str | None = None
    """Repository name of the baked image; default `<pipeline>-<stage>`."""

    outputs: ClassVar[tuple[str, ...]] = ("image", "key", "packer_run_uuid")

    @field_validator("template")
    @classmethod
    def _hcl2(cls, value: str) -> str:
        if not value.endswith(".pkr.hcl"):
            raise ValueError(f"{value!r} must be a Packer HCL2 template ending in .pkr.hcl")
        return value

    def files(self) -> tuple[str, ...]:
        folder = self.template.rsplit("/", 1)[0] if "/" in self.template else "."
        return (self.template, *(self.context or (folder,)), *((self.checks,) if self.checks else ()))
