"""Kill `pipeline run local` anywhere with SIGKILL, re-run it, and it converges.

Each scenario takes its own copy of the reference service (real Packer bake, real containers
behind a real nginx balancer, 2 replicas as the template says), usually with production already
running release 1 and release 2 on the way, and kills the run at one named checkpoint
(`PIPELINE_FAULT`, see pipeline/faults.py): no cleanup at all, exactly like a lost machine.
Then it runs `pipeline run local --yes` again and requires:

- the re-run succeeds, and production serves the new release through its balancer;
- nothing is duplicated: while the re-run goes on, at most one test stack and one production
  balancer exist at any moment (a watcher samples the engine every 0.1 s); afterwards exactly
  one balancer and the template's replica count;
- nothing is orphaned: every container, network and image of the pipeline is production's or
  accounted for by the ledger; no Packer build container, bake journal, held or stale lock file;
  no run manifest that still says `running` or `pending` (a dead run is marked as such).

A last test interrupts a run with SIGINT (Ctrl-C) during the update of the test stack: it tears
the stack down before it exits with 130. The table of scenarios is printed at the end of the
session (see conftest.py).
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.reliability.conftest import ProjectMaker
from tests.reliability.harness import (
    SESSION,
    STAGES,
    V1,
    V2,
    Watch,
    convergence_problems,
    dangling_images,
    explain,
    inventory,
    packer_containers,
    report,
    stopwatch,
)

pytestmark = pytest.mark.e2e

OK = ("succeeded", "up-to-date")
TABLE = "kill -9 anywhere, then re-run"


@dataclass(frozen=True)
class Scenario:
    ident: str
    where: str
    """Where the run dies, in words (the table's first column)."""
    fault: str
    """PIPELINE_FAULT pattern."""
    killed_in: str
    """The stage running when it dies (`after X` when it dies between stages)."""
    skip: int = 0
    first_release: bool = False
    """No production yet: the killed run is the very first release."""
    version: str = V2
    redone: tuple[str, ...] = ()
    """Stages the re-run must not run again (their result survived the kill)."""


TEST = "*-test-*"
PRODUCTION = "*-production"
SCENARIOS = [
    Scenario("k01", "first release, after commit-test", "stage:commit-test:after", "after commit-test",
             first_release=True, version=V1, redone=("commit-test",)),
    Scenario("k02", "mid-bake: Packer provisioning (apt-get)", "packer:bake:provisioning", "bake", skip=8,
             version=f"2.0.1-{SESSION}"),
    Scenario("k03", "mid-bake: image built and checked, not tagged", "bake:bake:checked", "bake",
             version=f"2.0.2-{SESSION}"),
    Scenario("k04", "after the bake", "stage:bake:after", "after bake", redone=("bake",)),
    Scenario("k05", "mid test-stack creation (a replica started)", f"local-stack:{TEST}:create:replica-started",
             "test-stack"),
    Scenario("k06", "test stack created and verified", "stage:test-stack:after", "after test-stack"),
    Scenario("k07", "mid rolling update of the test stack (batch 1 healthy)", f"local-stack:{TEST}:batch-1:launched",
             "update-stack"),
    Scenario("k08", "update verified", "stage:update-stack:after", "after update-stack"),
    Scenario("k09", "mid simulated rollback (batch 1 routed)", f"local-stack:{TEST}:batch-1:routed", "rollback",
             skip=1),
    Scenario("k10", "before teardown", "stage:teardown:before", "teardown"),
    Scenario("k11", "promote approved, nothing changed yet", "stage:promote:before", "promote"),
    Scenario("k12", "mid promote: new replica healthy, not routed", f"local-stack:{PRODUCTION}:batch-1:launched",
             "promote"),
    Scenario("k13", "mid promote: production mixed (batch 1 routed)", f"local-stack:{PRODUCTION}:batch-1:routed",
             "promote"),
    Scenario("k14", "first release: mid production creation", f"local-stack:{PRODUCTION}:create:replica-started",
             "promote", first_release=True, version=V1),
    Scenario("k15", "after promote", "stage:promote:after", "after promote", redone=("promote", "bake")),
]  # fmt: skip


def _killed_in(statuses: dict[str, str]) -> str:
    running = [name for name in STAGES if statuses.get(name) == "running"]
    if running:
        return running[0]
    done = [name for name in STAGES if statuses.get(name) in OK]
    return f"after {done[-1]}" if done else "before any stage"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[f"{s.ident}-{s.fault}" for s in SCENARIOS])
def test_a_run_killed_here_converges_when_run_again(
    scenario: Scenario, make: ProjectMaker, baked: dict[str, str], docker_tools: Any
) -> None:
    client = docker_tools
    project = make(scenario.ident, V1)
    if scenario.first_release:
        if scenario.version != V1:
            project.release(scenario.version)
    else:
        setup = project.run("run", "local", "--yes")
        assert setup.returncode == 0, explain(setup)
        project.release(scenario.version)

    with stopwatch() as until_kill:
        killed = project.run(
            "run", "local", "--yes", PIPELINE_FAULT=scenario.fault, PIPELINE_FAULT_SKIP=str(scenario.skip)
        )
    assert killed.returncode == -signal.SIGKILL, f"the run was not killed at {scenario.fault}\n{explain(killed)}"
    dead = project.last_run()
    where = _killed_in(project.statuses(dead))
    assert where == scenario.killed_in, project.statuses(dead)
    left = inventory(client, project.name).summary()
    builders = packer_containers(client, project.root)
    if builders:
        left += f"; {len(builders)} Packer build container"
    untagged = dangling_images(client, scenario.version)
    if untagged:
        left += f"; {len(untagged)} untagged image"

    with Watch(client, project) as watch, stopwatch() as rerun_time:
        rerun = project.run("run", "local", "--yes")
    statuses = project.statuses()
    redone = [n for n in STAGES if statuses.get(n) == "succeeded"]
    problems = convergence_problems(project, client, scenario.version)
    report(
        TABLE,
        scenario=f"{scenario.ident} {scenario.where}",
        checkpoint=scenario.fault + (f" (skip {scenario.skip})" if scenario.skip else ""),
        killed_in=where,
        left_at_kill=left,
        rerun=f"exit {rerun.returncode} in {rerun_time[0]:.0f}s; ran {', '.join(redone) or 'nothing'}",
        max_at_once=f"{watch.max_test_stacks} test stack, {watch.max_production_lbs} prod lb",
        after=("production serves " + scenario.version.split("-")[0] + ", no orphans")
        if not problems and rerun.returncode == 0
        else f"PROBLEMS: {problems[:2]}",
        seconds=f"{until_kill[0]:.0f}+{rerun_time[0]:.0f}",
    )

    assert rerun.returncode == 0, explain(rerun)
    assert set(statuses.values()) <= set(OK), statuses
    assert not problems, "\n".join(problems)
    assert watch.samples > 0
    assert watch.max_test_stacks <= 1, f"{watch.max_test_stacks} test stacks existed at once during the re-run"
    assert watch.max_production_lbs <= 1, "two production balancers existed at once"
    for stage in scenario.redone:
        assert statuses[stage] == "up-to-date", f"{stage} was done before the kill, and done again: {statuses}"
    assert dangling_images(client, scenario.version) == [], "Packer's image of a dead bake is left"


def test_ctrl_c_during_the_test_stack_update_tears_it_down_and_exits_130(
    make: ProjectMaker, baked: dict[str, str], docker_tools: Any
) -> None:
    """SIGINT (what Ctrl-C sends) while the rolling update of the test stack is under way."""
    client = docker_tools
    project = make("sigint", V1)
    setup = project.run("run", "local", "--yes")
    assert setup.returncode == 0, explain(setup)
    project.release(V2)
    proc = project.popen("run", "local", "--yes")
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        for line in proc.stdout:  # wait until the update of the test stack is under way
            seen.append(line)
            if line.startswith("[update-stack] starting "):
                break
        else:
            pytest.fail("the run ended before update-stack started a replica:\n" + "".join(seen[-40:]))
        stack = next(s for s in {c.labels.get("io.pipeline.stack") for c in inventory(client, project.name).containers}
                     if s and s.startswith(project.test_prefix))  # fmt: skip
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(seen) + out
    assert proc.returncode == 130, f"exit {proc.returncode}\n{output[-4000:]}\n{err[-2000:]}"
    statuses = project.statuses()
    assert statuses["update-stack"] == "interrupted", statuses
    assert statuses["promote"] == "skipped", statuses
    assert statuses["teardown"] in ("succeeded", "skipped"), statuses
    remaining = inventory(client, project.name)
    assert [c.name for c in remaining.containers if c.labels.get("io.pipeline.stack") == stack] == []
    assert not [n.name for n in remaining.networks if n.name.startswith(project.test_prefix)]
    assert {c.labels.get("io.pipeline.stack") for c in remaining.containers} == {project.production}
    assert f"interrupted: removing the test stack {stack}" in output or f"removing {stack}" in output
    # Production was not touched, and the next run finishes the release.
    time.sleep(0.1)
    rerun = project.run("run", "local", "--yes")
    assert rerun.returncode == 0, explain(rerun)
    problems = convergence_problems(project, client, V2)
    report(
        TABLE,
        scenario="Ctrl-C (SIGINT) during the test stack's rolling update",
        checkpoint="SIGINT after '[update-stack] starting ...'",
        killed_in="update-stack",
        left_at_kill=f"exit {proc.returncode}; test stack {stack.rsplit('-', 1)[-1]} removed before exit",
        rerun=f"exit {rerun.returncode}",
        after="production serves 2.0.0, no orphans" if not problems else f"PROBLEMS: {problems[:2]}",
    )
    assert not problems, "\n".join(problems)
