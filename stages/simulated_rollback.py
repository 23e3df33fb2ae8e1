"""SimulatedRollback: rehearse the way back on the test stack, every run, and time it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import field_validator

from pipeline.model import Name, Stage, Verify, stage_ref


class SimulatedRollback(Stage):
    """Roll the test stack back to the image it started with, verify, and record time-to-restore.

    Example:
        SimulatedRollback(name="rollback", stack="test-stack", verify=Verify(expect_text="Hello World"))
    """

    kind: Literal["simulated-rollback"] = "simulated-rollback"
    stack: Name
    """The TestStack stage whose stack to roll back."""
    verify: Verify = Verify()

    outputs: ClassVar[tuple[str, ...]] = ("image", "time_to_restore")

    @field_validator("stack", mode="before")
    @classmethod
    def _ref(cls, value: Any) -> Any:
        return stage_ref(value)

    def references(self) -> Mapping[str, str]:
        return {"stack": self.stack}

    def reference_kinds(self) -> Mapping[str, tuple[str, ...]]:
        return {"stack": ("test-stack",)}
