from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from pipeline.engines.process import stream
from pipeline.errors import CommandFailedError, CommandTimeoutError, Interrupted, ToolMissingError


def test_lines_stream_as_they_come_and_the_tail_is_kept() -> None:
    seen: list[str] = []
    done = stream(["/bin/sh", "-c", "echo one; echo two >&2; echo three"], on_line=seen.append)
    assert seen == ["one", "two", "three"]
    assert done.returncode == 0
    assert done.tail.splitlines() == ["one", "two", "three"]


def test_a_failure_carries_reason_tail_and_the_command_to_reproduce(tmp_path: Path) -> None:
    with pytest.raises(CommandFailedError) as info:
        stream(["/bin/sh", "-c", "echo boom; exit 7"], cwd=tmp_path)
    assert info.value.returncode == 7
    assert "boom" in info.value.tail
    assert str(info.value).startswith(f"command exited with status 7 (in {tmp_path})")
    assert info.value.hint == "reproduce with: /bin/sh -c 'echo boom; exit 7'"


def test_a_deadline_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(CommandTimeoutError, match="did not finish within"):
        stream(
            ["/bin/sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"],
            deadline=time.monotonic() + 0.5,
        )
    assert time.monotonic() - started < 10
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not _alive(child)  # the grandchild died with its group


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a non-reaping pid 1 in a container counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def test_cancel_interrupts_a_running_command() -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(Interrupted):
        stream(["/bin/sh", "-c", "sleep 30"], cancel=cancel)


def test_a_missing_program_is_a_missing_tool() -> None:
    with pytest.raises(ToolMissingError, match="'no-such-program-xyz': not found"):
        stream(["no-such-program-xyz"])


def test_a_killed_runner_takes_its_command_with_it(tmp_path: Path) -> None:
    """SIGKILL gives the runner no chance to clean up; Linux's parent-death signal does it."""
    import signal
    import subprocess
    import sys

    pidfile = tmp_path / "child.pid"
    code = (
        "import sys, threading, time\n"
        "from pipeline.engines.process import stream\n"
        f"threading.Thread(target=lambda: stream(['/bin/sh', '-c', 'echo $$ > {pidfile}; exec sleep 60']),"
        " daemon=True).start()\n"
        "time.sleep(60)\n"
    )
    runner = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    child = int(pidfile.read_text())
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "the command outlived its killed runner"
        time.sleep(0.05)
