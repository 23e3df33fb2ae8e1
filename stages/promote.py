"""Promote: put the baked image in production, verified, rolled back automatically on failure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import field_validator

from pipeline.model import Name, Stage, Verify, stage_ref

DEFAULT_AUTHOR = "pipeline <pipeline@localhost>"


class Promote(Stage):
    """Record the image in the environment's template (a git commit), update the stack, verify.

    A failed verification updates back to the previous image, reverts the commit with a new
    commit, and fails the stage.

    Example:
        Promote(name="promote", environment="production", image="bake",
                verify=Verify(expect_text="Hello World 1.2.0"), approval=Approval())
    """

    kind: Literal["promote"] = "promote"
    environment: Name = "production"
    image: Name
    """The Bake stage whose image to promote."""
    verify: Verify = Verify()
    commit: bool = True
    """Commit the new image id into the environment's template (aws profile)."""
    push: bool = True
    """Push that commit when the branch has a remote."""
    author: str = DEFAULT_AUTHOR
    """Commit author when git has no identity configured ('Name <email>')."""

    approvable: ClassVar[bool] = True
    outputs: ClassVar[tuple[str, ...]] = ("image", "previous_image", "commit", "url")

    @field_validator("image", mode="before")
    @classmethod
    def _ref(cls, value: Any) -> Any:
        return stage_ref(value)

    @field_validator("author")
    @classmethod
    def _author(cls, value: str) -> str:
        if "<" not in value or not value.endswith(">"):
            raise ValueError(f"{value!r} must look like 'Name <email>'")
        return value

    def environment_name(self) -> str | None:
        return self.environment

    def references(self) -> Mapping[str, str]:
        return {"image": self.image}

    def reference_kinds(self) -> Mapping[str, tuple[str, ...]]:
        return {"image": ("bake",)}
