"""The new user's first push, for each target alone.

`pipeline init` in a fresh folder, render only that target, commit only its files (a git repository
in a temp folder), then run the commands of the generated drift-check job exactly as the CI
server would hand them to its shell: they install the pinned tool into the job's own virtualenv
(from a wheel of this checkout: the package is not on PyPI, so pip finds it through
PIP_FIND_LINKS) and check the committed files: exit 0. Then one line of the definition changes and
the same job exits 1 with the diff.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import __version__
from pipeline.render.validate import read_blocks
from tests.conftest import REPO, cli_env, init_reference_service, need

pytestmark = pytest.mark.integration

OUTPUT = {
    "jenkins": "Jenkinsfile",
    "teamcity": ".teamcity/settings.kts",
    "github": ".github/workflows/hello-web.yml",
    "gitlab": ".gitlab-ci.yml",
}
SHELL = {
    "jenkins": ["sh", "-xe", "-c"],
    "teamcity": ["sh", "-c"],
    "github": ["bash", "-e", "-c"],
    "gitlab": ["bash", "-c"],
}
"""How each server runs a step: Jenkins `sh` (-xe), TeamCity's script runner, GitHub's default bash,
GitLab Runner's bash (which runs a job's script items one after the other in one shell, `set -eo
pipefail`: run_job hands it each item with the ones before it)."""


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout, where pip looks first (PIP_FIND_LINKS), as a package index would serve it."""
    need(shutil.which("git") is not None, "git is not installed")
    try:
        import build  # noqa: F401
    except ImportError:
        need(False, "the 'build' package is not installed (pip install build)")
    out = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    assert [p.name for p in out.glob("*.whl")] == [f"pipeline_as_code-{__version__}-py3-none-any.whl"]
    return out


def drift_check_steps(target: str, text: str) -> list[str]:
    """The shell steps of the rendered drift-check job, decoded as the server decodes them."""
    if target == "github":
        job = yaml.safe_load(text)["jobs"]["render_check"]
        return [step["run"] for step in job["steps"] if "run" in step]
    if target == "gitlab":
        return [str(item) for item in yaml.safe_load(text)["render_check"]["script"]]
    root = read_blocks(text)
    if target == "jenkins":
        stage = next(n for n in root.walk() if n.header == "stage(S)" and n.strings == ["check rendered CI files"])
        return [n.strings[0] for n in stage.walk() if n.name == "sh"]
    build = next(n for n in root.children if n.header.startswith("object RenderCheck "))
    return [n.strings[0].replace("%%", "%") for n in build.walk() if n.header.startswith("scriptContent")]


def run_job(target: str, steps: list[str], root: Path, agent: Path) -> list[subprocess.CompletedProcess[str]]:
    """Each step in a fresh shell in the checkout, as the server runs it; stops at the first failure.
    On GitHub, what a step appends to $GITHUB_PATH is on PATH for the steps after it."""
    python = Path(sys.base_prefix) / "bin"  # what setup-python / the agent's python3.X provides
    github_path = agent / "github_path"
    github_path.write_text("")
    (agent / "github_output").write_text("")
    env = {
        "PATH": f"{python}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(agent)),  # pip's download cache, as an agent keeps it
        "PIP_FIND_LINKS": os.environ.get("PIP_FIND_LINKS", "") + f" {agent / 'wheelhouse'}",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "GITHUB_PATH": str(github_path),
        "GITHUB_OUTPUT": str(agent / "github_output"),
        "RUNNER_TOOL_CACHE": str(agent / "tool-cache"),  # where a GitHub runner keeps (and restores) the venv
        "CI": "1",
        "NO_COLOR": "1",
        "COLUMNS": "200",
        "LANG": "C.UTF-8",
    }
    done = []
    for index, step in enumerate(steps):
        extra = [line for line in github_path.read_text().splitlines() if line]
        step_env = {**env, "PATH": ":".join([*reversed(extra), env["PATH"]])}
        script = step
        if target == "gitlab":  # one shell for the job: the items before this one ran in it too
            script = "set -eo pipefail\n" + "\n".join(steps[: index + 1])
        result = subprocess.run(
            [*SHELL[target], script], cwd=root, env=step_env, capture_output=True, text=True, timeout=900, check=False
        )
        done.append(result)
        if result.returncode != 0:
            break
    return done


def commit(root: Path, message: str, paths: list[str]) -> None:
    git = ["git", "-c", "user.name=New User", "-c", "user.email=new@example.invalid"]
    subprocess.run([*git, "add", "--", *paths], cwd=root, check=True, capture_output=True)
    subprocess.run([*git, "commit", "-qm", message], cwd=root, check=True, capture_output=True)


@pytest.mark.parametrize("target", ["jenkins", "teamcity", "github", "gitlab"])
def test_a_new_user_on_one_target_is_green_from_the_first_push(target: str, wheelhouse: Path, tmp_path: Path) -> None:
    root = init_reference_service(tmp_path / "repo")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    scaffold = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".git" not in p.parts)
    commit(root, "the service", scaffold)
    rendered = subprocess.run(
        [sys.executable, "-m", "pipeline", "render", "--target", target],
        cwd=root,
        env=cli_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    files = [line.removeprefix("wrote ") for line in rendered.stdout.splitlines()]
    assert OUTPUT[target] in files
    commit(root, f"CI for {target}", files)  # only this target's files: the team uses one CI server
    agent = tmp_path / "agent"
    agent.mkdir()
    shutil.copytree(wheelhouse, agent / "wheelhouse")
    steps = drift_check_steps(target, (root / OUTPUT[target]).read_text())
    # install the pinned tool, then check (GitHub first asks whether the runner has the venv)
    assert len(steps) == (3 if target == "github" else 2), steps
    assert f"pip install 'pipeline-as-code=={__version__}'" in steps[-2]

    first = run_job(target, steps, root, agent)

    assert [r.returncode for r in first] == [0] * len(steps), first[-1].stdout + first[-1].stderr
    assert "files match a fresh render" in first[-1].stdout
    assert "Successfully installed" in first[-2].stdout  # the job's own venv got the pinned wheel
    venvs = agent / "tool-cache" / "pipeline-venv" if target == "github" else root / ".pipeline/ci/venv"
    installed = subprocess.run(
        [str(venvs / f"3.11-{__version__}" / "bin" / "pipeline"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert installed.stdout.strip() == f"pipeline {__version__}"

    # One line of the definition changes (the commit test gets a timeout): the same job fails with the diff.
    definition = root / "pipelinefile.py"
    text = definition.read_text()
    line = '        inputs=("templates", "images"),\n'
    assert line in text
    definition.write_text(text.replace(line, '        inputs=("templates", "images"),\n        timeout_minutes=30,\n'))
    commit(root, "a shorter commit test", ["pipelinefile.py"])

    second = run_job(target, steps, root, agent)

    assert [r.returncode for r in second] == [0] * (len(steps) - 1) + [1]
    assert "Successfully installed" not in second[-2].stdout  # the agent's venv is reused
    if target == "github":  # ... found by the first step, so actions/cache would not restore it
        assert (agent / "github_output").read_text() == "made=true\n"
    diff = second[-1].stdout
    assert f"--- a/{OUTPUT[target]}\n+++ b/{OUTPUT[target]} (fresh render)" in diff
    assert "40" in "".join(line for line in diff.splitlines() if line.startswith("+"))  # 30 + 10 min set-up
    assert f"pipeline render --target {target}" in second[-1].stderr  # how to fix it
