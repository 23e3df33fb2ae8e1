"""Promote: put the baked image in production, verified, rolled back automatically on failure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import field_validator

from pipeline.errors import Problem
from pipeline.model import Name, Stage, StageOutputs, Verify
from pipeline.strategy import DeployOutputs, Health, Rolling, StrategyChoice

if TYPE_CHECKING:
    from pipeline.model import Definition


class PromoteOutputs(DeployOutputs):
    """What a promote writes: the image the environment runs now and before, the commits that recorded it, and
    the key numbers of the change."""

    image: str
    """The image the environment runs after the promote."""
    previous_image: str = ""
    """What it ran before (empty when it had no stack)."""
    commit: str = ""
    """The commit that recorded the image in the template (aws profile)."""
    revert: str = ""
    """The commit that reverted it after a failure."""
    url: str = ""
    """Where the environment's load balancer answers."""


DEFAULT_AUTHOR = "pipeline <pipeline@localhost>"


class Promote(Stage):
    """Record the image in the environment's template (a git commit), update the stack, verify.

    The update follows `strategy`, its health signals judged against `health`: a breach makes the
    engine roll back by itself; the stage then verifies the previous image, reverts the commit and
    fails with the numbers. A failed verification after the update updates back to the previous
    image (instantly, from the warm set, after a blue-green switch), reverts the commit with a new
    commit, and fails the stage.

    Example:
        Promote(name="promote", environment="production", image="bake",
                verify=Verify(expect_text="Hello World 1.2.0"), approval=Approval())
    """

    kind: Literal["promote"] = "promote"
    environment: Name = "production"
    """The persistent environment to promote to; its template records the image (aws profile)."""
    image: Name
    """The Bake stage whose image to promote."""
    verify: Verify = Verify()
    """How to tell the environment behaves on the new image; a failure goes back to the previous one."""
    rollback_verify: Verify | None = None
    """How to check the previous image after an automatic rollback; default: `verify` without
    `expect_text` (the previous release does not show the new version's text)."""
    strategy: StrategyChoice = Rolling()
    """How the stack moves to the new image: rolling (default), cutover, pilot, half, canary or
    blue-green (`strategy="canary"` takes the kind's defaults)."""
    health: Health = Health()
    """Signals watched while the new version takes traffic; a breach rolls back by itself."""
    commit: bool = True
    """Commit the new image id into the environment's template (aws profile)."""
    push: bool = True
    """Push that commit when the branch has a remote."""
    author: str = DEFAULT_AUTHOR
    """Commit author when git has no identity configured ('Name <email>')."""

    executor: ClassVar[str] = "pipeline.executors.promote:PromoteExecutor"
    outputs: ClassVar[type[StageOutputs]] = PromoteOutputs
    approvable: ClassVar[bool] = True
    uses_profile: ClassVar[bool] = True
    refers_to: ClassVar[Mapping[str, tuple[str, ...]]] = {"image": ("bake",)}

    @field_validator("author")
    @classmethod
    def _author(cls, value: str) -> str:
        if "<" not in value or not value.endswith(">"):
            raise ValueError(f"{value!r} must look like 'Name <email>'")
        return value

    def environment_name(self) -> str | None:
        return self.environment

    def commits_and_pushes(self) -> bool:
        return self.commit and self.push

    def restore_check(self) -> Verify:
        """How to verify the environment after going back to an older image: `rollback_verify`,
        else `verify` without `expect_text` (an older image does not say the new version)."""
        return self.rollback_verify or self.verify.model_copy(update={"expect_text": None})

    def check(self, spec: Definition, where: str) -> list[Problem]:
        """A promote goes to a persistent environment that has a template to record the image in."""
        problems: list[Problem] = []
        env = next((e for e in spec.environments if e.name == self.environment), None)
        if env is not None and env.ephemeral:
            problems.append(
                Problem(
                    f"cannot promote to ephemeral environment {env.name!r}", f"{where}.environment", stage=self.name
                )
            )
        if env is not None and env.template is None:
            problems.append(
                Problem(
                    f"environment {env.name!r} has no template to record the image in: "
                    f"set Environment(name={env.name!r}, template='templates/web.yaml')",
                    f"{where}.environment",
                    stage=self.name,
                )
            )
        return problems
