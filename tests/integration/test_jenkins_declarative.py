"""Rendered Jenkinsfiles, executed against a recording stand-in of the Declarative Pipeline DSL
(tests/ci_grammar/DeclarativeStandIn.groovy, under Groovy 2.4 as Jenkins runs it), then run through
a model of Jenkins' run-time semantics (tests/ci_grammar/jenkins_model.py, after
pipeline-model-definition's ModelInterpreter) and compared with the definition and the plan.

No Jenkins can be installed here, so this is the strongest check available: every value a step
receives is what Groovy evaluates from the file (the exact strings each `sh` runs, the variables
and credentials around it, locks, timeouts, inputs, stash names and patterns), and the assertions
are written against the spec and the target-neutral plan (spec_facts), not against rendered text:

- every stage runs once, as exactly `pipeline run stage NAME` with the plan's flags, in a workspace
  with the sources, after the tool pinned to the version that rendered the file (or the
  definition's install=); one drift check of exactly the targets the team commits runs first;
- its variables arrive byte for byte (an empty one too); its secrets (and only those) are bound
  from credentials, push credentials only where the stage pushes, on the branch being built;
- every gated stage runs only after an input with the gate's message, submitters and timeout,
  asked while no executor is held (also among the stages a teardown protects); refusing it stops
  the stage and what follows;
- every stage on a persistent environment holds that environment's lock; consecutive stages on
  one hold it once, together; locks are never nested;
- each stage runs on an agent with the labels it needs;
- manifests reach each stage from exactly its upstream stages (every unstash has a stash);
- on every branch exactly the stages the definition runs there run (fnmatch's globs, not Ant's);
- a failure anywhere, a teardown's own included, stops what is downstream, while teardowns of
  created stacks still run.

The corpus is every example's golden file and a fresh render of it, the repository's own
definition (fresh and committed), and definitions built to be hard to render. One JVM evaluates
every file and mutant (start-up about 1.5 s, then a fraction of a second per file). Each mutant
is a corpus file with one mistake that one check must report (the checks can fail).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.errors import DefinitionError
from pipeline.render import render
from pipeline.render.base import RenderContext
from pipeline.render.plan import CiPlan
from tests.ci_grammar import jenkins_checks as jc
from tests.ci_grammar import spec_facts as facts
from tests.ci_grammar.cases import REPO, Case, carriage_return_spec, cases, empty_value_spec
from tests.ci_grammar.jenkins_trace import Branch, Trace, missing_tool, run_stand_in
from tests.ci_grammar.shell_run import Job, JobRun, run_jobs
from tests.conftest import need

pytestmark = pytest.mark.integration

CASES = {c.id: c for c in cases("jenkins")}
ACTIVATE = ". .pipeline/ci/venv/3.11-0.1.0-run/bin/activate"
INSTALL = r"""sh 'set -e\nvenv=.pipeline/ci/venv/3.11-0.1.0-run\nif [ ! -f "$venv/.pipeline-installed" ]; then\n    rm -rf "$venv"\n    python3.11 -m venv "$venv"\n    . "$venv/bin/activate"\n    pip install \'pipeline-as-code[run]==0.1.0\'\n    touch "$venv/.pipeline-installed"\nfi'"""
"""The pinned install step of the goldens (Python 3.11, version 0.1.0), as written in the file."""


# ----------------------------------------------------------------------------- deliberately broken files


@dataclass(frozen=True)
class Edit:
    old: str
    new: str
    count: int = 1
    """How often `old` occurs in the unbroken file (a changed golden must fail loudly, not mutate nothing)."""
    only: int | None = None
    """Replace only this occurrence (0-based); None: every one."""


@dataclass(frozen=True)
class Mutant:
    """A file of the corpus (a golden, or a fresh render of a hard definition) with one mistake, and
    the check that must report it."""

    id: str
    case: str
    edits: tuple[Edit, ...]
    check: str

    def apply(self, text: str) -> str:
        for edit in self.edits:
            assert text.count(edit.old) == edit.count, f"mutant {self.id}: the file changed; update the mutant"
            if edit.only is None:
                text = text.replace(edit.old, edit.new)
            else:
                at = -1
                for _ in range(edit.only + 1):
                    at = text.index(edit.old, at + 1)
                text = text[:at] + edit.new + text[at + len(edit.old) :]
        return text


def m(id: str, case: str, old: str, new: str, check: str, count: int = 1, only: int | None = None) -> Mutant:
    return Mutant(id, case, (Edit(old, new, count, only),), check)


MUTANTS = [
    m(
        "activate-another-venv",  # the pinned install still runs first on that agent: only running it shows this
        "golden:linear",
        "sh '. .pipeline/ci/venv/3.11-0.1.0-run/bin/activate && pipeline run stage build",
        "sh '. .pipeline/ci/venv/3.11-0.1.0/bin/activate && pipeline run stage build",
        "tool",
    ),
    m(
        "wrong-credentials-id",
        "golden:secrets-and-branches",
        "credentials('registry-token')",
        "credentials('registry')",
        "secrets",
    ),
    m(
        "secret-interpolated-by-groovy",
        "golden:secrets-and-branches",
        "sh '. .pipeline/ci/venv/3.11-custom-898ebfcfe1/bin/activate && pipeline run stage publish --manifest .pipeline/ci/manifest --profile local'",
        'sh ". .pipeline/ci/venv/3.11-custom-898ebfcfe1/bin/activate && echo ${env.REGISTRY_TOKEN} && pipeline run stage publish --manifest .pipeline/ci/manifest --profile local"',
        "secrets",
    ),
    m(
        "secret-missing",
        "golden:secrets-and-branches",
        "                SIGNING_KEY = credentials('signing-key')\n",
        "",
        "secrets",
    ),
    m(
        "push-credentials-missing",
        "golden:aws-chain",
        "                    gitUsernamePassword(credentialsId: 'git-push'),\n",
        "",
        "secrets",
    ),
    m(
        "push-on-a-detached-head",
        "golden:aws-chain",
        "                    sh 'git checkout -B \"$BRANCH_NAME\"'\n",
        "",
        "push",
    ),
    m(
        "push-on-another-branch",
        "golden:aws-chain",
        'git checkout -B "$BRANCH_NAME"',
        "git checkout -B main-copy",
        "push",
    ),
    m(
        "env-trailing-space",
        "golden:secrets-and-branches",
        "COVERAGE_MIN = '90%'",
        "COVERAGE_MIN = '90% '",
        "environment",
    ),
    m(
        "env-groovy-interpolation",
        "golden:secrets-and-branches",
        "BUILD_FLAVOUR = 'release'",
        'BUILD_FLAVOUR = "release${1}"',
        "environment",
    ),
    m("empty-value-dropped", "tricky:empty-value", "export EMPTY=\\'\\' && ", "", "environment"),
    m("lock-missing", "golden:approval-gate", "                lock(resource: 'approval-gate-staging')\n", "", "locks"),
    m(
        "lock-of-other-environment",
        "golden:approval-gate",
        "lock(resource: 'approval-gate-production')",
        "lock(resource: 'approval-gate-staging')",
        "locks",
    ),
    Mutant(
        "lock-span-held-per-stage",
        "golden:approval-gate",
        (
            Edit("            options {\n                lock(resource: 'approval-gate-staging')\n            }\n", ""),
            Edit(
                "                        timeout(time: 70, unit: 'MINUTES')\n",
                "                        timeout(time: 70, unit: 'MINUTES')\n                        lock(resource: 'approval-gate-staging')\n",
                count=2,
            ),
        ),
        "locks",
    ),
    m("lock-extra-dropped", "stress:two-locks-overlap", ", extra: [[resource: 'twolocks-beta']]", "", "locks"),
    m(
        "input-holds-an-executor",
        "golden:approval-gate",
        "pipeline {\n    agent none",
        "pipeline {\n    agent any",
        "gates",
    ),
    m(
        "input-in-a-teardown-group-holds-an-executor",
        "stress:gated-rehearsal-aws",
        "        stage('test-stack to teardown') {\n",
        "        stage('test-stack to teardown') {\n            agent any\n",
        "gates",
    ),
    m("input-wrong-submitter", "golden:approval-gate", "submitter 'alice,bob,ops'", "submitter 'alice,ops'", "gates"),
    m(
        "gate-skippable",
        "golden:approval-gate",
        "            agent none\n            when {\n                beforeAgent true\n                beforeInput true\n                branch pattern: 'main'",
        "            agent none\n            when {\n                beforeAgent true\n                beforeInput true\n                branch pattern: 'mian'",
        "gates",
    ),
    m("unstash-missing", "golden:fan-out-fan-in", "                unstash 'manifest-docs'\n", "", "manifests"),
    m(
        "unstash-sibling",
        "golden:fan-out-fan-in",
        "unstash 'manifest-commit-test'",
        "unstash 'manifest-lint'",
        "manifests",
        count=3,
        only=1,  # in 'types', the second branch of the parallel block that 'lint' is the first of
    ),
    m(
        "flag-missing",
        "golden:reference-chain",
        "pipeline run stage bake --manifest .pipeline/ci/manifest --profile local",
        "pipeline run stage bake --manifest .pipeline/ci/manifest",
        "commands",
    ),
    m(
        "command-not-last",
        "golden:linear",
        "pipeline run stage build --manifest .pipeline/ci/manifest'",
        "pipeline run stage build --manifest .pipeline/ci/manifest; true'",
        "commands",
    ),
    m(
        "install-missing",
        "golden:linear",
        f"                {INSTALL}\n                sh '{ACTIVATE} && pipeline run stage package",
        f"                sh '{ACTIVATE} && pipeline run stage package",
        "commands",
    ),
    m(
        "install-unpinned",
        "golden:linear",
        "pipeline-as-code[run]==0.1.0",
        "pipeline-as-code[run]",
        "commands",
        count=4,
    ),
    m(
        "drift-check-of-every-target",
        "golden:linear",
        "pipeline render --target jenkins --check'",
        "pipeline render --check'",
        "commands",
    ),
    m("node-without-checkout", "stress:gated-rehearsal-aws", "                        checkout scm\n", "", "commands"),
    m(
        "timeout-too-short",
        "golden:linear",
        "timeout(time: 190, unit: 'MINUTES')",
        "timeout(time: 60, unit: 'MINUTES')",
        "timeouts",
    ),
    m(
        "retry-multiplies-attempts",
        "golden:linear",
        "timeout(time: 190, unit: 'MINUTES')",
        "timeout(time: 190, unit: 'MINUTES')\n                retry(2)",
        "timeouts",
    ),
    m(
        "teardown-only-on-success",
        "golden:reference-chain",
        "            post {\n                always {\n                    echo 'teardown",
        "            post {\n                success {\n                    echo 'teardown",
        "failures",
    ),
    m(
        "teardown-failure-swallowed",
        "golden:reference-chain",
        f"                        sh '{ACTIVATE} && pipeline run stage teardown --manifest .pipeline/ci/manifest --profile local'\n",
        "                        catchError(buildResult: 'FAILURE', stageResult: 'FAILURE') {\n"
        f"                            sh '{ACTIVATE} && pipeline run stage teardown --manifest .pipeline/ci/manifest --profile local'\n"
        "                        }\n",
        "failures",
    ),
    m(
        "filter-lost",
        "golden:secrets-and-branches",
        "                }\n                branch pattern: 'main', comparator: 'EQUALS'\n            }",
        "                }\n            }",
        "branches",
    ),
    m(
        "ant-glob",
        "tricky:branch-globs",
        "branch pattern: 'release/.*', comparator: 'REGEXP'",
        "branch 'release/*'",
        "globs",
        count=4,
    ),
    m(
        "agent-label-lost",
        "golden:reference-chain",
        "label 'pipeline-local && docker && packer'",
        "label 'pipeline-local && docker'",
        "agents",
    ),
    m(
        "unknown-step",
        "golden:linear",
        "unstash 'manifest-commit-test'",
        "unstashAll 'manifest-commit-test'",
        "recorded",
    ),
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
        case, original, branches = jobs[mutant.case]
        path = tmp / "mutants" / mutant.id / "Jenkinsfile"
        path.parent.mkdir(parents=True)
        path.write_text(mutant.apply(original.read_text(encoding="utf-8")), encoding="utf-8")
        jobs[f"mutant:{mutant.id}"] = (case, path, branches)
    traces = run_stand_in([(path, branches) for _, path, branches in jobs.values()])
    return {key: Evaluated(case, path, traces[path], branches) for key, (case, path, branches) in jobs.items()}


def evaluated(corpus: dict[str, Evaluated], cid: str) -> tuple[Evaluated, CiPlan]:
    item = corpus[cid]
    assert jc.check_recorded(item.trace) == [], item.trace.errors
    return item, facts.plan_of(item.case.spec(), item.case.context)


def each_build(item: Evaluated, plan: CiPlan, check: Callable[[jc.Build, CiPlan], list[str]]) -> list[str]:
    """The check on a build of every sample branch CI builds (each stage where it must run)."""
    return [p for build in jc.builds(item.trace, plan, item.samples) for p in check(build, plan)]


IDS = list(CASES)


# ----------------------------------------------------------------------------- the corpus


def test_the_corpus_covers_every_example_and_the_repository() -> None:
    names = {c.split(":", 1)[1] for c in CASES if c.startswith("golden:")}
    assert names == {p.name for p in (REPO / "examples").iterdir() if (p / "pipelinefile.py").is_file()}
    assert {"render:repo", "committed:repo"} <= set(CASES)


@pytest.mark.parametrize("cid", IDS)
def test_the_stand_in_records_every_directive_and_step(corpus: dict[str, Evaluated], cid: str) -> None:
    assert jc.check_recorded(corpus[cid].trace) == []


@pytest.mark.parametrize("cid", IDS)
def test_every_stage_runs_exactly_its_pipeline_command(corpus: dict[str, Evaluated], cid: str) -> None:
    """...with the plan's flags, after the tool pinned to the rendering version (or the definition's
    install=) in its workspace, with the sources checked out; one drift check of exactly the targets
    the team commits comes first."""
    item, plan = evaluated(corpus, cid)
    assert jc.unchecked(plan, item.samples) == [], "stages that run on no sample branch cannot be checked"
    assert each_build(item, plan, jc.check_commands) == []


@pytest.mark.parametrize("cid", IDS)
def test_stage_variables_reach_the_command_byte_for_byte(corpus: dict[str, Evaluated], cid: str) -> None:
    item, plan = evaluated(corpus, cid)
    assert each_build(item, plan, jc.check_environment) == []


@pytest.mark.parametrize("cid", IDS)
def test_secrets_are_bound_from_jenkins_credentials_and_only_where_declared(
    corpus: dict[str, Evaluated], cid: str
) -> None:
    """...and push credentials only for the stage that pushes."""
    item, plan = evaluated(corpus, cid)
    assert each_build(item, plan, jc.check_secrets) == []


@pytest.mark.parametrize("cid", IDS)
def test_gated_stages_wait_for_an_input_asked_without_an_executor(corpus: dict[str, Evaluated], cid: str) -> None:
    """...also a gate among the stages a teardown protects."""
    item, plan = evaluated(corpus, cid)
    problems = each_build(item, plan, jc.check_gates)
    for stage in plan.gated:
        for branch in item.samples:
            if facts.expected_runs(plan, branch)[stage.name] is True:
                problems += jc.check_rejection(item.trace, plan, stage, branch)
    assert problems == []


@pytest.mark.parametrize("cid", IDS)
def test_deployments_hold_their_environments_lock_and_spans_hold_it_once(
    corpus: dict[str, Evaluated], cid: str
) -> None:
    item, plan = evaluated(corpus, cid)
    assert each_build(item, plan, jc.check_locks) == []


@pytest.mark.parametrize("cid", IDS)
def test_each_stage_runs_on_an_agent_with_the_labels_it_needs(corpus: dict[str, Evaluated], cid: str) -> None:
    item, plan = evaluated(corpus, cid)
    assert each_build(item, plan, jc.check_agents) == []


@pytest.mark.parametrize("cid", IDS)
def test_a_stage_that_pushes_commits_on_the_branch_it_builds(corpus: dict[str, Evaluated], cid: str) -> None:
    item, plan = evaluated(corpus, cid)
    assert each_build(item, plan, jc.check_push) == []


@pytest.mark.parametrize("cid", IDS)
def test_each_command_runs_under_the_plans_limit_without_retry(corpus: dict[str, Evaluated], cid: str) -> None:
    item, plan = evaluated(corpus, cid)
    assert each_build(item, plan, jc.check_timeouts) == []


@pytest.mark.parametrize("cid", IDS)
def test_manifests_reach_each_stage_from_exactly_its_upstream_stages(corpus: dict[str, Evaluated], cid: str) -> None:
    item, plan = evaluated(corpus, cid)
    assert each_build(item, plan, jc.check_manifests) == []


@pytest.mark.parametrize("cid", IDS)
def test_on_every_branch_exactly_the_definitions_stages_run(corpus: dict[str, Evaluated], cid: str) -> None:
    item, plan = evaluated(corpus, cid)
    problems = []
    for branch in item.samples:
        problems += jc.check_branch(item.trace, plan, branch)
    assert problems == []


@pytest.mark.parametrize("cid", IDS)
def test_a_failure_stops_what_is_downstream_and_teardowns_still_run(corpus: dict[str, Evaluated], cid: str) -> None:
    """Also a teardown's own failure: what comes after it does not run, other teardowns still do
    (it used to be caught by catchError, and approve/promote ran after a failed teardown)."""
    item, plan = evaluated(corpus, cid)
    problems = []
    for stage in plan.stages:
        for branch in item.samples:
            if facts.expected_runs(plan, branch)[stage.name] is True:
                problems += jc.check_failure(item.trace, plan, stage.name, branch)
    assert problems == []


PINNED = [cid for cid, case in CASES.items() if not case.spec().install]
"""Cases whose install step is the pinned default (a definition's own install= decides where the tool comes from)."""


@pytest.fixture(scope="module")
def tool_runs(corpus: dict[str, Evaluated]) -> dict[str, list[tuple[str, list[JobRun]]]]:
    """Every agent workspace of every build of every pinned case and mutant, its scripts run for real
    twice (tests/ci_grammar/shell_run.py), in one driver shell."""
    jobs: dict[str, list[Job]] = {}
    for key, item in corpus.items():
        cid = key.removeprefix("mutant:")
        if key.startswith("mutant:"):
            cid = next(m.case for m in MUTANTS if m.id == cid)
        if cid not in PINNED or jc.check_recorded(item.trace):
            continue
        plan = facts.plan_of(item.case.spec(), item.case.context)
        jobs[key] = [job for build in jc.builds(item.trace, plan, item.samples) for job in jc.tool_jobs(build, key)]
    unique = {(job.scripts, tuple(sorted(job.env.items()))): job for js in jobs.values() for job in js}
    runs = run_jobs(list(unique.values()), repeat=2)
    return {
        key: [(job.key, runs[unique[(job.scripts, tuple(sorted(job.env.items())))].key]) for job in js]
        for key, js in jobs.items()
    }


def tool_problems(runs: list[tuple[str, list[JobRun]]], plan: CiPlan) -> list[str]:
    return [p for where, job_runs in runs for p in facts.installed_tool_problems(job_runs, plan, where)]


@pytest.mark.parametrize("cid", PINNED)
def test_the_pipeline_each_agent_runs_is_exactly_the_rendering_version(
    corpus: dict[str, Evaluated], tool_runs: dict[str, list[tuple[str, list[JobRun]]]], cid: str
) -> None:
    """The scripts of every agent workspace, run by /bin/sh with stand-ins for python, pip and the
    tool: each stage's `pipeline` comes from a venv holding exactly `pipeline-as-code[run]==VERSION`
    (the drift check's: without `[run]`); a second build on that agent reuses it."""
    _, plan = evaluated(corpus, cid)
    assert tool_runs[cid]
    assert tool_problems(tool_runs[cid], plan) == []


def test_branch_filters_mean_what_the_definition_means_where_glob_dialects_differ(
    corpus: dict[str, Evaluated],
) -> None:
    """`release/*` matches release/1.0/hotfix and not RELEASE/1; `main` does not match Main (Jenkins'
    default branch glob is Ant's, which says the opposite three times)."""
    item, plan = evaluated(corpus, "tricky:branch-globs")
    assert item.case.extra_branches
    problems = []
    for branch in item.case.extra_branches:
        problems += jc.check_branch(item.trace, plan, branch)
    assert problems == []


def test_a_carriage_return_is_refused_at_validate_and_would_still_arrive_intact(tmp_path: Path) -> None:
    """Issue 11 refuses control characters at validate (exit 2, naming the field); the renderer's
    escaping still carries one byte for byte should a definition get past validation."""
    with pytest.raises(DefinitionError) as refused:
        carriage_return_spec()
    assert "env.CR: contains the control character U+000D" in str(refused.value)
    spec = empty_value_spec()
    stage = spec.stages[0].model_copy(update={"env": {"CR": "a\rb", "CRLF": "c\r\nd", "EMPTY": ""}})
    unchecked = spec.model_copy(update={"stages": (stage,)})  # model_copy does not validate
    files = render(unchecked, ["jenkins"], RenderContext())
    path = tmp_path / "Jenkinsfile"
    path.write_bytes(files[0].content.encode("utf-8"))
    branches = facts.sample_branches(unchecked)
    trace = run_stand_in([(path, branches)])[path]
    plan = facts.plan_of(unchecked)
    builds = jc.builds(trace, plan, branches)
    assert builds
    assert [p for b in builds for p in jc.check_environment(b, plan)] == []


# ----------------------------------------------------------------------------- the checks can fail


def _failures(item: Evaluated, plan: CiPlan) -> list[str]:
    branch = item.branches[0]
    return [
        p
        for s in plan.stages
        if facts.expected_runs(plan, branch)[s.name] is True
        for p in jc.check_failure(item.trace, plan, s.name, branch)
    ]


CHECKS: dict[str, Callable[[Evaluated, CiPlan], list[str]]] = {
    "recorded": lambda item, plan: jc.check_recorded(item.trace),
    "commands": lambda item, plan: each_build(item, plan, jc.check_commands),
    "environment": lambda item, plan: each_build(item, plan, jc.check_environment),
    "secrets": lambda item, plan: each_build(item, plan, jc.check_secrets),
    "locks": lambda item, plan: each_build(item, plan, jc.check_locks),
    "agents": lambda item, plan: each_build(item, plan, jc.check_agents),
    "push": lambda item, plan: each_build(item, plan, jc.check_push),
    "timeouts": lambda item, plan: each_build(item, plan, jc.check_timeouts),
    "manifests": lambda item, plan: each_build(item, plan, jc.check_manifests),
    "gates": lambda item, plan: (
        each_build(item, plan, jc.check_gates)
        + [p for s in plan.gated for p in jc.check_rejection(item.trace, plan, s, item.branches[0])]
    ),
    "branches": lambda item, plan: [p for b in item.samples for p in jc.check_branch(item.trace, plan, b)],
    "globs": lambda item, plan: [p for b in item.case.extra_branches for p in jc.check_branch(item.trace, plan, b)],
    "failures": _failures,
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_each_check_reports_a_jenkinsfile_with_that_mistake(
    corpus: dict[str, Evaluated], tool_runs: dict[str, list[tuple[str, list[JobRun]]]], mutant: Mutant
) -> None:
    item = corpus[f"mutant:{mutant.id}"]
    plan = facts.plan_of(item.case.spec(), item.case.context)
    original = corpus[mutant.case]
    if mutant.check == "tool":
        assert tool_problems(tool_runs[mutant.case], plan) == [], "the unbroken file must pass this check"
        assert tool_problems(tool_runs[f"mutant:{mutant.id}"], plan) != [], f"tool did not notice: {mutant.edits}"
        return
    assert CHECKS[mutant.check](original, plan) == [], "the unbroken file must pass this check"
    assert CHECKS[mutant.check](item, plan) != [], f"{mutant.check} did not notice: {mutant.edits}"
