"""Runs a Shell stage: its commands, with upstream outputs as PIPELINE_<STAGE>_<KEY> variables."""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.executors.base import Executor, Outputs, PlanContext, StageContext
from pipeline.hashing import hash_paths
from pipeline.stages.shell import Shell


class ShellExecutor(Executor[Shell]):
    reads_all_upstream = True

    def inputs(self, ctx: PlanContext) -> Mapping[str, str]:
        if not self.spec.inputs:
            # No declared inputs: never "up to date" unless forced by an identical run id.
            import uuid

            return {"always-run": uuid.uuid4().hex}
        return hash_paths(ctx.root, self.spec.inputs)

    def run(self, ctx: StageContext) -> Outputs:
        from pipeline.executors._commands import run_commands, upstream_env

        return run_commands(ctx, self.spec.commands, workdir=self.spec.workdir, extra_env=upstream_env(ctx.upstream))
