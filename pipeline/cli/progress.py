"""How a run looks: a rich live view on a terminal, plain lines elsewhere (CI, pipes, CI=1)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pipeline.ledger import StageResult
from pipeline.run import RunSummary

STYLES = {
    "pending": "dim",
    "running": "bold cyan",
    "succeeded": "green",
    "up-to-date": "green",
    "skipped": "yellow",
    "failed": "bold red",
    "interrupted": "bold red",
}
SYMBOLS = {
    "pending": "·",
    "running": "▶",
    "succeeded": "✓",
    "up-to-date": "=",
    "skipped": "-",
    "failed": "✗",
    "interrupted": "!",
}
TAIL_ON_FAILURE = 25


@dataclass
class _Row:
    status: str = "pending"
    started: float | None = None
    finished: float | None = None
    step: str = ""
    last: str = ""
    message: str = ""
    attempt: int = 1

    def elapsed(self) -> str:
        if self.started is None:
            return ""
        end = self.finished or time.monotonic()
        return f"{end - self.started:5.1f}s"


@dataclass
class _Board:
    rows: dict[str, _Row] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def summary_table(summary: RunSummary) -> Table:
    table = Table(title=f"run {summary.run_id} ({summary.profile})", title_justify="left", expand=False)
    table.add_column("stage")
    table.add_column("status")
    table.add_column("note", overflow="fold")
    for name, result in summary.results.items():
        style = STYLES.get(result.status, "")
        note = result.message.splitlines()[0] if result.message else ""
        table.add_row(name, Text(f"{SYMBOLS.get(result.status, '?')} {result.status}", style=style), note)
    return table


class LiveReporter:
    """A table that updates in place: stage, status, elapsed time, current step / last output line."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.board = _Board()
        self.live: Live | None = None
        self.run_dir: Path | None = None

    def _render(self) -> Table:
        table = Table(box=None, show_header=False, padding=(0, 1))
        table.add_column(width=2)
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        table.add_column(overflow="ellipsis", no_wrap=True, ratio=1)
        with self.board.lock:
            for name, row in self.board.rows.items():
                detail = row.step if row.status == "running" and row.step else row.message.split("\n")[0]
                if row.status == "running" and row.last:
                    detail = f"{row.step}  [dim]{row.last}[/]" if row.step else f"[dim]{row.last}[/]"
                table.add_row(
                    Text(SYMBOLS[row.status], style=STYLES[row.status]),
                    name,
                    Text(row.status, style=STYLES[row.status]),
                    row.elapsed(),
                    detail,
                )
        return table

    def run_started(self, run_id: str, stages: list[str], run_dir: Path) -> None:
        self.run_dir = run_dir
        self.board.rows = {name: _Row() for name in stages}
        self.console.print(f"[bold]run {run_id}[/]  [dim]logs: {run_dir}[/]")
        self.live = Live(self._render(), console=self.console, refresh_per_second=8, transient=True)
        self.live.get_renderable = self._render  # type: ignore[method-assign]
        self.live.start()

    def stage_started(self, stage: str, attempt: int) -> None:
        with self.board.lock:
            row = self.board.rows[stage]
            row.status, row.started, row.finished, row.attempt = "running", time.monotonic(), None, attempt

    def stage_step(self, stage: str, text: str) -> None:
        with self.board.lock:
            self.board.rows[stage].step = text

    def stage_line(self, stage: str, line: str) -> None:
        if line.strip():
            with self.board.lock:
                self.board.rows[stage].last = line.strip()

    def stage_finished(self, stage: str, result: StageResult, log_tail: str) -> None:
        with self.board.lock:
            row = self.board.rows[stage]
            row.status = result.status
            row.finished = time.monotonic()
            row.started = row.started or row.finished
            row.message = result.message
        if result.status == "failed":
            self._print_failure(stage, result, log_tail)

    def _print_failure(self, stage: str, result: StageResult, log_tail: str) -> None:
        lines = [Text(f"✗ {stage} failed", style="bold red"), Text(result.message)]
        if log_tail.strip():
            tail = "\n".join(log_tail.rstrip().splitlines()[-TAIL_ON_FAILURE:])
            lines.append(Text(f"--- last lines of {stage}'s output ---\n{tail}", style="dim"))
        if self.run_dir:
            lines.append(Text(f"full log: {self.run_dir / 'stages' / stage / 'output.log'}", style="dim"))
        self.console.print(Group(*lines))

    def notice(self, text: str) -> None:
        self.console.print(f"[yellow]note:[/] {text}")

    def run_finished(self, summary: RunSummary) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        self.console.print(summary_table(summary))


class PlainReporter:
    """Line-oriented output for CI logs and pipes: every line says which stage it belongs to."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.lock = threading.Lock()
        self.started: dict[str, float] = {}
        self.run_dir: Path | None = None

    def _say(self, text: str) -> None:
        with self.lock:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def run_started(self, run_id: str, stages: list[str], run_dir: Path) -> None:
        self.run_dir = run_dir
        self._say(f"run {run_id}: {', '.join(stages)} (logs: {run_dir})")

    def stage_started(self, stage: str, attempt: int) -> None:
        self.started[stage] = time.monotonic()
        self._say(f"[{stage}] started" + (f" (attempt {attempt})" if attempt > 1 else ""))

    def stage_step(self, stage: str, text: str) -> None:
        self._say(f"[{stage}] -> {text}")

    def stage_line(self, stage: str, line: str) -> None:
        self._say(f"[{stage}] {line}")

    def stage_finished(self, stage: str, result: StageResult, log_tail: str) -> None:
        elapsed = time.monotonic() - self.started.get(stage, time.monotonic())
        timing = f" in {elapsed:.1f}s" if stage in self.started else ""
        first = result.message.splitlines()[0] if result.message else ""
        self._say(f"[{stage}] {result.status}{timing}" + (f": {first}" if first else ""))
        if result.status == "failed":
            for line in result.message.splitlines()[1:]:
                self._say(f"[{stage}] {line}")
            if self.run_dir:
                self._say(f"[{stage}] full log: {self.run_dir / 'stages' / stage / 'output.log'}")

    def notice(self, text: str) -> None:
        self._say(f"note: {text}")

    def run_finished(self, summary: RunSummary) -> None:
        self.console.print(summary_table(summary))
