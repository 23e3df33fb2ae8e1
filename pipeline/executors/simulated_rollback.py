"""Runs a SimulatedRollback: the way back rehearsed on the test stack, timed."""

from __future__ import annotations

import time
from collections.abc import Mapping

from pipeline.executors._rehearsal import (
    RehearsalExecutor,
    check_or_fail,
    copied_environment,
    engine,
    events,
    rehearsal_env,
    require_stack,
    stack_is,
)
from pipeline.executors.base import Outputs, PlanContext, StageContext
from pipeline.stages.simulated_rollback import SimulatedRollback


class SimulatedRollbackExecutor(RehearsalExecutor[SimulatedRollback]):
    """Take the test stack back to the image it started with, verify, and time it."""

    def is_live(self, ctx: PlanContext, outputs: Mapping[str, str]) -> bool:
        return stack_is(ctx, rehearsal_env(ctx.pipeline, self.spec), outputs)

    def run(self, ctx: StageContext) -> Outputs:
        stack = ctx.output_of(self.spec.stack, "stack")
        target = ctx.output_of(self.spec.stack, "image")
        ctx.partial_outputs["stack"] = stack
        env = rehearsal_env(ctx.pipeline, self.spec)
        stack_engine = engine(ctx, env)
        before = require_stack(ctx, stack_engine, stack, self.spec.stack)
        like = copied_environment(ctx.pipeline, self.spec.stack, env)
        ctx.step(f"rolling {stack} back to {target}")
        # Time to restore: from the decision to go back until the old version answers as it should.
        started = time.monotonic()
        state = stack_engine.deploy(
            stack,
            target,
            parameters=stack_engine.carried_parameters(before, like.image_parameter),
            on_event=events(ctx),
        )
        check_or_fail(ctx, stack_engine, state, self.spec.verify, f"test stack {stack} after the rollback to {target}")
        seconds = time.monotonic() - started
        if before.image == target:
            ctx.notes.append(f"the test stack already ran {target} (a first release): the rollback changed nothing")
        else:
            ctx.notes.append(f"rolled back from {before.image} to {target}: time to restore {seconds:.1f} s")
        return {"stack": stack, "image": target, "from_image": before.image or "", "time_to_restore": f"{seconds:.2f}"}
