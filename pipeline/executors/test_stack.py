"""Runs a TestStack: an ephemeral copy of an environment, built with what that environment runs now."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pipeline.executors._database import seed_database
from pipeline.executors._rehearsal import (
    RehearsalExecutor,
    baseline,
    check_or_fail,
    engine,
    events,
    history,
    rehearsal_env,
    rehearsal_stack,
    stack_is,
)
from pipeline.executors.base import Outputs, PlanContext, StageContext
from pipeline.hashing import digest
from pipeline.model import Environment

if TYPE_CHECKING:
    from pipeline.engines.stack import StackState
from pipeline.stages.test_stack import TestStack


class TestStackExecutor(RehearsalExecutor[TestStack]):
    """Create the per-run stack with what `like` runs now; verify it."""

    __test__ = False

    def _start(
        self, ctx: PlanContext | StageContext
    ) -> tuple[str | None, str, StackState, Environment, dict[str, str] | None]:
        """(starting image or None, why, production's state, `like`, the parameters carried from it)."""
        like = ctx.pipeline.environment(self.spec.like)
        like_engine = engine(ctx, like)
        production = like_engine.describe(like.stack_name(ctx.pipeline.name))
        new_image = ctx.upstream.get(self.spec.image, {}).get("image")
        start, why = baseline(history(ctx, like), like, production, new_image)
        carried = like_engine.carried_parameters(production, like.image_parameter) if start is not None else None
        return start, why, production, like, carried

    def inputs(self, ctx: PlanContext) -> Mapping[str, str]:
        # What production runs now is part of the key: a rehearsal from another image, or with
        # other parameters (capacity, instance type...), is another result.
        start, _, _, like, carried = self._start(ctx)
        return {
            "like": like.name,
            "like_image": start or "none",
            "like_parameters": digest(carried) if carried else "none",
        }

    def is_live(self, ctx: PlanContext, outputs: Mapping[str, str]) -> bool:
        return stack_is(ctx, rehearsal_env(ctx.pipeline, self.spec), outputs)

    def run(self, ctx: StageContext) -> Outputs:
        env = rehearsal_env(ctx.pipeline, self.spec)
        stack = rehearsal_stack(ctx.pipeline, env, ctx.run_id)
        # Recorded before anything exists, so that teardown finds the stack even if creation fails.
        ctx.partial_outputs["stack"] = stack
        new_image = ctx.output_of(self.spec.image, "image")
        start, why, _, like, parameters = self._start(ctx)
        fresh = start is None
        image = start or new_image
        if fresh:
            ctx.notes.append(
                f"{why}: the test stack starts from the new image {new_image} "
                "(so this run's update and rollback rehearsal change nothing)"
            )
        else:
            ctx.notes.append(f"{why}: the test stack starts from it")
        ctx.partial_outputs["image"] = image
        if parameters:
            copied = ", ".join(f"{k}={v}" for k, v in sorted(parameters.items()))
            ctx.notes.append(f"parameters copied from {like.name}'s stack: {copied}")
        stack_engine = engine(ctx, env)
        if ctx.pipeline.database_of(env) is not None:
            parameters = {**(parameters or {}), **seed_database(ctx, like, stack, fresh, stack_engine)}
        ctx.step(f"creating {stack} with {image}")
        state = stack_engine.deploy(stack, image, parameters=parameters, on_event=events(ctx))
        if state.url:
            ctx.partial_outputs["url"] = state.url
        check_or_fail(ctx, stack_engine, state, self.spec.verify, f"test stack {stack} ({image})")
        return {"stack": stack, "url": state.url or "", "image": image, "fresh": "true" if fresh else "false"}
