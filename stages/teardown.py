"""Teardown: delete the ephemeral stack, always (also after a failure or an interrupt)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from pipeline.model import Name, Stage, StageOutputs


class TeardownOutputs(StageOutputs):
    """What a teardown writes: the stack it deleted, or kept (`--keep`)."""

    deleted: str = ""
    """The stack deleted (empty when there was none to delete)."""
    kept: str = ""
    """The stack kept with --keep."""
    url: str = ""
    """Where a kept stack answers."""


class Teardown(Stage):
    """Delete the stack a TestStack stage created. Runs even when a stage before it failed.

    Example:
        Teardown(name="teardown", stack="test-stack", needs=["rollback"])
    """

    kind: Literal["teardown"] = "teardown"
    stack: Name
    """The TestStack stage whose stack to delete."""

    executor: ClassVar[str] = "pipeline.executors.teardown:TeardownExecutor"
    outputs: ClassVar[type[StageOutputs]] = TeardownOutputs
    uses_profile: ClassVar[bool] = True
    refers_to: ClassVar[Mapping[str, tuple[str, ...]]] = {"stack": ("test-stack",)}
    always: ClassVar[bool] = True
    follows_environment_of: ClassVar[str | None] = "stack"
    deletes: ClassVar[str | None] = "stack"
