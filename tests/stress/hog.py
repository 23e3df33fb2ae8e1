"""Keep every core of this machine busy: one spinning process per core, started and stopped here.

    python tests/stress/hog.py -- COMMAND ARGS...   run COMMAND while the cores are busy; exit as it does
    python tests/stress/hog.py                       spin until interrupted

`make test-stress` runs the e2e and reliability folders under it; the signal stress test starts
and stops its own (`hogging()`), so that every trial runs on a machine with no idle core.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

SPIN = "while True: pass"


def start(per_core: int = 1) -> list[subprocess.Popen[bytes]]:
    """One busy process per core (times `per_core`)."""
    return [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(per_core * (os.cpu_count() or 1))]


def stop(hogs: list[subprocess.Popen[bytes]]) -> None:
    """Stop exactly the processes `start` made."""
    for hog in hogs:
        if hog.poll() is None:
            hog.kill()
    for hog in hogs:
        hog.wait()


@contextlib.contextmanager
def hogging(per_core: int = 1) -> Iterator[list[subprocess.Popen[bytes]]]:
    hogs = start(per_core)
    try:
        yield hogs
    finally:
        stop(hogs)


def main(argv: list[str]) -> int:
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # stop the hogs too
    with hogging() as hogs:
        print(f"hog: {len(hogs)} busy processes (pids {', '.join(str(h.pid) for h in hogs)})", flush=True)
        if not command:
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
            return 0
        return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
