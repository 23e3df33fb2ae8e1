"""Fixtures of the stress tests (`make test-stress`; excluded from the normal suite by the
`stress` marker) and their report, printed at the end of the session and written to
`.pipeline-stress.json` in pytest's base temp folder."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.reliability import harness

LINES: list[str] = []
"""What the stress tests say (seed, one line per trial, the totals); printed at the end."""
LIVE: list[Path] = []
"""Where `say` also writes each line as it comes (`stress.log` in the session's folder)."""


def say(line: str) -> None:
    LINES.append(line)
    for path in LIVE:
        with path.open("a") as fh:
            fh.write(line + "\n")


RECORDS: list[dict[str, Any]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not LINES:
        return
    terminalreporter.write_sep("=", "signal stress")
    for line in LINES:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def stress_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("stress")
    LIVE.append(base / "stress.log")
    yield base
    (base / ".pipeline-stress.json").write_text(json.dumps(RECORDS, indent=2))


@pytest.fixture(scope="session")
def stress_docker(docker_client: Any, base_image: str, stress_base: Path) -> Iterator[Any]:
    """A Docker engine and the tools a real chain needs (else skip, or fail in CI); at the end,
    everything this session's pipelines made is removed (found by name and label)."""
    need(shutil.which("packer") is not None, "packer is not installed (apt-get install -y packer)")
    need(shutil.which("cfn-lint") is not None, "cfn-lint is not installed (pip install cfn-lint)")
    need(shutil.which("git") is not None, "git is not installed")
    yield docker_client
    harness.remove_session(docker_client, [stress_base])
