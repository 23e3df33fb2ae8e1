"""UpdateStack: move a stack to a new image with a deployment strategy, then verify it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from pipeline.model import Name, Stage, StageOutputs, Verify
from pipeline.strategy import DeployOutputs, Health, Rolling, StrategyChoice


class UpdateStackOutputs(DeployOutputs):
    """What an update writes: the image the test stack runs now, and the key numbers of the change."""

    stack: str
    """The test stack's name."""
    image: str
    """The image the stack runs after the update."""
    previous_image: str = ""
    """The image the stack ran before the update."""
    seconds: str = ""
    """How long the update took."""


class UpdateStack(Stage):
    """Update the stack made by a TestStack stage to the image of a Bake stage, then verify.

    The update follows `strategy`; while the new version takes traffic its health signals are
    judged against `health`, and a breach rolls the test stack back by itself and fails the stage
    with the numbers (so a release that would break production's thresholds stops here).

    Example:
        UpdateStack(name="update-stack", stack="test-stack", image="bake",
                    verify=Verify(expect_text="Hello World 1.2.0"),
                    strategy=Canary(steps=(10, 50, 100), observe_seconds=20))
    """

    kind: Literal["update-stack"] = "update-stack"
    stack: Name
    """The TestStack stage whose stack to update."""
    image: Name
    """The Bake stage whose image to deploy."""
    verify: Verify = Verify()
    """How to tell the updated stack behaves (its page shows the new version)."""
    strategy: StrategyChoice = Rolling()
    """How the stack moves to the new image: rolling (default), cutover, pilot, half, canary or
    blue-green (`strategy="canary"` takes the kind's defaults)."""
    health: Health = Health()
    """Signals watched while the new version takes traffic; a breach rolls back by itself."""

    executor: ClassVar[str] = "pipeline.executors.update_stack:UpdateStackExecutor"
    outputs: ClassVar[type[StageOutputs]] = UpdateStackOutputs
    uses_profile: ClassVar[bool] = True
    refers_to: ClassVar[Mapping[str, tuple[str, ...]]] = {"stack": ("test-stack",), "image": ("bake",)}
    follows_environment_of: ClassVar[str | None] = "stack"
