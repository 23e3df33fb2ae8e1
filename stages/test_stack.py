"""TestStack: an ephemeral copy of an environment, built with what that environment runs now."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Literal

from pipeline.authoring import did_you_mean
from pipeline.errors import Problem
from pipeline.model import Name, Stage, StageOutputs, Verify

if TYPE_CHECKING:
    from pipeline.model import Definition


class TestStackOutputs(StageOutputs):
    """What a test stack writes: where the per-run stack answers, and the image it started from."""

    __test__ = False  # not a pytest test class, despite the name

    stack: str
    """The per-run stack's name (`<pipeline>-<environment>-<run id>`)."""
    url: str
    """Where its load balancer answers."""
    image: str
    """The image it started from: what `like` runs now, or the new image on a first run."""
    fresh: str
    """'true' when `like` had no stack yet (the rehearsal then changes nothing)."""


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
    """How to tell the new stack behaves before later stages use it."""

    executor: ClassVar[str] = "pipeline.executors.test_stack:TestStackExecutor"
    outputs: ClassVar[type[StageOutputs]] = TestStackOutputs
    uses_profile: ClassVar[bool] = True
    refers_to: ClassVar[Mapping[str, tuple[str, ...]]] = {"image": ("bake",)}
    copies_environment: ClassVar[str | None] = "like"

    def environment_name(self) -> str | None:
        return self.environment

    def check(self, spec: Definition, where: str) -> list[Problem]:
        """The environment is ephemeral, `like` is a persistent one, a template is known, and exactly
        one teardown deletes the stack."""
        problems: list[Problem] = []
        envs = {e.name: e for e in spec.environments}
        env = envs.get(self.environment)
        if env is not None and not env.ephemeral:
            problems.append(
                Problem(
                    f"environment {env.name!r} is not ephemeral; a test stack needs "
                    f"Environment(name={env.name!r}, ephemeral=True)",
                    f"{where}.environment",
                    stage=self.name,
                )
            )
        if self.like not in envs:
            problems.append(
                Problem(
                    f"copies unknown environment {self.like!r}{did_you_mean(self.like, list(envs))}",
                    f"{where}.like",
                    stage=self.name,
                )
            )
        elif envs[self.like].ephemeral:
            problems.append(
                Problem(f"cannot copy ephemeral environment {self.like!r}", f"{where}.like", stage=self.name)
            )
        if env is not None and env.template is None and self.like in envs and envs[self.like].template is None:
            problems.append(
                Problem(
                    f"neither {env.name!r} nor {self.like!r} has a template: set Environment(template=...)",
                    f"{where}.environment",
                    stage=self.name,
                )
            )
        teardowns = [
            s.name
            for s in spec.stages
            if type(s).deletes is not None and getattr(s, type(s).deletes or "") == self.name
        ]
        if not teardowns:
            problems.append(
                Problem(
                    f"the stack it creates is never deleted: add Teardown(name='teardown', stack={self.name!r})",
                    where,
                    stage=self.name,
                )
            )
        elif len(teardowns) > 1:
            problems.append(
                Problem(f"is torn down by more than one stage: {', '.join(teardowns)}", where, stage=self.name)
            )
        return problems
