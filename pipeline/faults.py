"""Fault injection for crash-safety tests: named checkpoints where a run can be killed.

With `PIPELINE_FAULT=<pattern>` set (fnmatch, e.g. `stage:bake:before` or `local-stack:*:batch-*`),
the process kills itself with SIGKILL at the first checkpoint whose name matches: no cleanup, no
finally blocks, exactly like a lost machine. `PIPELINE_FAULT_SKIP=N` lets N matching checkpoints
pass first (to land in the middle of a loop). `PIPELINE_FAULT_TREE=1` kills the process's children
first (Packer, the docker CLI it runs), as a lost machine or a CI agent that kills the job's whole
process tree would; without it they live on, as after `kill -9` of the pipeline alone. Unset, a
checkpoint costs one dict lookup.

Names say where they are and what they act on, so a pattern can aim at one stage or stack:

    stage:<stage>:before / stage:<stage>:after        the runner, around each stage
    packer:<stage>:provisioning                       each line Packer prints while it provisions
    packer:<stage>:committing                         the docker builder starts committing its container
    bake:<stage>:built                                Packer's image exists (in the bake's journal)
    bake:<stage>:labelling / bake:<stage>:labelled    the label layer is being made / exists, untracked
    bake:<stage>:checked                              the checks passed, the image is not tagged yet
    local-stack:<stack>:create:replica-started        each replica a stack creation starts
    local-stack:<stack>:create:launched               every replica of a new stack is healthy
    local-stack:<stack>:batch-<n>:launched            a rolling update's batch n is healthy
    local-stack:<stack>:batch-<n>:routed              ... and the balancer routes to it
    local-stack:<stack>:canary-<percent>:routed       a canary step's weights are in the balancer
    local-stack:<stack>:green:launched / :switched    blue-green: the new set is healthy / serves
    local-stack:<stack>:cutover:stopped / :routed     cutover: the old set is gone / the new serves
    local-stack:<stack>:database:restored             a new stack's database holds the snapshot, unmasked
    migrate:<stage>:<revision>:uncommitted            a migration revision ran, its transaction not committed
    local-stack:<stack>:flag-store:master-started     the flag store's master is started (replicas not yet)
    local-stack:<stack>:flag-store:ready              the store answers and its replicas follow (not seeded)

docs/reliability.md lists the scenarios the tests build from them.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import signal
from pathlib import Path

ENV = "PIPELINE_FAULT"
SKIP_ENV = "PIPELINE_FAULT_SKIP"
TREE_ENV = "PIPELINE_FAULT_TREE"
_passed: list[str] = []  # matching checkpoints let through so far (PIPELINE_FAULT_SKIP)


def checkpoint(name: str, *aliases: str) -> None:
    """Die here if `PIPELINE_FAULT` matches `name` (or one of its older `aliases`)."""
    pattern = os.environ.get(ENV)
    if not pattern or not any(fnmatch.fnmatchcase(n, pattern) for n in (name, *aliases)):
        return
    if len(_passed) < int(os.environ.get(SKIP_ENV, "0") or 0):
        _passed.append(name)
        return
    if os.environ.get(TREE_ENV, "") not in ("", "0"):
        for child in descendants(os.getpid()):
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc; none elsewhere), children before grandchildren."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1].isdigit():
            parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    wave = [pid]
    while wave:
        wave = [child for child, parent in parents.items() if parent in wave and child not in found]
        found += wave
    return found
