"""The CLI through a real subprocess in a temp dir: commands, exit codes, output modes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli, ProjectFactory

DEFINITION = """
from pipeline import CommitTest, Environment, Pipeline, Shell

with Pipeline("demo", environments=[Environment(name="staging")]) as p:
    unit = CommitTest(name="unit", commands=["echo unit ran", "python -c 'print(6 * 7)'"], inputs=["src"])
    lint = CommitTest(name="lint", commands=["echo lint ran"], inputs=["src"])
    deploy = Shell(name="deploy", environment="staging", inputs=["src"],
                   commands=["echo deploying with junit=$PIPELINE_UNIT_JUNIT"])
    [unit, lint] >> deploy
"""
FILES = {"src/app.py": "print('hi')\n"}


@pytest.fixture
def demo(project: ProjectFactory, git_repo: object) -> Path:
    root = project(DEFINITION, FILES)
    git_repo(root)  # type: ignore[operator]
    return root


def test_validate_and_graph(cli: Cli, demo: Path) -> None:
    result = cli("validate", cwd=demo)
    assert result.returncode == 0, result.stderr
    assert "ok: pipeline demo (pipelinefile.py): 3 stages, 1 environments" in result.stdout

    text = cli("graph", cwd=demo)
    assert text.returncode == 0
    assert text.stdout.splitlines()[1:4] == ["1.  (parallel)", "   unit [commit-test]", "   lint [commit-test]"]

    mermaid = cli("graph", "--format", "mermaid", cwd=demo).stdout
    assert mermaid.startswith("flowchart LR\n")
    assert "    unit --> deploy" in mermaid

    dot = cli("graph", "--format", "dot", cwd=demo).stdout
    assert dot.startswith('digraph "demo" {')
    assert '"lint" -> "deploy";' in dot

    bad = cli("graph", "--format", "svg", cwd=demo)
    assert bad.returncode == 2


def test_run_local_then_everything_is_up_to_date(cli: Cli, demo: Path) -> None:
    first = cli("run", "local", cwd=demo)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "[unit] 42" in first.stdout  # plain mode streams each stage's output, prefixed
    assert "[deploy] succeeded" in first.stdout

    second = cli("run", "local", cwd=demo)
    assert second.returncode == 0
    for stage in ("unit", "lint", "deploy"):
        assert f"[{stage}] up-to-date" in second.stdout
    assert "unit ran" not in second.stdout

    forced = cli("run", "local", "--force", "--only", "lint", cwd=demo)
    assert forced.returncode == 0
    assert "[lint] lint ran" in forced.stdout
    assert "[unit]" not in forced.stdout


def test_a_failing_stage_exits_1_and_prints_its_log(cli: Cli, project: ProjectFactory, git_repo: object) -> None:
    root = project(
        """
        from pipeline import CommitTest, Pipeline

        with Pipeline("demo") as p:
            CommitTest(name="unit", commands=["echo the assertion that failed >&2", "exit 4"])
        """
    )
    git_repo(root)  # type: ignore[operator]
    result = cli("run", "local", cwd=root)
    assert result.returncode == 1
    assert "[unit] the assertion that failed" in result.stdout
    assert "`exit 4` exited with status 4" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_run_stage_as_ci_calls_it(cli: Cli, demo: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    for stage in ("unit", "lint", "deploy"):
        result = cli("run", "stage", stage, "--manifest", str(manifest), cwd=demo)
        assert result.returncode == 0, result.stdout + result.stderr
    data = {p.stem: json.loads(p.read_text()) for p in manifest.glob("*.json")}
    assert sorted(data) == ["deploy", "lint", "unit"]
    assert len({d["run_id"] for d in data.values()}) == 1
    assert all(next(iter(d["stages"].values()))["status"] == "succeeded" for d in data.values())

    missing = cli("run", "stage", "deploy", "--manifest", str(tmp_path / "empty"), "--force", cwd=demo)
    assert missing.returncode == 0  # deploy reads no required outputs; it runs with what exists

    unknown = cli("run", "stage", "nope", cwd=demo)
    assert unknown.returncode == 2
    assert "no stage named 'nope'" in unknown.stderr
    assert "available stages: unit, lint, deploy" in unknown.stderr


def test_status_shows_environments_and_runs(cli: Cli, demo: Path) -> None:
    assert cli("run", "local", cwd=demo).returncode == 0
    status = cli("status", cwd=demo)
    assert status.returncode == 0, status.stderr
    assert "staging" in status.stdout
    assert "demo-staging" in status.stdout
    assert "last runs" in status.stdout
    assert "ok" in status.stdout
    assert cli("status", "nowhere", cwd=demo).returncode == 2


def _commands() -> list[list[str]]:
    from pipeline.cli.app import app

    found: list[list[str]] = []

    def walk(typer_app: object, prefix: list[str]) -> None:
        import typer.main

        group = typer.main.get_command(typer_app)  # type: ignore[arg-type]
        for name, command in getattr(group, "commands", {}).items():
            found.append([*prefix, name])
            if getattr(command, "commands", None):
                for sub in command.commands:
                    found.append([*prefix, name, sub])

    walk(app, [])
    return found


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_every_command_has_help(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *command, "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
