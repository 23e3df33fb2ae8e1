"""The Declarative stand-in and the run-time model themselves.

1. The stand-in records what Groovy 2.4 evaluates, not what the text looks like: single- vs
   double- vs triple-quoted strings, escapes, GString interpolation, `$`, concatenation, script
   blocks, positional and named step arguments (tests/data/jenkins/standin-semantics.Jenkinsfile);
   sections are recorded in interpreter order whatever their order in the file; branch globs are
   Ant's (case-insensitive, `*` within one path segment); unknown steps are errors.
2. The model (tests/ci_grammar/jenkins_model.py) follows pipeline-model-definition's
   ModelInterpreter on small pipelines whose Jenkins behaviour is documented: a failure skips the
   later stages, catchError does not; post always runs after a failure; `agent none` inside an
   allocated agent keeps it; an input is asked before its stage's agent (and, without beforeInput,
   before its `when`); an empty variable is removed; a concurrent branch's stash is not there.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from pipeline.render.branch_patterns import glob_regex
from pipeline.render.templating import groovy
from tests.ci_grammar.jenkins_model import Interpreter, Run
from tests.ci_grammar.jenkins_trace import Branch, Trace, missing_tool, run_stand_in
from tests.conftest import REPO, need

pytestmark = pytest.mark.integration

SEMANTICS = REPO / "tests" / "data" / "jenkins" / "standin-semantics.Jenkinsfile"
BRANCHES = [Branch("main"), Branch("release/1"), Branch("Release/2"), Branch("release/1/x"), Branch("PR-7", True)]

PIPELINES = {
    "failure-skips-later-stages": """
pipeline {
    agent any
    stages {
        stage('a') {
            steps { sh 'fails' }
            post {
                always { sh 'a always' }
                success { sh 'a success' }
                failure { sh 'a failure' }
            }
        }
        stage('b') {
            steps { sh 'b' }
        }
    }
    post {
        always { sh 'pipeline always' }
    }
}
""",
    "catch-error-goes-on": """
pipeline {
    agent any
    stages {
        stage('a') {
            steps {
                catchError(buildResult: 'FAILURE', stageResult: 'FAILURE') { sh 'fails' }
            }
            post {
                failure { sh 'a failure' }
            }
        }
        stage('b') {
            steps { sh 'b' }
        }
    }
}
""",
    "agents": """
pipeline {
    agent none
    stages {
        stage('outer') {
            agent any
            stages {
                stage('inner none') {
                    agent none
                    steps { sh 'inner' }
                }
                stage('gate') {
                    input { message 'Go?' }
                    steps { echo 'go' }
                }
            }
        }
        stage('gate with its own agent') {
            agent any
            input { message 'Again?' }
            steps { sh 'after' }
        }
        stage('no agent') {
            steps { sh 'nowhere' }
        }
    }
}
""",
    "input-before-when": """
pipeline {
    agent none
    stages {
        stage('late when') {
            when { branch 'release/*' }
            input { message 'Asked everywhere?' }
            steps { echo 'x' }
        }
        stage('early when') {
            when {
                beforeInput true
                branch 'release/*'
            }
            input { message 'Asked on release only?' }
            steps { echo 'y' }
        }
    }
}
""",
    "environment": """
pipeline {
    agent any
    environment {
        EMPTY = ''
        KEPT = 'k'
    }
    stages {
        stage('s') {
            environment { KEPT = 'stage' }
            steps {
                withEnv(['KEPT=', 'NEW=n']) { sh 'env' }
            }
        }
    }
}
""",
    "cache": """
pipeline {
    agent any
    stages {
        stage('s') {
            steps {
                cache(maxCacheSize: 250, caches: [arbitraryFileCache(path: '.venv', cacheValidityDecidingFile: 'pyproject.toml')]) {
                    sh 'inside cache'
                }
            }
        }
    }
}
""",
    "post-errors": """
pipeline {
    agent any
    stages {
        stage('outer') {
            stages {
                stage('inner') {
                    stages {
                        stage('work') {
                            steps { sh 'work' }
                        }
                    }
                    post {
                        always { sh 'first cleanup' }
                    }
                }
            }
            post {
                always { sh 'second cleanup' }
            }
        }
        stage('after') {
            steps { sh 'after' }
        }
    }
}
""",
    "node-lock-git": """
pipeline {
    agent none
    stages {
        stage('locked') {
            options {
                lock(resource: 'a', extra: [[resource: 'b']])
            }
            stages {
                stage('inside') {
                    agent { label 'x && y' }
                    options {
                        lock(resource: 'c')
                    }
                    steps {
                        withCredentials([gitUsernamePassword(credentialsId: 'push')]) {
                            sh 'git checkout -B "$BRANCH_NAME"'
                        }
                    }
                }
            }
            post {
                always {
                    node('x') {
                        catchError(buildResult: 'SUCCESS', stageResult: 'SUCCESS') {
                            unstash 'never-made'
                        }
                        sh 'no sources yet'
                        checkout scm
                        sh 'with sources'
                    }
                }
            }
        }
    }
}
""",
    "parallel-stash": """
pipeline {
    agent none
    stages {
        stage('p') {
            parallel {
                stage('one') {
                    agent any
                    steps { sh 'one' }
                    post {
                        always { stash name: 'one', includes: '**', allowEmpty: true }
                    }
                }
                stage('two') {
                    agent any
                    steps {
                        unstash 'one'
                        sh 'two'
                    }
                }
            }
        }
    }
}
""",
}


# Globs whose regexes must mean in Java (Jenkins' REGEXP comparator: String.matches) what fnmatch means.
GLOBS = [
    "main",
    "release/*",
    "v?.[0-9]*",
    "[!a]x",
    "a[&&b]",
    "[]a]",
    "[!]a]",
    "a[b",
    "[z-a]x",
    "x[a-c-e]",
    "*/*-[^ab]",
    "é*$",
]
GLOB_BRANCHES = ["main", "Main", "release/1.0/hotfix", "RELEASE/1", "v1.2-rc", "v1.x", "bx", "ax", "a&", "ab", "a[b",
                 "]", "a", "xx", "xb", "x-", "xd", "f/g-c", "f/g-a", "é/x$", "zx"]  # fmt: skip


def regexp_pipeline() -> str:
    stages = "\n".join(
        f"        stage({groovy(f's{i}')}) {{\n"
        f"            when {{ branch pattern: {groovy(glob_regex(g))}, comparator: 'REGEXP' }}\n"
        "            steps { echo 'x' }\n"
        "        }"
        for i, g in enumerate(GLOBS)
    )
    return f"pipeline {{\n    agent none\n    stages {{\n{stages}\n    }}\n}}\n"


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trace]:
    reason = missing_tool()
    need(reason is None, reason or "")
    tmp = tmp_path_factory.mktemp("standin")
    files: dict[str, Path] = {"semantics": SEMANTICS}
    for name, text in [*PIPELINES.items(), ("regexp", regexp_pipeline())]:
        files[name] = tmp / f"{name}.Jenkinsfile"
        files[name].write_text(text, encoding="utf-8")
    branches = {name: [Branch(b) for b in GLOB_BRANCHES] if name == "regexp" else BRANCHES for name in files}
    result = run_stand_in([(path, branches[name]) for name, path in files.items()])
    return {name: result[path] for name, path in files.items()}


def run(trace: Trace, branch: str = "main", **kwargs: object) -> Run:
    return Interpreter(trace, branch, **kwargs).execute()  # type: ignore[arg-type]


def scripts(r: Run) -> list[str]:
    return [e.args["script"] for e in r.of("sh")]


# ----------------------------------------------------------------------------- 1. the stand-in


def test_environment_values_are_what_groovy_evaluates(traces: dict[str, Trace]) -> None:
    trace = traces["semantics"]
    assert trace.pipeline is not None
    env = {e.name: (e.value, e.credentials) for e in trace.pipeline.environment}
    assert env == {
        "PLAIN": ("single $HOME \\ ' \" ${x}", None),
        "TRIPLE": ("a\n  b\\n $x \t", None),
        "GSTR": ('g 2 $HOME \\ " from a local variable é', None),
        "REF": ("single $HOME \\ ' \" ${x}-ref", None),
        "CRED": (None, "the-id"),
        "NUM": ("42", None),
        "JOINED": ("abcd", None),
    }


def test_steps_receive_what_groovy_evaluates(traces: dict[str, Trace]) -> None:
    trace = traces["semantics"]
    main = run(trace, "main")
    assert scripts(main) == [
        '#!/bin/sh\necho "$HOME" \\',
        "echo single $HOME \\ ' \" ${x} ${HOME} 42",
        "abc",
        "@@credentials:the-id@@",
        "by map",
        "on main",
        "inside withEnv",
        "with credentials",
    ]
    # script { } blocks are evaluated once, with the first requested branch (a documented limit)
    assert scripts(run(trace, "release/1"))[5] == "on main"
    inside = main.of("sh")[6]
    assert {k: inside.env[k] for k in ("A", "B", "C")} == {"A": "1", "B": "6", "C": "x=y"}
    credentials = main.of("sh")[7].scope.bindings
    assert {(b.variable, b.credentials_id) for b in credentials} >= {
        ("U", "up"),
        ("P", "up"),
        ("AWS_ACCESS_KEY_ID", "aws-x"),
        ("AWS_SECRET_ACCESS_KEY", "aws-x"),
    }
    stash = main.of("stash")[0]
    assert stash.scope.dir == "sub"
    assert stash.args["includes"] == "**/*.json"
    assert main.of("sh")[4].args["label"] == "labelled"
    assert main.of("sh")[0].timeout == 120


def test_sections_are_recorded_in_interpreter_order_and_globs_are_ants(traces: dict[str, Trace]) -> None:
    trace = traces["semantics"]
    assert trace.pipeline is not None
    stage = trace.pipeline.stages[0]
    assert stage.agent == {"kind": "label", "label": "linux && docker"}
    assert stage.when is not None
    assert stage.when.before_agent
    results = {b.name: stage.when.passes(b.name) for b in BRANCHES}
    # Ant's matchPath as Jenkins calls it: case-insensitive, `*` does not cross '/'
    assert results == {"main": False, "release/1": True, "Release/2": True, "release/1/x": False, "PR-7": True}


def test_java_matches_the_branch_regexes_as_fnmatch_matches_the_globs(traces: dict[str, Trace]) -> None:
    """The renderers' glob-to-regex translation (pipeline.render.branch_patterns), evaluated by
    Java's String.matches as Jenkins' REGEXP comparator does, agrees with fnmatch.fnmatchcase (the
    definition's meaning) on every pattern and branch here, where Ant's default GLOB would not."""
    trace = traces["regexp"]
    assert trace.errors == []
    assert trace.pipeline is not None
    disagree = []
    for glob, stage in zip(GLOBS, trace.pipeline.stages, strict=True):
        assert stage.when is not None
        for branch in GLOB_BRANCHES:
            if stage.when.passes(branch) != fnmatch.fnmatchcase(branch, glob):
                disagree.append((glob, branch))
    assert disagree == []


def test_unknown_steps_are_reported_not_ignored(traces: dict[str, Trace]) -> None:
    assert traces["semantics"].errors == ["pipeline > stages > stage 'strings' > steps: unknown step 'frobnicate'"]


# ----------------------------------------------------------------------------- 2. the model


def test_a_failure_skips_later_stages_and_post_conditions_follow_the_result(traces: dict[str, Trace]) -> None:
    r = run(traces["failure-skips-later-stages"], fails=lambda e: e.args["script"] == "fails")
    assert scripts(r) == ["fails", "a always", "a failure", "pipeline always"]
    assert r.stages["b"] == "skipped (failure)"
    assert r.result == "FAILURE"


def test_catch_error_marks_the_build_but_the_next_stage_still_runs(traces: dict[str, Trace]) -> None:
    r = run(traces["catch-error-goes-on"], fails=lambda e: e.args["script"] == "fails")
    assert scripts(r) == ["fails", "a failure", "b"]
    assert r.result == "FAILURE"


def test_agent_none_keeps_the_executor_it_is_in_and_inputs_come_before_the_agent(traces: dict[str, Trace]) -> None:
    r = run(traces["agents"])
    inner, after = r.of("sh")[0], r.of("sh")[1]
    gate, again = r.of("input")
    assert inner.scope.workspace is not None
    assert gate.scope.workspace is inner.scope.workspace  # nested in 'outer': an executor waits
    assert again.scope.workspace is None  # the stage's own agent comes after its input
    assert after.scope.workspace is not None
    assert "no node context" in r.problems[0] or "needs an agent" in r.problems[0]
    assert r.result == "FAILURE"


def test_without_before_input_the_input_is_asked_before_when_is_evaluated(traces: dict[str, Trace]) -> None:
    on_main = run(traces["input-before-when"], "main")
    assert [e.args["message"] for e in on_main.of("input")] == ["Asked everywhere?"]
    on_release = run(traces["input-before-when"], "release/1")
    assert [e.args["message"] for e in on_release.of("input")] == ["Asked everywhere?", "Asked on release only?"]


def test_an_empty_value_removes_the_variable(traces: dict[str, Trace]) -> None:
    event = run(traces["environment"]).of("sh")[0]
    assert "EMPTY" not in event.env
    assert "KEPT" not in event.env  # withEnv(['KEPT=']) removes the stage's KEPT
    assert event.env["NEW"] == "n"


def test_a_stash_from_a_concurrent_branch_is_not_there(traces: dict[str, Trace]) -> None:
    r = run(traces["parallel-stash"])
    assert scripts(r) == ["one"]
    assert "concurrent parallel branch" in r.problems[0]
    assert r.result == "FAILURE"


def test_an_error_in_post_fails_its_stage_and_outer_posts_still_run(traces: dict[str, Trace]) -> None:
    """runPostConditions: an error in a post condition becomes the stage's error (ModelInterpreter),
    so the stages after it are skipped, while an enclosing stage's post still runs."""
    r = run(traces["post-errors"], fails=lambda e: e.args["script"] == "first cleanup")
    assert scripts(r) == ["work", "first cleanup", "second cleanup"]
    assert r.stages["after"] == "skipped (failure)"
    assert r.result == "FAILURE"


def test_node_locks_git_bindings_and_tolerated_failures(traces: dict[str, Trace]) -> None:
    trace = traces["node-lock-git"]
    assert trace.errors == []
    r = run(trace, "release/1")
    git, bare, checked_out = r.of("sh")
    # lock(resource:, extra:) takes both at once; a nested lock is a separate acquisition
    assert git.scope.locks == ("a", "b", "c")
    holds = [hold for _, hold in git.scope.holds]
    assert holds[0] == holds[1] != holds[2]
    assert {(b.variable, b.credentials_id, b.kind) for b in git.scope.bindings} == {
        ("GIT_USERNAME", "push", "gitUsernamePassword"),
        ("GIT_PASSWORD", "push", "gitUsernamePassword"),
    }
    assert git.env["BRANCH_NAME"] == "release/1"  # what a multibranch job provides
    assert git.scope.workspace is not None
    assert git.scope.workspace.agent["label"] == "x && y"
    assert git.sources  # a Declarative agent checks out
    # a node step allocates its own workspace, without the sources until `checkout scm`
    assert bare.scope.workspace is not None
    assert bare.scope.workspace is not git.scope.workspace
    assert (bare.sources, checked_out.sources) == (False, True)
    assert checked_out.scope.workspace is bare.scope.workspace
    # catchError(buildResult: 'SUCCESS') swallows the missing stash: no problem, the build succeeds
    assert r.problems == []
    assert len(r.caught) == 1
    assert "never-made" in r.caught[0]
    assert r.result == "SUCCESS"


def test_job_cacher_runs_its_body(traces: dict[str, Trace]) -> None:
    trace = traces["cache"]
    assert trace.errors == []
    r = run(trace)
    assert scripts(r) == ["inside cache"]
    assert r.result == "SUCCESS"
