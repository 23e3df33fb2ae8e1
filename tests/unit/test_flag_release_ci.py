"""A flag release as CI and the profiles see it: a FlagRollout refused where no executor can carry it
out (validate, run preflight, render), the alert route's token bound into every job that acts on its
environment (by name only) and a deploy refused without it, and a flag flip always a job of its own."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline import (
    Approval,
    Bake,
    Environment,
    Flag,
    FlagRollout,
    Pipeline,
    PipelineSpec,
    Promote,
    Shell,
    Verify,
)
from pipeline.errors import ProfileCannotError
from pipeline.ledger import Ledger
from pipeline.render import render
from pipeline.render.base import RenderContext
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
