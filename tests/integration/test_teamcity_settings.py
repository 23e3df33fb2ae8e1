"""Rendered TeamCity settings (settings.kts), read as TeamCity would read them and checked against
the definition and the target-neutral plan.

No TeamCity can be installed here (its DSL jars are only in JetBrains' repository), so:

- tree-sitter-kotlin parses the file and tests/ci_grammar/kotlin_dsl.py decodes every string
  literal as the Kotlin compiler does (escapes, `${'$'}` templates, raw strings, trimIndent); the
  decoder is cross-checked against Debian's kotlinc on every literal of the corpus;
- tests/ci_grammar/teamcity_model.py resolves TeamCity's `%param%` references and `%%` escapes and
  runs the build chain (snapshot dependencies and their failure actions, artifact rules, step
  execution modes and conditions, approvals, agent requirements);
- tests/ci_grammar/teamcity_checks.py compares that with spec_facts: each build's script runs
  exactly the stage's command, after the tool pinned to the rendering version (or install=); one
  drift check of exactly the targets the team commits; variables and secrets arrive byte for byte
  (secrets as password parameters; a several-stage build's steps export their own variables);
  dependencies follow the stage DAG; one write lock per persistent environment, held by one build
  for consecutive stages on it; an approval by the named approvers on each gated stage; each build
  runs only on agents with the labels its stages need; only the pushing build loads the push key;
  teardowns run after failures while what follows them does not; a filtered stage skipped on a
  branch CI builds does not fail the chain.

Same corpus as the Jenkins checks (goldens, fresh renders, the repository's own files, hard
definitions); mutated files prove that each check can fail.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.render.plan import CiPlan
from tests.ci_grammar import spec_facts as facts
from tests.ci_grammar import teamcity_checks as tc
from tests.ci_grammar.cases import REPO, Case, cases
from tests.ci_grammar.jenkins_trace import Branch, java_home
from tests.ci_grammar.kotlin_dsl import KotlinReadError, read, string_literal_expressions, trim_indent
from tests.ci_grammar.shell_run import Job, JobRun, run_jobs
from tests.ci_grammar.teamcity_model import Settings, read_settings, resolve
from tests.conftest import need
from tests.unit.test_render_first_push import staging_spec

pytestmark = pytest.mark.integration

CASES = {c.id: c for c in cases("teamcity")}
IDS = list(CASES)


def require_tree_sitter() -> None:
    try:
        import tree_sitter  # noqa: F401
        import tree_sitter_kotlin  # noqa: F401
    except ImportError:
        need(False, "tree-sitter and tree-sitter-kotlin are not installed (see .ci/install-validators.sh)")


@dataclass(frozen=True)
class Mutant:
    """A file of the corpus (a golden, or a fresh render of a hard definition) with one mistake, and
    the check that must report it."""

    id: str
    case: str
    old: str
    new: str
    check: str
    count: int = 1
    """How often `old` occurs in the unbroken file (a changed file must fail loudly, not mutate nothing)."""

    def apply(self, text: str) -> str:
        assert text.count(self.old) == self.count, f"mutant {self.id}: the file changed; update the mutant"
        return text.replace(self.old, self.new)


INSTALLED = "pip install 'pipeline-as-code[run]==0.1.0'"
MUTANTS = [
    Mutant(
        "param-trailing-space",
        "golden:secrets-and-branches",
        'param("env.COVERAGE_MIN", "90%%")',
        'param("env.COVERAGE_MIN", "90%% ")',
        "values",
    ),
    Mutant(
        "param-percent-is-a-reference",
        "golden:secrets-and-branches",
        'param("env.COVERAGE_MIN", "90%%")',
        'param("env.COVERAGE_MIN", "90% of %x%")',
        "values",
    ),
    Mutant(
        "secret-as-plain-param",
        "golden:secrets-and-branches",
        'password("env.REGISTRY_TOKEN"',
        'param("env.REGISTRY_TOKEN"',
        "values",
    ),
    Mutant(
        "empty-value-dropped",
        "tricky:empty-value",
        'param("env.EMPTY", "")',
        'param("env.EMPTI", "")',
        "values",
    ),
    Mutant(
        "dollar-becomes-a-kotlin-template",
        "golden:linear",
        "\\$venv",
        "$venv",  # a Kotlin template: the value of a variable `venv`, not the text the shell must see
        "read",
        count=20,
    ),
    Mutant("script-refers-to-undefined-parameter", "golden:linear", INSTALLED, INSTALLED + "%x%", "values", count=4),
    Mutant(
        "install-unpinned",
        "golden:linear",
        "'pipeline-as-code[run]==0.1.0'",
        "'pipeline-as-code[run]'",
        "commands",
        count=4,  # three install steps and the header's comment
    ),
    Mutant(
        "drift-check-of-every-target",
        "golden:linear",
        "pipeline render --target teamcity --check",
        "pipeline render --check",
        "commands",
        count=2,  # the step and the header's comment
    ),
    Mutant(
        "flag-missing",
        "golden:reference-chain",
        "pipeline run stage bake --manifest .pipeline/ci/manifest --profile local",
        "pipeline run stage bake --manifest .pipeline/ci/manifest",
        "commands",
    ),
    Mutant(
        "command-not-last",
        "golden:linear",
        'pipeline run stage build --manifest .pipeline/ci/manifest"',
        'pipeline run stage build --manifest .pipeline/ci/manifest\\ntrue"',
        "commands",
    ),
    Mutant(
        "teardown-step-only-on-success",
        "golden:reference-chain",
        "            executionMode = BuildStep.ExecutionMode.ALWAYS\n",
        "",
        "failures",
    ),
    Mutant(
        "teardown-not-started-after-a-failure",
        "golden:aws-chain",
        "onDependencyFailure = FailureAction.IGNORE",
        "onDependencyFailure = FailureAction.FAIL_TO_START",
        "failures",
        count=5,
    ),
    Mutant("lock-missing", "golden:approval-gate", '            writeLock("ApprovalGate_Staging")\n', "", "locks"),
    Mutant(
        "approval-rules",
        "golden:approval-gate",
        '"user:alice\\nuser:bob\\ngroup:ops:1"',
        '"user:alice\\ngroup:ops:1"',
        "gates",
    ),
    Mutant("timeout-too-short", "golden:linear", "executionTimeoutMin = 190", "executionTimeoutMin = 60", "timeouts"),
    Mutant(
        "artifact-rule-matches-nothing",
        "golden:fan-out-fan-in",
        'dependency(Package) {\n            snapshot {\n                onDependencyFailure = FailureAction.FAIL_TO_START\n                onDependencyCancel = FailureAction.CANCEL\n                reuseBuilds = ReuseBuilds.NO\n            }\n            artifacts {\n                artifactRules = "manifest/',
        'dependency(Package) {\n            snapshot {\n                onDependencyFailure = FailureAction.FAIL_TO_START\n                onDependencyCancel = FailureAction.CANCEL\n                reuseBuilds = ReuseBuilds.NO\n            }\n            artifacts {\n                artifactRules = "manifests/',
        "manifests",
    ),
    Mutant(
        "fetch-from-a-filtered-build-required",
        "tricky:filtered-first",
        'artifactRules = "?:manifest/*.json => .pipeline/ci/manifest"',
        'artifactRules = "manifest/*.json => .pipeline/ci/manifest"',
        "branches",
    ),
    Mutant(
        "branch-condition-lost",
        "golden:secrets-and-branches",
        '                matches("teamcity.build.branch", "^(?:main)\\$")\n',
        "",
        "branches",
        count=2,
    ),
    Mutant(
        "dependency-on-the-wrong-build",
        "golden:linear",
        "dependency(CommitTest) {",
        "dependency(RenderCheck) {",
        "dependencies",
    ),
    Mutant(
        "chain-blind-to-a-failure-before-a-final-teardown",
        "stress:gated-rehearsal-aws",
        "        snapshot(Check) {\n            onDependencyFailure = FailureAction.ADD_PROBLEM\n"
        "            onDependencyCancel = FailureAction.ADD_PROBLEM\n            reuseBuilds = ReuseBuilds.NO\n        }\n",
        "",
        "failures",
    ),
    Mutant(
        "activate-another-venv",  # the pinned install still runs first in that build: only running it shows this
        "golden:linear",
        '". .pipeline/ci/venv/3.11-0.1.0-run/bin/activate\\npipeline run stage build',
        '". .pipeline/ci/venv/3.11-0.1.0/bin/activate\\npipeline run stage build',
        "tool",
    ),
    Mutant("agent-requirement-lost", "golden:aws-chain", '        exists("pipeline.label.packer")\n', "", "agents"),
    Mutant(
        "push-key-missing",
        "golden:aws-chain",
        '        sshAgent {\n            teamcitySshKey = "git-push"\n        }\n',
        "",
        "push",
    ),
]


@dataclass
class Read:
    case: Case
    path: Path
    settings: Settings | None
    error: str = ""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Read]:
    require_tree_sitter()
    tmp = tmp_path_factory.mktemp("teamcity")
    out: dict[str, Read] = {}
    jobs: list[tuple[str, Case, Path]] = [(c.id, c, c.file("teamcity", tmp)) for c in CASES.values()]
    files = {cid: path for cid, _, path in jobs}
    for mutant in MUTANTS:
        case = CASES[mutant.case]
        path = tmp / "mutants" / mutant.id / "settings.kts"
        path.parent.mkdir(parents=True)
        path.write_text(mutant.apply(files[mutant.case].read_text(encoding="utf-8")), encoding="utf-8")
        jobs.append((f"mutant:{mutant.id}", case, path))
    for key, case, path in jobs:
        try:
            out[key] = Read(case, path, read_settings(path.read_bytes()))
        except (KotlinReadError, AssertionError) as e:
            out[key] = Read(case, path, None, str(e))
    return out


def loaded(corpus: dict[str, Read], cid: str) -> tuple[Settings, CiPlan, Read]:
    item = corpus[cid]
    assert item.settings is not None, item.error
    return item.settings, facts.plan_of(item.case.spec(), item.case.context), item


def branches(item: Read) -> list[Branch]:
    """TeamCity builds branches (its Pull Requests feature is not rendered)."""
    return [b for b in facts.sample_branches(item.case.spec()) if not b.change_request]


# ----------------------------------------------------------------------------- the corpus


@pytest.mark.parametrize("cid", IDS)
def test_every_settings_file_reads_as_kotlin_with_constant_values(corpus: dict[str, Read], cid: str) -> None:
    item = corpus[cid]
    assert item.settings is not None, item.error
    assert tc.check_declared(item.settings) == []


@pytest.mark.parametrize("cid", IDS)
def test_each_stage_runs_exactly_its_pipeline_command_in_its_jobs_build(corpus: dict[str, Read], cid: str) -> None:
    settings, plan, _ = loaded(corpus, cid)
    assert tc.check_commands(settings, plan) == []


@pytest.mark.parametrize("cid", IDS)
def test_variables_and_secrets_arrive_byte_for_byte(corpus: dict[str, Read], cid: str) -> None:
    settings, plan, _ = loaded(corpus, cid)
    assert tc.check_values(settings, plan) == []


@pytest.mark.parametrize("cid", IDS)
def test_snapshot_and_artifact_dependencies_follow_the_stage_dag(corpus: dict[str, Read], cid: str) -> None:
    settings, plan, _ = loaded(corpus, cid)
    assert tc.check_dependencies(settings, plan) == []


@pytest.mark.parametrize("cid", IDS)
def test_one_write_lock_per_persistent_environment_held_once_by_consecutive_stages(
    corpus: dict[str, Read], cid: str
) -> None:
    settings, plan, _ = loaded(corpus, cid)
    assert tc.check_locks(settings, plan) == []


def test_the_lock_check_reports_consecutive_stages_that_take_the_lock_separately(corpus: dict[str, Read]) -> None:
    """A gate on the smoke test splits the span (nobody holds staging while waiting for a human):
    that render, checked against the definition without the gate, has deploy and smoke in two
    builds, each taking the lock."""
    split = corpus["stress:lock-span-split-by-a-gate"].settings
    assert split is not None
    assert tc.check_locks(split, facts.plan_of(staging_spec())) != []
    together = corpus["stress:lock-span"].settings
    assert together is not None
    assert tc.check_locks(together, facts.plan_of(staging_spec())) == []


@pytest.mark.parametrize("cid", IDS)
def test_each_build_runs_only_on_agents_with_the_labels_its_stages_need(corpus: dict[str, Read], cid: str) -> None:
    settings, plan, _ = loaded(corpus, cid)
    assert tc.check_agents(settings, plan) == []


@pytest.mark.parametrize("cid", IDS)
def test_only_the_build_that_pushes_loads_the_push_key(corpus: dict[str, Read], cid: str) -> None:
    settings, plan, _ = loaded(corpus, cid)
    assert tc.check_push(settings, plan) == []


@pytest.mark.parametrize("cid", IDS)
def test_gated_stages_need_an_approval_and_a_refusal_stops_them(corpus: dict[str, Read], cid: str) -> None:
    settings, plan, item = loaded(corpus, cid)
    problems = tc.check_gates(settings, plan)
    for stage in plan.gated:
        for branch in branches(item):
            if facts.expected_runs(plan, branch)[stage.name] is True:
                problems += tc.check_rejection(settings, plan, stage, branch)
    assert problems == []


@pytest.mark.parametrize("cid", IDS)
def test_each_build_times_out_as_the_plan_says(corpus: dict[str, Read], cid: str) -> None:
    settings, plan, _ = loaded(corpus, cid)
    assert tc.check_timeouts(settings, plan) == []


@pytest.mark.parametrize("cid", IDS)
def test_manifests_reach_each_stage_from_exactly_its_upstream_stages(corpus: dict[str, Read], cid: str) -> None:
    settings, plan, item = loaded(corpus, cid)
    problems = [p for b in branches(item) if facts.trigger_runs(plan, b) for p in tc.check_manifests(settings, plan, b)]
    assert problems == []


@pytest.mark.parametrize("cid", IDS)
def test_a_push_to_each_branch_runs_exactly_the_definitions_stages(corpus: dict[str, Read], cid: str) -> None:
    settings, plan, item = loaded(corpus, cid)
    problems = [p for b in [*branches(item), *item.case.extra_branches] for p in tc.check_branch(settings, plan, b)]
    assert problems == []


@pytest.mark.parametrize("cid", IDS)
def test_a_failure_stops_what_is_downstream_and_teardowns_still_run(corpus: dict[str, Read], cid: str) -> None:
    settings, plan, item = loaded(corpus, cid)
    problems = []
    for stage in plan.stages:
        for branch in branches(item):
            if facts.expected_runs(plan, branch)[stage.name] is True:
                problems += tc.check_failure(settings, plan, stage.name, branch)
    assert problems == []


PINNED = [cid for cid, case in CASES.items() if not case.spec().install]
"""Cases whose install step is the pinned default (a definition's own install= decides where the tool comes from)."""


@pytest.fixture(scope="module")
def tool_runs(corpus: dict[str, Read]) -> dict[str, list[tuple[str, list[JobRun]]]]:
    """The steps of every build of a push to each trigger branch, for every pinned case and mutant,
    run for real twice (tests/ci_grammar/shell_run.py), in one driver shell."""
    jobs: dict[str, list[Job]] = {}
    for key, item in corpus.items():
        cid = key.removeprefix("mutant:")
        if key.startswith("mutant:"):
            cid = next(m.case for m in MUTANTS if m.id == cid)
        if cid not in PINNED or item.settings is None:
            continue
        plan = facts.plan_of(item.case.spec(), item.case.context)
        triggered = [b for b in branches(item) if facts.trigger_runs(plan, b)]
        jobs[key] = [job for b in triggered for job in tc.tool_jobs(item.settings, plan, b, key)]
    unique = {(job.scripts, tuple(sorted(job.env.items()))): job for js in jobs.values() for job in js}
    runs = run_jobs(list(unique.values()), repeat=2)
    return {
        key: [(job.key, runs[unique[(job.scripts, tuple(sorted(job.env.items())))].key]) for job in js]
        for key, js in jobs.items()
    }


def tool_problems(runs: list[tuple[str, list[JobRun]]], plan: CiPlan) -> list[str]:
    return [p for where, job_runs in runs for p in facts.installed_tool_problems(job_runs, plan, where)]


@pytest.mark.parametrize("cid", PINNED)
def test_the_pipeline_each_build_runs_is_exactly_the_rendering_version(
    corpus: dict[str, Read], tool_runs: dict[str, list[tuple[str, list[JobRun]]]], cid: str
) -> None:
    """Every build's steps, run by /bin/sh with stand-ins for python, pip and the tool: each
    stage's `pipeline` comes from a venv holding exactly `pipeline-as-code[run]==VERSION` (the drift
    check's: without `[run]`); a second build in that checkout directory reuses it."""
    _, plan, _ = loaded(corpus, cid)
    assert tool_runs[cid]
    assert tool_problems(tool_runs[cid], plan) == []


# ----------------------------------------------------------------------------- the checks can fail


def _failures(settings: Settings, plan: CiPlan, item: Read) -> list[str]:
    return [
        p
        for s in plan.stages
        for b in branches(item)[:1]
        if facts.expected_runs(plan, b)[s.name] is True
        for p in tc.check_failure(settings, plan, s.name, b)
    ]


CHECKS = {
    "commands": lambda s, p, i: tc.check_commands(s, p),
    "values": lambda s, p, i: tc.check_values(s, p),
    "dependencies": lambda s, p, i: tc.check_dependencies(s, p),
    "locks": lambda s, p, i: tc.check_locks(s, p),
    "gates": lambda s, p, i: tc.check_gates(s, p),
    "timeouts": lambda s, p, i: tc.check_timeouts(s, p),
    "manifests": lambda s, p, i: [x for b in branches(i) for x in tc.check_manifests(s, p, b)],
    "branches": lambda s, p, i: [x for b in branches(i) for x in tc.check_branch(s, p, b)],
    "failures": _failures,
    "agents": lambda s, p, i: tc.check_agents(s, p),
    "push": lambda s, p, i: tc.check_push(s, p),
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_each_check_reports_a_settings_file_with_that_mistake(
    corpus: dict[str, Read], tool_runs: dict[str, list[tuple[str, list[JobRun]]]], mutant: Mutant
) -> None:
    item = corpus[f"mutant:{mutant.id}"]
    original = corpus[mutant.case]
    assert original.settings is not None
    plan = facts.plan_of(item.case.spec(), item.case.context)
    if mutant.check == "tool":
        assert tool_problems(tool_runs[mutant.case], plan) == [], "the unbroken file must pass this check"
        assert tool_problems(tool_runs[f"mutant:{mutant.id}"], plan) != [], f"tool did not notice: {mutant.old!r}"
        return
    if mutant.check == "read":
        assert item.settings is None, "the reader accepted a Kotlin template it cannot evaluate"
        assert "template" in item.error
        return
    assert item.settings is not None, item.error
    assert CHECKS[mutant.check](original.settings, plan, original) == [], "the unbroken file must pass this check"
    assert CHECKS[mutant.check](item.settings, plan, item) != [], f"{mutant.check} did not notice: {mutant.old!r}"


# ----------------------------------------------------------------------------- Kotlin strings

# (Kotlin source of a string expression, its value as the Kotlin language defines it)
KOTLIN_STRINGS = [
    (r'"plain"', "plain"),
    (
        r'"tab\there\nnewline \"quoted\" back\\slash \$dollar \u00e9 \'"',
        'tab\there\nnewline "quoted" back\\slash $dollar é \'',
    ),
    (r'"\uD83C\uDF89"', "🎉"),
    ("\"a $ b $1 ${'$'}{x}\"", "a $ b $1 ${x}"),
    ('"${"nested ${\'\\"\'}"}"', 'nested "'),
    ('"""raw \\n \\t \\u00e9 $ ${\'$\'}"""', "raw \\n \\t \\u00e9 $ $"),
    ('"""\n    a\n      b\n    """.trimIndent()', "a\n  b"),
    ('"""\n\ta\n\t\tb\n""".trimIndent()', "a\n\tb"),
    ('"""    first\n    second""".trimIndent()', "first\nsecond"),
    ('"""\n    a\n\n      \n    b  \n    """.trimIndent()', "a\n\n  \nb  "),
    ('"""\n  \n    x\n  """.trimIndent()', "\nx"),  # a blank middle line stays (as an empty line)
    ('"""   """.trimIndent()', ""),
    ('"""\n    only ""${\'"\'} quotes\n""".trimIndent()', 'only """ quotes'),
    ('"a" + "b" + """c"""', "abc"),
]


def kotlin_value(source: str) -> str:
    [(_, value)] = string_literal_expressions(f"val x = {source}\n".encode())
    return value


@pytest.mark.parametrize(("source", "value"), KOTLIN_STRINGS, ids=[s[:30] for s, _ in KOTLIN_STRINGS])
def test_kotlin_string_literals_decode_as_the_language_defines_them(source: str, value: str) -> None:
    require_tree_sitter()
    if "+" in source:
        statements = read(f"x = {source}\n".encode())
        assert statements[0].value.value == value  # type: ignore[union-attr]
    else:
        assert kotlin_value(source) == value


@pytest.mark.parametrize(
    "source",
    ['"bad \\q escape"', '"a $name template"', '"""raw $name"""', '"${x}"'],
    ids=["unknown escape", "variable template", "raw variable template", "non-constant template"],
)
def test_what_kotlin_would_reject_or_settings_cannot_mean_is_an_error(source: str) -> None:
    require_tree_sitter()
    with pytest.raises(KotlinReadError):
        kotlin_value(source)


def test_trim_indent_follows_the_stdlib_on_whitespace_kinds() -> None:
    assert trim_indent("\n\u00a0\u00a0x\n\u00a0\u00a0 y\n") == "x\n y"  # NBSP is whitespace to Kotlin
    assert trim_indent("a\r\n  b\rc") == "a\n  b\nc"  # \r\n and \r split lines too
    assert trim_indent("  \n  x  \n  ") == "x  "  # trailing spaces stay


def test_teamcity_references_and_percent_escapes() -> None:
    assert resolve("100%% of %env.X%, %y%", {"env.X": "%%z%%"}) == ("100% of %z%, %y%", ["y"])
    assert resolve("50%", {}) == ("50%", [])


def test_the_decoder_agrees_with_kotlinc_on_every_literal_of_the_corpus(
    corpus: dict[str, Read], tmp_path: Path
) -> None:
    """Debian's kotlinc (1.3) evaluates every string expression of every settings file, and the
    hand-written cases above; its bytes must equal the decoder's."""
    need(
        shutil.which("kotlinc") is not None,
        "kotlinc is not installed (apt-get install kotlin; see .ci/install-validators.sh)",
    )
    home = java_home()
    need(home is not None, "no JDK found for kotlinc")
    expressions: list[tuple[str, str]] = [(s, v) for s, v in KOTLIN_STRINGS]
    for item in corpus.values():
        if item.settings is not None:
            expressions += string_literal_expressions(item.path.read_bytes())
    unique = list(dict.fromkeys(expressions))
    # a deliberately wrong expectation: kotlinc must disagree, or the comparison proves nothing
    sentinel = ('"sentinel\\t"', "sentinel\\t")
    unique.append(sentinel)
    lines = [
        'fun out(s: String) = println(s.toByteArray(Charsets.UTF_8).joinToString(",") { (it.toInt() and 0xff).toString() })'
    ]
    lines += [f"out({source})" for source, _ in unique]
    script = tmp_path / "literals.kts"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = subprocess.run(
        ["kotlinc", "-script", str(script)],
        env={"JAVA_HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.splitlines()
    assert len(printed) == len(unique)
    disagree = []
    for (source, value), line in zip(unique, printed, strict=True):
        kotlin = bytes(int(b) for b in line.split(",") if b)
        if kotlin != value.encode("utf-8"):
            disagree.append(f"{source!r}: kotlinc says {kotlin.decode('utf-8', 'replace')!r}, the decoder {value!r}")
    assert disagree == [f"{sentinel[0]!r}: kotlinc says 'sentinel\\t', the decoder {sentinel[1]!r}"]


def test_the_corpus_covers_every_example_and_the_repository() -> None:
    names = {c.split(":", 1)[1] for c in CASES if c.startswith("golden:")}
    assert names == {p.name for p in (REPO / "examples").iterdir() if (p / "pipelinefile.py").is_file()}
    assert {"render:repo", "committed:repo"} <= set(CASES)
