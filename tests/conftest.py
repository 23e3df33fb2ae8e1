"""Fixtures every test area shares: temp projects, the CLI as a subprocess, real tools.

Integration tests need real tools (Docker engine, packer, git, a moto server). Where a tool is
missing they skip *with the reason*; with PIPELINE_REQUIRE_TOOLS=1 (set by .ci/run) a missing
tool is a failure instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
REQUIRE_TOOLS = os.environ.get("PIPELINE_REQUIRE_TOOLS") == "1"


def need(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) when a real tool is missing."""
    if condition:
        return
    if REQUIRE_TOOLS:
        pytest.fail(f"required tool missing in CI: {reason}")
    pytest.skip(reason=reason)


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CI": "1", "NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb"})
    env.pop("PIPELINE_MANIFEST", None)
    env.pop("PIPELINE_RUN_ID", None)
    env.update(extra)
    return env


Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli() -> Cli:
    """Run `python -m pipeline ARGS` in a real subprocess; returns the completed process."""

    def run(
        *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            cwd=cwd,
            env=env or cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


ProjectFactory = Callable[..., Path]


@pytest.fixture
def project(tmp_path: Path) -> ProjectFactory:
    """Write a definition (and extra files) into a fresh folder; returns the folder."""

    def make(definition: str, files: dict[str, str] | None = None, name: str = "pipelinefile.py") -> Path:
        root = tmp_path / "project"
        root.mkdir(exist_ok=True)
        (root / name).write_text(textwrap.dedent(definition).lstrip())
        for rel, text in (files or {}).items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        return root

    return make


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    """A client of a real, running Docker engine."""
    try:
        from pipeline.engines.docker_client import connect

        client = connect(timeout=30)
    except Exception as exc:
        need(False, f"Docker engine not reachable: {exc}")
        raise
    return client


@pytest.fixture(scope="session")
def base_image(docker_client: object) -> str:
    """The debootstrap base image (built once per machine if missing; needs root and debootstrap).
    Never pulled: no machine here reaches a registry, and a test must send nothing off 127.0.0.1."""
    from pipeline.engines.base_image import DEFAULT_BASE_IMAGE, ensure_base_image

    need(shutil.which("debootstrap") is not None or _has_image(DEFAULT_BASE_IMAGE), "debootstrap is not installed")
    ensure_base_image(DEFAULT_BASE_IMAGE, allow_pull=False)
    return DEFAULT_BASE_IMAGE


def _has_image(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False).returncode == 0


@pytest.fixture
def git_repo(tmp_path: Path) -> Callable[[Path], Path]:
    """Turn a folder into a git repository with one commit (identity set only for this repo)."""
    need(shutil.which("git") is not None, "git is not installed")

    return commit_all


def commit_all(root: Path, message: str = "initial") -> Path:
    """Make `root` a git repository on `main` whose one commit holds every file in it (the
    identity is set for this repository only)."""
    for args in (
        ["init", "-q", "-b", "main"],
        ["config", "user.email", "test@example.invalid"],
        ["config", "user.name", "Test"],
        ["add", "-A"],
        ["commit", "-qm", message],
    ):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root


def init_reference_service(root: Path, name: str | None = None) -> Path:
    """`pipeline init ROOT` (the reference service, from the installed package), renamed to
    `name` so that the containers, images and stacks of one test never meet another's."""
    made = subprocess.run(
        [sys.executable, "-m", "pipeline", "init", str(root)],
        env=cli_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    if name is not None:
        definition = root / "pipelinefile.py"
        text = definition.read_text()
        assert '"hello-web",' in text
        definition.write_text(text.replace('"hello-web",', f'"{name}",', 1))
    return root


def remove_everything_of(client: Any, pipeline: str, *, images: bool = False) -> None:
    """Remove what the Docker engine holds of `pipeline` (by our labels): containers, networks
    and, with `images`, its images and their dangling layers."""
    from pipeline.engines.docker_client import LABEL_PREFIX

    selector = {"label": f"{LABEL_PREFIX}.pipeline={pipeline}"}
    for container in client.containers.list(all=True, filters=selector):
        container.remove(force=True, v=True)
    for network in client.networks.list(filters=selector):
        network.remove()
    for volume in client.volumes.list(filters=selector):  # a stack's database data
        volume.remove(force=True)
    if images:
        for image in client.images.list(filters=selector):
            client.images.remove(image.id, force=True)
        client.images.prune(filters={"dangling": True, "label": f"{LABEL_PREFIX}.pipeline={pipeline}"})
