"""A Docker Engine API client with an error that says how to start the engine."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pipeline.errors import ToolMissingError

if TYPE_CHECKING:
    import docker

LABEL_PREFIX = "io.pipeline"
"""Every container, image and network we create carries labels under this prefix."""


def connect(timeout: int = 120) -> docker.DockerClient:
    """A client for the engine at DOCKER_HOST (or the default socket), checked with a ping."""
    try:
        import docker
        import docker.errors
    except ImportError as exc:  # pragma: no cover - the [run] extra installs it
        raise ToolMissingError(
            "the Python package 'docker' is not installed", hint="pip install 'pipeline-as-code[run]'"
        ) from exc
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except docker.errors.DockerException as exc:
        raise ToolMissingError(
            f"the Docker engine is not reachable ({_first_line(exc)})",
            hint="start it (Debian: apt-get install -y docker.io && dockerd > /tmp/dockerd.log 2>&1 &) "
            "and check with `pipeline doctor`",
        ) from None
    return client


_shared: dict[tuple[str | None, int], docker.DockerClient] = {}


def shared(timeout: int = 120) -> docker.DockerClient:
    """One checked client per process and DOCKER_HOST: the engine objects a run makes, one or more
    per stage, share it instead of connecting and pinging each time."""
    key = (os.environ.get("DOCKER_HOST"), timeout)
    if key not in _shared:
        _shared[key] = connect(timeout)
    return _shared[key]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def image_exists(client: docker.DockerClient, name: str) -> bool:
    import docker.errors

    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True
