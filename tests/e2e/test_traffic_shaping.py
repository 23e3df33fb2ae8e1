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
- a dark launch killed while mirroring: the next deploy removes the dark set and starts over;
- the whole chain from a definition: the reference service's promote with a dark launch then a
  sticky canary, through `pipeline validate` and `pipeline run local` (what the run writes: the
  outputs, the run report's line, the stage's log).

Real Docker and nginx (the balancer image), web images built here from it (tests/e2e/
test_strategies.py's fixtures). The tests wait on observable events (the engine's own progress
lines, answers counted per user), never on time alone. No absolute time is asserted.
"""

from __future__ import annotations

import os
import re
import secrets
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
from pipeline.engines.http_check import LoadClient, request
from pipeline.engines.user_load import User, UserLoad, UserSample
from pipeline.errors import HealthBreachError
from pipeline.ledger import Ledger
from pipeline.strategy import Canary, DarkLaunch, Group, Phased
from tests.conftest import cli_env, commit_all, init_reference_service, need, remove_everything_of
from tests.e2e.test_strategies import (  # the fixtures: web images v1, v2, bad; an engine; fresh stacks
    HEALTH,
    REPO,
    Case,
    Events,
    Fresh,
    UserProject,
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


# --- the whole chain, from a definition ---------------------------------------------------------------

DARK_PROMOTE = (
    "image=bake, verify=page, strategy=DarkLaunch(observe_seconds=1.5, "
    "then=Canary(steps=(50, 100), observe_seconds=1.5, sticky=True)), "
    "health=Health(requests_per_second=100, min_p99_ms=200))"
)
"""The promote's arguments after `name` and `environment`. min_p99_ms is raised (from 20 ms, and
from the 100 ms of test_strategies.py): the dark set answers mirrored copies, cold, on two busy
cores, and this test is about the shape of the rollout, not about latency."""


def _with_dark_promote(text: str) -> str:
    """The reference service's definition with DARK_PROMOTE on its promote."""
    promote = 'Promote(name="promote", environment="production", image=bake, verify=page)'
    assert promote in text, text
    text = text.replace("    Approval,\n", "    Approval,\n    Canary,\n    DarkLaunch,\n    Health,\n", 1)
    text = text.replace(promote, 'Promote(name="promote", environment="production", ' + DARK_PROMOTE, 1)
    assert text.count("strategy=DarkLaunch(") == 1, text
    return text


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-3000:]}"


def _in_order(lines: list[str], patterns: list[str]) -> list[re.Match[str]]:
    """The first line matching each pattern, each after the previous one's; fails naming the
    pattern it could not find (with the whole log)."""
    found: list[re.Match[str]] = []
    start = 0
    for pattern in patterns:
        for index in range(start, len(lines)):
            match = re.search(pattern, lines[index])
            if match is not None:
                found.append(match)
                start = index + 1
                break
        else:
            raise AssertionError(f"no line matches {pattern!r} after line {start}:\n" + "\n".join(lines))
    return found


def test_pipeline_run_local_with_a_dark_launch_then_a_sticky_canary_in_the_definition(
    docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    """The reference service with `strategy=DarkLaunch(..., then=Canary(..., sticky=True))` on its
    promote: `pipeline validate --profile local` takes it; the first release creates production
    (no old version: nothing to shape); the second goes dark first (mirrored requests judged, no
    user routed), then to a sticky split of the users, then to everyone, with no user request
    failing; production ends on the new page, the dark set being the new set (no replica left over)."""
    need(shutil.which("packer") is not None, "packer is not installed (apt-get install -y packer)")
    need(shutil.which("cfn-lint") is not None, "cfn-lint is not installed (pip install cfn-lint)")
    need(shutil.which("git") is not None, "git is not installed")
    name = f"ts-cli-{secrets.token_hex(3)}"
    root = tmp_path / "hello-web"

    project = UserProject(root, tmp_path / "cache")
    run, edit = project.run, project.edit
    init_reference_service(root, name)
    definition = root / "pipelinefile.py"
    definition.write_text(_with_dark_promote(definition.read_text()))
    commit_all(root, "the reference service with a dark launch, then a sticky canary")
    try:
        validated = run("validate", "--profile", "local")
        assert validated.returncode == 0, _explain(validated)

        # The first release: production has no stack and no old version, so it is created.
        first = run("run", "local", "--yes")
        assert first.returncode == 0, _explain(first)
        ledger = Ledger(root)
        stages = ledger.manifest(ledger.runs()[-1]).stages  # type: ignore[union-attr]
        assert stages["promote"].outputs["strategy"] == "create", stages["promote"].outputs
        good = stages["promote"].outputs["image"]

        from pipeline.engines.docker_stack import DockerStackEngine

        stack = f"{name}-production"
        production = DockerStackEngine(name, root / "templates" / "web.yaml").describe(stack)
        assert production.url is not None
        assert production.image == good

        # The second release, under a steady load of anonymous requests.
        edit("pipelinefile.py", 'RELEASE = "1.0.0"', 'RELEASE = "1.0.1"')
        with LoadClient(production.url, rate=RATE) as load:
            second = run("run", "local", "--yes")
            count = len(load.samples)
            deadline = time.monotonic() + WAIT
            while len(load.samples) < count + 10 and time.monotonic() < deadline:  # answers after it, too
                time.sleep(0.05)
        print(second.stdout[-3000:])  # shown when the test fails (or with -rP)
        assert second.returncode == 0, _explain(second)
        run_id = ledger.runs()[-1]
        stages = ledger.manifest(run_id).stages  # type: ignore[union-attr]
        result = stages["promote"]
        assert result.status == "succeeded", result.message
        outputs = result.outputs
        released = outputs["image"]
        assert released != good
        assert outputs["previous_image"] == good, outputs
        assert outputs["strategy"] == "dark-launch", outputs
        assert outputs["failed_requests"] == "0", outputs
        assert float(outputs["p99_ms"]) >= 0
        assert "rolled_back" not in outputs, outputs
        # The run report's line: three steps (the dark window, the sticky 50%, 100%), none failed.
        assert f"dark-launch update of production: dark-launch to {released} in " in result.message, result.message
        assert "; 3 steps; " in result.message, result.message
        assert re.search(r"; 0 of \d+ requests failed during the change", result.message), result.message

        # The stage's log, in the engine's order: mirrored and judged first, no user routed; then
        # users split by the balancer's cookie; then everyone.
        log = (ledger.run_dir(run_id) / "stages" / "promote" / "output.log").read_text().splitlines()
        dark = r"^dark launch: \d+ new replica\(s\) get a copy of each GET, HEAD request, answering nobody"
        sticky = r"^sticky canary 50% of the users: \d+ new replica\(s\) beside \d+ old"
        everyone = r"^canary 100%: \d+ new replica\(s\) take all the traffic, the old set stays warm"
        found = _in_order(
            log,
            [
                dark + ": mirroring$",
                rf"^{re.escape(stack)}-lb mirrors to ",
                dark + r": healthy \(the new version failed (\d+) of (\d+) requests",
                sticky + ": splitting users by their cookie$",
                sticky + ": each user stays on one version$",
                sticky + r": healthy \(",
                r"^canary 100%: routing every request to \d+ new replica\(s\)$",
                everyone + r": healthy \(",
            ],
        )
        mirrored_failed, mirrored = int(found[2].group(1)), int(found[2].group(2))
        assert mirrored >= 20, found[2].string  # Health().min_requests answers to mirrored copies were judged
        assert mirrored_failed <= 0.01 * mirrored, found[2].string
        assert not [line for line in log if line.startswith("canary 50%")], "a weighted (not sticky) step ran"
        assert not [line for line in log if "health breach" in line], "\n".join(log)

        # What users got: no request failed; the old page, then the new one.
        assert load.stats().failures == 0, load.stats().first_failure
        assert set(load.stats().bodies) == {"Hello World 1.0.0", "Hello World 1.0.1"}, load.stats().bodies
        status, body = request(production.url, timeout=5)
        assert (status, body.strip()) == (200, "Hello World 1.0.1")
        # Production: the new version only, as many replicas as before (the dark set became the
        # new set; the old set was retired).
        after = DockerStackEngine(name, root / "templates" / "web.yaml").describe(stack)
        assert after.image == released
        running = [r for r in _replicas(docker_client, name, stack) if r.status == "running"]
        assert len(running) == 2, [r.name for r in running]
        assert {r.labels[f"{LABEL_PREFIX}.image"] for r in running} == {released}
        releases = ledger.releases(name, "production")
        assert [(r.image, r.status) for r in releases][-2:] == [(good, "known-good"), (released, "live")]
    finally:
        remove_everything_of(docker_client, name, images=True)


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
