"""Teardown: delete the ephemeral stack, always (also after a failure or an interrupt)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import field_validator

from pipeline.model import Name, Stage, stage_ref


class Teardown(Stage):
    """Delete the stack a TestStack stage created. Runs even when a stage before it failed.

    Example:
        Teardown(name="teardown", stack="test-stack", needs=["rollback"])
    """

    kind: Literal["teardown"] = "teardown"
    stack: Name
    """The TestStack stage whose stack to delete."""

    outputs: ClassVar[tuple[str, ...]] = ("deleted",)
    always: ClassVar[bool] = True

    @field_validator("stack", mode="before")
    @classmethod
    def _ref(cls, value: Any) -> Any:
        return stage_ref(value)

    def references(self) -> Mapping[str, str]:
        return {"stack": self.stack}

    def reference_kinds(self) -> Mapping[str, tuple[str, ...]]:
        return {"stack": ("test-stack",)}
