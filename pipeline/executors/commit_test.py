"""Runs a CommitTest: the project's own checks in the work tree."""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.executors.base import Executor, Outputs, PlanContext, StageContext
from pipeline.hashing import hash_paths
from pipeline.stages.commit_test import CommitTest


class CommitTestExecutor(Executor[CommitTest]):
    def inputs(self, ctx: PlanContext) -> Mapping[str, str]:
        return hash_paths(ctx.root, self.spec.inputs)

    def run(self, ctx: StageContext) -> Outputs:
        from pipeline.executors._commands import run_commands

        return run_commands(ctx, self.spec.commands, workdir=self.spec.workdir, junit=self.spec.junit)
