"""Locks, through the real CLI: one live run per pipeline and environment.

- A second run on the same environment exits at once (while the first still runs), exit 1, with
  a message naming the holder: its run id, pid, host, what it runs and since when.
- A run on another environment of the same pipeline is not blocked.
- A lock whose holder was killed (SIGKILL: it could not release anything) is taken over by the
  next run, which says so and marks the dead run's stage as interrupted in its manifest.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.ledger import Ledger
from tests.conftest import Cli, ProjectFactory, cli_env
from tests.reliability.harness import report

TABLE = "locks"

DEFINITION = """
from pipeline import Environment, Pipeline, Shell

with Pipeline("locks", environments=[Environment(name="staging"), Environment(name="production")]) as p:
    Shell(
        name="deploy-staging",
        environment="staging",
        commands=["touch ../staging-started", "while [ ! -e ../go ]; do sleep 0.05; done"],
    )
    Shell(name="deploy-production", environment="production", commands=["echo production >> ../calls"])
"""


@pytest.fixture
def holder(project: ProjectFactory, cli: Cli) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A project, and a run that holds the `staging` lock until `../go` exists."""
    root = project(DEFINITION)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "local", "--only", "deploy-staging"],
        cwd=root,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = root.parent / "staging-started"
    deadline = time.monotonic() + 60
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert started.exists(), "the first run never started its stage"
    try:
        yield root, proc
    finally:
        (root.parent / "go").touch()
        if proc.poll() is None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _run_id_of_holder(root: Path) -> str:
    runs = Ledger(root).runs()
    assert len(runs) == 1
    return runs[0]


def test_a_second_run_on_the_same_environment_exits_at_once_naming_the_holder(
    holder: tuple[Path, subprocess.Popen[str]], cli: Cli
) -> None:
    root, proc = holder
    holder_run = _run_id_of_holder(root)
    second = cli("run", "local", "--only", "deploy-staging", cwd=root)
    still_running = proc.poll() is None
    assert still_running, "the first run ended before the second one returned: it did not exit at once"
    assert second.returncode == 1, second.stdout + second.stderr
    message = " ".join(second.stderr.split())
    assert f"locks.staging is locked by run {holder_run}, pid {proc.pid} on {socket.gethostname()}" in message
    assert "pipeline run, stages deploy-staging" in message
    assert "hint: wait for that run to finish (or stop it)" in message
    assert "Traceback" not in second.stderr + second.stdout
    assert Ledger(root).runs() == [holder_run], "the refused run left a run record"
    # CI's way in (one stage per job) is refused the same way.
    ci = cli("run", "stage", "deploy-staging", cwd=root)
    assert ci.returncode == 1
    assert f"pid {proc.pid}" in ci.stderr
    report(
        TABLE,
        case="second run, same environment",
        result=f"exit {second.returncode} while the first still ran",
        message=message.split("hint:")[0].strip()[:110],
    )


def test_a_run_on_another_environment_is_not_blocked(holder: tuple[Path, subprocess.Popen[str]], cli: Cli) -> None:
    root, proc = holder
    other = cli("run", "local", "--only", "deploy-production", cwd=root)
    assert proc.poll() is None
    assert other.returncode == 0, other.stdout + other.stderr
    assert (root.parent / "calls").read_text().split() == ["production"]
    report(TABLE, case="second run, other environment", result="exit 0 while the first still ran", message="")


def test_a_lock_whose_holder_was_killed_is_taken_over(holder: tuple[Path, subprocess.Popen[str]], cli: Cli) -> None:
    root, proc = holder
    dead_run = _run_id_of_holder(root)
    lock = root / ".pipeline" / "locks" / "locks.staging.lock"
    assert json.loads(lock.read_text())["run_id"] == dead_run
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (root.parent / "go").touch()  # the killed run's shell command is an orphan now: let it end
    after = cli("run", "local", "--only", "deploy-staging", cwd=root)
    assert after.returncode == 0, after.stdout + after.stderr
    assert f"took over locks.staging: its holder (pid {proc.pid}) is no longer running" in after.stdout
    dead = Ledger(root).manifest(dead_run)
    assert dead is not None
    assert dead.stages["deploy-staging"].status == "interrupted"
    assert "the run died here" in dead.stages["deploy-staging"].message
    assert lock.read_text() == "", "a released lock names no holder"
    again = cli("run", "local", "--only", "deploy-staging", cwd=root)
    assert "took over" not in again.stdout
    report(
        TABLE,
        case="holder killed (SIGKILL)",
        result=f"exit {after.returncode}; taken over and said so",
        message=f"dead run's stage: {dead.stages['deploy-staging'].status}",
    )
