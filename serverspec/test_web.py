"""The reference web image: Apache serves the release's page and a health endpoint, mod_wsgi the
flag-controlled /feature page, and nothing used to build or test the image is left inside it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Response
    from testinfra.host import Host

Get = Callable[[str], "Response"]

# Commands the build or the checks could have used; none may remain in the image. (python3 is the
# runtime of the /feature app, under Apache's mod_wsgi; pip is not: nothing comes from PyPI.)
FORBIDDEN_TOOLS = ("packer", "curl", "wget", "pip", "pip3", "pytest", "goss", "inspec", "ansible", "gcc", "make")


def test_apache_is_installed(host: Host) -> None:
    assert host.package("apache2").is_installed


def test_apache_is_running(host: Host) -> None:
    # /proc, not `ps`: the image need not ship procps for the check's sake.
    names = host.check_output("cat /proc/[0-9]*/comm").split()
    assert "apache2" in names


def test_apache_runs_as_the_container_process(host: Host) -> None:
    assert host.file("/proc/1/comm").content_string.strip() == "apache2"


def test_apache_configuration_is_valid(host: Host) -> None:
    result = host.run("/usr/sbin/apache2ctl -t")
    assert result.rc == 0, result.stderr


def test_page_says_hello_world_with_the_version(http_get: Get, version: str) -> None:
    answer = http_get("/")
    assert answer.status == 200
    assert answer.body.strip() == f"Hello World {version}"


def test_health_endpoint_answers(http_get: Get) -> None:
    answer = http_get("/health")
    assert answer.status == 200
    assert answer.body.strip() == "OK"
    assert answer.content_type.startswith("text/plain")


def test_the_feature_page_serves_the_flags_default_without_a_flag_store(http_get: Get) -> None:
    # The bake's check container has no flag store: the flag is its default (off) and says so.
    answer = http_get("/feature")
    assert answer.status == 404
    assert answer.body.strip() == "Not released yet"
    assert answer.headers.get("X-Flag-Variant") == "new-feature=off"
    assert answer.headers.get("Set-Cookie", "").startswith("uid=")


def test_the_feature_app_runs_under_mod_wsgi(host: Host) -> None:
    assert host.package("libapache2-mod-wsgi-py3").is_installed
    assert host.package("python3-redis").is_installed
    assert host.file("/etc/apache2/mods-enabled/wsgi.load").exists


def test_unknown_path_is_not_found(http_get: Get) -> None:
    assert http_get("/no-such-page").status == 404


@pytest.mark.parametrize("tool", FORBIDDEN_TOOLS)
def test_no_build_or_test_tool_left(host: Host, tool: str) -> None:
    assert not host.exists(tool), f"{tool} is installed in the image"


def test_no_provisioning_files_left(host: Host) -> None:
    # Packer uploads scripts to /tmp and mounts its share at /packer-files (the empty mount point stays).
    leftovers = host.check_output("find /tmp /var/tmp /packer-files -mindepth 1 2>/dev/null || true").split()
    assert leftovers == []


def test_no_package_lists_left(host: Host) -> None:
    assert host.check_output("find /var/lib/apt/lists -mindepth 1 -not -name lock -not -name partial") == ""
