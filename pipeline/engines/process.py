"""Run a subprocess, streaming its output line by line, with a deadline and clean cancellation.

The child runs in its own process group so a timeout or Ctrl-C stops it and everything it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pipeline.errors import CommandFailedError, CommandTimeoutError, Interrupted

TAIL_LINES = 40


@dataclass(frozen=True)
class Completed:
    returncode: int
    tail: str


def _display(command: Sequence[str] | str) -> str:
    if isinstance(command, str):
        return command
    import shlex

    return " ".join(shlex.quote(c) for c in command)


def stream(
    command: Sequence[str] | str,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] = lambda line: None,
    deadline: float | None = None,
    cancel: threading.Event | None = None,
    check: bool = True,
    shell: bool = False,
) -> Completed:
    """Run `command`, call `on_line` for each output line (stdout and stderr merged).

    Raises CommandFailedError (non-zero exit, when `check`), CommandTimeoutError (deadline passed)
    or Interrupted (cancel set). The process group is killed in the last two cases.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        proc = subprocess.Popen(
            command if not shell else _display(command),
            cwd=cwd,
            env=full_env,
            shell=shell,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_parent_death_signal(),  # noqa: PLW1509 - calls into C only, resolved before fork
            text=True,
            errors="replace",
            bufsize=1,
        )
    except FileNotFoundError as exc:
        name = command if isinstance(command, str) else command[0]
        from pipeline.errors import ToolMissingError

        raise ToolMissingError(
            f"cannot run {name!r}: not found on PATH", hint="install it, or run `pipeline doctor`"
        ) from exc

    started = time.monotonic()
    tail: deque[str] = deque(maxlen=TAIL_LINES)

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            on_line(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = cancelled = False
    try:
        while True:
            try:
                proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() > deadline:
                    timed_out = True
                elif cancel is not None and cancel.is_set():
                    cancelled = True
                else:
                    continue
                kill_group(proc)
                break
    except BaseException:  # Ctrl-C (KeyboardInterrupt) or SIGTERM turned into one: stop the child too
        kill_group(proc)
        raise
    reader.join(timeout=5)
    text = "\n".join(tail)
    if timed_out:
        raise CommandTimeoutError(_display(command), round(time.monotonic() - started, 1))
    if cancelled:
        raise Interrupted(f"interrupted while running: {_display(command)}")
    if check and proc.returncode != 0:
        raise CommandFailedError(command, proc.returncode, text, cwd=str(cwd) if cwd else None)
    return Completed(proc.returncode, text)


@cache
def _parent_death_signal() -> Callable[[], None] | None:
    """A function for the child (between fork and exec) that asks Linux to SIGKILL it when the
    parent dies, so a SIGKILLed run leaves no packer or test command running on its own. Resolved
    here, in the parent: the child may only call into C (an import there could deadlock on a
    lock another thread held at fork time). Resolved on the first command, not at import: ctypes
    is not worth loading for the commands that never start a process (`pipeline validate`)."""
    if sys.platform != "linux":
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)
    return lambda: prctl(pr_set_pdeathsig, sigkill)


def kill_group(proc: subprocess.Popen[str], grace: float = 3.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `grace` seconds."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_quiet(
    command: Sequence[str], *, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """A short command whose output we parse (git, packer version). Never raises on exit status."""
    return subprocess.run(
        list(command), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
