"""Prove an image with testinfra before anyone uses it: a throwaway container, pytest, JUnit XML.

testinfra is wrapped, not reinvented: the checks are ordinary pytest-testinfra files
(`def test_x(host): ...`), run by pytest in a subprocess with `--hosts=docker://<container>` and
`--junitxml`. The container runs the image as it would run in production (its own ENTRYPOINT/CMD),
with the image's exposed ports published on 127.0.0.1, so checks can also talk to the service from
outside. The checks get, as environment variables:

    PIPELINE_CHECK_CONTAINER   the container id (testinfra's host is docker://<it>)
    PIPELINE_CHECK_HOST        127.0.0.1
    PIPELINE_CHECK_PORT_<n>    the host port published for the image's port <n> (e.g. _80)
    PIPELINE_CHECK_URL         http://127.0.0.1:<port of 80, else of the first exposed port>
    PIPELINE_VAR_<NAME>        each variable the image was built with (e.g. PIPELINE_VAR_VERSION)

The container is always removed, pass or fail, timeout or Ctrl-C.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.engines.docker_client import LABEL_PREFIX, connect
from pipeline.engines.process import stream
from pipeline.errors import BadInputError, CommandFailedError, PipelineError

if TYPE_CHECKING:
    import docker

ROLE_LABEL = f"{LABEL_PREFIX}.role"
CHECK_ROLE = "image-check"
START_TIMEOUT = 20.0
"""Seconds a container may take to reach `running` before the checks give up on it."""

PYTEST_NO_TESTS = 5


@dataclass(frozen=True)
class FailedCheck:
    name: str
    """`module::test` (testinfra's `[docker://...]` host suffix removed)."""
    message: str
    """The first line of the failure (e.g. `AssertionError: assert 'Hello World 1.0.0' in ...`)."""

    def __str__(self) -> str:
        return f"{self.name}: {self.message}" if self.message else self.name


@dataclass(frozen=True)
class CheckReport:
    """The outcome of one run of the checks against one image."""

    image: str
    total: int
    failed: tuple[FailedCheck, ...] = ()
    skipped: int = 0
    junit: Path | None = None
    seconds: float = 0.0
    container_log: str = ""
    """The tail of the container's output (kept when something failed)."""
    passed_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.failed and self.total > 0

    @property
    def passed(self) -> int:
        return self.total - len(self.failed) - self.skipped

    def summary(self) -> str:
        text = f"{self.passed}/{self.total} checks passed"
        if self.skipped:
            text += f" ({self.skipped} skipped)"
        return text

    def failure_list(self) -> str:
        return "\n".join(f"  - {failure}" for failure in self.failed)


# --- JUnit XML ------------------------------------------------------------------------------------


_HOSTSPEC = re.compile(r"-?\b(?:docker|podman|local|ssh|paramiko|kubectl|lxc|chroot)://[^\]\-]*")


def check_name(classname: str, name: str) -> str:
    """`module::test` with testinfra's host parameter (`[docker://<id>]`) removed, others kept."""
    short = _HOSTSPEC.sub("", name).replace("[]", "").replace("[-", "[")
    return f"{classname}::{short}" if classname else short


def parse_junit(path: Path) -> tuple[int, int, list[FailedCheck], list[str]]:
    """(total, skipped, failed checks, passed names) from a pytest JUnit XML report."""
    root = ET.parse(path).getroot()
    total = skipped = 0
    failed: list[FailedCheck] = []
    passed: list[str] = []
    for case in root.iter("testcase"):
        total += 1
        name = check_name(case.get("classname", ""), case.get("name", ""))
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            message = (problem.get("message") or problem.text or problem.tag).strip()
            first = message.splitlines()[0] if message else problem.tag
            failed.append(FailedCheck(name, first[:300]))
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed.append(name)
    return total, skipped, failed, passed


# --- running ----------------------------------------------------------------------------------------


def _published_ports(container: Any) -> dict[int, int]:
    ports: dict[int, int] = {}
    for spec, bindings in (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).items():
        port, _, proto = spec.partition("/")
        if proto != "tcp" or not bindings:
            continue
        for binding in bindings:
            if binding.get("HostIp") in ("127.0.0.1", "0.0.0.0", "") and binding.get("HostPort"):
                ports[int(port)] = int(binding["HostPort"])
                break
    return ports


def _wait_running(container: Any, deadline: float) -> str | None:
    """None once the container runs; else why not (it exited, or never started)."""
    while True:
        container.reload()
        state = container.attrs.get("State", {})
        if state.get("Running"):
            return None
        if state.get("Status") in ("exited", "dead"):
            return f"the container exited with status {state.get('ExitCode')} right after it started"
        if time.monotonic() > deadline:
            return f"the container did not start within {START_TIMEOUT:g} s (status {state.get('Status')})"
        time.sleep(0.1)


def _tail(text: bytes | str, lines: int = 20) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


def check_env(container_id: str, ports: Mapping[int, int], variables: Mapping[str, str]) -> dict[str, str]:
    """The environment the checks run with (see the module docstring)."""
    env = {"PIPELINE_CHECK_CONTAINER": container_id, "PIPELINE_CHECK_HOST": "127.0.0.1"}
    for port, host_port in sorted(ports.items()):
        env[f"PIPELINE_CHECK_PORT_{port}"] = str(host_port)
    if ports:
        main = 80 if 80 in ports else min(ports)
        env["PIPELINE_CHECK_URL"] = f"http://127.0.0.1:{ports[main]}"
    for name, value in sorted(variables.items()):
        env["PIPELINE_VAR_" + name.upper().replace("-", "_")] = value
    return env


def run_checks(
    image: str,
    checks: Path,
    *,
    junit: Path,
    variables: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] = lambda line: None,
    on_step: Callable[[str], None] = lambda text: None,
    deadline: float | None = None,
    cancel: threading.Event | None = None,
    client: docker.DockerClient | None = None,
    started: Callable[[str], None] = lambda container_id: None,
) -> CheckReport:
    """Start a throwaway container of `image`, run the testinfra checks in `checks` against it,
    remove the container. Returns the report (failures are data, not exceptions); raises
    BadInputError when there are no checks, CommandFailedError when pytest itself breaks."""
    if not checks.exists():
        raise BadInputError(
            f"the checks {checks} do not exist", hint="point `checks` at a folder of testinfra test_*.py files"
        )
    client = client or connect()
    begin = time.monotonic()
    ports = client.images.get(image).attrs.get("Config", {}).get("ExposedPorts") or {}
    publish: dict[str, tuple[str, None]] = {spec: ("127.0.0.1", None) for spec in ports if spec.endswith("/tcp")}
    on_step(f"checks: starting a container of {image[:30]}")
    container = client.containers.run(
        image,
        detach=True,
        labels={ROLE_LABEL: CHECK_ROLE, **(labels or {})},
        ports=publish,
    )
    started(container.id)
    try:
        on_line(f"checks: container {container.short_id} of {image}")
        problem = _wait_running(container, time.monotonic() + START_TIMEOUT)
        if problem is not None:
            log = _tail(container.logs())
            return CheckReport(
                image,
                total=1,
                failed=(FailedCheck("container starts", problem + (f": {log.splitlines()[-1]}" if log else "")),),
                seconds=time.monotonic() - begin,
                container_log=log,
            )
        container.reload()
        env = check_env(container.id, _published_ports(container), variables or {})
        report = _pytest(
            container.id,
            checks,
            junit=junit,
            env=env,
            on_line=on_line,
            on_step=on_step,
            deadline=deadline,
            cancel=cancel,
        )
        log = _tail(container.logs()) if report[2] else ""
        total, skipped, failed, passed = report
        return CheckReport(
            image,
            total=total,
            failed=tuple(failed),
            skipped=skipped,
            junit=junit,
            seconds=time.monotonic() - begin,
            container_log=log,
            passed_names=tuple(passed),
        )
    finally:
        remove_container(client, container.id)


def _pytest(
    container_id: str,
    checks: Path,
    *,
    junit: Path,
    env: Mapping[str, str],
    on_line: Callable[[str], None],
    on_step: Callable[[str], None],
    deadline: float | None,
    cancel: threading.Event | None,
) -> tuple[int, int, list[FailedCheck], list[str]]:
    folder = checks if checks.is_dir() else checks.parent
    junit.parent.mkdir(parents=True, exist_ok=True)
    junit.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(checks),
        f"--hosts=docker://{container_id}",
        f"--junitxml={junit}",
        # The checks are not the project's test suite: none of its pytest settings or caches.
        "-c",
        os.devnull,
        f"--rootdir={folder}",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rfE",
        "--color=no",
    ]
    on_step(f"checks: pytest {checks.name} --hosts=docker://{container_id[:12]}")
    completed = stream(
        command,
        cwd=folder,
        env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
        on_line=on_line,
        deadline=deadline,
        cancel=cancel,
        check=False,
    )
    if completed.returncode == PYTEST_NO_TESTS:
        raise BadInputError(
            f"no testinfra checks found in {checks}",
            hint="name the files test_*.py and the checks `def test_...(host):`",
        )
    if completed.returncode not in (0, 1) or not junit.is_file():
        raise CommandFailedError(command, completed.returncode, completed.tail, cwd=str(folder))
    return parse_junit(junit)


def remove_container(client: docker.DockerClient, container_id: str) -> None:
    """Remove a container (and its anonymous volumes) if it still exists."""
    import docker.errors

    try:
        client.api.remove_container(container_id, force=True, v=True)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        if "is already in progress" in str(exc):
            return
        raise PipelineError(f"cannot remove the check container {container_id[:12]}: {exc}") from None
