"""SimulatedRollback: rehearse the way back on the test stack, every run, and time it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pipeline.executors.base import Executor, Outputs, PlanContext, StageContext
from pipeline.model import Name, Stage, Verify
from stages._stack import RehearsalExecutor, check_or_fail, engine, events, rehearsal_env, require_stack, stack_is


class SimulatedRollback(Stage):
    """Roll the test stack back to the image it started with, verify, and record time-to-restore.

    Example:
        SimulatedRollback(name="rollback", stack="test-stack", verify=Verify(expect_text="Hello World"))
    """

    kind: Literal["simulated-rollback"] = "simulated-rollback"
    stack: Name
    """The TestStack stage whose stack to roll back."""
    verify: Verify = Verify()

    outputs: ClassVar[tuple[str, ...]] = ("stack", "image", "from_image", "time_to_restore")
    uses_profile: ClassVar[bool] = True
    implemented: ClassVar[frozenset[str]] = frozenset({"local", "aws"})
    refers_to: ClassVar[Mapping[str, tuple[str, ...]]] = {"stack": ("test-stack",)}

    def executor(self) -> Executor[Any]:
        return SimulatedRollbackExecutor(self)


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
        like = ctx.pipeline.environment(getattr(ctx.pipeline.stage(self.spec.stack), "like", env.name))
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
