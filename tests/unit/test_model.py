"""The spec is plain data: frozen, strict, and lossless through JSON (one test per stage kind)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline import (
    Approval,
    Bake,
    CommitTest,
    Database,
    Environment,
    Flag,
    FlagRollout,
    Migrate,
    PipelineSpec,
    Promote,
    Secret,
    Shell,
    SimulatedRollback,
    Teardown,
    TestStack,
    UpdateStack,
    Verify,
)
from pipeline.stages import STAGE_KINDS

ENVIRONMENTS = (
    Environment(name="test", ephemeral=True),
    Environment(
        name="production",
        template="templates/web.yaml",
        approval=Approval(message="ship?", approvers=("alice",), groups=("ops",), timeout_minutes=30),
        secrets=("AWS_SECRET_ACCESS_KEY",),
        database=Database(migrations="migrations", sensitive=("users.email",)),
    ),
)

# One fully-populated example of every stage kind, in a chain that satisfies the whole-tree rules.
EXAMPLES = {
    "commit-test": CommitTest(
        name="commit-test",
        commands=("pytest -q",),
        junit="report.xml",
        env={"PYTHONHASHSEED": "0"},
        secrets=(Secret(name="PYPI_TOKEN", jenkins="pypi", teamcity="credentialsJSON:abc", github="PYPI"),),
        timeout_minutes=15,
        retries=2,
        branches=("main", "release/*"),
    ),
    "shell": Shell(name="lint", commands=("ruff check .",), inputs=("src",), needs=("commit-test",)),
    "bake": Bake(
        name="bake",
        template="images/web.pkr.hcl",
        variables={"version": "1.2.3"},
        checks="serverspec",
        needs=("commit-test",),
    ),
    "test-stack": TestStack(name="test-stack", environment="test", like="production", image="bake", needs=("bake",)),
    "update-stack": UpdateStack(
        name="update-stack",
        stack="test-stack",
        image="bake",
        verify=Verify(path="/", expect_text="Hello World 1.2.3", requests=5),
        needs=("test-stack", "bake"),
    ),
    "simulated-rollback": SimulatedRollback(name="rollback", stack="test-stack", needs=("update-stack", "test-stack")),
    "teardown": Teardown(name="teardown", stack="test-stack", needs=("rollback", "test-stack")),
    "promote": Promote(name="promote", image="bake", needs=("teardown", "bake"), author="Bot <bot@example.com>"),
    "migrate": Migrate(name="contract", environment="production", phase="contract", image="bake", needs=("promote",)),
    "flag-rollout": FlagRollout(
        name="release-greeting", environment="production", flag="new-greeting", steps=(10, 100), needs=("promote",)
    ),
}


def full_spec() -> PipelineSpec:
    return PipelineSpec(
        name="web",
        stages=tuple(EXAMPLES.values()),
        environments=ENVIRONMENTS,
        flags=(Flag(name="new-greeting", default=False, description="the new page"),),
    )


def test_every_stage_kind_has_an_example() -> None:
    assert {cls.model_fields["kind"].default for cls in STAGE_KINDS} == set(EXAMPLES)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_each_stage_kind_round_trips_through_json(kind: str) -> None:
    stage = EXAMPLES[kind]
    again = type(stage).model_validate_json(stage.model_dump_json())
    assert again == stage
    assert again.model_dump() == stage.model_dump()


def test_the_whole_spec_round_trips_through_json_losslessly() -> None:
    spec = full_spec()
    text = spec.model_dump_json()
    again = PipelineSpec.model_validate_json(text)
    assert again == spec
    assert again.model_dump_json() == text
    assert [type(s) for s in again.stages] == [type(s) for s in spec.stages]


def test_stages_are_frozen() -> None:
    stage = EXAMPLES["commit-test"]
    with pytest.raises(ValidationError, match="frozen"):
        stage.name = "other"  # type: ignore[misc]


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        CommitTest(name="x", commands=("true",), comands=("typo",))  # type: ignore[call-arg]


def test_secrets_accept_plain_names_and_never_hold_values() -> None:
    stage = Shell(name="deploy", commands=("true",), secrets=["AWS_KEY", Secret(name="TOKEN", jenkins="tok")])
    assert [s.name for s in stage.secrets] == ["AWS_KEY", "TOKEN"]
    assert stage.secrets[0].jenkins_id == "aws-key"
    assert stage.secrets[1].github_name == "TOKEN"
    with pytest.raises(ValidationError, match="never the secret value"):
        Secret(name="TOKEN", teamcity="hunter2")


def test_needs_accept_stage_objects_and_deduplicate() -> None:
    a = CommitTest(name="a", commands=("true",))
    b = Shell(name="b", commands=("true",), needs=[a, "a"])
    assert b.needs == ("a",)


def test_references_accept_stage_objects() -> None:
    bake = EXAMPLES["bake"]
    stack = TestStack(name="ts", environment="test", image=bake)
    assert stack.image == "bake"
    assert stack.references() == {"image": "bake"}


def test_graph_levels_show_parallel_groups() -> None:
    spec = full_spec()
    levels = spec.graph.levels()
    assert levels[0] == ["commit-test"]
    assert levels[1] == ["lint", "bake"]
    assert spec.graph.order()[-3:] == ["promote", "contract", "release-greeting"]


def test_approval_comes_from_the_environment_for_deploying_stages() -> None:
    spec = full_spec()
    assert spec.approval_of(spec.stage("promote")) == ENVIRONMENTS[1].approval
    # the test environment is ephemeral and has no gate; a bake never has one
    assert spec.approval_of(spec.stage("update-stack")) is None
    assert spec.approval_of(spec.stage("bake")) is None
    assert spec.environment_of(spec.stage("rollback")) == ENVIRONMENTS[0]


@pytest.mark.parametrize("kind", ["cutover", "rolling", "pilot", "half", "canary", "blue-green"])
def test_every_strategy_round_trips_on_both_deploying_kinds(kind: str) -> None:
    from pipeline.strategy import STRATEGY_KINDS

    for stage in (
        UpdateStack(name="u", stack="ts", image="bake", strategy=kind),
        Promote(name="p", image="bake", strategy=kind),
    ):
        assert type(stage.strategy) is STRATEGY_KINDS[kind]
        assert type(stage).model_validate_json(stage.model_dump_json()) == stage


def test_strategies_validate_their_numbers() -> None:
    from pipeline import Canary, Health

    assert Canary(steps=(5, 25, 100)).steps == (5, 25, 100)
    with pytest.raises(ValidationError, match="must increase"):
        Canary(steps=(50, 10, 100))
    with pytest.raises(ValidationError, match="ending at 100"):
        Canary(steps=(10, 50))
    with pytest.raises(ValidationError, match="greater than 1"):
        Health(max_p99_ratio=0.5)
    with pytest.raises(ValidationError, match="unknown strategy 'canari'"):
        UpdateStack(name="u", stack="ts", image="bake", strategy="canari")
