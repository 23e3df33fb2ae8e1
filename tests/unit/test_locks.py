"""The one file lock (pipeline/locks.py): refused or waited for, naming its holder, taken over
from a dead holder, removed with what it guarded. flock conflicts between two open files even in
one process, so these tests need no second process; the CLI-level tests (a real killed run) are in
tests/reliability/test_locks.py."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from pipeline.errors import LockHeldError, StateUnwritableError
from pipeline.ledger import Ledger
from pipeline.locks import FileLock, describe_holder


def _wait_until_opened_twice(path: Path) -> None:
    """Until a second open file of this process is `path` (a waiter has opened it)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        opened = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                    opened += 1
            except OSError:
                continue
        if opened >= 2:
            return
        time.sleep(0.01)
    raise AssertionError(f"no second open file of {path}")


def test_a_held_lock_is_refused_at_once_naming_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "demo.build.lock"
    with FileLock(path, purpose="first", holder={"run_id": "r1"}):
        written = json.loads(path.read_text())
        assert written["pid"] == os.getpid()
        assert written["host"] == socket.gethostname()
        assert written["purpose"] == "first"
        assert written["run_id"] == "r1"
        started = time.monotonic()
        with pytest.raises(LockHeldError, match=rf"demo\.build is locked by run r1, pid {os.getpid()}") as info:
            FileLock(path, purpose="second", hint="wait").acquire()
        assert time.monotonic() - started < 1.0
        assert info.value.hint == "wait"
        assert info.value.holder is not None
        assert info.value.holder["purpose"] == "first"
    assert path.read_text() == "", "a released lock names no holder"


def test_a_lock_with_a_time_limit_waits_then_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "stack.lock"
    with FileLock(path, purpose="deploying v1"):
        started = time.monotonic()
        with pytest.raises(LockHeldError, match=r"stack is locked by pid .*deploying v1"):
            FileLock(path, purpose="deploying v2", wait=0.3).acquire()
        assert time.monotonic() - started >= 0.3


def test_a_waiter_gets_the_lock_when_the_holder_releases_it(tmp_path: Path) -> None:
    path = tmp_path / "image.lock"
    first = FileLock(path, purpose="building").acquire()
    got: list[float] = []

    def wait_for_it() -> None:
        with FileLock(path, purpose="reusing", wait=None):
            got.append(time.monotonic())

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    _wait_until_opened_twice(path)
    assert got == [], "the waiter took a held lock"
    released = time.monotonic()
    first.release()
    waiter.join(timeout=10)
    assert got, "the waiter never got the lock"
    assert got[0] >= released


def test_a_lock_left_by_a_dead_holder_is_taken_over_and_says_whose_it_was(tmp_path: Path) -> None:
    path = tmp_path / "demo.build.lock"
    dead = {"pid": 999999, "host": "gone", "since": "then", "purpose": "killed run", "run_id": "r0"}
    path.write_text(json.dumps(dead))  # what a killed holder leaves: its record, no flock
    with FileLock(path, purpose="next") as lock:
        assert lock.took_over == dead
        assert json.loads(path.read_text())["purpose"] == "next"
    with FileLock(path, purpose="after") as lock:
        assert lock.took_over is None


def test_an_unreadable_lock_file_is_taken_over_too(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    path.write_text("{half a reco")
    with FileLock(path, purpose="next") as lock:
        assert lock.took_over == {"pid": "?", "purpose": "unknown (unreadable lock file)"}


def test_a_removed_lock_file_is_not_locked_by_a_waiter_that_held_it_open(tmp_path: Path) -> None:
    """A holder that removes the file as it releases it (the stack is gone): a process that was
    waiting on that file must lock the file at the path, not the removed one, or two processes
    would both think they hold the lock."""
    path = tmp_path / "stack.lock"
    first = FileLock(path, purpose="deleting").acquire()
    holding = threading.Event()
    release_second = threading.Event()
    inodes: list[int] = []

    def wait_for_it() -> None:
        with FileLock(path, purpose="deploying", wait=10.0):
            inodes.append(path.stat().st_ino)
            holding.set()
            release_second.wait(10)

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    _wait_until_opened_twice(path)  # the waiter has the old file open and polls its flock
    first.remove_on_release = True
    first.release()
    assert holding.wait(10), "the waiter never got the lock"
    # The lock the waiter holds is the file now at the path: a third process is refused.
    with pytest.raises(LockHeldError, match="deploying"):
        FileLock(path, purpose="third").acquire()
    release_second.set()
    waiter.join(timeout=10)
    assert inodes
    assert path.exists()
    assert inodes[0] == path.stat().st_ino


def test_describe_holder_names_the_run_when_there_is_one() -> None:
    holder = {"run_id": "r1", "pid": 5, "host": "h", "purpose": "p", "since": "s"}
    assert describe_holder(holder) == "run r1, pid 5 on h (p, since s)"
    assert describe_holder({"pid": 5}) == "pid 5 on ? (?, since ?)"


def test_the_ledger_lock_is_refused_at_once_and_an_unwritable_one_names_the_ledger(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    with ledger.lock("demo", "build", purpose="first", run_id="r1"):
        with pytest.raises(LockHeldError, match=r"demo\.build is locked by run r1") as info:
            ledger.lock("demo", "build", purpose="second").acquire()
        assert info.value.hint is not None
        assert "wait for that run to finish" in info.value.hint
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(StateUnwritableError, match="cannot write the ledger"):
        Ledger(blocked).lock("demo", "build", purpose="x").acquire()


@pytest.mark.parametrize("where", ["_parse_holder", "_now"])
def test_a_signal_right_after_the_flock_leaves_nothing_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Ctrl-C lands after the flock but before `acquire` returns: the lock is given back at once, so
    the interrupted stage's cleanup in the same process (a stack's delete takes the stack's lock)
    does not wait on a lock its own process holds and no longer knows of (found by tests/stress:
    a run interrupted in a stack creation waited on itself for ever)."""
    from pipeline import locks

    path = tmp_path / "stack.lock"

    def interrupted(*args: object) -> object:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(locks, where, interrupted)
        lock = FileLock(path, purpose="deploy", wait=None)
        with pytest.raises(KeyboardInterrupt) as caught:
            lock.acquire()
    # The runner cleans up while it handles the KeyboardInterrupt: its traceback (and the frame of
    # the interrupted `acquire`) is still alive then, so nothing may rely on the frame being freed.
    assert caught.tb is not None
    assert not [fd for fd in os.listdir("/proc/self/fd") if _points_to(fd, path)], "the lock file is still open"
    with FileLock(path, purpose="delete", wait=0) as again:  # at once: nothing holds it
        assert again.took_over is None or again.took_over.get("purpose") != "deploy"
    lock.release()  # a no-op: it holds nothing
    del caught


def test_a_signal_in_release_still_gives_the_lock_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "stack.lock"
    lock = FileLock(path, purpose="deploy").acquire()
    lock.remove_on_release = True

    def interrupted(self: Path, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(Path, "unlink", interrupted)
        with pytest.raises(KeyboardInterrupt) as caught:
            lock.release()
    assert caught.tb is not None  # alive, as while the runner cleans up
    with FileLock(path, purpose="delete", wait=0):
        pass


def _points_to(fd: str, path: Path) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == str(path)
    except OSError:
        return False
