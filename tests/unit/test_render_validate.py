"""The structural checkers find what they are meant to find (they also guard every golden file)."""

from __future__ import annotations

import pytest

from pipeline.render.validate import ReadError, check_jenkinsfile, check_teamcity_settings, check_workflow, read_blocks

GOOD_JENKINSFILE = """
pipeline {
    agent none
    stages {
        stage('a') {
            agent any
            steps {
                sh 'echo "{" }'
            }
        }
        stage('gate') {
            agent none
            input {
                message 'ok?'
            }
            steps {
                echo 'approved'
            }
        }
    }
}
"""


def test_the_block_reader_understands_strings_comments_and_nesting() -> None:
    root = read_blocks('a { // }\n  b \'x}\' /* { */ """y\n{"""\n  c(1,\n 2) { d }\n}\n')
    a = root.children[0]
    assert [" ".join(c.header.split()) for c in a.children] == ["b S S", "c(1, 2)"]
    assert a.children[0].strings == ["x}", "y\n{"]
    assert a.children[1].children[0].header == "d"
    with pytest.raises(ReadError):
        read_blocks("a {\n")
    with pytest.raises(ReadError):
        read_blocks("}\n")


def test_a_sound_jenkinsfile_passes() -> None:
    assert check_jenkinsfile(GOOD_JENKINSFILE) == []


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (GOOD_JENKINSFILE.replace("    agent none\n    stages", "    stages"), "exactly one `agent`"),
        (GOOD_JENKINSFILE.replace("stage('gate')", "stage('a')"), "repeats the name"),
        (GOOD_JENKINSFILE.replace("            agent any\n", ""), "needs an agent"),
        (GOOD_JENKINSFILE.replace("message 'ok?'", "ok 'x'"), "needs a message"),
        (
            GOOD_JENKINSFILE.replace("steps {\n                sh", "stepz {\n                sh"),
            "exactly one of steps",
        ),
        (
            GOOD_JENKINSFILE.replace("sh 'echo", "node { sh 'echo").replace('"{" }\'', '"{" }\' }'),
            "`node` cannot be used",
        ),
        (
            GOOD_JENKINSFILE.replace("    agent none\n", "    agent none\n    wibble true\n"),
            "not allowed directly in pipeline",
        ),
        (
            GOOD_JENKINSFILE.replace("            agent any\n", "            agent any\n            when { }\n"),
            "no condition",
        ),
        (
            GOOD_JENKINSFILE.replace("agent any\n", "agent any\n            post { sometimes { echo 'x' } }\n"),
            "not a post condition",
        ),
    ],
)
def test_jenkins_rules_catch_broken_files(broken: str, problem: str) -> None:
    problems = check_jenkinsfile(broken)
    assert any(problem in p for p in problems), problems


def test_nested_parallel_is_refused() -> None:
    text = """
pipeline {
    agent any
    stages {
        stage('outer') {
            parallel {
                stage('inner') {
                    parallel {
                        stage('x') { steps { echo 'x' } }
                    }
                }
            }
        }
    }
}
"""
    assert any("inside another parallel" in p for p in check_jenkinsfile(text))


GOOD_SETTINGS = """
import jetbrains.buildServer.configs.kotlin.*

version = "2024.03"

project {
    buildType(A)
    buildType(B)
    features {
        sharedResource {
            id = "Lock"
            name = "Lock"
            resourceType = quoted(1)
        }
    }
}

object A : BuildType({
    id("A")
    name = "a"
    steps {
        script {
            scriptContent = "echo \\$HOME 100%%\\nls"
        }
    }
})

object B : BuildType({
    id("B")
    name = "b"
    dependencies {
        snapshot(A) {
        }
    }
    features {
        sharedResources {
            writeLock("Lock")
        }
    }
})
"""


def test_sound_teamcity_settings_pass() -> None:
    assert check_teamcity_settings(GOOD_SETTINGS) == []


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (GOOD_SETTINGS.replace('version = "2024.03"', ""), "version"),
        (GOOD_SETTINGS.replace("    buildType(B)\n", ""), "not registered"),
        (GOOD_SETTINGS.replace("    buildType(B)\n", "    buildType(B)\n    buildType(C)\n"), "not declared"),
        (GOOD_SETTINGS.replace('id("B")', 'id("9B")'), "not a valid TeamCity ID"),
        (GOOD_SETTINGS.replace('id("B")', 'id("a")'), "also used by"),
        (GOOD_SETTINGS.replace("snapshot(A)", "snapshot(Z)"), "which is not declared"),
        (GOOD_SETTINGS.replace('writeLock("Lock")', 'writeLock("Other")'), "does not define"),
        (GOOD_SETTINGS.replace("\\$HOME", "$HOME"), "`$` not written"),
        (GOOD_SETTINGS.replace("100%%", "100%"), "`%` not written"),
        (GOOD_SETTINGS.replace('"echo \\$HOME 100%%\\nls"', '"""echo""".trimIndent()'), 'one "..." literal'),
        (
            GOOD_SETTINGS.replace(
                '    name = "a"\n', '    name = "a"\n    dependencies {\n        snapshot(B) {\n        }\n    }\n'
            ),
            "cycle",
        ),
    ],
)
def test_teamcity_rules_catch_broken_files(broken: str, problem: str) -> None:
    problems = check_teamcity_settings(broken)
    assert any(problem in p for p in problems), problems


GOOD_WORKFLOW = """
name: x
'on': push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/upload-artifact@v4
        with:
          name: one
  b:
    needs: [a]
    runs-on: ubuntu-latest
    steps:
      - run: echo b
"""


def test_a_sound_workflow_passes() -> None:
    assert check_workflow(GOOD_WORKFLOW) == []


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (GOOD_WORKFLOW.replace("needs: [a]", "needs: [c]"), "needs unknown job"),
        (GOOD_WORKFLOW.replace("  a:\n    runs-on", "  a:\n    needs: [b]\n    runs-on"), "cycle"),
        (
            GOOD_WORKFLOW.replace(
                "      - run: echo b", "      - uses: actions/upload-artifact@v4\n        with:\n          name: one"
            ),
            "both upload",
        ),
        (GOOD_WORKFLOW.replace("'on': push", "on: push"), "no `on` key"),
        (GOOD_WORKFLOW.replace("      - run: echo b", "      - run: echo b\n        uses: x"), "both or neither"),
    ],
)
def test_workflow_rules_catch_broken_files(broken: str, problem: str) -> None:
    problems = check_workflow(broken)
    assert any(problem in p for p in problems), problems
