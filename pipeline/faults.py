"""Fault injection for crash-safety tests: named checkpoints where a run can be killed.

With `PIPELINE_FAULT=<pattern>` set (fnmatch, e.g. `stage:bake:before` or `local-stack:*:batch-*`),
the process kills itself with SIGKILL at the first checkpoint whose name matches: no cleanup, no
finally blocks, exactly like a lost machine. `PIPELINE_FAULT_SKIP=N` lets N matching checkpoints
pass first (to land in the middle of a loop). Unset, a checkpoint costs one dict lookup.

Names say where they are and what they act on, so a pattern can aim at one stage or stack:

    stage:<stage>:before / stage:<stage>:after        the runner, around each stage
    packer:<stage>:provisioning                       each line Packer prints while it provisions
    bake:<stage>:built / bake:<stage>:checked         Packer's image exists / its checks passed
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

import fnmatch
import os
import signal

ENV = "PIPELINE_FAULT"
SKIP_ENV = "PIPELINE_FAULT_SKIP"
_passed: list[str] = []  # matching checkpoints let through so far (PIPELINE_FAULT_SKIP)


def checkpoint(name: str, *aliases: str) -> None:
    """Die here if `PIPELINE_FAULT` matches `name` (or one of its older `aliases`)."""
    pattern = os.environ.get(ENV)
    if not pattern or not any(fnmatch.fnmatchcase(n, pattern) for n in (name, *aliases)):
        return
    if len(_passed) < int(os.environ.get(SKIP_ENV, "0") or 0):
        _passed.append(name)
        return
    os.kill(os.getpid(), signal.SIGKILL)
