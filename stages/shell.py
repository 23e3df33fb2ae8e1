"""Shell: a generic step. Upstream outputs arrive as PIPELINE_<STAGE>_<KEY> environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field

from pipeline.executors.base import Executor, Outputs, PlanContext, StageContext
from pipeline.hashing import hash_paths
from pipeline.model import Name, RelPath, Stage


class Shell(Stage):
    """Run shell commands; may deploy to an environment and may have an approval gate.

    Example:
        Shell(name="notify", commands=["./scripts/notify.sh"], needs=["promote"])
    """

    kind: Literal["shell"] = "shell"
    commands: tuple[str, ...] = Field(min_length=1)
    workdir: RelPath = "."
    inputs: tuple[RelPath, ...] = ()
    """Files or folders the result depends on; empty means: run every time."""
    environment: Name | None = None
    """The environment this step acts on (takes its lock, secrets and approval)."""

    approvable: ClassVar[bool] = True
    implemented: ClassVar[frozenset[str]] = frozenset({"local", "aws"})

    def files(self) -> tuple[str, ...]:
        return tuple(p for p in self.inputs if p != ".")

    def environment_name(self) -> str | None:
        return self.environment

    def executor(self) -> Executor[Any]:
        return ShellExecutor(self)


class ShellExecutor(Executor[Shell]):
    reads_all_upstream = True

    def inputs(self, ctx: PlanContext) -> Mapping[str, str]:
        if not self.spec.inputs:
            # No declared inputs: never "up to date" unless forced by an identical run id.
            import uuid

            return {"always-run": uuid.uuid4().hex}
        return hash_paths(ctx.root, self.spec.inputs)

    def run(self, ctx: StageContext) -> Outputs:
        from stages._commands import run_commands, upstream_env

        return run_commands(ctx, self.spec.commands, workdir=self.spec.workdir, extra_env=upstream_env(ctx.upstream))
