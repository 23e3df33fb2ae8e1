"""The one file lock of the package: an exclusive `flock` on a file that says who holds it.

Users: the ledger's lock per pipeline and environment (one live run; refused at once), the Docker
stack engine's lock per stack (one deploy or delete; waits), and the machine-wide locks around
building the base image and the balancer image (one builder; the others wait, then reuse).

- The kernel frees a flock when its holder dies, so a killed process never leaves a lock held.
- The holder writes who it is into the file (pid, host, since, purpose, and any extra fields): a
  process that finds the lock held names the holder, and one that gets a lock whose file still names
  a holder knows it took over from a process that died (`took_over`). Released, the file is empty.
- A lock for something that is gone (a deleted stack) can remove its file as it releases it; a
  process that was waiting on that file notices the file is not the one at the path any more, and
  locks the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Self

from pipeline.errors import LockHeldError

POLL = 0.1
"""Seconds between tries while waiting for a lock with a time limit."""


def cache_dir() -> Path:
    """This account's cache folder for the package (machine-wide locks live here)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pipeline"


class FileLock:
    """An exclusive lock on the file at `path` (see the module docstring).

    `wait`: 0 refuses at once when another process holds it, None waits as long as it takes, a
    number waits that many seconds; refused, `acquire` raises LockHeldError naming the holder (with
    `hint`). An OSError (the folder or the file cannot be made or written) leaves nothing held."""

    def __init__(
        self,
        path: Path,
        *,
        purpose: str,
        holder: Mapping[str, str] | None = None,
        wait: float | None = 0.0,
        hint: str | None = None,
    ) -> None:
        self.path = path
        self.purpose = purpose
        self.holder = dict(holder or {})
        """More about the holder, written into the file (e.g. the run id)."""
        self.wait = wait
        self.hint = hint
        self.took_over: dict[str, Any] | None = None
        """What the file said when this process got the lock: a holder that died without releasing it."""
        self.remove_on_release = False
        """Set while holding it: remove the file as the lock is released (what it guarded is gone)."""
        self._fh: IO[str] | None = None

    def acquire(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = None if self.wait is None else time.monotonic() + self.wait
        while True:
            fh = self.path.open("a+")
            try:
                self._flock(fh, deadline)
                if not _same_file(self.path, fh):
                    fh.close()  # the holder removed the file as it released it: lock the one at the path now
                    continue
                fh.seek(0)
                self.took_over = _parse_holder(fh.read())
                record = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now(), "purpose": self.purpose}
                fh.seek(0)
                fh.truncate()
                fh.write(json.dumps({**record, **self.holder}))
                fh.flush()
                self._fh = fh
                return self
            except BaseException:
                # Whatever stops us once the file is open (a full disk, or a signal's KeyboardInterrupt
                # right after the flock): give the lock back now. A lock this process holds but no
                # longer knows of would make its own cleanup (a stack's delete) wait on itself.
                self._fh = None
                with contextlib.suppress(OSError, ValueError):
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
                fh.close()
                raise

    def release(self) -> None:
        fh = self._fh
        if fh is None:
            return
        self._fh = None
        try:
            if self.remove_on_release:
                with contextlib.suppress(OSError):
                    self.path.unlink()
            else:
                with contextlib.suppress(OSError):
                    fh.seek(0)
                    fh.truncate()
                    fh.flush()
        finally:  # also when a signal interrupts the lines above
            with contextlib.suppress(OSError, ValueError):
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _flock(self, fh: IO[str], deadline: float | None) -> None:
        if deadline is None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            return
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.seek(0)
                    holder = _parse_holder(fh.read())
                    who = describe_holder(holder) if holder else "another process"
                    raise LockHeldError(f"{self.path.stem} is locked by {who}", hint=self.hint, holder=holder) from None
            time.sleep(POLL)


def describe_holder(holder: Mapping[str, Any]) -> str:
    """`run R, pid P on HOST (PURPOSE, since T)`, from what a lock file says."""
    run = f"run {holder['run_id']}, " if holder.get("run_id") else ""
    return (
        f"{run}pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
        f"({holder.get('purpose', '?')}, since {holder.get('since', '?')})"
    )


def _parse_holder(text: str) -> dict[str, Any] | None:
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {"pid": "?", "purpose": "unknown (unreadable lock file)"}
    return data if isinstance(data, dict) else None


def _same_file(path: Path, fh: IO[str]) -> bool:
    try:
        on_disk, held = os.stat(path), os.fstat(fh.fileno())
    except FileNotFoundError:
        return False
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


__all__ = ["FileLock", "cache_dir", "describe_holder"]
