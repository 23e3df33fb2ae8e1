"""The two views of a run: a live table on terminals, plain prefixed lines elsewhere."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from pipeline.cli.progress import LiveReporter, PlainReporter
from pipeline.ledger import StageResult
from pipeline.run import RunSummary


def drive(reporter: LiveReporter | PlainReporter, tmp_path: Path) -> None:
    reporter.run_started("run-1", ["unit", "bake"], tmp_path)
    reporter.stage_started("unit", 1)
    reporter.stage_step("unit", "[1/1] pytest")
    reporter.stage_line("unit", "3 passed")
    reporter.stage_finished("unit", StageResult(status="succeeded"), "")
    reporter.stage_started("bake", 1)
    reporter.stage_line("bake", "==> docker.web: Provisioning")
    failed = StageResult(status="failed", message="stage 'bake' failed: check test_page failed\nhint: fix it")
    reporter.stage_finished("bake", failed, "E  assert 'Hello World 2' in page")
    summary = RunSummary("demo", "run-1", tmp_path, "local", {"unit": StageResult("succeeded"), "bake": failed})
    reporter.run_finished(summary)


def test_plain_output_prefixes_every_line_with_its_stage(tmp_path: Path) -> None:
    out = io.StringIO()
    drive(PlainReporter(Console(file=out, width=200, color_system=None)), tmp_path)
    lines = out.getvalue().splitlines()
    assert "[unit] -> [1/1] pytest" in lines
    assert "[unit] 3 passed" in lines
    assert any(line.startswith("[unit] succeeded in ") for line in lines)
    assert any(line.startswith("[bake] failed in ") for line in lines)
    assert any(line.endswith(": stage 'bake' failed: check test_page failed") for line in lines)
    assert "[bake] hint: fix it" in lines
    assert f"[bake] full log: {tmp_path}/stages/bake/output.log" in lines


def test_the_live_view_ends_with_a_summary_and_the_failure_tail(tmp_path: Path) -> None:
    out = io.StringIO()
    drive(LiveReporter(Console(file=out, width=120, force_terminal=True, color_system=None)), tmp_path)
    text = out.getvalue()
    assert "✗ bake failed" in text
    assert "assert 'Hello World 2' in page" in text  # the tail of the failing stage's output
    assert "run run-1 (local)" in text  # the summary table
    assert "✓ succeeded" in text
