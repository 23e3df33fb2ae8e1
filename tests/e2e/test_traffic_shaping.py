"""Traffic shaping at the local balancer, end to end, with simulated users that keep their cookies:

- a dark launch of a broken release: the new version gets a mirror of the live traffic and is
  judged on its own answers; the breach is caught before any user reaches it: no user request
  fails and no user ever sees the new version; a healthy dark launch goes on with its `then`
  strategy, and no user meets the new version before the dark window passed;
- a sticky canary: each simulated user sees one version for the whole of each step (checked per
  user, between the step's routing and the next), and a user on the new version stays there;
- a phased rollout by groups (a header, a cookie): each group reaches the new version only in
  its phase, everyone else only at the end; a release that breaks is caught in the first phase,
  and only that group's users ever met it;
- a dark launch killed while mirroring: the next deploy removes the dark set and starts over.

Real Docker and nginx (the balancer image), web images built here from it (tests/e2e/
test_strategies.py's fixtures). The tests wait on observable events (the engine's own progress
lines, answers counted per user), never on time alone. No absolute time is asserted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.docker_client import LABEL_PREFIX
from pipeline.engines.user_load import User, UserLoad, UserSample
from pipeline.errors import HealthBreachError
from pipeline.strategy import Canary, DarkLaunch, Group, Phased
from tests.conftest import cli_env, init_reference_service, need
from tests.e2e.test_strategies import (  # the fixtures: web images v1, v2, bad; an engine; fresh stacks
    HEALTH,
    REPO,
    Case,
    Events,
    Fresh,
    engine,
    fresh,
    images,
    pipeline_name,
    template,
)

pytestmark = pytest.mark.e2e

__all__ = ["engine", "fresh", "images", "pipeline_name", "template"]  # fixtures of this module too

RATE = 60.0
"""Requests per second of all simulated users together."""
INTERNAL = Group(name="internal", header="X-User-Group", values=("internal",))
BETA = Group(name="beta", cookie="beta", values=("1",))
WAIT = 120.0
"""Longest wait for an observable event (a busy machine); a test that hits it fails."""


def _version(sample: UserSample) -> str:
    return sample.body.strip().rsplit(" ", 1)[-1] if sample.ok else f"<{sample.status or sample.error}>"


def _replicas(client: Any, pipeline: str, stack: str) -> list[Any]:
    selector = [f"{LABEL_PREFIX}.pipeline={pipeline}", f"{LABEL_PREFIX}.stack={stack}", f"{LABEL_PREFIX}.role=replica"]
    return list(client.containers.list(all=True, filters={"label": selector}))


# --- dark launch ------------------------------------------------------------------------------------


def test_a_dark_launch_catches_a_broken_release_before_any_user_reaches_it(
    engine: Any, fresh: Fresh, images: dict[str, str], docker_client: Any, pipeline_name: str
) -> None:
    strategy = DarkLaunch(observe_seconds=1.5, then=Canary(steps=(10, 100), observe_seconds=1.5))
    stack, state = fresh(Case(strategy), images["v1"])
    assert state.url is not None
    users = [User(f"user-{i}") for i in range(10)]
    events = Events()
    with UserLoad(state.url, users, rate=RATE) as load:
        with pytest.raises(HealthBreachError) as caught:
            engine.deploy(stack, images["bad"], strategy=strategy, health=HEALTH, on_event=events)
        after = len(load.samples)
        while len(load.samples) < after + 10:  # a few answers after the rollback too
            time.sleep(0.05)
    report = caught.value.report
    assert report is not None
    assert report.strategy == "dark-launch"
    # Caught in the dark window, on the new version's own (mirrored) answers.
    [step] = report.steps
    assert step.verdict == "breach"
    assert step.what.startswith("dark launch:")
    assert step.new_share == 0.0
    assert step.new.requests >= HEALTH.min_requests
    assert step.new.errors > 0
    assert "error rate" in report.breach
    assert report.time_to_detect is not None
    assert report.time_to_detect > 0
    # The users: no request failed, none ever saw the new version.
    assert load.samples, "no user request at all"
    assert {_version(s) for s in load.samples} == {"v1"}, {_version(s) for s in load.samples}
    assert report.served is not None
    assert report.served.errors == 0  # the balancer's own count of what users (and the probe) got
    # The stack: the old version, whole; the dark set gone.
    assert engine.describe(stack).image == images["v1"]
    running = [r for r in _replicas(docker_client, pipeline_name, stack) if r.status == "running"]
    assert {r.labels[f"{LABEL_PREFIX}.image"] for r in running} == {images["v1"]}
    assert any(" mirrors to " in text for _, text in events.lines)


def test_a_healthy_dark_launch_goes_on_with_its_then_strategy_after_the_dark_window(
    engine: Any, fresh: Fresh, images: dict[str, str]
) -> None:
    strategy = DarkLaunch(observe_seconds=1.5, then=Canary(steps=(50, 100), observe_seconds=1.5))
    stack, state = fresh(Case(strategy), images["v1"])
    assert state.url is not None
    users = [User(f"user-{i}") for i in range(10)]
    events = Events()
    with UserLoad(state.url, users, rate=RATE) as load:
        after = engine.deploy(stack, images["v2"], strategy=strategy, health=HEALTH, on_event=events)
        count = len(load.samples)
        while len(load.samples) < count + 10:
            time.sleep(0.05)
    report = after.report
    assert report is not None
    assert [(s.what.split(":")[0], s.verdict) for s in report.steps] == [
        ("dark launch", "passed"),
        ("canary 50%", "passed"),
        ("canary 100%", "passed"),
    ]
    assert after.image == images["v2"]
    # No user met the new version before its dark window passed; none failed.
    passed = events.first(r"^dark launch: .*: healthy")
    new_answers = [s for s in load.samples if _version(s) == "v2"]
    assert new_answers, "no user reached the new version after the rollout"
    assert min(s.ended for s in new_answers) >= passed
    assert all(s.ok for s in load.samples), {_version(s) for s in load.samples if not s.ok}


def test_a_dark_launch_killed_while_mirroring_is_started_over_by_the_next_deploy(
    engine: Any, fresh: Fresh, images: dict[str, str], docker_client: Any, pipeline_name: str, template: Path
) -> None:
    """SIGKILL while the balancer mirrors to the dark set: users still only reach the old version;
    the next deploy removes the dark set (it was never judged to the end) and starts over."""
    strategy = DarkLaunch(observe_seconds=1.0, then=Canary(steps=(100,), observe_seconds=1.0))
    stack, state = fresh(Case(strategy), images["v1"])
    script = (
        "from pathlib import Path\n"
        "from pipeline.engines.docker_stack import DockerStackEngine\n"
        "from pipeline.strategy import DarkLaunch, Health\n"
        f"DockerStackEngine(pipeline={pipeline_name!r}, template=Path({str(template)!r}))"
        f".deploy({stack!r}, {images['v2']!r}, strategy=DarkLaunch(), health=Health())\n"
    )
    assert state.url is not None
    users = [User(f"user-{i}") for i in range(5)]
    with UserLoad(state.url, users, rate=RATE) as load:
        killed = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PIPELINE_FAULT": f"local-stack:{stack}:dark:mirrored"},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        left = engine.describe(stack)
        assert sorted(left.details["in_service"].split(",")) == sorted(
            r.name
            for r in _replicas(docker_client, pipeline_name, stack)
            if r.labels[f"{LABEL_PREFIX}.image"] == images["v1"]
        ), "the dark set must not be in service"
        count = len(load.samples)
        while len(load.samples) < count + 10:  # users keep being answered, by the old version only
            time.sleep(0.05)
        assert {_version(s) for s in load.samples} == {"v1"}
        events = Events()
        finished = engine.deploy(stack, images["v2"], strategy=strategy, health=HEALTH, on_event=events)
    assert any("removing the dark set an interrupted dark launch left" in t for _, t in events.lines), events.text()
    assert finished.image == images["v2"]
    assert finished.report is not None
    assert [s.verdict for s in finished.report.steps] == ["passed", "passed"]
    assert all(s.ok for s in load.samples), {_version(s) for s in load.samples if not s.ok}
    running = [r for r in _replicas(docker_client, pipeline_name, stack) if r.status == "running"]
    assert len(running) == 2
    assert {r.labels[f"{LABEL_PREFIX}.image"] for r in running} == {images["v2"]}


# --- sticky canary ------------------------------------------------------------------------------------


def test_a_sticky_canary_keeps_each_user_on_one_version_for_the_whole_step(
    engine: Any, fresh: Fresh, images: dict[str, str]
) -> None:
    strategy = Canary(steps=(25, 50, 100), observe_seconds=1.5, sticky=True)
    stack, state = fresh(Case(strategy), images["v1"])
    assert state.url is not None
    users = [User(f"user-{i:02}") for i in range(30)]
    load = UserLoad(state.url, users, rate=RATE)
    events = Events()

    def every_user_answered_twice_since(since: float) -> bool:
        counts = dict.fromkeys((u.name for u in users), 0)
        for sample in list(load.samples):
            if sample.started >= since:
                counts[sample.user] += 1
        return min(counts.values()) >= 2

    def on_event(text: str) -> None:
        """Before the next step changes the routing, every user has had two answers in this one
        (a busy machine may starve the load client: wait for its answers, not for time)."""
        routed = [at for at, line in events.lines if "each user stays on one version" in line]
        events(text)
        if routed and ("splitting users by their cookie" in text or "canary 100%: routing" in text):
            deadline = time.monotonic() + WAIT
            while not every_user_answered_twice_since(routed[-1]) and time.monotonic() < deadline:
                time.sleep(0.05)

    with load:
        after = engine.deploy(stack, images["v2"], strategy=strategy, health=HEALTH, on_event=on_event)
        count = len(load.samples)
        while len(load.samples) < count + 10:
            time.sleep(0.05)
    report = after.report
    assert report is not None
    assert [(round(s.new_share, 2), s.verdict) for s in report.steps] == [
        (0.25, "passed"),
        (0.5, "passed"),
        (1.0, "passed"),
    ]
    # Each step: from its routing until the next step's routing begins.
    routed = [at for at, text in events.lines if "each user stays on one version" in text]
    changes = [
        at for at, text in events.lines if "splitting users by their cookie" in text or "canary 100%: routing" in text
    ]
    assert len(routed) == 2
    on_new: list[set[str]] = []
    for start in routed:
        end = min(at for at in changes if at > start)
        seen: dict[str, set[str]] = {}
        for sample in load.samples:
            if start <= sample.started and sample.ended <= end:
                seen.setdefault(sample.user, set()).add(_version(sample))
        assert set(seen) == {u.name for u in users}, "a user without answers in a step"
        mixed = {user: versions for user, versions in seen.items() if len(versions) > 1}
        assert not mixed, f"users who saw both versions within a step: {mixed}"
        on_new.append({user for user, versions in seen.items() if versions == {"v2"}})
    assert on_new[0] <= on_new[1], "a user on the new version went back to the old one at the next step"
    assert 0 < len(on_new[0]) < len(on_new[1]) < len(users), (len(on_new[0]), len(on_new[1]))
    assert all(s.ok for s in load.samples)


# --- phased rollout by groups ------------------------------------------------------------------------------


def _phase_users() -> list[User]:
    return (
        [User(f"internal-{i}", headers={"X-User-Group": "internal"}) for i in range(4)]
        + [User(f"beta-{i}", cookies={"beta": "1"}) for i in range(4)]
        + [User(f"other-{i}") for i in range(6)]
    )


def _group_of(user: str) -> str:
    return user.split("-", 1)[0]


def test_a_phased_rollout_reaches_each_group_only_in_its_phase(
    engine: Any, fresh: Fresh, images: dict[str, str]
) -> None:
    strategy = Phased(groups=(INTERNAL, BETA), observe_seconds=1.5)
    stack, state = fresh(Case(strategy), images["v1"])
    assert state.url is not None
    users = _phase_users()
    events = Events()
    with UserLoad(state.url, users, rate=RATE) as load:
        after = engine.deploy(stack, images["v2"], strategy=strategy, health=HEALTH, on_event=events)
        count = len(load.samples)
        while len(load.samples) < count + 20:
            time.sleep(0.05)
    report = after.report
    assert report is not None
    assert report.strategy == "phased"
    assert [s.verdict for s in report.steps] == ["passed", "passed", "passed"]
    assert after.image == images["v2"]
    # The engine's phase boundaries: announced before each reload, and after it.
    starts = {g: events.first(rf"^phase \d+: {names} on .*: routing$") for g, names in _phase_names()}
    routed = {g: events.first(rf"^phase \d+: {names} on .*: routed$") for g, names in _phase_names()}
    for sample in load.samples:
        group = _group_of(sample.user)
        if _version(sample) == "v2":  # the new version, only once this group's phase began
            assert sample.ended >= starts[group], (sample, group)
        if sample.started >= routed[group]:  # and from its routing on, always the new version
            assert _version(sample) == "v2", (sample, group)
    assert all(s.ok for s in load.samples)
    # The balancer's own count per group agrees: in phase 1 no beta request reached the new version.
    phase1 = dict((name, new) for name, new, _ in report.steps[0].groups)
    assert phase1["internal"].requests > 0
    assert phase1["beta"].requests == 0
    assert phase1[""].requests == 0
    phase2 = dict((name, new) for name, new, _ in report.steps[1].groups)
    assert phase2["beta"].requests > 0
    assert phase2[""].requests == 0


def _phase_names() -> list[tuple[str, str]]:
    """(user group, the phase's group list as the engine names it)."""
    return [("internal", "internal"), ("beta", "internal, beta"), ("other", "everyone")]


def test_a_release_that_breaks_in_the_first_phase_reaches_only_that_groups_users(
    engine: Any, fresh: Fresh, images: dict[str, str]
) -> None:
    strategy = Phased(groups=(INTERNAL, BETA), observe_seconds=1.5)
    stack, state = fresh(Case(strategy), images["v1"])
    assert state.url is not None
    users = _phase_users()
    with UserLoad(state.url, users, rate=RATE) as load:
        with pytest.raises(HealthBreachError) as caught:
            engine.deploy(stack, images["bad"], strategy=strategy, health=HEALTH)
        count = len(load.samples)
        while len(load.samples) < count + 20:
            time.sleep(0.05)
    report = caught.value.report
    assert report is not None
    assert [s.verdict for s in report.steps] == ["breach"]
    assert report.steps[0].what.startswith("phase 1: internal on ")
    met = {_group_of(s.user) for s in load.samples if _version(s) in ("bad", "<500>")}
    assert met <= {"internal"}, met  # beta and everyone else never met the bad release
    assert engine.describe(stack).image == images["v1"]
    assert {_version(s) for s in load.samples[-10:]} == {"v1"}


@pytest.fixture(autouse=True)
def _no_lingering_threads() -> Iterator[None]:
    yield
    assert not [t for t in threading.enumerate() if t.name in ("user-load",) and t.is_alive()]


# --- what the aws profile refuses, through the CLI ------------------------------------------------------


def test_validate_refuses_a_dark_launch_on_the_aws_profile_naming_the_feature_and_takes_it_locally(
    tmp_path: Path,
) -> None:
    """`pipeline validate --profile aws` (the preflight a run makes) refuses a dark launch with
    exit 2 and says why (an ALB cannot mirror); the local profile takes the same definition."""
    need(shutil.which("packer") is not None, "packer is not installed (apt-get install -y packer)")
    need(shutil.which("cfn-lint") is not None, "cfn-lint is not installed (pip install cfn-lint)")
    root = init_reference_service(tmp_path / "hello-web")
    definition = root / "pipelinefile.py"
    text = definition.read_text()
    promote = 'Promote(name="promote", environment="production", image=bake, verify=page)'
    assert promote in text
    text = text.replace("    Approval,\n", "    Approval,\n    DarkLaunch,\n", 1)
    definition.write_text(text.replace(promote, promote[:-1] + ", strategy=DarkLaunch(observe_seconds=30))"))

    def validate(profile: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", "validate", "--profile", profile],
            cwd=root,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    refused = validate("aws")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "the aws profile cannot carry out dark-launch" in refused.stderr
    assert "cannot mirror requests" in refused.stderr
    assert "Traceback" not in refused.stderr
    accepted = validate("local")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
