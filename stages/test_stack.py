"""TestStack: an ephemeral copy of an environment, built with what that environment runs now."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import field_validator

from pipeline.model import Name, Stage, Verify, stage_ref


class TestStack(Stage):
    """Create a per-run stack in an ephemeral environment with the configuration `like` runs now.

    On the very first run, when `like` has no stack yet, it starts from the image of `image`.

    Example:
        TestStack(name="test-stack", environment="test", like="production", image="bake")
    """

    __test__ = False  # not a pytest test class, despite the name

    kind: Literal["test-stack"] = "test-stack"
    environment: Name
    """An ephemeral environment (Environment(ephemeral=True))."""
    like: Name = "production"
    """The environment whose current configuration (image, parameters) the stack copies."""
    image: Name
    """The bake stage whose image is used when `like` has no stack yet."""
    verify: Verify = Verify()

    outputs: ClassVar[tuple[str, ...]] = ("stack", "url", "image", "fresh")

    @field_validator("image", mode="before")
    @classmethod
    def _ref(cls, value: Any) -> Any:
        return stage_ref(value)

    def environment_name(self) -> str | None:
        return self.environment

    def references(self) -> Mapping[str, str]:
        return {"image": self.image}

    def reference_kinds(self) -> Mapping[str, tuple[str, ...]]:
        return {"image": ("bake",)}
