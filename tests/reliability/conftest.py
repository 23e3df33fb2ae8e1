"""Fixtures of the reliability tests, and the report: every test adds rows to tables that are
printed at the end of the session (in CI logs too, whatever `-s` or `-q` says) and written to
`.pipeline-reliability.json` in pytest's base temp folder."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.reliability import harness
from tests.reliability.harness import V1, V2, Project, explain, init_template, make_project

ProjectMaker = Callable[..., Project]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not harness.REPORT:
        return
    terminalreporter.write_sep("=", "reliability scenarios")
    for line in harness.render_tables():
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def rel_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("reliability")
    yield base
    harness.write_report(base / ".pipeline-reliability.json")


@pytest.fixture(scope="session")
def reference(rel_base: Path) -> Path:
    """The reference service as `pipeline init` writes it (projects are copies)."""
    return init_template(rel_base)


@pytest.fixture(scope="session")
def docker_tools(docker_client: Any, base_image: str) -> Any:
    """A Docker engine, the base image and the tools a real chain needs (else skip, or fail in CI)."""
    need(shutil.which("packer") is not None, "packer is not installed (apt-get install -y packer)")
    need(shutil.which("cfn-lint") is not None, "cfn-lint is not installed (pip install cfn-lint)")
    need(shutil.which("git") is not None, "git is not installed")
    return docker_client


@pytest.fixture(scope="session")
def session_cleanup(docker_tools: Any, rel_base: Path) -> Iterator[None]:
    """At the end: remove everything this session made (only that: found by name and label)."""
    yield
    harness.remove_session(docker_tools, [rel_base])


@pytest.fixture(scope="session")
def make(rel_base: Path, reference: Path, session_cleanup: None) -> ProjectMaker:
    """make(id, version) -> a fresh copy of the reference service named `rel<session>-<id>`."""
    made: set[str] = set()

    def make_one(ident: str, version: str = V1) -> Project:
        name = f"{harness.PREFIX}-{ident}"
        assert name not in made, f"project {ident} made twice"
        made.add(name)
        return make_project(rel_base, name, version, reference)

    return make_one


@pytest.fixture(scope="session")
def baked(make: ProjectMaker) -> dict[str, str]:
    """V1 and V2 baked once for the session (every project bakes into the same repository with
    the same inputs, so their bakes reuse these)."""
    seed = make("seed", V1)
    images = {}
    for version in (V1, V2):
        if version != V1:
            seed.release(version)
        result = seed.run("run", "local", "--only", "bake")
        assert result.returncode == 0, explain(result)
        images[version] = seed.last_run().stages["bake"].outputs["image"]
    # The balancer image too, once, before projects that run side by side could both build it.
    from pipeline.engines.docker_stack import DockerStackEngine

    DockerStackEngine(seed.name, seed.root / "templates" / "web.yaml").ensure_lb_image()
    return images
