"""Teardown: delete the ephemeral stack, always (also after a failure or an interrupt)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import field_validator

from pipeline.errors import StageFailedError
from pipeline.execution import Executor, Outputs, PlanContext, StageContext
from pipeline.model import Name, Stage, stage_ref
from stages._stack import engine, events, rehearsal_env


class Teardown(Stage):
    """Delete the stack a TestStack stage created. Runs even when a stage before it failed.

    Example:
        Teardown(name="teardown", stack="test-stack", needs=["rollback"])
    """

    kind: Literal["teardown"] = "teardown"
    stack: Name
    """The TestStack stage whose stack to delete."""

    outputs: ClassVar[tuple[str, ...]] = ("deleted", "kept", "url")
    implemented: ClassVar[frozenset[str]] = frozenset({"local"})
    always: ClassVar[bool] = True

    @field_validator("stack", mode="before")
    @classmethod
    def _ref(cls, value: Any) -> Any:
        return stage_ref(value)

    def references(self) -> Mapping[str, str]:
        return {"stack": self.stack}

    def reference_kinds(self) -> Mapping[str, tuple[str, ...]]:
        return {"stack": ("test-stack",)}

    def executor(self) -> Executor[Any]:
        return TeardownExecutor(self)


class TeardownExecutor(Executor[Teardown]):
    """Delete this run's test stack (or keep it with --keep and say where it is)."""

    def is_live(self, ctx: PlanContext, outputs: Mapping[str, str]) -> bool:
        # The result of a teardown is an absence: it holds while the stack is gone. A stack kept
        # with --keep makes this false, so the next run without --keep removes it.
        stack = outputs.get("deleted") or outputs.get("kept")
        if not stack:
            return True
        return not engine(ctx, rehearsal_env(ctx.pipeline, self.spec)).describe(stack).exists

    def run(self, ctx: StageContext) -> Outputs:
        stack = ctx.upstream.get(self.spec.stack, {}).get("stack")
        if not stack:
            ctx.notes.append("no test stack was created: nothing to tear down")
            return {"deleted": ""}
        stack_engine = engine(ctx, rehearsal_env(ctx.pipeline, self.spec))
        if ctx.keep:
            state = stack_engine.describe(stack)
            if state.exists:
                ctx.notes.append(f"kept test stack {stack} (--keep): {state.url or 'no URL'}")
                return {"kept": stack, "url": state.url or ""}
        ctx.step(f"deleting {stack}")
        stack_engine.delete(stack, on_event=events(ctx))
        if stack_engine.describe(stack).exists:
            raise StageFailedError(ctx.stage.name, f"test stack {stack} still exists after deleting it")
        ctx.log(f"deleted test stack {stack}")
        return {"deleted": stack}
