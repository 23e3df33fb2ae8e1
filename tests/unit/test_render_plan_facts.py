"""The CI plan learns what a stage's job needs from the stage's kind (class-level facts and the
methods `Stage` gives defaults for), never from its kind's name or its field names: a plugin kind
that builds with Packer or pushes a commit gets the agent, root, credentials and checkout a bake
or a promote gets, and a kind that merely has fields named like theirs gets none of it."""

from __future__ import annotations

import ast
from typing import ClassVar, Literal

from pipeline import AwsSettings, CommitTest, Environment, Pipeline, PipelineSpec
from pipeline.kinds import registered
from pipeline.model import Stage
from pipeline.render.base import RenderContext
from pipeline.render.plan import BUILD_ACCESS, StagePlan, build_plan
from tests.conftest import REPO


class Forge(Stage):
    """A test-only kind that builds an image with Packer and checks it in Docker (not named bake)."""

    kind: Literal["forge"] = "forge"
    base: str = "pipeline-forge:1"
    region: str = "eu-west-3"

    uses_profile: ClassVar[bool] = True
    runs_packer: ClassVar[bool] = True

    def checks_in_docker(self) -> bool:
        return True

    def docker_base_image(self) -> str:
        return self.base

    def build_aws_settings(self) -> AwsSettings:
        return AwsSettings(region=self.region)


class Ship(Stage):
    """A test-only kind that records what it ships in a git commit and pushes it."""

    kind: Literal["ship"] = "ship"
    environment: str

    uses_profile: ClassVar[bool] = True

    def environment_name(self) -> str | None:
        return self.environment

    def commits_and_pushes(self) -> bool:
        return True


class LookAlike(Stage):
    """Fields named like a bake's and a promote's, and no facts declared."""

    kind: Literal["look-alike"] = "look-alike"
    environment: str | None = None
    sources: dict[str, str] = {"local": "docker.web", "aws": "amazon-ebs.web"}
    checks: str = "checks"
    variables: dict[str, str] = {"base_image": "pipeline-look:1"}
    base_image: str = "pipeline-look:1"
    commit: bool = True
    push: bool = True
    aws: AwsSettings = AwsSettings(region="ap-south-1")

    uses_profile: ClassVar[bool] = True

    def environment_name(self) -> str | None:
        return self.environment


def _plans() -> dict[str, StagePlan]:
    with Pipeline(
        "facts",
        profile="aws",
        environments=[Environment(name="production", profile="aws", template="templates/web.yaml")],
    ) as p:
        unit = CommitTest(name="unit", commands=["true"])
        unit >> Forge(name="forge")
        unit >> Ship(name="ship", environment="production")
        unit >> LookAlike(name="look-build")
        unit >> LookAlike(name="look-ship", environment="production")
    spec: PipelineSpec = p.spec
    return {s.name: s for s in build_plan(spec, RenderContext()).stages}


def test_a_kind_that_declares_packer_and_docker_checks_gets_their_agent_and_build_credentials() -> None:
    forge = _plans()["forge"]
    agent = forge.agent
    assert (agent.packer, agent.docker, agent.persistent, agent.root) == (True, True, False, True)
    assert agent.base_image == "pipeline-forge:1"
    assert agent.labels == ("docker", "packer", "root")
    assert forge.aws is not None
    assert (forge.aws.environment, forge.aws.settings.region) == (BUILD_ACCESS, "eu-west-3")


def test_a_kind_that_declares_it_pushes_gets_a_pushing_job() -> None:
    assert _plans()["ship"].pushes


def test_fields_named_like_a_bakes_or_a_promotes_say_nothing() -> None:
    plans = _plans()
    build, ship = plans["look-build"], plans["look-ship"]
    assert (build.agent.packer, build.agent.docker, build.agent.root) == (False, False, False)
    assert build.agent.labels == ()
    assert build.aws is not None
    assert build.aws.settings == AwsSettings()
    assert not ship.pushes


def test_the_plan_names_no_kind_and_probes_no_field() -> None:
    """The facts live on the kinds: plan.py compares with no kind's name and calls no getattr."""
    tree = ast.parse((REPO / "pipeline" / "render" / "plan.py").read_text())
    kinds = set(registered())
    assert kinds >= {"bake", "promote"}
    named = sorted({n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in kinds})
    assert named == [], f"plan.py names stage kinds {named}"
    probes = [
        ast.unparse(n)
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("getattr", "hasattr")
    ]
    assert probes == [], f"plan.py probes stages: {probes}"
