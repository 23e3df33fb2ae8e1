"""A signal that arrives before the run's first stage (here: while the definition loads, sent by the
definition itself) stops the CLI with the signal's exit code and says so. Typer turns a
KeyboardInterrupt that leaves a command into a silent exit 130; a SIGTERM there used to exit 130
with no word (found by the signal stress test, tests/stress)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli_env, commit_all, init_reference_service

IGNORE_SIGINT_THEN_EXEC = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])"
)
"""Start the CLI as a background job of a non-interactive shell would: SIGINT ignored from the start."""


@pytest.mark.parametrize(
    ("signum", "code", "ignored_at_start", "in_exec"),
    [
        (signal.SIGTERM, 143, False, False),
        (signal.SIGINT, 130, False, False),
        (signal.SIGINT, 130, True, False),
        (signal.SIGTERM, 143, False, True),
    ],
    ids=["SIGTERM", "SIGINT", "SIGINT-ignored-at-start", "SIGTERM-inside-exec"],
)
def test_a_signal_while_the_definition_loads_stops_the_cli(
    tmp_path: Path, signum: signal.Signals, code: int, ignored_at_start: bool, in_exec: bool
) -> None:
    """`in_exec`: the signal's KeyboardInterrupt is raised inside an exec() of a string (as while
    dataclasses build their methods during an import); CPython 3.11 run as `python -m` then ended
    the process by SIGINT whatever exit code the CLI chose (a SIGTERM looked like a SIGINT)."""
    root = init_reference_service(tmp_path / "service", name="signal-at-load")
    definition = root / "pipelinefile.py"
    kill = f"os.kill(os.getpid(), signal.{signum.name})"
    if in_exec:
        kill = f"exec({kill + '; x = 1'!r})"
    definition.write_text(f"import os, signal\n{kill}\n" + definition.read_text())
    commit_all(root)
    command = [sys.executable, "-m", "pipeline", "run", "local", "--yes"]
    if ignored_at_start:
        command = [sys.executable, "-c", IGNORE_SIGINT_THEN_EXEC, *command]
    result = subprocess.run(command, cwd=root, env=cli_env(), capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == code, result.stdout + result.stderr
    assert f"interrupted ({signum.name})" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((root / ".pipeline").glob("runs/*")), "a run was started after the signal"
