"""CommitTest: the first gate. Runs the project's own checks (linters, unit tests) in the work tree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field

from pipeline.executors.base import Executor, Outputs, PlanContext, StageContext
from pipeline.hashing import hash_paths
from pipeline.model import RelPath, Stage


class CommitTest(Stage):
    """Run commands in the work tree; fail on the first non-zero exit.

    Example:
        CommitTest(name="commit-test", commands=["ruff check .", "pytest -q tests/unit"],
                   junit="report.xml")
    """

    kind: Literal["commit-test"] = "commit-test"
    commands: tuple[str, ...] = Field(min_length=1)
    """Shell commands, run one after another with `sh -c`."""
    workdir: RelPath = "."
    junit: RelPath | None = None
    """A JUnit XML report the commands write (relative to the definition); kept in the run folder."""
    inputs: tuple[RelPath, ...] = (".",)
    """Files or folders the result depends on (git-tracked and untracked files, not ignored ones)."""

    outputs: ClassVar[tuple[str, ...]] = ("junit",)
    implemented: ClassVar[frozenset[str]] = frozenset({"local", "aws"})

    def executor(self) -> Executor[Any]:
        return CommitTestExecutor(self)


class CommitTestExecutor(Executor[CommitTest]):
    def inputs(self, ctx: PlanContext) -> Mapping[str, str]:
        return hash_paths(ctx.root, self.spec.inputs)

    def run(self, ctx: StageContext) -> Outputs:
        from stages._commands import run_commands

        return run_commands(ctx, self.spec.commands, workdir=self.spec.workdir, junit=self.spec.junit)
