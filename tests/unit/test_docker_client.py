"""The Docker client a run shares: connected and checked once per process and DOCKER_HOST."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.engines import docker_client
from pipeline.errors import ToolMissingError


@pytest.fixture(autouse=True)
def no_shared_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker_client, "_shared", {})


def test_one_client_per_docker_host(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []

    def connect(timeout: int = 120) -> Any:
        made.append(object())
        return made[-1]

    monkeypatch.setattr(docker_client, "connect", connect)
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/a.sock")
    first = docker_client.shared()
    assert docker_client.shared() is first
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/b.sock")
    assert docker_client.shared() is not first
    assert docker_client.shared(timeout=5) is not docker_client.shared()
    assert len(made) == 3


def test_an_engine_that_does_not_answer_is_not_remembered(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    for _ in range(2):  # asked again, it tries again (and says so again)
        with pytest.raises(ToolMissingError, match="Docker engine is not reachable"):
            docker_client.shared()
    assert docker_client._shared == {}
