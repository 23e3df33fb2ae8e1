"""The pure-Python parts of the CI oracles in tests/ci_grammar (the Groovy stand-in, the Kotlin
reader and kotlinc are exercised by tests/integration/test_jenkins_*.py and
test_teamcity_settings.py): sh command splitting, Ant path patterns, TeamCity parameter
references, branch filters and artifact rules, Kotlin's trimIndent, and what the spec expects
to run on a branch."""

from __future__ import annotations

import pytest

from pipeline import Bake, Environment, Pipeline, Shell, Teardown, TestStack, Trigger
from pipeline.render.base import RenderContext
from pipeline.render.plan import build_plan
from tests.ci_grammar import spec_facts as facts
from tests.ci_grammar.antglob import match_any, match_path
from tests.ci_grammar.cases import example_spec
from tests.ci_grammar.jenkins_trace import Branch
from tests.ci_grammar.kotlin_dsl import KotlinReadError, decode_segment, trim_indent
from tests.ci_grammar.shell import commands, is_pipeline_command
from tests.ci_grammar.shell_run import Job, run_jobs
from tests.ci_grammar.teamcity_model import apply_rules, branch_filter_matches, parse_rules, resolve


def test_sh_scripts_split_into_simple_commands_as_sh_does() -> None:
    script = ". .venv/bin/activate && pipeline run stage a --manifest 'x y' # comment\n\nb \"c $X\" || \\\n  d;e"
    found = [(c.argv, c.before, c.after) for c in commands(script)]
    assert found == [
        ((".", ".venv/bin/activate"), "", "&&"),
        (("pipeline", "run", "stage", "a", "--manifest", "x y"), "&&", "\n"),
        (("b", "c $X"), "\n", "||"),
        (("d",), "||", ";"),
        (("e",), ";", ""),
    ]
    cached = "[ -x .venv/bin/pipeline ] || { python3 -m venv .venv && pip install 'a b'; }\nif true; then ! x; fi"
    assert [c.argv for c in commands(cached)] == [
        ("[", "-x", ".venv/bin/pipeline", "]"),
        ("python3", "-m", "venv", ".venv"),
        ("pip", "install", "a b"),
        ("true",),
        ("x",),
    ]
    assert is_pipeline_command(commands(".venv/bin/pipeline run stage x")[0], "run", "stage")
    assert not is_pipeline_command(commands("pipelines run stage x")[0], "run", "stage")


def test_ant_patterns() -> None:
    assert match_path(".pipeline/ci/manifest/*.json", ".pipeline/ci/manifest/a.json")
    assert not match_path(".pipeline/ci/manifest/*.json", ".pipeline/ci/manifest/sub/a.json")
    assert match_path("**/*.json", "a/b/c.json")
    assert match_path("**/*.json", "c.json")
    assert match_path("dist/", "dist/a/b")
    assert not match_path("release/*", "release/1/2")
    assert match_path("Release/*", "release/1", case_sensitive=False)
    assert match_any("a/*.txt, b/*.json", "b/x.json")
    assert match_any("", "anything")


def test_teamcity_references_escapes_and_filters() -> None:
    assert resolve("%%", {}) == ("%", [])
    assert resolve("%a% and %b%", {"a": "%b%", "b": "B"}) == ("B and B", [])
    assert resolve("%missing%", {}) == ("%missing%", ["missing"])
    assert branch_filter_matches("+:main\n+:release/*", "release/1/hotfix")
    assert not branch_filter_matches("+:main", "Main")
    assert not branch_filter_matches("+:*\n-:wip/*", "wip/x")


def test_artifact_rules_copy_what_the_wildcard_matched() -> None:
    published, empty = apply_rules(
        parse_rules("+:.pipeline/ci/manifest/*.json => manifest"), {".pipeline/ci/manifest/a.json", "other.json"}
    )
    assert published == {"manifest/a.json": ".pipeline/ci/manifest/a.json"}
    assert empty == []
    fetched, empty = apply_rules(parse_rules("manifest/*.json => .pipeline/ci/manifest"), set(published))
    assert set(fetched) == {".pipeline/ci/manifest/a.json"}
    _, empty = apply_rules(parse_rules("manifest/*.json => x"), set())
    assert len(empty) == 1
    _, empty = apply_rules(parse_rules("?:manifest/*.json => x"), set())
    assert empty == []


def test_trim_indent_and_escapes_without_tree_sitter() -> None:
    assert trim_indent("\n    a\n      b\n    ") == "a\n  b"
    assert decode_segment(r"\t\u00e9\$", raw_string=False) == "\té$"
    assert decode_segment(r"\t\u00e9", raw_string=True) == r"\t\u00e9"
    with pytest.raises(KotlinReadError):
        decode_segment("$name", raw_string=True)


def test_example_branches_match_their_globs() -> None:
    assert facts.example_branch("release/*") == "release/x1"
    assert facts.example_branch("v[0-9].?") == "v0.q"
    assert facts.example_branch("[!a]x") == "zx"


def test_what_runs_on_a_branch_follows_pipeline_run() -> None:
    """A stage skipped by its filter blocks what follows it (also behind a teardown); a teardown
    must run where its stack ran; a branch outside the trigger runs nothing."""
    with Pipeline(
        "p",
        environments=[Environment(name="t", ephemeral=True), Environment(name="production", template="t.yaml")],
        trigger=Trigger(branches=("main", "rc/*")),
    ) as p:
        bake = Bake(name="bake", template="images/web.pkr.hcl")
        stack = TestStack(name="test-stack", environment="t", image=bake)
        check = Shell(name="check", commands=["true"], branches=("rc/*",))
        down = Teardown(name="teardown", stack=stack)
        after = Shell(name="after", commands=["true"])
        bake >> stack >> check >> down >> after
    plan = build_plan(p.spec, RenderContext())
    assert facts.expected_runs(plan, Branch("main")) == {
        "bake": True,
        "test-stack": True,
        "check": False,
        "teardown": True,
        "after": False,
    }
    assert set(facts.expected_runs(plan, Branch("rc/1")).values()) == {True}
    assert set(facts.expected_runs(plan, Branch("other")).values()) == {False}
    assert set(facts.expected_runs(plan, facts.CHANGE_REQUEST).values()) == {False}


def test_a_stage_install_must_bring_the_extras_its_stage_kinds_declare() -> None:
    """A pipeline with a Migrate stage needs `[run,schema]` on every stage's install (the
    migration's executor imports the schema extra); the drift check still installs no extra."""
    schema = build_plan(example_spec("live-schema"), RenderContext(version="1.2.3"))
    plain = build_plan(example_spec("linear"), RenderContext(version="1.2.3"))
    assert facts.stage_extras(schema.spec) == {"run", "schema"}
    assert facts.stage_extras(plain.spec) == {"run"}

    def install(requirement: str) -> list[tuple[str, ...]]:
        return [("pip", "install", requirement)]

    assert (
        facts.pinned_install_problem(install("pipeline-as-code[run,schema]==1.2.3"), schema, drift_check=False) is None
    )
    assert facts.pinned_install_problem(install("pipeline-as-code[run]==1.2.3"), schema, drift_check=False)
    assert facts.pinned_install_problem(install("pipeline-as-code[run,schema]==1.2.3"), plain, drift_check=False)
    assert facts.pinned_install_problem(install("pipeline-as-code==1.2.3"), schema, drift_check=True) is None


def test_shell_run_stand_ins_record_which_venv_each_pipeline_comes_from() -> None:
    """The oracle behind the install checks: a venv made and installed into once (a marker file),
    its `pipeline` logs what was installed into it; a second run in the same workspace reuses it; a
    `pipeline` run without activating a venv is not found (127), as on a bare agent."""
    setup = (
        'set -e\nvenv=.v\nif [ ! -f "$venv/.done" ]; then\n    python3.11 -m venv "$venv"\n'
        '    . "$venv/bin/activate"\n    pip install \'pipeline-as-code[run]==1.0\'\n    touch "$venv/.done"\nfi'
    )
    good = Job("good", (setup, '. .v/bin/activate && pipeline run stage "$STAGE"'), {"STAGE": "a b"}, errexit=True)
    bare = Job("bare", ("pipeline run stage x",), {}, errexit=False)
    runs = run_jobs([good, bare], repeat=2)
    first, second = runs["good"]
    assert first.statuses == [0, 0]
    assert second.statuses == [0, 0]
    assert [(c.requirements, c.argv) for c in first.invocations] == [
        (("pipeline-as-code[run]==1.0",), ("pipeline", "run", "stage", "a b"))
    ]
    assert [args for _, args in first.pip_installs] == ["install pipeline-as-code[run]==1.0"]
    assert second.pip_installs == []
    assert second.invocations == first.invocations
    assert [run.statuses for run in runs["bare"]] == [[127], [127]]
    assert runs["bare"][0].invocations == []
