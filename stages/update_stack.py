"""UpdateStack: move a stack to a new image, then verify it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import field_validator

from pipeline.model import Name, Stage, Verify, stage_ref


class UpdateStack(Stage):
    """Update the stack made by a TestStack stage to the image of a Bake stage, then verify.

    Example:
        UpdateStack(name="update-stack", stack="test-stack", image="bake",
                    verify=Verify(expect_text="Hello World 1.2.0"))
    """

    kind: Literal["update-stack"] = "update-stack"
    stack: Name
    """The TestStack stage whose stack to update."""
    image: Name
    """The Bake stage whose image to deploy."""
    verify: Verify = Verify()

    outputs: ClassVar[tuple[str, ...]] = ("image", "previous_image")

    @field_validator("stack", "image", mode="before")
    @classmethod
    def _ref(cls, value: Any) -> Any:
        return stage_ref(value)

    def references(self) -> Mapping[str, str]:
        return {"stack": self.stack, "image": self.image}

    def reference_kinds(self) -> Mapping[str, tuple[str, ...]]:
        return {"stack": ("test-stack",), "image": ("bake",)}
