"""Fixtures for the image checks. The Bake stage runs these files with
`pytest --hosts=docker://<container>`; testinfra gives every check a `host` fixture for that container.

The stage also sets PIPELINE_CHECK_URL (the container's port 80, published on 127.0.0.1) and one
PIPELINE_VAR_<NAME> per Packer variable the image was built with (PIPELINE_VAR_VERSION).
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import pytest

STARTUP_SECONDS = 15.0


@dataclass(frozen=True)
class Response:
    status: int
    body: str
    content_type: str
    headers: dict[str, str]


@pytest.fixture(scope="session")
def version() -> str:
    """The release the image was baked for (the template's `version` variable)."""
    value = os.environ.get("PIPELINE_VAR_VERSION")
    if not value:
        pytest.fail("PIPELINE_VAR_VERSION is not set: run these checks through the Bake stage")
    return value


@pytest.fixture(scope="session")
def base_url() -> str:
    url = os.environ.get("PIPELINE_CHECK_URL")
    if not url:
        pytest.fail("PIPELINE_CHECK_URL is not set: the image publishes no port (EXPOSE 80 missing?)")
    return url


@pytest.fixture(scope="session")
def http_get(base_url: str) -> Callable[[str], Response]:
    """GET a path of the service from outside the container, waiting while it starts up."""

    def get(path: str) -> Response:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                with urllib.request.urlopen(base_url + path, timeout=5) as answer:  # our own 127.0.0.1 URL
                    return Response(
                        answer.status,
                        answer.read().decode(),
                        answer.headers.get("Content-Type", ""),
                        dict(answer.headers.items()),
                    )
            except urllib.error.HTTPError as exc:
                return Response(
                    exc.code,
                    exc.read().decode(errors="replace"),
                    exc.headers.get("Content-Type", ""),
                    dict(exc.headers.items()),
                )
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    return get
