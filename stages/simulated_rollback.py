"""SimulatedRollback: rehearse the way back on the test stack, every run, and time it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from pipeline.model import Name, Stage, StageOutputs, Verify


class SimulatedRollbackOutputs(StageOutputs):
    """What the rehearsed rollback writes: the image it went back to, and how long restoring took."""

    stack: str
    """The test stack's name."""
    image: str
    """The image the stack went back to (the one it started with)."""
    from_image: str
    """The image it ran before the rollback."""
    time_to_restore: str
    """Seconds from the decision to go back until the old version answered as it should."""


class SimulatedRollback(Stage):
    """Roll the test stack back to the image it started with, verify, and record time-to-restore.

    Example:
        SimulatedRollback(name="rollback", stack="test-stack", verify=Verify(expect_text="Hello World"))
    """

    kind: Literal["simulated-rollback"] = "simulated-rollback"
    stack: Name
    """The TestStack stage whose stack to roll back."""
    verify: Verify = Verify()
    """How to tell the stack behaves again on the image it started with."""

    executor: ClassVar[str] = "pipeline.executors.simulated_rollback:SimulatedRollbackExecutor"
    outputs: ClassVar[type[StageOutputs]] = SimulatedRollbackOutputs
    uses_profile: ClassVar[bool] = True
    refers_to: ClassVar[Mapping[str, tuple[str, ...]]] = {"stack": ("test-stack",)}
    follows_environment_of: ClassVar[str | None] = "stack"
