"""Release history and going back, against a fake stack engine: which image a rollback picks, what
it records, when it refuses; where a rehearsal starts from; and `status` when the engine cannot be
reached (the ledger speaks, and says so)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.stack import StackState
from pipeline.errors import BadInputError, VerificationFailedError
from pipeline.executors._rehearsal import baseline
from pipeline.ledger import Ledger
from pipeline.loader import Loaded, load
from pipeline.model import Environment, Verify
from pipeline.rollback import restore_check, rollback
from pipeline.testing import FakeEngines, FakeStackEngine
from tests.conftest import ProjectFactory, need

REPO = Path(__file__).resolve().parents[2]

DEFINITION = """
from pipeline import Bake, Environment, Pipeline, Promote, SimulatedRollback, Teardown, TestStack, UpdateStack, Verify

with Pipeline("shop", environments=[
    Environment(name="test", ephemeral=True),
    Environment(name="production", template="templates/web.yaml"),
]) as p:
    bake = Bake(name="bake", template="images/web.pkr.hcl", variables={"version": "1"})
    stack = TestStack(name="test-stack", environment="test", like="production", image=bake)
    update = UpdateStack(name="update-stack", stack=stack, image=bake)
    back = SimulatedRollback(name="rollback", stack=stack)
    down = Teardown(name="teardown", stack=stack)
    promote = Promote(name="promote", environment="production", image=bake,
                      verify=Verify(path="/", expect_text="Hello World 1", requests=7))
    bake >> stack >> update >> back >> down >> promote
"""


@pytest.fixture
def loaded(project: ProjectFactory) -> Loaded:
    root = project(DEFINITION, {"images/web.pkr.hcl": "# packer\n"})
    (root / "templates").mkdir()
    shutil.copy(REPO / "templates" / "web.yaml", root / "templates" / "web.yaml")
    return load(root / "pipelinefile.py")


@pytest.fixture
def engine() -> FakeStackEngine:
    return FakeStackEngine()


def roll_back(engine: FakeStackEngine, loaded: Loaded, environment: str, **options: Any) -> Any:
    """`pipeline rollback` with the fake engine injected."""
    return rollback(loaded, environment, engines=FakeEngines(engine), **options)


def _history(ledger: Ledger) -> list[tuple[str, str]]:
    return [(r.image, r.status) for r in ledger.releases("shop", "production")]


def test_candidates_skip_images_that_were_rolled_back(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.record_release("shop", "production", "shop:1", "r1", "live")
    ledger.record_release("shop", "production", "shop:2", "r2", "live")
    ledger.record_release("shop", "production", "shop:2", "rollback-r3", "failed")
    ledger.record_release("shop", "production", "shop:1", "rollback-r3", "live")
    assert ledger.known_good("shop", "production") == ["shop:1", "shop:2"]
    history = ledger.history("shop", "production")
    assert history.candidates() == ["shop:1"]
    assert history.withdrawn("shop:2")
    assert not history.withdrawn("shop:1")


def test_rollback_goes_to_the_previous_known_good_image_and_records_it(loaded: Loaded, engine: FakeStackEngine) -> None:
    ledger = Ledger(loaded.root)
    ledger.record_release("shop", "production", "shop:1", "r1", "live")
    ledger.record_release("shop", "production", "shop:2", "r2", "live")
    result = roll_back(engine, loaded, "production")
    assert (result.from_image, result.to_image, result.known_good) == ("shop:2", "shop:1", True)
    assert engine.deployed == ["shop:1"]
    # The old image does not say the new version: the promote check, without its text.
    assert engine.checks == [Verify(path="/", requests=7)]
    assert _history(ledger)[-2:] == [("shop:2", "failed"), ("shop:1", "live")]
    assert ledger.history("shop", "production").candidates() == ["shop:1"]
    events = [e for e in ledger.events() if e.get("event") == "rollback"]
    assert events[-1]["from"] == "shop:2"
    assert events[-1]["to"] == "shop:1"


def test_rollback_to_a_named_image(loaded: Loaded, engine: FakeStackEngine) -> None:
    result = roll_back(engine, loaded, "production", to="shop:0")
    assert result.to_image == "shop:0"
    assert not result.known_good
    assert engine.deployed == ["shop:0"]


def test_rollback_that_does_not_verify_fails_and_says_so(loaded: Loaded, engine: FakeStackEngine) -> None:
    ledger = Ledger(loaded.root)
    ledger.record_release("shop", "production", "shop:0", "r0", "live")
    ledger.record_release("shop", "production", "shop:1", "r1", "live")
    ledger.record_release("shop", "production", "shop:2", "r2", "live")
    engine.broken = {"shop:1"}
    with pytest.raises(VerificationFailedError) as caught:
        roll_back(engine, loaded, "production")
    assert "now runs shop:1, but it does not verify" in str(caught.value)
    assert caught.value.hint == "go back further: pipeline rollback production --to shop:0"
    assert _history(ledger)[-1] == ("shop:1", "failed")


def test_rollback_refuses_when_there_is_nothing_to_go_back_to(loaded: Loaded, engine: FakeStackEngine) -> None:
    ledger = Ledger(loaded.root)
    ledger.record_release("shop", "production", "shop:2", "r2", "live")
    with pytest.raises(BadInputError, match="no known-good image of 'production' other than the one it runs"):
        roll_back(engine, loaded, "production")
    engine.image = None
    with pytest.raises(BadInputError, match="has no stack"):
        roll_back(engine, loaded, "production")
    with pytest.raises(BadInputError, match="ephemeral"):
        roll_back(engine, loaded, "test")
    assert engine.deployed == []


def test_restore_check_prefers_the_promote_stages_rollback_verify(loaded: Loaded) -> None:
    spec = loaded.spec
    production = spec.environment("production")
    assert restore_check(spec, production) == Verify(path="/", requests=7)
    promote = spec.stage("promote").model_copy(update={"rollback_verify": Verify(path="/health")})
    changed = spec.model_copy(update={"stages": tuple(promote if s.name == "promote" else s for s in spec.stages)})
    assert restore_check(changed, production) == Verify(path="/health")
    assert restore_check(spec, Environment(name="elsewhere")) == Verify()


def test_a_rehearsal_starts_from_what_production_runs(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    like = Environment(name="production")
    runs = StackState(name="p", exists=True, image="shop:1")
    assert baseline(ledger.history("shop", "production"), like, runs, "shop:2") == ("shop:1", "production runs shop:1")
    start, why = baseline(ledger.history("shop", "production"), like, StackState(name="p", exists=False), "shop:2")
    assert start is None
    assert "has no stack yet" in why
    # Production already runs the new image (it was promoted): the release before it.
    ledger.record_release("shop", "production", "shop:1", "r1", "live")
    ledger.record_release("shop", "production", "shop:2", "r2", "live")
    promoted = replace(runs, image="shop:2")
    assert baseline(ledger.history("shop", "production"), like, promoted, "shop:2")[0] == "shop:1"
    # Mid-update (replicas on different images): what the ledger says is live.
    mixed = replace(runs, image=None)
    assert baseline(ledger.history("shop", "production"), like, mixed, "shop:3")[0] == "shop:2"


def test_status_falls_back_to_the_ledger_when_the_engine_is_unreachable(
    loaded: Loaded, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pipeline.status import collect

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker-here.sock")
    Ledger(loaded.root).record_release("shop", "production", "shop:1", "r1", "live")
    report = collect(loaded)
    (production,) = report.environments
    assert production.image == "shop:1"
    assert not production.observed
    assert production.note.startswith("engine unreachable (")
    assert production.note.endswith("): showing the ledger")
    assert report.test_stacks == []


def test_a_template_the_local_engine_cannot_run_stops_the_run_before_anything_starts(
    loaded: Loaded, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.cli_inprocess import run_cli

    template = loaded.root / "templates" / "web.yaml"
    text = template.read_text()
    template.write_text(
        text.replace(
            "      Protocol: HTTP\n      Port: 80\n      DefaultActions:",
            "      Protocol: HTTPS\n      Port: 443\n      DefaultActions:",
        )
    )
    result = run_cli(["run", "local", "--yes", "--from", "test-stack"], loaded.root, capsys)
    assert result.code == 2, result.out + result.err
    assert "resource Listener is an HTTPS listener" in result.err
    assert Ledger(loaded.root).runs() == []


# --- the aws profile: the template in git says what runs ------------------------------------------


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def repo(loaded: Loaded) -> Loaded:
    """The project as a git repository with one commit (no remote: commits stay local)."""
    need(shutil.which("git") is not None, "git is not installed")
    (loaded.root / ".gitignore").write_text(".pipeline/\n__pycache__/\n")
    _git(loaded.root, "init", "-q", "-b", "main")
    _git(loaded.root, "add", "-A")
    _git(loaded.root, "-c", "user.name=T", "-c", "user.email=t@example.invalid", "commit", "-qm", "initial")
    return loaded


def test_rollback_on_aws_records_the_image_it_went_back_to(repo: Loaded, engine: FakeStackEngine) -> None:
    from pipeline.engines.git_promote import read_default

    ledger = Ledger(repo.root)
    ledger.record_release("shop", "production", "ami-00000001", "r1", "live")
    ledger.record_release("shop", "production", "ami-00000002", "r2", "live")
    engine.image = "ami-00000002"
    head = _git(repo.root, "rev-parse", "HEAD")

    result = roll_back(engine, repo, "production", profile="aws")

    assert engine.deployed == ["ami-00000001"]
    assert result.commit == _git(repo.root, "rev-parse", "HEAD")
    assert _git(repo.root, "rev-parse", "HEAD~1") == head
    assert result.pushed_to is None
    assert read_default((repo.root / "templates" / "web.yaml").read_text()) == "ami-00000001"
    assert (
        _git(repo.root, "log", "-1", "--format=%s") == "shop: roll production back to ami-00000001 (from ami-00000002)"
    )
    assert _git(repo.root, "show", "--format=", "--name-only", "HEAD") == "templates/web.yaml"
    # Again, already there: it verifies, and git already says so.
    assert roll_back(engine, repo, "production", to="ami-00000001", profile="aws").commit is None
    assert _git(repo.root, "rev-parse", "HEAD") == result.commit


def test_rollback_on_aws_refuses_a_dirty_tree_before_the_stack_changes(repo: Loaded, engine: FakeStackEngine) -> None:
    from pipeline.errors import GitStateError

    ledger = Ledger(repo.root)
    ledger.record_release("shop", "production", "shop:1", "r1", "live")
    ledger.record_release("shop", "production", "shop:2", "r2", "live")
    (repo.root / "templates" / "web.yaml").write_text("edited\n")
    with pytest.raises(GitStateError, match="uncommitted changes"):
        roll_back(engine, repo, "production", profile="aws")
    assert engine.deployed == []
    assert _history(ledger)[-1] == ("shop:2", "live")


def test_rollback_on_the_local_profile_or_without_commits_records_nothing(
    repo: Loaded, engine: FakeStackEngine
) -> None:
    from pipeline.rollback import git_settings

    spec = repo.spec
    production = spec.environment("production")
    assert git_settings(spec, production, "local") is None
    settings = git_settings(spec, production, "aws")
    assert settings is not None
    assert (settings.template, settings.push) == (Path("templates/web.yaml"), True)
    promote = spec.stage("promote").model_copy(update={"commit": False})
    no_commit = spec.model_copy(update={"stages": tuple(promote if s.name == "promote" else s for s in spec.stages)})
    assert git_settings(no_commit, production, "aws") is None
    Ledger(repo.root).record_release("shop", "production", "shop:1", "r1", "live")
    head = _git(repo.root, "rev-parse", "HEAD")
    assert roll_back(engine, repo, "production", profile="local").commit is None
    assert _git(repo.root, "rev-parse", "HEAD") == head


def test_promote_checks_git_before_a_run_but_not_for_validate(repo: Loaded, engine: FakeStackEngine) -> None:
    """`preflight` (shared with `pipeline validate`) leaves a work-in-progress tree alone; `ready`
    (a run only) refuses it on the aws profile, before anything changes."""
    from pipeline.errors import GitStateError
    from pipeline.executors.base import PlanContext
    from pipeline.executors.promote import PromoteExecutor
    from pipeline.executors.registry import executor_for

    stage = repo.spec.stage("promote")
    executor = executor_for(stage)
    assert isinstance(executor, PromoteExecutor)
    (repo.root / "templates" / "web.yaml").write_text((repo.root / "templates" / "web.yaml").read_text() + "# wip\n")
    ledger = Ledger(repo.root)
    executor.preflight(PlanContext(repo.spec, stage, repo.root, "aws", {}, ledger, FakeEngines(engine)))
    ready = executor.ready
    ready(
        PlanContext(repo.spec, stage, repo.root, "local", {}, ledger, FakeEngines(engine))
    )  # nothing is committed locally
    with pytest.raises(GitStateError, match="uncommitted changes") as caught:
        ready(PlanContext(repo.spec, stage, repo.root, "aws", {}, ledger, FakeEngines(engine)))
    assert caught.value.exit_code == 2
    _git(repo.root, "checkout", "-q", "--detach")
    _git(repo.root, "checkout", "-q", "--", "templates/web.yaml")
    with pytest.raises(GitStateError, match="HEAD is detached"):
        ready(PlanContext(repo.spec, stage, repo.root, "aws", {}, ledger, FakeEngines(engine)))
    assert engine.deployed == []


def test_carried_parameters_keep_the_stack_shape_but_not_the_image_or_a_deploy_s_own_parameters() -> None:
    """A test stack copies production's shape (capacity, instance type), never its image nor the
    canary slot and rolling-update values a deployment in progress may have set. Every engine
    inherits the rule from the contract's base class, and the aws engine's own names agree with it."""
    from pipeline.engines.aws.plans import ROLLING_PARAMETERS, SLOT_PARAMETERS
    from pipeline.engines.stack import DEPLOY_OWNED_PARAMETERS, BaseStackEngine

    assert set(DEPLOY_OWNED_PARAMETERS) == {*SLOT_PARAMETERS, *ROLLING_PARAMETERS}
    carried_parameters = BaseStackEngine().carried_parameters

    production = StackState(
        name="web-production",
        exists=True,
        image="ami-0123456789abcdef0",
        parameters={
            "ImageId": "ami-0123456789abcdef0",
            "DesiredCapacity": "3",
            "InstanceType": "t3.small",
            "CanaryImageId": "ami-0fedcba9876543210",
            "CanaryCapacity": "1",
            "PrimaryWeight": "90",
            "CanaryWeight": "10",
            "RollingMaxBatchSize": "3",
            "RollingMinInService": "0",
            "RollingPauseTime": "PT0S",
        },
    )
    assert carried_parameters(production, "ImageId") == {"DesiredCapacity": "3", "InstanceType": "t3.small"}
    assert carried_parameters(StackState(name="gone", exists=False), "ImageId") is None
