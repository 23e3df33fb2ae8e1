"""Ctrl-C and a CI's SIGTERM: recorded the instant they arrive, so a run can never miss one.

Python turns SIGINT into a KeyboardInterrupt raised in the main thread at whatever bytecode it is
running. That is not enough on its own: when that bytecode belongs to a finalizer (an object's
`__del__`, a weakref callback, run by the garbage collector in the middle of anything), Python
reports "Exception ignored in ..." and the KeyboardInterrupt is gone; the run goes on as if nothing
happened, through promote. On a busy machine that window is wide. So the handler here first
records the signal (and wakes every stage that waits on its cancel event: child processes are
stopped, polling loops end), and only then raises KeyboardInterrupt for a prompt stop. The runner
consults the record before every stage and after every stage: a signal that was swallowed still
stops the run before anything else starts, teardown still runs, and the exit code says which
signal it was (130 for SIGINT, 143 for SIGTERM).

`install()` is called by the CLI (signal handlers belong to the main thread of the program).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

_lock = threading.Lock()
_received: list[int] = []
_cancel_events: set[threading.Event] = set()


def install() -> None:
    """Handle SIGINT and SIGTERM with `_handler` (main thread only)."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def _handler(signum: int, frame: FrameType | None) -> None:
    record(signum)
    raise KeyboardInterrupt


def record(signum: int) -> None:
    """Remember a signal and cancel every stage that is running now."""
    with _lock:
        _received.append(signum)
        events = list(_cancel_events)
    for event in events:
        event.set()


def record_if_none() -> None:
    """A KeyboardInterrupt that did not come through `_handler` (Python's own SIGINT handler, in a
    process that did not install ours): counts as a SIGINT."""
    with _lock:
        if not _received:
            _received.append(signal.SIGINT)


def name() -> str:
    """'SIGINT' or 'SIGTERM' (the first signal received), for messages."""
    first = requested()
    return signal.Signals(first).name if first is not None else "SIGINT"


def requested() -> int | None:
    """The first signal received since the last `reset`, if any."""
    with _lock:
        return _received[0] if _received else None


def count() -> int:
    """How many signals were received (a second one abandons cleanup)."""
    with _lock:
        return len(_received)


def exit_code(default: int = 130) -> int:
    first = requested()
    return EXIT_CODES.get(signal.Signals(first), default) if first is not None else default


def watch(event: threading.Event) -> None:
    """Set `event` when a signal arrives, until `unwatch` (a signal received before is the
    runner's to act on: it decides whether a stage starts at all)."""
    with _lock:
        _cancel_events.add(event)


def unwatch(event: threading.Event) -> None:
    with _lock:
        _cancel_events.discard(event)


def reset() -> None:
    """Forget every signal (a new run in the same process, or a test)."""
    with _lock:
        _received.clear()
