"""The target-neutral CI plan every renderer reads (and the spec factories the render tests share)."""

from __future__ import annotations

from typing import Any

from pipeline import (
    Approval,
    AwsSettings,
    Bake,
    CommitTest,
    Environment,
    Pipeline,
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
from pipeline.render.base import RenderContext
from pipeline.render.plan import SETUP_MINUTES, STEP_SLACK_MINUTES, CiPlan, StageGroup, build_plan, camel


def chain_spec(
    *,
    profile: str = "local",
    approval: Approval | None = None,
    install: str | None = None,
    secrets: tuple[Secret, ...] = (),
    promote_branches: tuple[str, ...] = (),
    test_stack_branches: tuple[str, ...] = (),
    update_branches: tuple[str, ...] = (),
    teardown_branches: tuple[str, ...] = (),
    name: str = "chain",
) -> PipelineSpec:
    """The reference chain: commit-test -> bake -> test-stack -> update -> rollback -> teardown -> promote."""
    gate = approval if approval is not None else Approval(message="Ship it?", approvers=("alice",))
    kwargs = {"install": install} if install is not None else {}
    with Pipeline(
        name,
        environments=[
            Environment(name="test", ephemeral=True, profile=profile),  # type: ignore[arg-type]
            Environment(
                name="production",
                profile=profile,  # type: ignore[arg-type]
                template="templates/web.yaml",
                approval=gate,
                secrets=secrets,
                aws=AwsSettings(region="eu-central-1"),
            ),
        ],
        **kwargs,
    ) as p:
        ok = Verify()
        test = CommitTest(name="commit-test", commands=["pytest -q"])
        bake = Bake(name="bake", template="images/web.pkr.hcl")
        stack = TestStack(name="test-stack", environment="test", image=bake, branches=test_stack_branches)
        update = UpdateStack(
            name="update-stack",
            stack=stack,
            image=bake,
            verify=ok,
            retries=2,
            timeout_minutes=15,
            branches=update_branches,
        )
        rollback = SimulatedRollback(name="rollback", stack=stack)
        teardown = Teardown(name="teardown", stack=stack, branches=teardown_branches)
        promote = Promote(name="promote", image=bake, branches=promote_branches)
        test >> bake >> stack >> update >> rollback >> teardown >> promote
    return p.spec


def fan_spec() -> PipelineSpec:
    """commit-test -> [lint, unit, docs] -> package -> publish (main only)."""
    with Pipeline("fan") as p:
        test = CommitTest(name="commit-test", commands=["pytest -q"])
        lint = Shell(name="lint", commands=["ruff check ."])
        unit = Shell(name="unit", commands=["pytest"], env={"ZED": "1", "ALPHA": "2"})
        docs = Shell(name="docs", commands=["mkdocs build"])
        package = Shell(name="package", commands=["python -m build"])
        publish = Shell(name="publish", commands=["twine upload dist/*"], branches=["main", "release/*"])
        test >> [lint, unit, docs]
        [lint, unit, docs] >> package
        package >> publish
    return p.spec


def test_the_plan_follows_the_graph_and_resolves_environments() -> None:
    plan = build_plan(chain_spec(), RenderContext())
    names = [s.name for s in plan.stages]
    assert names == ["commit-test", "bake", "test-stack", "update-stack", "rollback", "teardown", "promote"]
    promote = plan.by_name["promote"]
    assert promote.environment is not None
    assert promote.environment.name == "production"
    assert promote.gate is not None
    assert promote.lock == "production"
    assert promote.deploys
    assert plan.by_name["update-stack"].environment.name == "test"  # type: ignore[union-attr]
    assert plan.by_name["update-stack"].lock is None  # ephemeral: one stack per run, nothing to lock
    assert plan.by_name["teardown"].always
    assert plan.sinks == ("promote",)
    assert plan.locks == ("production",)


def test_commands_carry_profile_yes_and_the_definition_file() -> None:
    plan = build_plan(chain_spec(profile="aws"), RenderContext(definition="ci/pipe line.py"))
    promote = plan.by_name["promote"].run_command
    assert (
        promote
        == "pipeline run stage promote --manifest .pipeline/ci/manifest --profile aws --yes -f 'ci/pipe line.py'"
    )
    # A commit test does not depend on a profile: no --profile, no cloud credentials.
    assert plan.by_name["commit-test"].run_command.endswith("--manifest .pipeline/ci/manifest -f 'ci/pipe line.py'")
    # A bake has no environment: the pipeline's profile (local by default), so no AWS credentials.
    assert "--profile local" in plan.by_name["bake"].run_command
    assert plan.by_name["bake"].aws is None
    assert plan.render_command("github", check=True) == "pipeline render --target github --check -f 'ci/pipe line.py'"


def test_a_pipeline_level_profile_reaches_stages_without_an_environment() -> None:
    with Pipeline("web", profile="aws") as p:
        unit = CommitTest(name="unit", commands=["true"])
        bake = Bake(name="bake", template="images/web.pkr.hcl", aws=AwsSettings(region="eu-west-1"))
        unit >> bake
    plan = build_plan(p.spec, RenderContext())
    assert "--profile" not in plan.by_name["unit"].run_command
    assert plan.by_name["unit"].aws is None
    assert plan.by_name["bake"].run_command.endswith("--profile aws")
    access = plan.by_name["bake"].aws
    assert access is not None
    assert access.environment == "build"
    assert access.settings.region == "eu-west-1"


def test_timeouts_cover_every_attempt_plus_set_up() -> None:
    plan = build_plan(chain_spec(), RenderContext())
    assert plan.by_name["update-stack"].timeout_minutes == 15 * 3 + SETUP_MINUTES
    assert plan.by_name["bake"].timeout_minutes == 60 + SETUP_MINUTES


def test_branch_groups_collect_the_ancestors_filters() -> None:
    plan = build_plan(chain_spec(test_stack_branches=("main",), promote_branches=("release/*",)), RenderContext())
    assert plan.by_name["bake"].branch_groups == ()
    assert plan.by_name["update-stack"].branch_groups == (("main",),)
    assert plan.by_name["promote"].branch_groups == (("main",), ("release/*",))


def test_guard_needs_reach_through_the_teardown() -> None:
    plan = build_plan(chain_spec(), RenderContext())
    assert plan.guard_needs(plan.by_name["promote"]) == ("test-stack", "rollback")
    assert plan.guard_needs(plan.by_name["rollback"]) == ()


def test_secrets_merge_stage_first_then_environment_and_aws_binding_yields_to_explicit_keys() -> None:
    explicit = (Secret(name="AWS_ACCESS_KEY_ID"), Secret(name="AWS_SECRET_ACCESS_KEY"))
    plan = build_plan(chain_spec(profile="aws", secrets=explicit), RenderContext())
    promote = plan.by_name["promote"]
    assert [s.name for s in promote.secrets] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    assert promote.aws is None  # the definition binds AWS credentials itself
    assert plan.by_name["update-stack"].aws is not None
    assert plan.by_name["update-stack"].aws.settings.region == "us-east-1"  # type: ignore[union-attr]
    assert build_plan(chain_spec(profile="local"), RenderContext()).by_name["promote"].aws is None


def test_plain_env_is_sorted_whatever_the_dict_order() -> None:
    plan = build_plan(fan_spec(), RenderContext())
    assert plan.by_name["unit"].env == (("ALPHA", "2"), ("ZED", "1"))


def test_camel_case_names() -> None:
    assert camel("update-stack") == "UpdateStack"
    assert camel("ab-1") == "Ab_1"
    assert camel("a") == "A"


# ----------------------------------------------------------------------------- rehearsal groups


def rehearsal_spec(profile: str = "local", **middle: Any) -> PipelineSpec:
    """bake -> test-stack -> check -> teardown -> publish; `middle` are the Shell fields of `check`."""
    with Pipeline(
        "rehearsal",
        environments=[
            Environment(name="test", ephemeral=True, profile=profile),  # type: ignore[arg-type]
            Environment(name="production", template="templates/web.yaml"),
            Environment(name="staging"),
        ],
    ) as p:
        bake = Bake(name="bake", template="images/web.pkr.hcl")
        stack = TestStack(name="test-stack", environment="test", image=bake)
        check = Shell(**{"name": "check", "commands": ["true"], **middle})
        teardown = Teardown(name="teardown", stack=stack)
        publish = Shell(name="publish", commands=["true"])
        bake >> stack >> check >> teardown >> publish
    return p.spec


def two_stacks(shape: str) -> PipelineSpec:
    """Two local test stacks after one bake: 'nested' (b inside a), 'overlap' (a's teardown first),
    or 'crossed' (disjoint protected sets that would need each other as jobs)."""
    with Pipeline(
        shape,
        environments=[
            Environment(name="a", ephemeral=True),
            Environment(name="b", ephemeral=True),
            Environment(name="production", template="templates/web.yaml"),
        ],
    ) as p:
        bake = Bake(name="bake", template="images/web.pkr.hcl")
        stack_a = TestStack(name="stack-a", environment="a", image=bake)
        stack_b = TestStack(name="stack-b", environment="b", image=bake)
        if shape == "crossed":
            a1 = Shell(name="a1", commands=["true"])
            a2 = Shell(name="a2", commands=["true"])
            b1 = Shell(name="b1", commands=["true"])
            b2 = Shell(name="b2", commands=["true"])
            down_a = Teardown(name="down-a", stack=stack_a)
            down_b = Teardown(name="down-b", stack=stack_b)
            bake >> [stack_a, stack_b]
            stack_a >> [a1, a2]
            stack_b >> [b1, b2]
            a1 >> [b1, down_a]
            b2 >> [a2, down_b]
            b1 >> down_b
            a2 >> down_a
        else:
            use = Shell(name="use", commands=["true"])
            first = Teardown(
                name="down-b" if shape == "nested" else "down-a", stack=stack_b if shape == "nested" else stack_a
            )
            second = Teardown(
                name="down-a" if shape == "nested" else "down-b", stack=stack_a if shape == "nested" else stack_b
            )
            after = Shell(name="after", commands=["true"])
            bake >> stack_a >> stack_b >> use >> first >> second >> after
    return p.spec


def only_group(plan: CiPlan) -> StageGroup:
    assert len(plan.groups) == 1, [g.name for g in plan.groups]
    return plan.groups[0]


def test_a_local_rehearsal_is_one_group_from_the_stack_to_its_teardown() -> None:
    plan = build_plan(chain_spec(), RenderContext())
    group = only_group(plan)
    assert group.name == "rehearsal-test-stack"
    assert group.names == ("test-stack", "update-stack", "rollback", "teardown")
    assert group.stacks == ("test-stack",)
    assert [t.name for t in group.teardowns] == ["teardown"]
    assert group.needs == ("bake",)
    assert group.ancestors == ("commit-test", "bake")
    assert [u.name for u in plan.units] == ["commit-test", "bake", "rehearsal-test-stack", "promote"]
    assert plan.jobs_of(plan.by_name["promote"].needs) == ("rehearsal-test-stack", "bake")
    steps = [60 + STEP_SLACK_MINUTES, 15 * 3 + STEP_SLACK_MINUTES, 60 + STEP_SLACK_MINUTES, 60 + STEP_SLACK_MINUTES]
    assert [m.step_minutes for m in group.members] == steps
    assert group.timeout_minutes == sum(steps) + SETUP_MINUTES


def test_an_aws_rehearsal_is_not_grouped() -> None:
    plan = build_plan(chain_spec(profile="aws"), RenderContext())
    assert plan.groups == ()
    assert [u.name for u in plan.units] == [s.name for s in plan.stages]


def test_a_teardown_runs_where_its_stack_ran_and_later_steps_carry_earlier_filters() -> None:
    plan = build_plan(chain_spec(test_stack_branches=("main",), update_branches=("main", "rc/*")), RenderContext())
    group = only_group(plan)
    assert group.run_groups == (
        (("main",),),
        (("main",), ("main", "rc/*")),
        (("main",), ("main", "rc/*")),
        (("main",),),  # the teardown: its stack's filters, not update-stack's
    )
    assert group.shared_groups == (("main",),)


def test_a_stage_between_stack_and_teardown_joins_the_group_and_one_beside_it_does_not() -> None:
    with Pipeline(
        "beside",
        environments=[Environment(name="test", ephemeral=True), Environment(name="production", template="t.yaml")],
    ) as p:
        bake = Bake(name="bake", template="images/web.pkr.hcl")
        stack = TestStack(name="test-stack", environment="test", image=bake)
        smoke = Shell(name="smoke", commands=["true"])
        notify = Shell(name="notify", commands=["true"])
        teardown = Teardown(name="teardown", stack=stack)
        bake >> stack >> [smoke, notify]
        smoke >> teardown
    plan = build_plan(p.spec, RenderContext())
    assert only_group(plan).names == ("test-stack", "smoke", "teardown")
    assert plan.jobs_of(plan.by_name["notify"].needs) == ("rehearsal-test-stack",)


def test_nested_and_overlapping_rehearsals_share_one_group() -> None:
    for shape, teardowns in (("nested", ["down-b", "down-a"]), ("overlap", ["down-a", "down-b"])):
        plan = build_plan(two_stacks(shape), RenderContext())
        group = only_group(plan)
        assert group.name == "rehearsal-stack-a"
        assert group.names == ("stack-a", "stack-b", "use", *teardowns)
        assert group.stacks == ("stack-a", "stack-b")
        assert plan.jobs_of(plan.by_name["after"].needs) == ("rehearsal-stack-a",)


def test_rehearsals_that_would_need_each_other_as_jobs_are_merged() -> None:
    plan = build_plan(two_stacks("crossed"), RenderContext())
    group = only_group(plan)
    assert set(group.names) == {"stack-a", "stack-b", "a1", "a2", "b1", "b2", "down-a", "down-b"}
    assert group.needs == ("bake",)


def test_the_group_name_avoids_a_stage_of_that_name() -> None:
    with Pipeline(
        "clash",
        environments=[Environment(name="test", ephemeral=True), Environment(name="production", template="t.yaml")],
    ) as p:
        bake = Bake(name="bake", template="images/web.pkr.hcl")
        stack = TestStack(name="test-stack", environment="test", image=bake)
        teardown = Teardown(name="teardown", stack=stack)
        clash = Shell(name="rehearsal-test-stack", commands=["true"])
        bake >> stack >> teardown >> clash
    plan = build_plan(p.spec, RenderContext())
    assert only_group(plan).name == "rehearsal-test-stack-2"
    assert [u.name for u in plan.units] == ["bake", "rehearsal-test-stack-2", "rehearsal-test-stack"]
