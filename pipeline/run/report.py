"""What a run is asked to do and what it says: options, the summary, and where progress goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline import interrupts
from pipeline.errors import Interrupted
from pipeline.ledger import StageResult
from pipeline.model import Profile

OK_STATUSES = ("succeeded", "up-to-date")


class Reporter(Protocol):
    """Where the runner reports progress (the CLI's live view, a plain log, or a test)."""

    def run_started(self, run_id: str, stages: list[str], run_dir: Path) -> None: ...
    def stage_started(self, stage: str, attempt: int) -> None: ...
    def stage_step(self, stage: str, text: str) -> None: ...
    def stage_line(self, stage: str, line: str) -> None: ...
    def stage_finished(self, stage: str, result: StageResult, log_tail: str) -> None: ...
    def notice(self, text: str) -> None: ...
    def run_finished(self, summary: RunSummary) -> None: ...


class NullReporter:
    def run_started(self, run_id: str, stages: list[str], run_dir: Path) -> None:
        pass

    def stage_started(self, stage: str, attempt: int) -> None:
        pass

    def stage_step(self, stage: str, text: str) -> None:
        pass

    def stage_line(self, stage: str, line: str) -> None:
        pass

    def stage_finished(self, stage: str, result: StageResult, log_tail: str) -> None:
        pass

    def notice(self, text: str) -> None:
        pass

    def run_finished(self, summary: RunSummary) -> None:
        pass


@dataclass
class RunOptions:
    profile: Profile | None = None
    only: str | None = None
    from_stage: str | None = None
    force: bool = False
    keep: bool = False
    yes: bool = False
    interactive: bool = False
    """A human can answer approval prompts (a TTY)."""
    manifest: Path | None = None
    """run stage: where upstream outputs come from and where this stage's result goes."""


@dataclass
class RunSummary:
    pipeline: str
    run_id: str
    run_dir: Path
    profile: str
    results: dict[str, StageResult] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def failed(self) -> list[str]:
        return [n for n, r in self.results.items() if r.status in ("failed", "interrupted")]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return interrupts.exit_code(Interrupted.exit_code)
        return 1 if self.failed else 0
