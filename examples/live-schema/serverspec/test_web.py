"""The live-schema image: the app server is installed and serves its health check; its page
needs the stack's database, which a bake has not (it answers 500 then, saying so)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Response
    from testinfra.host import Host

Get = Callable[[str], "Response"]

FORBIDDEN_TOOLS = ("packer", "curl", "wget", "pytest", "gcc", "make", "psql")


def test_the_app_and_its_driver_are_installed(host: Host) -> None:
    assert host.package("python3-psycopg2").is_installed
    assert host.file("/opt/app/app.py").exists


def test_the_image_knows_its_release(host: Host, version: str) -> None:
    assert host.file("/opt/app/RELEASE").content_string.strip() == version


def test_the_app_is_the_container_process(host: Host) -> None:
    assert "app.py" in host.file("/proc/1/cmdline").content_string


def test_health_answers_without_a_database(http_get: Get) -> None:
    answer = http_get("/health")
    assert answer.status == 200
    assert answer.body.strip() == "OK"


def test_the_page_says_when_the_database_is_missing(http_get: Get, version: str) -> None:
    answer = http_get("/")
    assert answer.status == 500
    assert f"live-schema {version}" in answer.body


def test_unknown_path_is_not_found(http_get: Get) -> None:
    assert http_get("/no-such-page").status == 404


@pytest.mark.parametrize("tool", FORBIDDEN_TOOLS)
def test_no_build_or_test_tool_left(host: Host, tool: str) -> None:
    assert not host.exists(tool), f"{tool} is installed in the image"


def test_no_provisioning_files_left(host: Host) -> None:
    leftovers = host.check_output("find /tmp /var/tmp /packer-files -mindepth 1 2>/dev/null || true").split()
    assert leftovers == []
