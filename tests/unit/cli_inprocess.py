"""Run the CLI entry point in this process (fast), capturing exit code and output."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.profiles.base import Engines


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(
    args: list[str], cwd: Path, capsys: pytest.CaptureFixture[str], *, engines: Engines | None = None
) -> Result:
    """`pipeline ARGS` in `cwd`; `engines` replaces the profiles' engines."""
    from pipeline.cli import main

    old_cwd = Path.cwd()
    os.chdir(cwd)
    code = 0
    try:
        main(args, engines=engines)
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        os.chdir(old_cwd)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)
