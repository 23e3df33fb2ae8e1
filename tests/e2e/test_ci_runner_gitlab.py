"""The reference pipeline's rendered `.gitlab-ci.yml`, executed by a real runner: gitlab-ci-local
4.56.2 runs every job with its shell executor on this machine, each in its own copy of the
repository, handing the stages' manifests from job to job as artifacts, the way GitLab would.

`pipeline init` writes the reference service into a temporary git repository; the definition is
switched to the local profile (Docker on this machine: run under the shared lock, see HELPERS.md);
`pipeline render --target gitlab` writes the one file a team on GitLab commits, and gitlab-ci-local
runs it for a push to `main` (tests/ci_runners/gitlab.py says how, and where gitlab-ci-local differs
from GitLab). The generated install step runs as rendered: the runner's pip is pointed at a wheel
of this checkout and a local wheelhouse (tests/ci_runners/wheels.py says why this, and not the
definition's `install=`). gitlab-ci-local takes the user who starts a job (GITLAB_USER_LOGIN) from
the repository's git e-mail address, which is how these tests choose who presses "play".

- The first release: every job but the gate succeeds, in `needs` order, each in its own folder;
  every stage ran through `pipeline run stage`; each job's manifests reached later jobs only as
  artifacts (the bake's image id is what promote deploys; the rehearsal job's own manifests do not
  reach its artifact under gitlab-ci-local, which re-copies a job's folder before `after_script`:
  tests/ci_runners/gitlab.py). The gate, a manual job, does not run
  until it is played; played by someone who is not an approver, it stops before it deploys;
  played by the approver, production serves the new page on 127.0.0.1. The test stack is gone.
- A release whose update stage fails in the middle of the rehearsal job: the teardown still runs
  in that job, the test stack is gone, the gate does not run although it was asked to, and
  production still serves what it served.
- A repository that commits only `.gitlab-ci.yml` (a team on GitLab alone): its drift-check job
  passes, and fails with the diff after a one-line change to the definition. No Docker.

Times here (2 cores): the first release about 4 min (each job makes its virtualenv: gitlab-ci-local
gives every job another folder, so the cached one is rebuilt from pip's cache), the failing one
about 3 min, the drift-check runs about 30 s each.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.engines.docker_client import LABEL_PREFIX
from pipeline.engines.http_check import request
from tests.ci_runners import gitlab
from tests.ci_runners.wheels import offline_pip_environment, wheelhouse_ready
from tests.conftest import cli_env, commit_all, init_reference_service, need, remove_everything_of

pytestmark = pytest.mark.e2e

STAGES = {"commit-test", "bake", "test-stack", "update-stack", "rollback", "teardown", "promote"}
KEYWORDS = ("workflow", "stages")


@dataclass
class Reference:
    root: Path
    name: str
    client: Any
    runner_env: dict[str, str]

    def jobs(self) -> dict[str, dict[str, Any]]:
        data = yaml.safe_load((self.root / ".gitlab-ci.yml").read_text())
        return {name: job for name, job in data.items() if name not in KEYWORDS}

    def render_and_commit(self, message: str) -> None:
        render(self.root)
        subprocess.run(["git", "add", "-A"], cwd=self.root, check=True)
        subprocess.run(["git", "commit", "-qm", message], cwd=self.root, check=True)

    def edit(self, old: str, new: str) -> None:
        edit(self.root, old, new)

    def as_user(self, login: str) -> None:
        """gitlab-ci-local's GITLAB_USER_LOGIN: the local part of the repository's git e-mail."""
        subprocess.run(["git", "config", "user.email", f"{login}@example.invalid"], cwd=self.root, check=True)

    def run(self, run_dir: Path, **options: Any) -> gitlab.PipelineRun:
        return gitlab.run_pipeline(self.root, run_dir=run_dir, env=self.runner_env, timeout=1800, **options)

    def production(self) -> tuple[str, str] | None:
        """(URL, page) of production, None when there is none."""
        from pipeline.engines.docker_stack.engine import DockerStackEngine

        state = DockerStackEngine(self.name, self.root / "templates" / "web.yaml").describe(f"{self.name}-production")
        if not state.exists:
            return None
        assert state.url is not None
        status, body = request(state.url, timeout=5)
        assert status == 200, (state.url, status, body)
        return state.url, body.strip()

    def containers_of_stack(self, stack: str) -> list[Any]:
        selector = [f"{LABEL_PREFIX}.pipeline={self.name}", f"{LABEL_PREFIX}.stack={stack}"]
        return list(self.client.containers.list(all=True, filters={"label": selector}))


def render(root: Path) -> None:
    rendered = subprocess.run(
        [sys.executable, "-m", "pipeline", "render", "--target", "gitlab"],
        cwd=root,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr


def edit(root: Path, old: str, new: str) -> None:
    path = root / "pipelinefile.py"
    text = path.read_text()
    assert old in text, f"{old!r} not in the definition"
    path.write_text(text.replace(old, new, 1))


def manifests_of(run: gitlab.PipelineRun, job: str) -> dict[str, dict[str, Any]]:
    """The manifests a job's artifact holds: stage -> that stage's manifest entry."""
    folder = run.state / "artifacts" / gitlab.safe_job_name(job) / ".pipeline" / "ci" / "manifest"
    held: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        assert path.name == f"{next(iter(data['stages']))}.json", path
        held.update(data["stages"])
    return held


def stages_of(job: dict[str, Any]) -> list[str]:
    """The stages a rendered job runs through `pipeline run stage`, in its script's order."""
    found = []
    for item in job["script"]:
        for line in str(item).splitlines():
            words = line.replace("(", " ").split()
            if words[:3] == ["pipeline", "run", "stage"]:
                found.append(words[3])
    return found


def needed(job: dict[str, Any]) -> list[str]:
    return [n["job"] if isinstance(n, dict) else n for n in job["needs"]]


@pytest.fixture(scope="module")
def runner_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    need(gitlab.installed(), "gitlab-ci-local, node or rsync is missing (.ci/install-ci-runners.sh)")
    need(wheelhouse_ready(), "tools/ci-runners/wheelhouse is empty (.ci/install-ci-runners.sh)")
    need(shutil.which("git") is not None, "git is not installed")
    need(
        shutil.which("python3.11") is not None,
        "python3.11 is not installed (the rendered jobs make their venv with it)",
    )
    return offline_pip_environment(tmp_path_factory.mktemp("package-wheel"))


@pytest.fixture(scope="module")
def reference(
    docker_client: Any, base_image: str, runner_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reference]:
    need(shutil.which("packer") is not None, "packer is not installed (apt-get install -y packer)")
    name = f"gcl-{secrets.token_hex(3)}"
    root = init_reference_service(tmp_path_factory.mktemp("gitlab") / "hello-web", name)
    reference = Reference(root=root, name=name, client=docker_client, runner_env=runner_env)
    reference.edit('profile="aws",', 'profile="local",')
    commit_all(root, "the reference service, local profile")
    reference.render_and_commit("its GitLab CI file")
    try:
        yield reference
    finally:
        remove_everything_of(docker_client, name, images=True)


def test_the_first_release_runs_job_by_job_and_waits_for_an_approver_to_play_the_gate(
    reference: Reference, tmp_path: Path
) -> None:
    jobs = reference.jobs()
    assert list(jobs) == ["render_check", "commit-test", "bake", "rehearsal-test-stack", "promote"]
    assert jobs["promote"]["when"] == "manual"
    run = reference.run(tmp_path / "run")
    assert run.statuses() == {**dict.fromkeys(jobs, "success"), "promote": "manual"}, run.explain()
    assert run.returncode == 0, run.explain()

    # In `needs` order, each job in its own folder.
    for name, job in jobs.items():
        for need_name in needed(job) if name != "promote" else []:
            assert run.finished_before_started(need_name, name), (need_name, name, run.started_order())
    workspaces = [run.jobs[name].workspace for name in jobs if name != "promote"]
    assert None not in workspaces, workspaces
    assert len(set(workspaces)) == len(workspaces), workspaces
    assert not (reference.root / ".pipeline").exists(), "a job wrote into the repository instead of its folder"

    # Every stage ran through `pipeline run stage` in the job that names it, and succeeded.
    ran: dict[str, str] = {}
    for name, job in jobs.items():
        for stage in stages_of(job):
            ran[stage] = name
    assert set(ran) == STAGES
    for stage, name in ran.items():
        if name != "promote":
            assert f": {stage} (logs: " in run.jobs[name].log, (stage, name)  # `pipeline run stage` says so
            assert f"[{stage}] succeeded in " in run.jobs[name].log, (stage, name)
    # Manifests crossed jobs only as artifacts: each job's artifact holds its own and those of every
    # job before it. (gitlab-ci-local re-copies a job's folder from the repository before its
    # `after_script`, so the rehearsal job, which has one, keeps only what it received: a known
    # difference from GitLab, see tests/ci_runners/gitlab.py.)
    before: set[str] = set()
    for name in run.started_order():
        held = manifests_of(run, name)
        own = {s for s, j in ran.items() if j == name}
        if name == "rehearsal-test-stack":
            assert set(held) == before, (name, sorted(held))
        else:
            assert set(held) == own | before, (name, sorted(held))
            assert all(held[stage]["status"] == "succeeded" for stage in own), held
        before |= own
    log = run.jobs["rehearsal-test-stack"].log
    stack = log.split("[teardown] deleted test stack ", 1)[1].split()[0]
    assert stack.startswith(f"{reference.name}-test-")
    assert reference.containers_of_stack(stack) == []
    assert reference.production() is None, "the gate was never played, yet production exists"

    # Played by someone who may not approve: the job stops before it deploys.
    reference.as_user("mallory")
    refused = reference.run(tmp_path / "refused", jobs=["promote"], manual=["promote"], fresh=False)
    assert refused.statuses()["promote"] == "failure", refused.explain()
    assert "mallory started this gated job but is not one of its approvers (release-manager)" in (
        refused.jobs["promote"].log
    )
    assert reference.production() is None

    # Played by the approver: production serves the new page, the image the bake made.
    reference.as_user("release-manager")
    played = reference.run(tmp_path / "played", jobs=["promote"], manual=["promote"], fresh=False)
    assert played.statuses()["promote"] == "success", played.explain()
    assert "approved by release-manager" in played.jobs["promote"].log
    held = manifests_of(played, "promote")
    assert held["promote"]["status"] == "succeeded"
    assert held["promote"]["outputs"]["image"] == manifests_of(run, "bake")["bake"]["outputs"]["image"]
    production = reference.production()
    assert production is not None
    url, page = production
    assert url.startswith("http://127.0.0.1:")
    assert page == "Hello World 1.0.0"


def test_a_stage_failing_mid_rehearsal_still_tears_down_and_never_promotes(
    reference: Reference, tmp_path: Path
) -> None:
    before = reference.production()
    # The page check of update-stack (and promote) can never pass; the bake's own checks still do.
    reference.edit('expect_text=f"Hello World {RELEASE}"', 'expect_text="Hello World never"')
    reference.render_and_commit("a release whose page check fails")
    jobs = reference.jobs()
    teardown = [line for line in jobs["rehearsal-test-stack"]["script"][-1].splitlines() if "stage teardown" in line]
    assert teardown[0].startswith("(pipeline run stage teardown ")  # unconditional: not inside an `if`

    run = reference.run(tmp_path / "run", manual=["promote"])  # the gate is asked to run, too
    statuses = run.statuses()
    assert statuses["rehearsal-test-stack"] == "failure", run.explain()
    assert statuses["promote"] == "skipped", run.explain()
    assert {s for j, s in statuses.items() if j not in ("rehearsal-test-stack", "promote")} == {"success"}
    assert run.returncode != 0

    log = run.jobs["rehearsal-test-stack"].log
    assert "[test-stack] succeeded in " in log
    assert "[update-stack] failed in " in log
    assert "[rollback] started" not in log  # skipped after the failure
    assert "[teardown] succeeded in " in log  # and yet the teardown ran
    stack = log.split("[teardown] deleted test stack ", 1)[1].split()[0]
    assert stack.startswith(f"{reference.name}-test-")
    assert reference.containers_of_stack(stack) == []
    assert not (run.state / "artifacts" / "promote").exists()
    assert reference.production() == before


def test_a_gitlab_only_repository_passes_its_drift_check_job_until_the_definition_changes(
    runner_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """A team on GitLab alone renders and commits only `.gitlab-ci.yml`; its first job, the drift
    check, passes; after a one-line change to the definition it fails with the diff. No Docker."""
    root = init_reference_service(tmp_path_factory.mktemp("gitlab-only") / "hello-web", "gitlab-only")
    render(root)
    commit_all(root, "the reference service and its GitLab CI file")
    assert sorted(p.name for p in root.iterdir() if p.name.startswith((".git", ".github", ".teamcity", "Jenk"))) == [
        ".git",
        ".gitlab-ci.yml",
    ]
    run = gitlab.run_pipeline(root, run_dir=tmp_path / "run", jobs=["render_check"], env=runner_env, timeout=600)
    assert run.statuses()["render_check"] == "success", run.explain()
    assert "ok: 1 files match a fresh render (gitlab)" in run.jobs["render_check"].log

    edit(root, 'message="Promote the new image to production?"', 'message="Go live?"')
    subprocess.run(["git", "commit", "-qam", "a new approval message, not rendered"], cwd=root, check=True)
    drifted = gitlab.run_pipeline(root, run_dir=tmp_path / "run", jobs=["render_check"], env=runner_env, timeout=600)
    assert drifted.statuses()["render_check"] == "failure", drifted.explain()
    log = drifted.jobs["render_check"].log
    assert "+++ b/.gitlab-ci.yml (fresh render)" in log
    assert "--message 'Go live?'" in log
    assert "rendered file(s) differ from the committed ones: .gitlab-ci.yml" in log
