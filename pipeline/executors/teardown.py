"""Runs a Teardown: the ephemeral stack is deleted, always (after a failure or an interrupt too)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError, StageFailedError
from pipeline.executors._rehearsal import engine, events, rehearsal_env
from pipeline.executors.base import Executor, Outputs, PlanContext, StageContext
from pipeline.model import Environment

if TYPE_CHECKING:
    from pipeline.engines.stack import StackEngine
from pipeline.stages.teardown import Teardown


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
        env = rehearsal_env(ctx.pipeline, self.spec)
        stack_engine = engine(ctx, env)
        stack = ctx.upstream.get(self.spec.stack, {}).get("stack")
        self._sweep(ctx, stack_engine, env, stack)
        if not stack:
            ctx.notes.append("no test stack was created: nothing to tear down")
            return {"deleted": ""}
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

    def interrupted(self, ctx: StageContext) -> None:
        """A signal while the stack is being deleted (the first signal of a run never abandons its
        teardown; a second one does, the runner's cleanup catches it): finish the deletion, which
        finds what is left by its labels (e.g. the network, once the containers are gone)."""
        stack = ctx.upstream.get(self.spec.stack, {}).get("stack")
        if not stack or ctx.keep:
            return
        ctx.log(f"interrupted: finishing the deletion of {stack}")
        stack_engine = engine(ctx, rehearsal_env(ctx.pipeline, self.spec))
        stack_engine.delete(stack, on_event=events(ctx))
        ctx.partial_outputs["deleted"] = stack

    def _sweep(self, ctx: StageContext, stack_engine: StackEngine, env: Environment, own: str | None) -> None:
        """Remove test stacks that earlier runs of this pipeline left behind.

        A stack's name ends in its run's id, and that run's manifest says whether it still needs
        the stack. Removed: stacks of finished runs (kept ones too, unless this run keeps its own),
        and stacks of runs that died while a stage on this environment was running (this run holds
        the environment's lock, so that stage cannot really be running). Stacks of runs this
        ledger does not know are left alone (`pipeline status` lists them)."""
        prefix = env.stack_name(ctx.pipeline.name) + "-"
        for name in stack_engine.stacks():
            if name == own or not name.startswith(prefix):
                continue
            run_id = name[len(prefix) :]
            try:
                manifest = ctx.ledger.manifest(run_id)
            except PipelineError:
                continue
            if manifest is None or manifest.pipeline != ctx.pipeline.name:
                continue
            states = {stage: result.status for stage, result in manifest.stages.items()}
            kept = any(result.outputs.get("kept") == name for result in manifest.stages.values())
            on_env = [
                stage for stage, status in states.items() if status == "running" and _acts_on(ctx, stage, env.name)
            ]
            finished = not any(status in ("running", "pending") for status in states.values())
            if (finished and not (kept and ctx.keep)) or on_env:
                why = (
                    f"run {run_id} died in {on_env[0]}"
                    if on_env
                    else (f"kept by run {run_id}" if kept else f"left by run {run_id}")
                )
                ctx.log(f"removing test stack {name} ({why})")
                stack_engine.delete(name, on_event=events(ctx))
                ctx.notes.append(f"removed {name} ({why})")


def _acts_on(ctx: StageContext, stage: str, env_name: str) -> bool:
    try:
        env = ctx.pipeline.environment_of(ctx.pipeline.stage(stage))
    except PipelineError:
        return False
    return env is not None and env.name == env_name
