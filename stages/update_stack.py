"""UpdateStack: move a stack to a new image with a deployment strategy, then verify it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pipeline.errors import HealthBreachError, StageFailedError
from pipeline.executors.base import Executor, Outputs, PlanContext, StageContext
from pipeline.model import Name, Stage, Verify
from pipeline.strategy import Health, Rolling, StrategyChoice
from stages._stack import (
    RehearsalExecutor,
    check_or_fail,
    check_strategy,
    deploy_outputs,
    engine,
    events,
    note_deploy,
    rehearsal_env,
    require_stack,
    stack_is,
)


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
    strategy: StrategyChoice = Rolling()
    """How the stack moves to the new image: rolling (default), cutover, pilot, half, canary or
    blue-green (`strategy="canary"` takes the kind's defaults)."""
    health: Health = Health()
    """Signals watched while the new version takes traffic; a breach rolls back by itself."""

    outputs: ClassVar[tuple[str, ...]] = (
        "stack",
        "image",
        "previous_image",
        "seconds",
        "strategy",
        "failed_requests",
        "p99_ms",
    )
    uses_profile: ClassVar[bool] = True
    implemented: ClassVar[frozenset[str]] = frozenset({"local", "aws"})
    refers_to: ClassVar[Mapping[str, tuple[str, ...]]] = {"stack": ("test-stack",), "image": ("bake",)}

    def executor(self) -> Executor[Any]:
        return UpdateStackExecutor(self)


class UpdateStackExecutor(RehearsalExecutor[UpdateStack]):
    """Roll the test stack to the baked image (the same update production will get), then verify."""

    def preflight(self, ctx: PlanContext) -> None:
        super().preflight(ctx)
        check_strategy(ctx, rehearsal_env(ctx.pipeline, self.spec), self.spec.strategy, self.spec.health)

    def is_live(self, ctx: PlanContext, outputs: Mapping[str, str]) -> bool:
        return stack_is(ctx, rehearsal_env(ctx.pipeline, self.spec), outputs)

    def run(self, ctx: StageContext) -> Outputs:
        stack = ctx.output_of(self.spec.stack, "stack")
        image = ctx.output_of(self.spec.image, "image")
        ctx.partial_outputs["stack"] = stack
        env = rehearsal_env(ctx.pipeline, self.spec)
        stack_engine = engine(ctx, env)
        before = require_stack(ctx, stack_engine, stack, self.spec.stack)
        previous = before.image or ctx.upstream.get(self.spec.stack, {}).get("image", "")
        like = ctx.pipeline.environment(getattr(ctx.pipeline.stage(self.spec.stack), "like", env.name))
        strategy = self.spec.strategy
        ctx.step(f"updating {stack} to {image} ({strategy.kind})")
        started = time.monotonic()
        try:
            state = stack_engine.deploy(
                stack,
                image,
                parameters=stack_engine.carried_parameters(before, like.image_parameter),
                on_event=events(ctx),
                strategy=strategy,
                health=self.spec.health,
            )
        except HealthBreachError as exc:
            ctx.partial_outputs.update(deploy_outputs(exc.report, strategy))
            note_deploy(ctx, exc.report, f"{strategy.kind} update of the test stack")
            raise StageFailedError(
                self.spec.name, f"{image} broke the health thresholds on the test stack: {exc}", hint=exc.hint
            ) from exc
        seconds = time.monotonic() - started
        numbers = deploy_outputs(state.report, strategy)
        ctx.log(f"{stack} moved from {previous} to {image} in {seconds:.1f} s")
        check_or_fail(ctx, stack_engine, state, self.spec.verify, f"test stack {stack} after the update to {image}")
        if previous == image:
            ctx.notes.append(f"the test stack already ran {image}: nothing to update")
        else:
            ctx.notes.append(f"updated from {previous} to {image} in {seconds:.1f} s, verified")
            note_deploy(ctx, state.report, f"{strategy.kind} update of the test stack")
        return {
            "stack": stack,
            "image": image,
            "previous_image": previous or "",
            "seconds": f"{seconds:.2f}",
            **numbers,
        }
