"""Run the CLI entry point in this process (fast), capturing exit code and output."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(args: list[str], cwd: Path, capsys: pytest.CaptureFixture[str]) -> Result:
    from pipeline.cli import main

    old_argv, old_cwd = sys.argv, Path.cwd()
    sys.argv = ["pipeline", *args]
    os.chdir(cwd)
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)
