"""Shell: a generic step. Upstream outputs arrive as PIPELINE_<STAGE>_<KEY> environment variables."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from pipeline.model import Name, RelPath, Stage, StageOutputs
from pipeline.stages.commit_test import CommandOutputs


class Shell(Stage):
    """Run shell commands; may deploy to an environment and may have an approval gate.

    Example:
        Shell(name="notify", commands=["./scripts/notify.sh"], needs=["promote"])
    """

    kind: Literal["shell"] = "shell"
    commands: tuple[str, ...] = Field(min_length=1)
    """Shell commands, run one after another with `sh -c`; the first that fails stops the stage."""
    workdir: RelPath = "."
    """Folder the commands run in, relative to the definition."""
    inputs: tuple[RelPath, ...] = ()
    """Files or folders the result depends on; empty means: run every time."""
    environment: Name | None = None
    """The environment this step acts on (takes its lock, secrets and approval)."""

    executor: ClassVar[str] = "pipeline.executors.shell:ShellExecutor"
    outputs: ClassVar[type[StageOutputs]] = CommandOutputs
    approvable: ClassVar[bool] = True

    def files(self) -> tuple[str, ...]:
        return tuple(p for p in self.inputs if p != ".")

    def environment_name(self) -> str | None:
        return self.environment
