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
    """A client for the engine at DOCKER_HOST (or the default socket), checked with a ping.

    An engine that does not answer is one error, worded here and only here, so that every stage
    and command that meets it first (a whole run, `--only promote`, `run stage`, `rollback`,
    `image base`) says the same thing and exits 1 (docs/reliability.md, the fault table)."""
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
        raise engine_unreachable(exc) from None
    return client


DEFAULT_HOST = "unix:///var/run/docker.sock"
START_HINT = (
    "start it (Debian: apt-get install -y docker.io && dockerd > /tmp/dockerd.log 2>&1 &) "
    "and check with `pipeline doctor`"
)


def engine_unreachable(exc: BaseException) -> ToolMissingError:
    """The error for an engine that does not answer: where it was looked for, why in words, how to fix."""
    where = os.environ.get("DOCKER_HOST") or DEFAULT_HOST
    hint = START_HINT
    if os.environ.get("DOCKER_HOST"):
        hint += f"; or point DOCKER_HOST (now {where}) at a running engine"
    return ToolMissingError(
        f"pipeline needs the Docker engine, and the one at {where} does not answer ({unreachable_reason(exc)})",
        hint=hint,
    )


def unreachable_reason(exc: BaseException) -> str:
    """Why the engine did not answer, in words (the Docker SDK's text is a nest of reprs)."""
    text = str(exc)
    lowered = text.lower()
    if "filenotfounderror" in lowered or "no such file or directory" in lowered:
        return "there is no socket at that path"
    if "permission denied" in lowered or "permissionerror" in lowered:
        return "permission denied on its socket"
    if "refused" in lowered:
        return "the connection was refused"
    if "timed out" in lowered or "timeout" in lowered:
        return "it did not answer in time"
    return _first_line(exc)


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
