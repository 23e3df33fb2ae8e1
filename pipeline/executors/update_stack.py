"""Runs an UpdateStack: the test stack moves to the new image with a deployment strategy, then is verified."""

from __future__ import annotations

import time
from collections.abc import Mapping

from pipeline.errors import HealthBreachError, StageFailedError
from pipeline.executors._rehearsal import (
    RehearsalExecutor,
    check_or_fail,
    check_strategy,
    copied_environment,
    deploy_outputs,
    engine,
    events,
    note_deploy,
    rehearsal_env,
    require_stack,
    stack_is,
)
from pipeline.executors.base import Outputs, PlanContext, StageContext
from pipeline.stages.update_stack import UpdateStack


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
        like = copied_environment(ctx.pipeline, self.spec.stack, env)
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
