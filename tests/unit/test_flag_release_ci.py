"""A flag release as CI and the profiles see it: a FlagRollout refused where no executor can carry it
out (validate, run preflight, render), the alert route's token bound into every job that acts on its
environment (by name only) and a deploy refused without it, and a flag flip always a job of its own."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import (
    Approval,
    Bake,
    Environment,
    Flag,
    FlagRollout,
    Pipeline,
    PipelineSpec,
    Promote,
    Secret,
    Shell,
    Verify,
)
from pipeline.engines.docker_stack.engine import DockerStackEngine
from pipeline.errors import BadInputError, ProfileCannotError
from pipeline.ledger import Ledger
from pipeline.profiles.local import LOCAL
from pipeline.render import render
from pipeline.render.base import RenderContext
from pipeline.render.plan import LOCK_PREFIX, build_plan
from pipeline.render.registry import BUILTIN
from pipeline.run.plan import Planner
from tests.conftest import REPO
from tests.unit.cli_inprocess import run_cli

EXAMPLE = REPO / "examples" / "feature-flags"
TOKEN_VALUE = "s3cr3t-alert-token-value"


def flag_spec(
    *, profile: str = "local", approval: Approval | None = None, alert: str | None = None, smoke: bool = True
) -> PipelineSpec:
    """bake -> promote -> release (a FlagRollout) [-> smoke], all but bake on production."""
    with Pipeline(
        "shop",
        flags=[Flag(name="new-checkout", default=False)],
        environments=[
            Environment(
                name="production",
                profile=profile,  # type: ignore[arg-type]
                template="templates/web.yaml",
                approval=approval,
                alert_secret=alert,
            )
        ],
    ) as p:
        bake = Bake(name="bake", template="images/web.pkr.hcl")
        promote = Promote(name="promote", environment="production", image=bake, verify=Verify())
        release = FlagRollout(name="release", environment="production", flag="new-checkout")
        chain = bake >> promote >> release
        if smoke:
            chain >> Shell(name="smoke", environment="production", commands=["true"])
    return p.spec


def rendered(spec: PipelineSpec, target: str) -> dict[str, str]:
    return {f.path: f.content for f in render(spec, [target], RenderContext())}


@pytest.fixture
def example(tmp_path: Path) -> Path:
    root = tmp_path / "ff"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("golden", "__pycache__"))
    return root


# --- 1. a FlagRollout where no executor can carry it out ----------------------------------------------


def test_validate_refuses_a_flag_rollout_on_the_aws_profile_naming_stage_and_profile(
    example: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The preflight a run makes refuses it with exit 2 (not a silent skip), before any tool runs;
    the local profile takes the same definition."""
    refused = run_cli(["validate", "--definition-only", "--profile", "aws"], example, capsys)
    assert refused.code == 2, refused.out + refused.err
    assert "the aws profile cannot carry out flag-rollout (stage 'release-feature')" in refused.err
    assert "hint: run 'release-feature' with --profile local" in refused.err
    assert "Traceback" not in refused.err
    accepted = run_cli(["validate", "--definition-only", "--profile", "local"], example, capsys)
    assert accepted.code == 0, accepted.out + accepted.err


def test_the_refusal_comes_before_any_template_check_and_before_a_run(tmp_path: Path) -> None:
    """`check_templates` (validate without --definition-only) and a run's preflight refuse it first,
    with the dark launch's error type: no executor is asked, no tool started."""
    spec = flag_spec(smoke=False)
    asked: list[str] = []

    def executor(stage: Any) -> Any:
        asked.append(stage.name)
        raise AssertionError("no executor may be made before the refusal")

    planner = Planner(spec, tmp_path, Ledger(tmp_path), executor, engines=None)  # type: ignore[arg-type]
    with pytest.raises(ProfileCannotError, match=r"the aws profile cannot carry out flag-rollout \(stage 'release'\)"):
        planner.check_templates("aws")
    with pytest.raises(ProfileCannotError) as caught:
        planner.preflight(["bake", "promote", "release"], "aws")
    assert caught.value.exit_code == 2
    assert asked == []


def test_every_stage_the_profile_cannot_carry_out_is_named_at_once() -> None:
    """Like the rest of validate, one refusal lists every such stage (not only the first), with
    each stage's hint once."""
    with Pipeline(
        "shop",
        flags=[Flag(name="a", default=False), Flag(name="b", default=False)],
        environments=[Environment(name="production", profile="aws", template="templates/web.yaml")],
    ) as p:
        bake = Bake(name="bake", template="images/web.pkr.hcl")
        promote = Promote(name="promote", environment="production", image=bake, verify=Verify())
        promote >> FlagRollout(name="release-a", environment="production", flag="a")
        promote >> FlagRollout(name="release-b", environment="production", flag="b")
    with pytest.raises(ProfileCannotError) as caught:
        p.spec.check_profiles()
    message = str(caught.value)
    assert "cannot carry out flag-rollout (stage 'release-a')" in message
    assert "and the aws profile cannot carry out flag-rollout (stage 'release-b')" in message
    assert caught.value.what == "flag-rollout (stage 'release-a')"
    assert [m.what for m in caught.value.more] == ["flag-rollout (stage 'release-b')"]
    assert (caught.value.hint or "").count("environment 'production'") == 1  # the same hint, said once
    assert caught.value.exit_code == 2
    with pytest.raises(ProfileCannotError) as only:
        p.spec.check_profiles("aws", ["release-b"])
    assert "release-a" not in str(only.value)
    assert only.value.more == ()


def test_a_run_of_other_stages_is_not_refused_for_the_rollout(tmp_path: Path) -> None:
    spec = flag_spec(smoke=False)
    spec.check_profiles("aws", ["bake", "promote"])  # not selected: not refused
    spec.check_profiles("local")
    spec.check_profiles()  # CI runs production on the local profile


@pytest.mark.parametrize("target", list(BUILTIN))
def test_render_refuses_a_flag_rollout_whose_environment_is_on_aws(target: str) -> None:
    """CI would run `release --profile aws`, which can never succeed: no target renders it."""
    with pytest.raises(ProfileCannotError) as caught:
        render(flag_spec(profile="aws"), [target], RenderContext())
    assert "the aws profile cannot carry out flag-rollout (stage 'release')" in str(caught.value)
    assert "environment 'production'" in (caught.value.hint or "")
    assert caught.value.exit_code == 2


def test_render_through_the_cli_exits_2_and_writes_nothing(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    definition = example / "pipelinefile.py"
    text = definition.read_text()
    definition.write_text(text.replace('name="production",', 'name="production",\n            profile="aws",', 1))
    before = sorted(p for p in example.rglob("*"))
    result = run_cli(["render", "--target", "all"], example, capsys)
    assert result.code == 2, result.out + result.err
    assert "the aws profile cannot carry out flag-rollout (stage 'release-feature')" in result.err
    assert sorted(p for p in example.rglob("*") if "__pycache__" not in p.parts) == [
        p for p in before if "__pycache__" not in p.parts
    ]
    validated = run_cli(["validate", "--definition-only"], example, capsys)
    assert validated.code == 2, validated.out + validated.err  # validate finds what render would refuse


# --- 2. the alert route's token reaches CI, and no deploy drops the route -----------------------------


@pytest.mark.parametrize("target", list(BUILTIN))
def test_the_alert_secret_is_bound_into_every_job_acting_on_its_environment(target: str) -> None:
    files = rendered(flag_spec(alert="FF_ALERT_TOKEN"), target)
    text = "\n".join(files.values())
    assert "FF_ALERT_TOKEN" in text
    assert TOKEN_VALUE not in text
    without = "\n".join(rendered(flag_spec(), target).values())
    assert "FF_ALERT_TOKEN" not in without
    plan = build_plan(flag_spec(alert="FF_ALERT_TOKEN"), RenderContext())
    bound = {s.name: [x.name for x in s.secrets] for s in plan.stages}
    assert bound == {
        "bake": [],
        "promote": ["FF_ALERT_TOKEN"],
        "release": ["FF_ALERT_TOKEN"],
        "smoke": ["FF_ALERT_TOKEN"],
    }


def test_each_target_binds_it_its_own_way_on_the_deploying_job() -> None:
    spec = flag_spec(alert="FF_ALERT_TOKEN")
    jenkins = rendered(spec, "jenkins")["Jenkinsfile"]
    promote = jenkins[jenkins.index("stage('promote')") : jenkins.index("stage('release')")]
    assert "FF_ALERT_TOKEN = credentials('ff-alert-token')" in promote
    teamcity = rendered(spec, "teamcity")[".teamcity/settings.kts"]
    promote = teamcity[teamcity.index("object Promote") : teamcity.index("object Release")]
    assert 'password("env.FF_ALERT_TOKEN", ""' in promote
    github = yaml.safe_load(rendered(spec, "github")[".github/workflows/shop.yml"])
    steps = github["jobs"]["promote"]["steps"]
    assert any(s.get("env", {}).get("FF_ALERT_TOKEN") == "${{ secrets.FF_ALERT_TOKEN }}" for s in steps)
    gitlab = rendered(spec, "gitlab")[".gitlab-ci.yml"]
    assert "#   FF_ALERT_TOKEN: read by promote, release, smoke" in gitlab


def test_an_environment_listing_the_secret_itself_keeps_its_own_mapping() -> None:
    env = Environment(
        name="production", alert_secret="FF_ALERT_TOKEN", secrets=(Secret(name="FF_ALERT_TOKEN", jenkins="ff-token"),)
    )
    assert env.bound_secrets == (Secret(name="FF_ALERT_TOKEN", jenkins="ff-token"),)
    assert Environment(name="production").bound_secrets == ()


class NoDocker:
    """A Docker client any use of which fails the test: the refusal must come before it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the Docker client was used ({name}) before the refusal")


def test_a_deploy_without_the_alert_token_is_refused_before_anything_changes(tmp_path: Path) -> None:
    engine = DockerStackEngine(
        "shop",
        EXAMPLE / "templates" / "web.yaml",
        client=NoDocker(),
        alert_secret="FF_ALERT_TOKEN",
        environment="production",
    )
    for attempt in (
        lambda: engine.ready("shop-production"),
        lambda: engine.check_deploy("shop-production", "shop-bake:1"),
        lambda: engine.deploy("shop-production", "shop-bake:1"),
    ):
        with pytest.raises(BadInputError) as caught:
            attempt()
        assert caught.value.exit_code == 2
        assert "environment 'production' declares an alert route" in str(caught.value)
        assert "FF_ALERT_TOKEN is not set" in str(caught.value)
        assert "export FF_ALERT_TOKEN=" in (caught.value.hint or "")


def test_the_local_profile_hands_the_engine_the_variable_and_its_token() -> None:
    spec = flag_spec(alert="FF_ALERT_TOKEN", smoke=False)
    env = spec.environment("production")
    template = EXAMPLE / "templates" / "web.yaml"
    unset = LOCAL.stack_engine(spec, env, template, environ={})
    with pytest.raises(BadInputError, match="FF_ALERT_TOKEN is not set"):
        unset.check_deploy("shop-production", "shop-bake:1")
    with pytest.raises(BadInputError, match="FF_ALERT_TOKEN is not set"):
        LOCAL.stack_engine(spec, env, template, environ={"FF_ALERT_TOKEN": ""}).check_deploy("s", "i")
    LOCAL.stack_engine(spec, env, template, environ={"FF_ALERT_TOKEN": TOKEN_VALUE}).check_deploy("s", "i")
    plain = flag_spec(smoke=False)
    LOCAL.stack_engine(plain, plain.environment("production"), template, environ={}).check_deploy("s", "i")


# --- 3. a flag flip is its own job, gated with its environment ----------------------------------------


@pytest.mark.parametrize("target", list(BUILTIN))
def test_a_flag_rollout_is_never_merged_into_the_environments_lock_job(target: str) -> None:
    """Without an approval, promote -> release -> smoke all hold production's lock; the rollout still
    gets a job of its own on every target (and no span reaches across it)."""
    spec = flag_spec()
    plan = build_plan(spec, RenderContext())
    assert plan.job_of("release") == "release"
    assert all("release" not in span for span in plan.lock_spans)
    assert plan.by_name["release"].lock == "production"  # it still deploys alone
    text = "\n".join(rendered(spec, target).values())
    assert f"{LOCK_PREFIX}production" not in text
    assert text.count("pipeline run stage release ") == 1


def test_the_stages_around_it_still_share_the_lock_when_they_are_consecutive() -> None:
    """A span without the rollout in it is untouched: promote and smoke, consecutive, are one job."""
    with Pipeline(
        "shop",
        flags=[Flag(name="new-checkout", default=False)],
        environments=[Environment(name="production", template="templates/web.yaml")],
    ) as p:
        bake = Bake(name="bake", template="images/web.pkr.hcl")
        promote = Promote(name="promote", environment="production", image=bake, verify=Verify())
        smoke = Shell(name="smoke", environment="production", commands=["true"])
        release = FlagRollout(name="release", environment="production", flag="new-checkout")
        bake >> promote >> smoke >> release
    plan = build_plan(p.spec, RenderContext())
    assert plan.lock_spans == (("promote", "smoke"),)
    assert plan.job_of("promote") == plan.job_of("smoke") == f"{LOCK_PREFIX}production"
    assert plan.job_of("release") == "release"


def _gated_jobs(target: str, files: dict[str, str]) -> set[str]:
    """The jobs a human must approve, read from each target's own syntax."""
    if target == "github":  # a protected environment, whose reviewers the job's first step checks
        workflow = yaml.safe_load(files[".github/workflows/shop.yml"])
        return {
            name
            for name, job in workflow["jobs"].items()
            if any("pipeline ci github-reviewers" in s.get("run", "") for s in job["steps"])
        }
    if target == "gitlab":  # a manual job that checks who started it
        pipeline = yaml.safe_load(files[".gitlab-ci.yml"])
        return {
            name
            for name, job in pipeline.items()
            if isinstance(job, dict)
            and job.get("when") == "manual"
            and any("pipeline ci gitlab-approval" in line for line in job.get("script", []))
        }
    if target == "jenkins":
        text = files["Jenkinsfile"]
        return {
            line.split("'")[1].removeprefix("approve ")
            for line in text.splitlines()
            if line.strip().startswith("stage('approve ")
        }
    text = files[".teamcity/settings.kts"]
    objects = text.split("\nobject ")[1:]
    return {o.split(" ", 1)[0].lower() for o in objects if "approval {" in o}


@pytest.mark.parametrize("target", list(BUILTIN))
def test_a_flag_rollout_is_gated_by_its_environments_approval_on_every_target(target: str) -> None:
    gated = _gated_jobs(target, rendered(flag_spec(approval=Approval(message="Flip?", approvers=("alice",))), target))
    assert "release" in gated
    assert "release" not in _gated_jobs(target, rendered(flag_spec(), target))
