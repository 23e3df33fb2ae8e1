"""The plain install (no `[run]` extra) and `validate`'s promise of no side effects.

The plain install is simulated in a subprocess: a `sitecustomize` on PYTHONPATH puts a meta-path
finder first that refuses every module of the `[run]` extra's packages (docker, boto3, botocore,
gitpython, testinfra, cfn-lint, pytest, redis), exactly as a missing package would. Every command
must succeed or end with a clear error naming the extra (doctor names it as the fix of a finding),
never with a traceback; the one command that needs no extra fails for its own stated reason.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import cli_env, init_reference_service, need

pytestmark = pytest.mark.integration

BLOCKER = '''
import sys

BLOCKED = {"docker", "boto3", "botocore", "git", "gitdb", "testinfra", "cfnlint", "pytest", "redis"}


class Blocker:
    """A finder that says the [run] extra's packages are not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Blocker())
'''

COMMANDS = [
    ["--version"],
    ["validate"],
    ["validate", "--definition-only"],
    ["graph"],
    ["render", "--target", "jenkins", "--out", "{out}"],
    ["render", "--check"],
    ["status"],
    ["status", "--profile", "aws"],
    ["status", "production"],
    ["rollback", "production"],
    ["rollback", "production", "--profile", "aws"],
    ["run", "local", "--yes"],
    ["run", "local", "--profile", "aws", "--yes"],
    ["run", "stage", "commit-test"],
    ["run", "stage", "bake"],
    ["run", "stage", "promote", "--profile", "aws", "--yes"],
    ["doctor"],
    ["doctor", "--profile", "aws"],
    ["image", "base", "--no-pull"],  # never a registry from here, even if the blocker failed
    ["ci", "github-reviewers", "production"],
    ["flag", "list", "production"],
    ["flag", "get", "production", "greeting"],
    ["flag", "set", "production", "greeting", "hi", "--why", "plain install"],
    ["flag", "history", "production"],
    ["flag", "list", "production", "--profile", "aws"],
]

NEEDS_NO_EXTRA = {
    # the gate's reviewer check runs on GitHub Actions only (urllib, no [run] package): off it, it says so
    ("ci", "github-reviewers"): "GITHUB_REPOSITORY and GH_TOKEN must be set",
}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    base = tmp_path_factory.mktemp("plain")
    blocker = base / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER))
    root = init_reference_service(base / "hello")
    definition = root / "pipelinefile.py"
    # The commit test's own commands are the user's (cfn-lint would meet the blocker too): keep them trivial.
    text = definition.read_text()
    start = text.index("commands=[", text.index("CommitTest("))
    end = text.index("]", start) + 1
    definition.write_text(text[:start] + 'commands=["true"]' + text[end:])
    env = cli_env(PYTHONPATH=str(blocker), XDG_CACHE_HOME=str(base / "cache"), HOME=str(base / "home"))
    probe = subprocess.run(
        [sys.executable, "-c", "import docker"], env=env, capture_output=True, text=True, check=False
    )
    assert "ModuleNotFoundError" in probe.stderr, "the blocker must hide the [run] extra"
    return root, env


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_every_command_ends_cleanly_on_the_plain_install(
    args: list[str], plain: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    root, env = plain
    argv = [a.replace("{out}", str(tmp_path / "out")) for a in args]
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *argv],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode in (0, 1, 2), output
    if done.returncode != 0:
        # the error names the extra that fixes it (doctor: as the fix of its python packages finding)
        assert NEEDS_NO_EXTRA.get((args[0], args[1] if len(args) > 1 else ""), "pipeline-as-code[run]") in output, (
            output
        )


def test_validate_writes_nothing_into_the_repository(tmp_path: Path) -> None:
    need(shutil.which("git") is not None, "git is not installed")
    need(shutil.which("packer") is not None, "packer is not installed (apt-get install -y packer)")
    need(shutil.which("cfn-lint") is not None, "cfn-lint is not installed (pip install cfn-lint)")
    root = init_reference_service(tmp_path / "hello")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run([*git, *command], cwd=root, check=True, capture_output=True)
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if ".git" not in p.parts)
    cache = tmp_path / "cache"
    for _ in range(2):  # the second validate takes Packer's answer from the cache
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "validate"],
            cwd=root,
            env=cli_env(XDG_CACHE_HOME=str(cache)),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "templates checked for bake" in done.stdout
    after = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if ".git" not in p.parts)
    assert after == before
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored"], cwd=root, capture_output=True, text=True, check=True
    )
    assert status.stdout == ""
    assert list((cache / "pipeline-as-code" / "packer-validated").glob("*.json"))  # where it went instead
