"""CommitTest: the first gate. Runs the project's own checks (linters, unit tests) in the work tree."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from pipeline.model import RelPath, Stage, StageOutputs


class CommandOutputs(StageOutputs):
    """What a stage that runs commands writes."""

    junit: str = ""
    """The JUnit XML report the commands wrote, relative to the run folder (when there is one)."""


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
    """Folder the commands run in, relative to the definition."""
    junit: RelPath | None = None
    """A JUnit XML report the commands write (relative to the definition); kept in the run folder."""
    inputs: tuple[RelPath, ...] = (".",)
    """Files or folders the result depends on (git-tracked and untracked files, not ignored ones)."""

    executor: ClassVar[str] = "pipeline.executors.commit_test:CommitTestExecutor"
    outputs: ClassVar[type[StageOutputs]] = CommandOutputs
