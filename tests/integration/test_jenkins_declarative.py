"""Rendered Jenkinsfiles, executed against a recording stand-in of the Declarative Pipeline DSL
(tests/ci_grammar/DeclarativeStandIn.groovy, under Groovy 2.4 as Jenkins runs it), then run through
a model of Jenkins' run-time semantics (tests/ci_grammar/jenkins_model.py, after
pipeline-model-definition's ModelInterpreter) and compared with the definition and the plan.

No Jenkins can be installed here, so this is the strongest check available: every value a step
receives is what Groovy evaluates from the file (the exact strings each `sh` runs, the variables
and credentials around it, locks, timeouts, inputs, stash names and patterns), and the assertions
are written against the spec (spec_facts), not against rendered text:

- every stage runs once, as exactly `pipeline run stage NAME` with the plan's flags;
- its variables arrive byte for byte; its secrets (and only those) are bound from credentials;
- every gated stage runs only after an input with the gate's message, submitters and timeout,
  asked while no executor is held; refusing it stops the stage and what follows;
- every stage on a persistent environment holds that environment's lock;
- manifests reach each stage from exactly its upstream stages (every unstash has a stash);
- on every branch exactly the stages the definition runs there run;
- a failure anywhere stops what is downstream, while teardowns of created stacks still run.

The corpus is every example's golden file and a fresh render of it, the repository's own
definition (fresh and committed), and definitions built to be hard to render. One JVM evaluates
every file and mutant (start-up about 1.5 s, then a fraction of a second per file). Known renderer
defects are strict xfails naming the defect: they turn into failures the day the renderer is
fixed, so the mark must then go.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.render import render
from pipeline.render.base import RenderContext
from pipeline.render.plan import CiPlan
from tests.ci_grammar import jenkins_checks as jc
from tests.ci_grammar import spec_facts as facts
from tests.ci_grammar.cases import REPO, Case, carriage_return_spec, cases
from tests.ci_grammar.jenkins_trace import Branch, Trace, missing_tool, run_stand_in
from tests.conftest import need

pytestmark = pytest.mark.integration

CASES = {c.id: c for c in cases("jenkins")}

ISSUE_11_MULTILINE = (
    "issue 11: the Jenkins renderer writes a multi-line value as a ''' string whose continuation lines "
    "it re-indents (templating.block) and whose trailing spaces it strips (render_template)"
)
CATCH_ERROR_TEARDOWN = (
    "renderer defect: the teardown in post { always } is wrapped in catchError, so when the teardown "
    "itself fails the build goes on and the stages after it (approve, promote) still run; the definition "
    "says promote needs teardown"
)
EMPTY_VALUE = (
    "renderer defect: Jenkins' withEnv/environment remove a variable whose value is empty "
    "(hudson.EnvVars.override), so a stage's VAR='' arrives unset"
)
GLOB_DIALECT = (
    "renderer defect: `when { branch 'PATTERN' }` matches with Ant's case-insensitive path glob "
    "(`*` stops at '/', 'Main' matches 'main'), the definition's filters are fnmatch (case-sensitive, "
    "`*` crosses '/'); e.g. `branch pattern: REGEX, comparator: 'REGEXP'` would say what the definition says"
)
TEARDOWN_THEN_MORE = (
    "golden:reference-chain",
    "render:reference-chain",
    "golden:aws-chain",
    "render:aws-chain",
    "render:repo",
    "committed:repo",
    "stress:chain-aws",
    "stress:chain-local-filtered",
    "stress:nested-teardowns",
    "stress:rehearsal-secrets",
)
KNOWN: dict[tuple[str, str], str] = {
    **{("failures", c): CATCH_ERROR_TEARDOWN for c in TEARDOWN_THEN_MORE},
    ("environment", "tricky:multiline"): ISSUE_11_MULTILINE,
    ("commands", "tricky:multiline"): ISSUE_11_MULTILINE,
    ("gates", "tricky:multiline"): ISSUE_11_MULTILINE,
    ("environment", "tricky:empty-value"): EMPTY_VALUE,
}


def params(check: str) -> list[object]:
    return [
        pytest.param(cid, id=cid, marks=pytest.mark.xfail(strict=True, reason=KNOWN[(check, cid)]))
        if (check, cid) in KNOWN
        else pytest.param(cid, id=cid)
        for cid in CASES
    ]


# ----------------------------------------------------------------------------- deliberately broken files


@dataclass(frozen=True)
class Mutant:
    """A golden Jenkinsfile with one mistake, and the check that must report it."""

    id: str
    example: str
    old: str
    new: str
    check: str
    count: int = 1


MUTANTS = [
    Mutant(
        "wrong-credentials-id",
        "secrets-and-branches",
        "credentials('registry-token')",
        "credentials('registry')",
        "secrets",
    ),
    Mutant(
        "secret-interpolated-by-groovy",
        "secrets-and-branches",
        "sh '. .venv/bin/activate && pipeline run stage publish --manifest .pipeline/ci/manifest --profile local'",
        'sh ". .venv/bin/activate && echo ${env.REGISTRY_TOKEN} && pipeline run stage publish --manifest .pipeline/ci/manifest --profile local"',
        "secrets",
    ),
    Mutant(
        "secret-missing",
        "secrets-and-branches",
        "                SIGNING_KEY = credentials('signing-key')\n",
        "",
        "secrets",
    ),
    Mutant(
        "env-trailing-space", "secrets-and-branches", "COVERAGE_MIN = '90%'", "COVERAGE_MIN = '90% '", "environment"
    ),
    Mutant(
        "env-groovy-interpolation",
        "secrets-and-branches",
        "BUILD_FLAVOUR = 'release'",
        'BUILD_FLAVOUR = "release${1}"',
        "environment",
    ),
    Mutant(
        "lock-missing",
        "approval-gate",
        "                lock(resource: 'approval-gate-staging')\n",
        "",
        "locks",
        count=2,
    ),
    Mutant(
        "lock-of-other-environment",
        "approval-gate",
        "lock(resource: 'approval-gate-production')",
        "lock(resource: 'approval-gate-staging')",
        "locks",
    ),
    Mutant(
        "input-holds-an-executor", "approval-gate", "pipeline {\n    agent none", "pipeline {\n    agent any", "gates"
    ),
    Mutant("input-wrong-submitter", "approval-gate", "submitter 'alice,bob,ops'", "submitter 'alice,ops'", "gates"),
    Mutant(
        "gate-skippable",
        "approval-gate",
        "        stage('approve deploy-production') {\n            agent none\n            when {\n                beforeAgent true\n                beforeInput true\n                branch 'main'",
        "        stage('approve deploy-production') {\n            agent none\n            when {\n                beforeAgent true\n                beforeInput true\n                branch 'mian'",
        "gates",
    ),
    Mutant("unstash-missing", "fan-out-fan-in", "                unstash 'manifest-docs'\n", "", "manifests"),
    Mutant(
        "unstash-sibling",
        "fan-out-fan-in",
        "unstash 'manifest-commit-test'\n                        sh 'python3.11 -m venv .venv && . .venv/bin/activate && pip install pipeline-as-code[run]'\n                        sh '. .venv/bin/activate && pipeline run stage types",
        "unstash 'manifest-lint'\n                        sh 'python3.11 -m venv .venv && . .venv/bin/activate && pip install pipeline-as-code[run]'\n                        sh '. .venv/bin/activate && pipeline run stage types",
        "manifests",
    ),
    Mutant(
        "flag-missing",
        "reference-chain",
        "pipeline run stage bake --manifest .pipeline/ci/manifest --profile local",
        "pipeline run stage bake --manifest .pipeline/ci/manifest",
        "commands",
    ),
    Mutant(
        "command-not-last",
        "linear",
        "pipeline run stage build --manifest .pipeline/ci/manifest'",
        "pipeline run stage build --manifest .pipeline/ci/manifest; true'",
        "commands",
    ),
    Mutant(
        "install-missing",
        "linear",
        "                sh 'python3.11 -m venv .venv && . .venv/bin/activate && pip install pipeline-as-code[run]'\n                sh '. .venv/bin/activate && pipeline run stage package",
        "                sh '. .venv/bin/activate && pipeline run stage package",
        "commands",
    ),
    Mutant(
        "timeout-too-short",
        "linear",
        "timeout(time: 190, unit: 'MINUTES')",
        "timeout(time: 60, unit: 'MINUTES')",
        "timeouts",
    ),
    Mutant(
        "retry-multiplies-attempts",
        "linear",
        "timeout(time: 190, unit: 'MINUTES')",
        "timeout(time: 190, unit: 'MINUTES')\n                retry(2)",
        "timeouts",
    ),
    Mutant(
        "teardown-only-on-success",
        "reference-chain",
        "            post {\n                always {\n                    echo 'teardown",
        "            post {\n                success {\n                    echo 'teardown",
        "failures",
    ),
    Mutant(
        "filter-lost",
        "secrets-and-branches",
        "                }\n                branch 'main'\n            }",
        "                }\n            }",
        "branches",
    ),
    Mutant("unknown-step", "linear", "unstash 'manifest-commit-test'", "unstashAll 'manifest-commit-test'", "recorded"),
]


@dataclass
class Evaluated:
    case: Case
    path: Path
    trace: Trace
    branches: list[Branch]
    """The sample branches (spec_facts.sample_branches), then the case's extra ones."""

    @property
    def samples(self) -> list[Branch]:
        return facts.sample_branches(self.case.spec())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Evaluated]:
    """Every case and mutant, evaluated by the stand-in in one JVM."""
    reason = missing_tool()
    need(reason is None, reason or "")
    tmp = tmp_path_factory.mktemp("jenkins")
    jobs: dict[str, tuple[Case, Path, list[Branch]]] = {}
    for case in CASES.values():
        branches = [*facts.sample_branches(case.spec()), *case.extra_branches]
        jobs[case.id] = (case, case.file("jenkins", tmp), branches)
    for mutant in MUTANTS:
        case = CASES[f"golden:{mutant.example}"]
        assert case.committed is not None
        text = case.committed.read_text(encoding="utf-8")
        assert text.count(mutant.old) == mutant.count, f"mutant {mutant.id}: the golden file changed; update the mutant"
        path = tmp / "mutants" / mutant.id / "Jenkinsfile"
        path.parent.mkdir(parents=True)
        path.write_text(text.replace(mutant.old, mutant.new), encoding="utf-8")
        jobs[f"mutant:{mutant.id}"] = (case, path, facts.sample_branches(case.spec()))
    traces = run_stand_in([(path, branches) for _, path, branches in jobs.values()])
    return {key: Evaluated(case, path, traces[path], branches) for key, (case, path, branches) in jobs.items()}


def evaluated(corpus: dict[str, Evaluated], cid: str) -> tuple[Evaluated, CiPlan]:
    item = corpus[cid]
    assert jc.check_recorded(item.trace) == [], item.trace.errors
    return item, facts.plan_of(item.case.spec(), item.case.context)


def each_build(item: Evaluated, plan: CiPlan, check: Callable[[jc.Build, CiPlan], list[str]]) -> list[str]:
    """The check on a build of every sample branch CI builds (each stage where it must run)."""
    return [p for build in jc.builds(item.trace, plan, item.samples) for p in check(build, plan)]


# ----------------------------------------------------------------------------- the corpus


def test_the_corpus_covers_every_example_and_the_repository() -> None:
    names = {c.split(":", 1)[1] for c in CASES if c.startswith("golden:")}
    assert names == {p.name for p in (REPO / "examples").iterdir() if (p / "pipelinefile.py").is_file()}
    assert {"render:repo", "committed:repo"} <= set(CASES)


@pytest.mark.parametrize("cid", params("recorded"))
def test_the_stand_in_records_every_directive_and_step(corpus: dict[str, Evaluated], cid: str) -> None:
    assert jc.check_recorded(corpus[cid].trace) == []


@pytest.mark.parametrize("cid", params("commands"))
def test_every_stage_runs_exactly_its_pipeline_command(corpus: dict[str, Evaluated], cid: str) -> None:
    item, plan = evaluated(corpus, cid)
    assert jc.unchecked(plan, item.samples) == [], "stages that run on no sample branch cannot be checked"
    assert each_build(item, plan, jc.check_commands) == []


@pytest.mark.parametrize("cid", params("environment"))
def test_stage_variables_reach_the_command_byte_for_byte(corpus: dict[str, Evaluated], cid: str) -> None:
    item, plan = evaluated(corpus, cid)
    assert each_build(item, plan, jc.check_environment) == []


@pytest.mark.parametrize("cid", params("secrets"))
def test_secrets_are_bound_from_jenkins_credentials_and_only_where_declared(
    corpus: dict[str, Evaluated], cid: str
) -> None:
    item, plan = evaluated(corpus, cid)
    assert each_build(item, plan, jc.check_secrets) == []


@pytest.mark.parametrize("cid", params("gates"))
def test_gated_stages_wait_for_an_input_asked_without_an_executor(corpus: dict[str, Evaluated], cid: str) -> None:
    item, plan = evaluated(corpus, cid)
    problems = each_build(item, plan, jc.check_gates)
    for stage in plan.gated:
        for branch in item.samples:
            if facts.expected_runs(plan, branch)[stage.name] is True:
                problems += jc.check_rejection(item.trace, plan, stage, branch)
    assert problems == []


@pytest.mark.parametrize("cid", params("locks"))
def test_deployments_hold_their_environments_lock(corpus: dict[str, Evaluated], cid: str) -> None:
    item, plan = evaluated(corpus, cid)
    assert each_build(item, plan, jc.check_locks) == []


@pytest.mark.parametrize("cid", params("timeouts"))
def test_each_command_runs_under_the_plans_limit_without_retry(corpus: dict[str, Evaluated], cid: str) -> None:
    item, plan = evaluated(corpus, cid)
    assert each_build(item, plan, jc.check_timeouts) == []


@pytest.mark.parametrize("cid", params("manifests"))
def test_manifests_reach_each_stage_from_exactly_its_upstream_stages(corpus: dict[str, Evaluated], cid: str) -> None:
    item, plan = evaluated(corpus, cid)
    assert each_build(item, plan, jc.check_manifests) == []


@pytest.mark.parametrize("cid", params("branches"))
def test_on_every_branch_exactly_the_definitions_stages_run(corpus: dict[str, Evaluated], cid: str) -> None:
    item, plan = evaluated(corpus, cid)
    problems = []
    for branch in item.samples:
        problems += jc.check_branch(item.trace, plan, branch)
    assert problems == []


@pytest.mark.parametrize("cid", params("failures"))
def test_a_failure_stops_what_is_downstream_and_teardowns_still_run(corpus: dict[str, Evaluated], cid: str) -> None:
    item, plan = evaluated(corpus, cid)
    problems = []
    for stage in plan.stages:
        for branch in item.samples:
            if facts.expected_runs(plan, branch)[stage.name] is True:
                problems += jc.check_failure(item.trace, plan, stage.name, branch)
    assert problems == []


@pytest.mark.xfail(strict=True, reason=GLOB_DIALECT)
def test_branch_filters_mean_what_the_definition_means_where_glob_dialects_differ(
    corpus: dict[str, Evaluated],
) -> None:
    item, plan = evaluated(corpus, "tricky:branch-globs")
    problems = []
    for branch in item.case.extra_branches:
        problems += jc.check_branch(item.trace, plan, branch)
    assert problems == []


@pytest.mark.xfail(
    strict=True,
    reason="renderer defect: groovy() leaves a carriage return raw in a '...' literal and RenderedFile then "
    "refuses the text (ValueError), instead of writing the escape \\r",
)
def test_a_value_with_a_carriage_return_renders_and_arrives_intact(tmp_path: Path) -> None:
    files = render(carriage_return_spec(), ["jenkins"], RenderContext())
    path = tmp_path / "Jenkinsfile"
    path.write_text(files[0].content, encoding="utf-8")
    spec = carriage_return_spec()
    trace = run_stand_in([(path, facts.sample_branches(spec))])[path]
    plan = facts.plan_of(spec)
    assert [p for b in jc.builds(trace, plan, facts.sample_branches(spec)) for p in jc.check_environment(b, plan)] == []


# ----------------------------------------------------------------------------- the checks can fail


CHECKS = {
    "recorded": lambda item, plan: jc.check_recorded(item.trace),
    "commands": lambda item, plan: each_build(item, plan, jc.check_commands),
    "environment": lambda item, plan: each_build(item, plan, jc.check_environment),
    "secrets": lambda item, plan: each_build(item, plan, jc.check_secrets),
    "locks": lambda item, plan: each_build(item, plan, jc.check_locks),
    "timeouts": lambda item, plan: each_build(item, plan, jc.check_timeouts),
    "manifests": lambda item, plan: each_build(item, plan, jc.check_manifests),
    "gates": lambda item, plan: (
        each_build(item, plan, jc.check_gates)
        + [p for s in plan.gated for p in jc.check_rejection(item.trace, plan, s, item.branches[0])]
    ),
    "branches": lambda item, plan: [p for b in item.branches for p in jc.check_branch(item.trace, plan, b)],
    "failures": lambda item, plan: [
        p
        for s in plan.stages
        if s.name != "teardown"
        for p in jc.check_failure(item.trace, plan, s.name, item.branches[0])
    ],
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_each_check_reports_a_jenkinsfile_with_that_mistake(corpus: dict[str, Evaluated], mutant: Mutant) -> None:
    item = corpus[f"mutant:{mutant.id}"]
    plan = facts.plan_of(item.case.spec(), item.case.context)
    original = corpus[f"golden:{mutant.example}"]
    assert CHECKS[mutant.check](original, plan) == [], "the unbroken golden file must pass this check"
    assert CHECKS[mutant.check](item, plan) != [], f"{mutant.check} did not notice: {mutant.old!r} -> {mutant.new!r}"
