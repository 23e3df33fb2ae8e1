"""A promote that commits can push, from the checkout each CI target makes.

For each target: a bare remote, a checkout made the way that CI server makes it (Jenkins
multibranch: a detached HEAD; TeamCity agent-side checkout: a tracking branch; GitHub
actions/checkout on a push: `checkout -B`; GitLab Runner: a detached HEAD), then the commands the rendered promote job runs before
the stage, then the promote's own git side (`record_image`, what `pipeline run stage promote` runs
on the aws profile). The commit must arrive on the remote's branch. git runs with no global or
system configuration, as on a fresh agent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.engines.git_promote import record_image
from pipeline.errors import GitStateError
from pipeline.loader import load
from pipeline.render import render
from pipeline.render.base import RenderContext
from pipeline.render.validate import read_blocks
from pipeline.stages.promote import DEFAULT_AUTHOR
from tests.conftest import REPO, need

pytestmark = pytest.mark.integration

TEMPLATE = "templates/web.yaml"
NEW = "ami-0123456789abcdef0"
SEED = ("-c", "user.name=Seed", "-c", "user.email=seed@example.invalid")


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


@pytest.fixture(autouse=True)
def fresh_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need(shutil.which("git") is not None, "git is not installed")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig-empty"))
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """The aws-chain example pushed to a bare remote: (the remote, the rendered files' folder)."""
    source = tmp_path / "source"
    shutil.copytree(REPO / "examples" / "aws-chain", source, ignore=shutil.ignore_patterns("golden", "__pycache__"))
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    git(source, "init", "-q", "-b", "main")
    git(source, "add", "-A")
    git(source, *SEED, "commit", "-qm", "the service")
    git(source, "remote", "add", "origin", str(remote))
    git(source, "push", "-q", "origin", "main")
    return remote, source


# --- how each CI server checks out a branch build ----------------------------------------------


def checkout_jenkins(remote: Path, work: Path) -> None:
    """Git plugin in a multibranch job: fetch the branch's ref, then `checkout -f SHA` (detached)."""
    git(work.parent, "init", "-q", str(work))
    git(work, "config", "remote.origin.url", str(remote))
    git(work, "config", "remote.origin.fetch", "+refs/heads/main:refs/remotes/origin/main")
    git(work, "fetch", "--no-tags", "--force", "--", str(remote), "+refs/heads/main:refs/remotes/origin/main")
    sha = git(work, "rev-parse", "refs/remotes/origin/main^{commit}")
    git(work, "checkout", "-q", "-f", sha)


def checkout_teamcity(remote: Path, work: Path) -> None:
    """Agent-side checkout (teamcity-git UpdaterImpl): a tracking branch named after the VCS branch."""
    git(work.parent, "init", "-q", str(work))
    git(work, "remote", "add", "origin", str(remote))
    git(work, "fetch", "-q", "origin", "+refs/heads/*:refs/remotes/origin/*")
    git(work, "branch", "--track", "main", "refs/remotes/origin/main")
    git(work, "checkout", "-q", "-f", "main")


def checkout_gitlab(remote: Path, work: Path) -> None:
    """GitLab Runner (fetch strategy): fetch the pipeline's commit and the branch, shallow, then
    `checkout -f -q SHA`: a detached HEAD."""
    git(work.parent, "init", "-q", str(work))
    git(work, "remote", "add", "origin", str(remote))
    sha = git(work, "ls-remote", str(remote), "refs/heads/main").split()[0]
    git(
        work,
        "fetch",
        "-q",
        "--depth=20",
        "origin",
        f"+{sha}:refs/pipelines/7",
        "+refs/heads/main:refs/remotes/origin/main",
    )
    git(work, "checkout", "-f", "-q", sha)


def checkout_github(remote: Path, work: Path) -> None:
    """actions/checkout@v4 on a push: a shallow fetch of the commit, then `checkout --force -B main`."""
    git(work.parent, "init", "-q", str(work))
    git(work, "remote", "add", "origin", str(remote))
    sha = git(work, "ls-remote", str(remote), "refs/heads/main").split()[0]
    git(work, "fetch", "-q", "--no-tags", "--depth=1", "origin", f"+{sha}:refs/remotes/origin/main")
    git(work, "checkout", "-q", "--force", "-B", "main", "refs/remotes/origin/main")


CHECKOUTS = {
    "jenkins": checkout_jenkins,
    "teamcity": checkout_teamcity,
    "github": checkout_github,
    "gitlab": checkout_gitlab,
}


def promote_commands(target: str, text: str) -> list[str]:
    """The shell commands the rendered promote job runs before `pipeline run stage promote`, other
    than installing the tool; and a check that the job gets credentials that may push."""
    if target == "github":
        job = yaml.safe_load(text)["jobs"]["promote"]
        assert job["permissions"]["contents"] == "write"
        others = [j for name, j in yaml.safe_load(text)["jobs"].items() if name != "promote"]
        assert all(j.get("permissions", {}).get("contents", "read") == "read" for j in others)
        runs = [s["run"] for s in job["steps"] if "run" in s]
    elif target == "gitlab":
        runs = yaml.safe_load(text)["promote"]["script"]
        push = next(r for r in runs if "credential.helper" in r)
        assert "$GIT_PUSH_TOKEN" in push  # a project access token when the project sets one,
        assert "$CI_JOB_TOKEN" in push  # else the job's own token
    else:
        root = read_blocks(text)
        if target == "jenkins":
            stage = next(n for n in root.walk() if n.header == "stage(S)" and n.strings == ["promote"])
            binding = next(n for n in stage.walk() if n.name == "withCredentials")
            assert "gitUsernamePassword(credentialsId: S)" in binding.header
            assert "git-push" in binding.strings
            runs = [n.strings[0] for n in stage.walk() if n.name == "sh"]
        else:
            build = next(n for n in root.children if n.header.startswith("object Promote "))
            agent = next(n for n in build.walk() if n.name == "sshAgent")
            assert [c.strings for c in agent.children] == [["git-push"]]
            runs = [n.strings[0] for n in build.walk() if n.header.startswith("scriptContent")]
    return [r for r in runs if "pip install" not in r and "pipeline run stage" not in r and "pipeline ci" not in r]


@pytest.mark.parametrize("target", ["jenkins", "teamcity", "github", "gitlab"])
def test_the_promote_commit_reaches_the_remote_from_each_targets_checkout(
    target: str, project: tuple[Path, Path], tmp_path: Path
) -> None:
    remote, source = project
    rendered = {f.path: f.content for f in render(load(source / "pipelinefile.py").spec, [target], RenderContext())}
    main = rendered[next(p for p in rendered if p.endswith(("Jenkinsfile", "settings.kts", ".yml")))]
    if target == "gitlab":  # the server's push options reach its hooks (GitLab reads `ci.skip`)
        git(remote, "config", "receive.advertisePushOptions", "true")
        hook = remote / "hooks" / "pre-receive"
        hook.write_text(
            '#!/bin/sh\necho "${GIT_PUSH_OPTION_COUNT:-0} ${GIT_PUSH_OPTION_0:-}" > "$GIT_DIR/push-options"\n'
        )
        hook.chmod(0o755)
    commands = promote_commands(target, main)
    work = tmp_path / f"agent-{target}"
    CHECKOUTS[target](remote, work)
    env = {
        **os.environ,
        "BRANCH_NAME": "main",  # Jenkins multibranch sets BRANCH_NAME
        "CI_COMMIT_BRANCH": "main",  # GitLab sets these three
        "CI_SERVER_URL": f"file://{remote.parent}",
        "CI_PROJECT_PATH": remote.stem,
        "GIT_PUSH_TOKEN": "glpat-n0t-in-the-config",
    }
    for command in commands:
        done = subprocess.run(["sh", "-c", command], cwd=work, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{command}: {done.stderr}"

    info = record_image(
        work,
        Path(TEMPLATE),
        "ImageId",
        NEW,
        pipeline="aws-chain",
        run_id="ci-1",
        push=True,
        default_author=DEFAULT_AUTHOR,
    )

    assert info is not None
    assert info.pushed_to == "origin/main"
    assert git(remote, "rev-parse", "refs/heads/main") == info.sha
    assert f"Default: {NEW}" in git(remote, "show", f"{info.sha}:{TEMPLATE}")
    if target == "gitlab":
        assert (remote / "push-options").read_text() == "1 ci.skip\n"  # the commit starts no new pipeline
        assert "glpat-n0t-in-the-config" not in (work / ".git" / "config").read_text()


def test_without_the_rendered_commands_a_jenkins_checkout_cannot_take_the_commit(
    project: tuple[Path, Path], tmp_path: Path
) -> None:
    """The detached HEAD of a multibranch checkout is why the Jenkinsfile checks the branch out."""
    remote, _ = project
    work = tmp_path / "agent"
    checkout_jenkins(remote, work)
    with pytest.raises(GitStateError, match="HEAD is detached"):
        record_image(
            work,
            Path(TEMPLATE),
            "ImageId",
            NEW,
            pipeline="aws-chain",
            run_id="ci-1",
            push=True,
            default_author=DEFAULT_AUTHOR,
        )
