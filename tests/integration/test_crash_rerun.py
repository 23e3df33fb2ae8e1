"""Kill a run with SIGKILL at stage boundaries (no cleanup at all), then re-run: it converges,
nothing runs twice that was already done, and the dead run's lock is taken over."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.conftest import Cli, ProjectFactory, cli_env

DEFINITION = """
from pipeline import CommitTest, Pipeline, Shell

with Pipeline("demo") as p:
    unit = CommitTest(name="unit", commands=["echo unit >> ../calls"], inputs=["src"])
    build = Shell(name="build", commands=["echo build >> ../calls"], inputs=["src"])
    ship = Shell(name="ship", commands=["echo ship >> ../calls"], inputs=["src"])
    unit >> build >> ship
"""


@pytest.mark.parametrize(
    ("fault", "before_crash"),
    [
        ("stage:build:before", ["unit"]),
        ("stage:build:after", ["unit", "build"]),
        ("stage:ship:after", ["unit", "build", "ship"]),
    ],
)
def test_a_killed_run_converges_on_rerun(
    cli: Cli, project: ProjectFactory, fault: str, before_crash: list[str]
) -> None:
    root = project(DEFINITION, {"src/a.txt": "1"})
    crashed = cli("run", "local", cwd=root, env=cli_env(PIPELINE_FAULT=fault))
    assert crashed.returncode == -signal.SIGKILL
    calls = root.parent / "calls"
    assert calls.read_text().split() == before_crash

    rerun = cli("run", "local", cwd=root)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert calls.read_text().split() == ["unit", "build", "ship"]  # nothing done twice
    assert "took over demo.build" in rerun.stdout
    final = cli("run", "local", cwd=root)
    assert final.stdout.count("up-to-date") >= 3


def test_no_fault_env_means_no_checkpoint_fires(cli: Cli, project: ProjectFactory) -> None:
    root = project(DEFINITION, {"src/a.txt": "1"})
    assert cli("run", "local", cwd=root, env=cli_env(PIPELINE_FAULT="stage:nothing-like-this:*")).returncode == 0
    assert Path(root.parent / "calls").read_text().split() == ["unit", "build", "ship"]
