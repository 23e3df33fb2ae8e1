"""Fault injection for crash-safety tests: named checkpoints where a run can be killed.

With `PIPELINE_FAULT=<pattern>` set (fnmatch, e.g. `stage:bake:before` or `local-stack:batch-*`),
the process kills itself with SIGKILL at the first checkpoint whose name matches: no cleanup, no
finally blocks, exactly like a lost machine. `PIPELINE_FAULT_SKIP=N` lets N matching checkpoints
pass first (to land in the middle of a loop). Unset, a checkpoint costs one dict lookup.
"""

from __future__ import annotations

import fnmatch
import os
import signal

ENV = "PIPELINE_FAULT"
SKIP_ENV = "PIPELINE_FAULT_SKIP"
_passed: list[str] = []  # matching checkpoints let through so far (PIPELINE_FAULT_SKIP)


def checkpoint(name: str) -> None:
    pattern = os.environ.get(ENV)
    if not pattern or not fnmatch.fnmatchcase(name, pattern):
        return
    if len(_passed) < int(os.environ.get(SKIP_ENV, "0") or 0):
        _passed.append(name)
        return
    os.kill(os.getpid(), signal.SIGKILL)
