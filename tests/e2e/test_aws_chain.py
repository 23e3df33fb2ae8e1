"""The chain on the aws profile end to end: `pipeline run local --profile aws` against a moto server
on 127.0.0.1 (real HTTP, `AWS_ENDPOINT_URL`), with the project in a git repository in a temp folder
and a bare repository as its remote, so promote's commits are real commits, really pushed.

One project goes through the story in order (each test builds on the one before), as the local
e2e does: the first release (production does not exist yet), a run with nothing changed, a new
release (the test stack copies production's parameters), a dirty tree refused before anything
changes, a release that fails in the test stack, one that fails at promote (rolled back, the
promote commit reverted with a new commit), `pipeline rollback` (committed too), and disaster
recovery: production rebuilt from a fresh clone against an empty emulator.

What is real here: CloudFormation's API as moto serves it (stacks created, updated, deleted;
launch template versions; AutoScaling groups), Packer's amazon-ebs builder making the AMIs through
moto's EC2 API, cfn-lint, git and the pushes. What moto lacks, and how the tests deal with it:

- No data plane: moto's load balancers have made-up DNS names and no instance serves anything, so
  the engine verifies the control plane (stack status, the launch template version's ImageId) and
  the run report says those checks were emulated. To test releases that *serve the wrong page*,
  two tests model the missing data plane with a test double (`PagesFromImageTags`): the page an
  instance of an AMI would serve is read from the AMI's `Version` tag, which Packer sets from the
  same variable the provisioner writes into the page. Everything else in those runs is real.
- No instances: the AMIs have no provisioning (Packer's communicator is "none" against an
  emulator) and the bake here has no testinfra checks (the docker half is covered by the local
  e2e); the bake report says no checks ran.
- moto accepts every update and never rolls back, fails to delete the reference template's VPC
  (the engine sees the stack gone and carries on), and ignores UpdatePolicy: failure states are
  covered in tests/unit/test_cloudformation_stubbed.py and, with MiniStack, in
  tests/integration/test_cloudformation_ministack.py.

The bake stage asks Docker for the base image's id even on the aws profile (part of its key), so
these tests need a Docker engine too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.images.base import ImageEngine
from pipeline.engines.stack import OnEvent, StackEngine, StackState, VerifyReport
from pipeline.ledger import Ledger, Manifest, ReleaseStore
from pipeline.model import Environment, Profile, Verify
from pipeline.stages.promote import DEFAULT_AUTHOR
from pipeline.strategy import Health, Strategy
from tests.conftest import cli_env, need
from tests.integration.test_cloudformation import reset_moto, running_moto
from tests.unit.cli_inprocess import Result, run_cli

pytestmark = pytest.mark.e2e

STAGES = ["commit-test", "bake", "test-stack", "update-stack", "rollback", "teardown", "promote"]
NAME = "hello-aws"
PRODUCTION = f"{NAME}-production"
TEMPLATE = "templates/web.yaml"
SOURCE_AMI = "ami-1e749f67"
"""An AMI in moto's stock catalogue for Packer's amazon-ebs builder to start from."""
REGION = "us-east-1"
DEV = ("-c", "user.name=Dev", "-c", "user.email=dev@example.invalid")

DEFINITION = f'''\
"""Hello World on AWS: the reference service with the aws profile."""

from pipeline import (
    Approval, Bake, CommitTest, Environment, Pipeline, Promote, SimulatedRollback, Teardown, TestStack,
    UpdateStack, Verify,
)

RELEASE = "1.0.0"
page = Verify(path="/", expect_text=f"Hello World {{RELEASE}}")
healthy = Verify(path="/health")

with Pipeline(
    "{NAME}",
    environments=[
        Environment(name="test", ephemeral=True),
        Environment(name="production", template="{TEMPLATE}", approval=Approval(message="Promote?")),
    ],
    profile="aws",
) as p:
    commit_test = CommitTest(
        name="commit-test", commands=["cfn-lint {TEMPLATE}"], inputs=("templates", "images")
    )
    bake = Bake(name="bake", template="images/web.pkr.hcl", variables={{"version": RELEASE}})
    test_stack = TestStack(name="test-stack", environment="test", like="production", image=bake, verify=healthy)
    update = UpdateStack(name="update-stack", stack=test_stack, image=bake, verify=page)
    rollback = SimulatedRollback(name="rollback", stack=test_stack, verify=healthy)
    teardown = Teardown(name="teardown", stack=test_stack)
    promote = Promote(name="promote", environment="production", image=bake, verify=page)

    commit_test >> bake >> test_stack >> update >> rollback >> teardown >> promote
'''


# --- the missing data plane, modelled (see the module docstring) ------------------------------------


class PagesFromImageTags:
    """A stack engine that is the real CloudFormation engine, except that `verify` also checks the
    page an instance of the stack's AMI would serve: `Hello World <the AMI's Version tag>` at `/`,
    `OK` at `/health` (what images/web/provision.sh writes). moto has no instances to ask."""

    def __init__(self, real: StackEngine, ec2: Any) -> None:
        self.real = real
        self.profile: Profile = real.profile
        self._ec2 = ec2

    def __getattr__(self, name: str) -> Any:  # check_template and the rest
        return getattr(self.real, name)

    def describe(self, stack: str) -> StackState:
        return self.real.describe(stack)

    def deploy(
        self,
        stack: str,
        image: str,
        *,
        parameters: Mapping[str, str] | None = None,
        on_event: OnEvent = print,
        strategy: Strategy | None = None,
        health: Health | None = None,
    ) -> StackState:
        return self.real.deploy(
            stack, image, parameters=parameters, on_event=on_event, strategy=strategy, health=health
        )

    def delete(self, stack: str, *, on_event: OnEvent = print) -> None:
        self.real.delete(stack, on_event=on_event)

    def stacks(self) -> list[str]:
        return self.real.stacks()

    def verify(self, state: StackState, check: Verify, *, on_event: OnEvent = print) -> VerifyReport:
        report = self.real.verify(state, check, on_event=on_event)
        image = self.real.describe(state.name).image
        if not report.ok or image is None:
            return report
        tags = {t["Key"]: t["Value"] for t in self._ec2.describe_images(ImageIds=[image])["Images"][0].get("Tags", [])}
        page = "OK" if check.path == "/health" else f"Hello World {tags.get('Version', '?')}"
        modelled = (*report.emulated, f"GET {check.path} modelled from {image}'s Version tag: {page!r}")
        if check.expect_text is None or check.expect_text in page:
            return replace(report, emulated=modelled)
        detail = f"GET {check.path} answers {page!r}, which does not contain {check.expect_text!r} (modelled)"
        on_event(detail)
        return VerifyReport(False, report.requests, report.failures + 1, detail, real=report.real, emulated=modelled)


@dataclass
class PagesFromImageTagsEngines:
    """The profiles' engines, with every stack engine wrapped in `PagesFromImageTags`."""

    ec2: Any

    def stack_engine(
        self, spec: Any, env: Environment, profile: Profile, root: Path, *, environ: Mapping[str, str] | None = None
    ) -> StackEngine:
        from pipeline.profiles import ProfileEngines

        return PagesFromImageTags(ProfileEngines().stack_engine(spec, env, profile, root, environ=environ), self.ec2)

    def release_store(self, spec: Any, env: Environment, profile: Profile, root: Path) -> ReleaseStore | None:
        from pipeline.profiles import ProfileEngines

        return ProfileEngines().release_store(spec, env, profile, root)

    def image_engine(
        self, spec: Any, bake: Any, profile: Profile, *, environ: Mapping[str, str] | None = None
    ) -> ImageEngine:
        from pipeline.profiles import ProfileEngines

        return ProfileEngines().image_engine(spec, bake, profile, environ=environ)


# --- the project ----------------------------------------------------------------------------------------


@dataclass
class Project:
    root: Path
    remote: Path
    moto_url: str
    env: dict[str, str]
    images: dict[str, str] = field(default_factory=dict)
    """The AMI baked per release (filled in as the story goes)."""

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            cwd=cwd or self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def git(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run(
            ["git", *args], cwd=cwd or self.root, env=self.env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
        return done.stdout.strip()

    def head(self, cwd: Path | None = None) -> str:
        return self.git("rev-parse", "HEAD", cwd=cwd)

    def remote_head(self) -> str:
        return self.git("rev-parse", "main", cwd=self.remote)

    def new_commits(self, since: str, cwd: Path | None = None) -> list[str]:
        return self.git("rev-list", "--reverse", f"{since}..HEAD", cwd=cwd).split()

    def changed_lines(self, commit: str, cwd: Path | None = None) -> list[str]:
        """The +/- lines of one commit (no context), after checking it touched only the template."""
        assert self.git("show", "--format=", "--name-only", commit, cwd=cwd) == TEMPLATE
        diff = self.git("show", "--format=", "-U0", commit, cwd=cwd).splitlines()
        return [line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))]

    def template_default(self, root: Path | None = None) -> str:
        from pipeline.engines.git_promote import read_default

        value = read_default(((root or self.root) / TEMPLATE).read_text())
        assert value is not None
        return value

    def edit(self, old: str, new: str) -> None:
        """A developer's change: committed and pushed (promote refuses to publish unpushed work)."""
        path = self.root / "pipelinefile.py"
        text = path.read_text()
        assert old in text, f"{old!r} not in the definition"
        path.write_text(text.replace(old, new))
        self.git(*DEV, "commit", "-qam", f"edit: {new[:40]}")
        self.git("push", "-q")

    def last_run(self, root: Path | None = None) -> Manifest:
        ledger = Ledger(root or self.root)
        manifest = ledger.manifest(ledger.runs()[-1])
        assert manifest is not None
        return manifest

    def statuses(self) -> dict[str, str]:
        return {name: result.status for name, result in self.last_run().stages.items()}

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.moto_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def stack(self, name: str = PRODUCTION) -> dict[str, Any] | None:
        for stack in self.client("cloudformation").describe_stacks()["Stacks"]:
            if stack["StackName"] == name and stack["StackStatus"] != "DELETE_COMPLETE":
                found: dict[str, Any] = stack
                return found
        return None

    def parameters(self, name: str = PRODUCTION) -> dict[str, str]:
        stack = self.stack(name)
        assert stack is not None, f"{name} does not exist"
        return {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}

    def stack_names(self) -> list[str]:
        stacks = self.client("cloudformation").describe_stacks()["Stacks"]
        return sorted(s["StackName"] for s in stacks if s["StackStatus"] != "DELETE_COMPLETE")

    def launch_template_image(self, name: str = PRODUCTION) -> str:
        resources = self.client("cloudformation").describe_stack_resources(StackName=name)["StackResources"]
        template = next(r["PhysicalResourceId"] for r in resources if r.get("LogicalResourceId") == "LaunchTemplate")
        versions = self.client("ec2").describe_launch_template_versions(LaunchTemplateId=template, Versions=["$Latest"])
        image: str = versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]["ImageId"]
        return image

    def events(self, name: str = PRODUCTION) -> list[str]:
        events = self.client("cloudformation").describe_stack_events(StackName=name)["StackEvents"]
        return [e["EventId"] for e in events]

    def version_of(self, image: str) -> str:
        tags = self.client("ec2").describe_images(ImageIds=[image])["Images"][0].get("Tags", [])
        return str({t["Key"]: t["Value"] for t in tags}["Version"])

    def run_in_process(
        self, args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> Result:
        """The CLI in this process, with the stack engine wrapped in `PagesFromImageTags`."""
        for key, value in self.env.items():
            if os.environ.get(key) != value:
                monkeypatch.setenv(key, value)
        for key in set(os.environ) - set(self.env):
            monkeypatch.delenv(key)
        return run_cli(args, self.root, capsys, engines=PagesFromImageTagsEngines(self.client("ec2")))


def _explain(result: subprocess.CompletedProcess[str] | Result) -> str:
    code = result.returncode if isinstance(result, subprocess.CompletedProcess) else result.code
    out = result.stdout if isinstance(result, subprocess.CompletedProcess) else result.out
    err = result.stderr if isinstance(result, subprocess.CompletedProcess) else result.err
    return f"exit {code}\n--- stdout\n{out[-8000:]}\n--- stderr\n{err[-3000:]}"


@pytest.fixture(scope="module")
def moto_url(docker_client: object) -> Iterator[str]:
    need(shutil.which("packer") is not None, "packer is not installed (apt-get install -y packer)")
    need(shutil.which("cfn-lint") is not None, "cfn-lint is not installed (pip install cfn-lint)")
    need(shutil.which("git") is not None, "git is not installed")
    with running_moto() as url:
        reset_moto(url)
        yield url


@pytest.fixture(scope="module")
def project(moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Project:
    base = tmp_path_factory.mktemp("aws-e2e")
    home = base / "home"
    home.mkdir()
    env = cli_env(
        AWS_ENDPOINT_URL=moto_url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
        PKR_VAR_source_ami=SOURCE_AMI,
        PYTHONDONTWRITEBYTECODE="1",
        # git with no identity and no global or system configuration: a fresh CI agent.
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=str(home / "gitconfig-empty"),
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "EMAIL"):
        env.pop(name, None)
    env.pop("GIT_COMMITTER_NAME", None)
    env.pop("GIT_COMMITTER_EMAIL", None)
    root = base / "hello-aws"
    made = subprocess.run(
        [sys.executable, "-m", "pipeline", "init", str(root)], env=env, capture_output=True, text=True, check=False
    )
    assert made.returncode == 0, made.stdout + made.stderr
    (root / "pipelinefile.py").write_text(DEFINITION)
    (root / ".gitignore").write_text(".pipeline/\n__pycache__/\n")
    remote = base / "remote.git"
    project = Project(root=root, remote=remote, moto_url=moto_url, env=env)
    project.git("init", "-q", "--bare", "-b", "main", str(remote), cwd=base)
    project.git("init", "-q", "-b", "main")
    project.git("add", "-A")
    project.git(*DEV, "commit", "-qm", "the reference service, on aws")
    project.git("remote", "add", "origin", str(remote))
    project.git("push", "-q", "-u", "origin", "main")
    return project


# --- the story ---------------------------------------------------------------------------------------


def test_the_first_release_runs_the_whole_chain_and_commits_the_image(project: Project) -> None:
    start = project.head()
    assert project.stack_names() == []

    result = project.run("run", "local", "--profile", "aws", "--yes")

    assert result.returncode == 0, _explain(result)
    assert project.statuses() == dict.fromkeys(STAGES, "succeeded")
    stages = project.last_run().stages
    run_id = project.last_run().run_id
    image = stages["bake"].outputs["image"]
    assert re.fullmatch(r"ami-[0-9a-f]{8,17}", image)
    assert project.version_of(image) == "1.0.0"  # Packer built it through moto's EC2 API
    project.images["1.0.0"] = image
    assert "no checks are configured" in stages["bake"].message
    # No production yet: the test stack starts from the new image, says so, and is gone afterwards.
    assert stages["test-stack"].outputs["fresh"] == "true"
    assert "production has no stack yet" in stages["test-stack"].message
    test_stack = stages["test-stack"].outputs["stack"]
    assert test_stack == f"{NAME}-test-{run_id}"
    assert stages["teardown"].outputs["deleted"] == test_stack
    assert project.stack_names() == [PRODUCTION]
    # Production was created from the template, runs the image, and the report says what was emulated.
    promote = stages["promote"]
    assert promote.outputs["image"] == image
    assert f"production had no stack: created {PRODUCTION}" in promote.message
    assert "emulated: stack status CREATE_COMPLETE" in promote.message
    assert f"ImageId {image}" in promote.message
    assert project.parameters()["ImageId"] == image
    assert project.launch_template_image() == image
    # Exactly one new commit, changing only the ImageId default, by the default author, pushed.
    commit = promote.outputs["commit"]
    assert project.new_commits(start) == [commit]
    assert project.changed_lines(commit) == ["-    Default: ami-03cf127a", f"+    Default: {image}"]
    message = project.git("log", "-1", "--format=%B", commit)
    assert message.splitlines()[0] == f"{NAME}: promote {image} to production"
    for trailer in (f"Pipeline: {NAME}", f"Image: {image}", f"Run: {run_id}", f"Source-Commit: {start}"):
        assert trailer in message
    assert project.git("log", "-1", "--format=%an <%ae>", commit) == DEFAULT_AUTHOR
    assert project.remote_head() == commit
    assert project.git("status", "--porcelain") == ""
    status = project.run("status", "--profile", "aws")
    assert status.returncode == 0, _explain(status)
    assert PRODUCTION in status.stdout
    assert image in status.stdout


def test_a_second_run_with_nothing_changed_is_up_to_date_and_commits_nothing(project: Project) -> None:
    head = project.head()
    events = project.events()

    result = project.run("run", "local", "--profile", "aws", "--yes")

    assert result.returncode == 0, _explain(result)
    statuses = project.statuses()
    # The promote commit changed templates/web.yaml, which the commit test lints: it runs again.
    # Everything else is as it was.
    assert statuses.pop("commit-test") == "succeeded"
    assert statuses == dict.fromkeys(STAGES[1:], "up-to-date")
    assert project.head() == head
    assert project.remote_head() == head
    assert project.events() == events
    assert project.stack_names() == [PRODUCTION]


def test_a_new_release_is_rehearsed_with_what_production_runs_then_promoted(project: Project) -> None:
    old = project.images["1.0.0"]
    # An operator changed production's capacity: the rehearsal and the promote both keep it.
    cfn = project.client("cloudformation")
    kept = [{"ParameterKey": k, "UsePreviousValue": True} for k in project.parameters() if k != "DesiredCapacity"]
    cfn.update_stack(
        StackName=PRODUCTION,
        UsePreviousTemplate=True,
        Parameters=[*kept, {"ParameterKey": "DesiredCapacity", "ParameterValue": "3"}],
    )
    assert project.parameters()["DesiredCapacity"] == "3"
    project.edit('RELEASE = "1.0.0"', 'RELEASE = "1.0.1"')
    start = project.head()

    result = project.run("run", "local", "--profile", "aws", "--yes", "--keep")

    assert result.returncode == 0, _explain(result)
    statuses = project.statuses()
    assert {s: statuses[s] for s in STAGES[1:]} == dict.fromkeys(STAGES[1:], "succeeded")
    stages = project.last_run().stages
    new = stages["bake"].outputs["image"]
    assert new != old
    assert project.version_of(new) == "1.0.1"
    project.images["1.0.1"] = new
    # The test stack started from production's image with production's parameters ...
    assert stages["test-stack"].outputs["image"] == old
    assert stages["test-stack"].outputs["fresh"] == "false"
    copied = stages["test-stack"].message.split("parameters copied from production's stack: ", 1)[1]
    assert "DesiredCapacity=3" in copied.split(";")[0].split(", ")
    test_stack = stages["test-stack"].outputs["stack"]
    assert stages["teardown"].outputs["kept"] == test_stack  # --keep: still there, to look at
    assert project.parameters(test_stack) == {**project.parameters(PRODUCTION), "ImageId": old}
    # ... was updated to the new image and rolled back to the old one, which took time.
    assert (stages["update-stack"].outputs["previous_image"], stages["update-stack"].outputs["image"]) == (old, new)
    assert (stages["rollback"].outputs["from_image"], stages["rollback"].outputs["image"]) == (new, old)
    assert float(stages["rollback"].outputs["time_to_restore"]) > 0
    assert project.launch_template_image(test_stack) == old
    # Production runs the new image, keeps its capacity, and git says so in one pushed commit.
    assert project.parameters()["ImageId"] == new
    assert project.parameters()["DesiredCapacity"] == "3"
    assert project.launch_template_image() == new
    (commit,) = project.new_commits(start)
    assert stages["promote"].outputs["commit"] == commit
    assert stages["promote"].outputs["previous_image"] == old
    assert project.changed_lines(commit) == [f"-    Default: {old}", f"+    Default: {new}"]
    assert project.remote_head() == commit


def test_a_dirty_tree_is_refused_before_anything_changes(project: Project) -> None:
    head = project.head()
    events = project.events()
    runs = Ledger(project.root).runs()
    script = project.root / "images" / "web" / "cleanup.sh"
    original = script.read_text()
    script.write_text(original + "# an edit nobody committed\n")
    try:
        for args in (
            ["run", "local", "--profile", "aws", "--yes"],
            ["run", "stage", "promote", "--profile", "aws", "--yes"],
        ):
            result = project.run(*args)
            assert result.returncode == 2, _explain(result)
            assert "uncommitted changes (images/web/cleanup.sh)" in result.stderr
            assert "promote commits only on a clean tree" in result.stderr
    finally:
        script.write_text(original)
    project.git("checkout", "-q", "--detach")
    try:
        detached = project.run("run", "stage", "promote", "--profile", "aws", "--yes")
    finally:
        project.git("checkout", "-q", "main")
    assert detached.returncode == 2, _explain(detached)
    assert "HEAD is detached" in detached.stderr
    # Nothing ran: no stack changed, no commit, no run recorded.
    assert project.head() == head
    assert project.remote_head() == head
    assert project.events() == events
    assert Ledger(project.root).runs() == runs
    assert project.git("status", "--porcelain") == ""


def test_a_release_that_fails_in_the_test_stack_never_reaches_production(
    project: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page says another version than the one the pipeline expects (data plane modelled)."""
    kept = project.last_run().stages["teardown"].outputs["kept"]
    project.edit('RELEASE = "1.0.1"', 'RELEASE = "1.0.2"')
    project.edit('variables={"version": RELEASE}', 'variables={"version": "0.9.9-wrong"}')
    head = project.head()
    events = project.events()

    result = project.run_in_process(["run", "local", "--profile", "aws", "--yes"], capsys, monkeypatch)

    assert result.code == 1, _explain(result)
    statuses = project.statuses()
    assert statuses["update-stack"] == "failed"
    assert statuses["rollback"] == "skipped"
    assert statuses["teardown"] == "succeeded"
    assert statuses["promote"] == "skipped"
    stages = project.last_run().stages
    project.images["0.9.9-wrong"] = stages["bake"].outputs["image"]
    assert "answers 'Hello World 0.9.9-wrong', which does not contain 'Hello World 1.0.2'" in (
        stages["update-stack"].message
    )
    # Teardown removed this run's test stack after the failure, and the one kept earlier.
    assert stages["teardown"].outputs["deleted"] == stages["test-stack"].outputs["stack"]
    assert f"removed {kept} (kept by run" in stages["teardown"].message
    assert project.stack_names() == [PRODUCTION]
    assert project.events() == events
    assert project.parameters()["ImageId"] == project.images["1.0.1"]
    assert project.head() == head


def test_a_release_that_fails_at_promote_is_rolled_back_and_its_commit_reverted(
    project: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rehearsal only checks health, so the wrong page gets as far as production; production's
    verification (data plane modelled) fails, the stack goes back to the previous AMI, and the
    promote commit is reverted by a new commit, both pushed."""
    project.edit(
        'update = UpdateStack(name="update-stack", stack=test_stack, image=bake, verify=page)',
        'update = UpdateStack(name="update-stack", stack=test_stack, image=bake, verify=healthy)',
    )
    start = project.head()
    good, wrong = project.images["1.0.1"], project.images["0.9.9-wrong"]

    result = project.run_in_process(["run", "local", "--profile", "aws", "--yes"], capsys, monkeypatch)

    assert result.code == 1, _explain(result)
    statuses = project.statuses()
    assert {s: statuses[s] for s in STAGES[2:6]} == dict.fromkeys(STAGES[2:6], "succeeded")
    assert statuses["promote"] == "failed"
    promote = project.last_run().stages["promote"]
    assert f"{wrong} failed verification in production" in promote.message
    assert re.search(rf"rolled back automatically to {good} in \d+\.\d s, which verifies", promote.message)
    # Production is back on the previous AMI ...
    assert project.parameters()["ImageId"] == good
    assert project.launch_template_image() == good
    # ... and git tells the whole story with new commits: the promote, then its revert.
    promoted, reverted = project.new_commits(start)
    assert promote.outputs["commit"] == promoted
    assert f"was reverted by {reverted[:12]}" in promote.message
    assert project.changed_lines(promoted) == [f"-    Default: {good}", f"+    Default: {wrong}"]
    assert project.changed_lines(reverted) == [f"-    Default: {wrong}", f"+    Default: {good}"]
    message = project.git("log", "-1", "--format=%B", reverted)
    assert f"This reverts commit {promoted}." in message
    assert f"{wrong} failed verification in production" in message
    assert project.template_default() == good
    assert project.remote_head() == reverted
    releases = Ledger(project.root).releases(NAME, "production")
    assert [(r.image, r.status) for r in releases][-2:] == [(wrong, "failed"), (good, "live")]


def test_a_laptop_after_ci_knows_the_releases_and_rolls_back_from_a_fresh_clone(project: Project) -> None:
    """What CI released lives where the environment lives, not in a CI job's throwaway ledger: a
    fresh clone with no ledger reads production's release history from the template's git history,
    `status` shows it, and `rollback` finds the previous image, commits and pushes the way back."""
    old, current = project.images["1.0.0"], project.images["1.0.1"]
    laptop = project.root.parent / "laptop"
    project.git("clone", "-q", str(project.remote), str(laptop), cwd=project.root.parent)
    assert not (laptop / ".pipeline").exists()
    start = project.head(laptop)

    status = project.run("status", "production", "--profile", "aws", cwd=laptop)
    assert status.returncode == 0, _explain(status)
    assert f"production: last release {current} live" in status.stdout
    assert "history from git history of templates/web.yaml" in status.stdout
    assert f"known-good images, newest first: {current}, {old}" in status.stdout

    result = project.run("rollback", "production", "--profile", "aws", cwd=laptop)

    assert result.returncode == 0, _explain(result)
    assert f"rolled back from {current} to {old}" in result.stdout
    assert "emulated check: stack status UPDATE_COMPLETE" in result.stdout
    assert project.parameters()["ImageId"] == old
    assert project.parameters()["DesiredCapacity"] == "3"
    (commit,) = project.new_commits(start, cwd=laptop)
    assert project.changed_lines(commit, cwd=laptop) == [f"-    Default: {current}", f"+    Default: {old}"]
    assert project.git("log", "-1", "--format=%s", commit, cwd=laptop) == (
        f"{NAME}: roll production back to {old} (from {current})"
    )
    assert project.remote_head() == commit
    # The history now says the newer image was withdrawn; the first checkout catches up with git.
    again = project.run("status", "production", "--profile", "aws", cwd=laptop)
    assert f"production: last release {old} live" in again.stdout
    assert f"known-good images, newest first: {old}\n" in again.stdout
    project.git("pull", "-q")
    assert project.head() == commit


def test_disaster_recovery_brings_production_back_from_a_clone_into_an_empty_emulator(project: Project) -> None:
    """The runbook in docs/aws.md: the account is gone (moto reset: no stacks, no baked AMIs), the
    repository is all there is. A fresh clone bakes again and promote creates production."""
    project.edit('variables={"version": "0.9.9-wrong"}', 'variables={"version": RELEASE}')  # the fix
    reset_moto(project.moto_url)
    assert project.stack_names() == []
    clone = project.root.parent / "recovered"
    project.git("clone", "-q", str(project.remote), str(clone), cwd=project.root.parent)
    start = project.head(clone)
    gone = project.template_default(clone)

    baked = project.run("run", "stage", "bake", "--profile", "aws", cwd=clone)
    assert baked.returncode == 0, _explain(baked)
    promoted = project.run("run", "stage", "promote", "--profile", "aws", "--yes", cwd=clone)
    assert promoted.returncode == 0, _explain(promoted)

    stages = project.last_run(clone).stages
    image = stages["promote"].outputs["image"]
    assert image != gone
    assert project.version_of(image) == "1.0.2"
    assert f"production had no stack: created {PRODUCTION}" in stages["promote"].message
    assert project.stack_names() == [PRODUCTION]
    production = project.stack()
    assert production is not None
    assert production["StackStatus"] == "CREATE_COMPLETE"
    assert project.parameters()["ImageId"] == image
    (commit,) = project.new_commits(start, cwd=clone)
    assert stages["promote"].outputs["commit"] == commit
    assert project.changed_lines(commit, cwd=clone) == [f"-    Default: {gone}", f"+    Default: {image}"]
    assert project.template_default(clone) == image
    assert project.remote_head() == commit
    status = project.run("status", "production", "--profile", "aws", cwd=clone)
    assert status.returncode == 0, _explain(status)
    assert image in status.stdout
