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

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import REPO
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
WORKERS = int(os.environ.get("PIPELINE_RELIABILITY_WORKERS", "2"))
"""Scenarios played at once (each is a chain of real runs that mostly waits on Docker)."""


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
    template: str | None = None
    """Another template for the project (relative to the repository), e.g. one with a flag store."""
    tree: bool = False
    """Kill the run's child processes too (Packer and its helpers), not the pipeline alone."""
    leaves_image: bool = False
    """The kill lands where an image exists that nothing tags yet: it must leave one (else the
    scenario missed its window), and the re-run must remove it."""
    leaves_builder: bool = False
    """The kill must leave Packer's build container (the re-run must remove it)."""


FLAG_TEMPLATE = "examples/feature-flags/templates/web.yaml"
"""The reference template plus a flag store (an ElastiCache replication group: a Redis master and two replicas)."""
TEST = "*-test-*"
PRODUCTION = "*-production"
SCENARIOS = [
    Scenario("k01", "first release, after commit-test", "stage:commit-test:after", "after commit-test",
             first_release=True, version=V1, redone=("commit-test",)),
    Scenario("k02", "mid-bake: Packer provisioning (apt-get)", "packer:bake:provisioning", "bake", skip=8,
             version=f"2.0.1-{SESSION}"),
    Scenario("k03", "mid-bake: image built and checked, not tagged", "bake:bake:checked", "bake",
             version=f"2.0.2-{SESSION}", leaves_image=True),
    Scenario("k03a", "mid-bake: Packer committing its build container", "packer:bake:committing", "bake",
             version=f"2.0.3-{SESSION}", leaves_image=True),
    Scenario("k03b", "mid-bake: Packer committing, whole process tree killed", "packer:bake:committing", "bake",
             version=f"2.0.4-{SESSION}", tree=True, leaves_builder=True),
    Scenario("k03c", "mid-bake: the label layer being made", "bake:bake:labelling", "bake",
             version=f"2.0.5-{SESSION}", leaves_image=True),
    Scenario("k03d", "mid-bake: label layer made, not in the journal", "bake:bake:labelled", "bake",
             version=f"2.0.6-{SESSION}", leaves_image=True),
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
    Scenario("k16", "first release with a flag store: its master started, no replica yet",
             f"local-stack:{PRODUCTION}:flag-store:master-started", "promote", first_release=True, version=V1,
             template=FLAG_TEMPLATE),
    Scenario("k17", "test stack with a flag store: store ready, no web replica yet",
             f"local-stack:{TEST}:flag-store:ready", "test-stack", template=FLAG_TEMPLATE),
]  # fmt: skip


def _killed_in(statuses: dict[str, str]) -> str:
    running = [name for name in STAGES if statuses.get(name) == "running"]
    if running:
        return running[0]
    done = [name for name in STAGES if statuses.get(name) in OK]
    return f"after {done[-1]}" if done else "before any stage"


@dataclass
class Outcome:
    """What happened in one scenario (played in a worker thread; the test asserts on it)."""

    scenario: Scenario
    error: BaseException | None = None
    killed_rc: int | None = None
    killed_output: str = ""
    killed_in: str = ""
    dead_statuses: dict[str, str] = field(default_factory=dict)
    left: str = ""
    rerun: subprocess.CompletedProcess[str] | None = None
    statuses: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    max_test_stacks: int = 0
    max_production_lbs: int = 0
    samples: int = 0
    seconds: tuple[float, float] = (0.0, 0.0)
    dangling_after: list[str] = field(default_factory=list)
    untagged_at_kill: list[str] = field(default_factory=list)
    builders_at_kill: int = 0


def play(scenario: Scenario, make: ProjectMaker, client: Any) -> Outcome:
    """Set the scenario up, kill the run at its checkpoint, run it again, and look at the result."""
    outcome = Outcome(scenario)
    try:
        project = make(scenario.ident, V1)
        if scenario.template is not None:
            (project.root / "templates" / "web.yaml").write_text((REPO / scenario.template).read_text())
            project.git("commit", "-qam", "a template with a flag store")
        if scenario.first_release:
            if scenario.version != V1:
                project.release(scenario.version)
        else:
            setup = project.run("run", "local", "--yes")
            if setup.returncode != 0:
                raise AssertionError(f"setup run failed\n{explain(setup)}")
            project.release(scenario.version)
        with stopwatch() as until_kill:
            killed = project.run(
                "run",
                "local",
                "--yes",
                PIPELINE_FAULT=scenario.fault,
                PIPELINE_FAULT_SKIP=str(scenario.skip),
                PIPELINE_FAULT_TREE="1" if scenario.tree else "0",
            )
        outcome.killed_rc, outcome.killed_output = killed.returncode, explain(killed)
        if killed.returncode != -signal.SIGKILL:
            return outcome
        outcome.dead_statuses = project.statuses(project.last_run())
        outcome.killed_in = _killed_in(outcome.dead_statuses)
        left = inventory(client, project.name).summary()
        builders = packer_containers(client, project.root)
        outcome.builders_at_kill = len(builders)
        if builders:
            left += f"; {len(builders)} Packer build container"
        untagged = dangling_images(client, scenario.version, wait=scenario.leaves_image)
        outcome.untagged_at_kill = untagged
        if untagged:
            left += f"; {len(untagged)} untagged image"
        outcome.left = left
        with Watch(client, project) as watch, stopwatch() as rerun_time:
            outcome.rerun = project.run("run", "local", "--yes")
        outcome.statuses = project.statuses(project.run_of(outcome.rerun))
        outcome.problems = convergence_problems(project, client, scenario.version)
        outcome.max_test_stacks, outcome.max_production_lbs = watch.max_test_stacks, watch.max_production_lbs
        outcome.samples = watch.samples
        outcome.seconds = (until_kill[0], rerun_time[0])
        outcome.dangling_after = dangling_images(client, scenario.version)
    except BaseException as exc:  # reported by the scenario's test
        outcome.error = exc
    return outcome


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, make: ProjectMaker, baked: dict[str, str], docker_tools: Any
) -> dict[str, Outcome]:
    """Every selected scenario, played WORKERS at a time (each has its own project and pipeline name,
    so they cannot see each other; the machine has cores to spare while a run waits on Docker)."""
    selected = [
        item.callspec.params["scenario"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_a_run_killed_here_converges_when_run_again"
    ]
    slow_first = sorted(selected, key=lambda s: (not s.ident.startswith(("k02", "k03")), s.ident))  # they bake
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="scenario") as pool:
        played = list(pool.map(lambda s: play(s, make, docker_tools), slow_first))
    return {o.scenario.ident: o for o in played}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[f"{s.ident}-{s.fault}" for s in SCENARIOS])
def test_a_run_killed_here_converges_when_run_again(scenario: Scenario, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[scenario.ident]
    if outcome.error is not None:
        raise outcome.error
    rerun = outcome.rerun
    problems = outcome.problems
    statuses = outcome.statuses
    redone = [n for n in STAGES if statuses.get(n) == "succeeded"]
    report(
        TABLE,
        scenario=f"{scenario.ident} {scenario.where}",
        checkpoint=scenario.fault + (f" (skip {scenario.skip})" if scenario.skip else ""),
        killed_in=outcome.killed_in,
        left_at_kill=outcome.left,
        rerun=(f"exit {rerun.returncode} in {outcome.seconds[1]:.0f}s; " if rerun else "")
        + f"ran {', '.join(redone) or 'nothing'}",
        max_at_once=f"{outcome.max_test_stacks} test stack, {outcome.max_production_lbs} prod lb",
        after=("production serves " + scenario.version.split("-")[0] + ", no orphans")
        if not problems and rerun is not None and rerun.returncode == 0
        else f"PROBLEMS: {problems[:2]}",
        seconds=f"{outcome.seconds[0]:.0f}+{outcome.seconds[1]:.0f}",
    )
    assert outcome.killed_rc == -signal.SIGKILL, f"the run was not killed at {scenario.fault}\n{outcome.killed_output}"
    assert outcome.killed_in == scenario.killed_in, outcome.dead_statuses
    if scenario.leaves_image:
        assert outcome.untagged_at_kill, f"the kill at {scenario.fault} left no untagged image: the window was missed"
    if scenario.leaves_builder:
        assert outcome.builders_at_kill, f"the kill at {scenario.fault} left no Packer build container: window missed"
    assert rerun is not None
    assert rerun.returncode == 0, explain(rerun)
    assert set(statuses.values()) <= set(OK), statuses
    assert not problems, "\n".join(problems)
    assert outcome.samples > 0
    assert outcome.max_test_stacks <= 1, f"{outcome.max_test_stacks} test stacks existed at once during the re-run"
    assert outcome.max_production_lbs <= 1, "two production balancers existed at once"
    for stage in scenario.redone:
        assert statuses[stage] == "up-to-date", f"{stage} was done before the kill, and done again: {statuses}"
    assert outcome.dangling_after == [], f"untagged images of the dead bake are left: {outcome.dangling_after}"


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
