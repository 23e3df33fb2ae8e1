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
        with pytest.raises(
            ToolMissingError,
            match=r"needs the Docker engine, and the one at unix://\S+/no-engine\.sock does not answer \(there is no socket",
        ):
            docker_client.shared()
    assert docker_client._shared == {}


@pytest.mark.parametrize(
    ("sdk_says", "reason"),
    [
        ("Error while fetching server API version: ('Connection aborted.', FileNotFoundError(2, 'No such file or "
         "directory'))", "there is no socket at that path"),
        ("Error while fetching server API version: HTTPConnectionPool(host='127.0.0.1', port=1): Max retries "
         "exceeded (Caused by NewConnectionError(...: [Errno 111] Connection refused'))", "the connection was refused"),
        ("Error while fetching server API version: ('Connection aborted.', PermissionError(13, 'Permission denied'))",
         "permission denied on its socket"),
        ("Error while fetching server API version: UnixHTTPConnectionPool(host='localhost', port=None): Read timed "
         "out. (read timeout=120)", "it did not answer in time"),
    ],
)  # fmt: skip
def test_an_engine_that_does_not_answer_is_one_error_in_words(
    monkeypatch: pytest.MonkeyPatch, sdk_says: str, reason: str
) -> None:
    """Every stage and command meets a stopped engine through `connect`: one message, one exit code."""
    import docker.errors

    monkeypatch.setenv("DOCKER_HOST", "unix:///run/stopped.sock")
    error = docker_client.engine_unreachable(docker.errors.DockerException(sdk_says))
    assert error.message == (
        f"pipeline needs the Docker engine, and the one at unix:///run/stopped.sock does not answer ({reason})"
    )
    assert error.exit_code == 1
    assert error.hint is not None
    assert "start it" in error.hint
    assert "point DOCKER_HOST (now unix:///run/stopped.sock)" in error.hint
    monkeypatch.delenv("DOCKER_HOST")
    default = docker_client.engine_unreachable(docker.errors.DockerException(sdk_says))
    assert "the one at unix:///var/run/docker.sock does not answer" in default.message
    assert default.hint is not None
    assert "DOCKER_HOST" not in default.hint
