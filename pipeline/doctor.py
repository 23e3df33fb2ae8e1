"""What a profile needs on this machine, whether it is there, and the exact fix when it is not.

The checks live here; each profile module says which of them it needs (`ProfileModule.doctor_checks`,
e.g. the local profile's Docker engine, Packer and base image; the aws profile adds its endpoint and
credentials), so a new profile brings its own. `pipeline.profiles.diagnose(profile)` runs a profile's
checks and returns the findings; `pipeline doctor` prints them (the CLI is the only printer). Every probe of the real world goes through `Probes`, so tests can
replace it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pipeline.model import Profile

if TYPE_CHECKING:
    from pipeline.engines.aws.session import AwsTarget
    from pipeline.errors import PipelineError

Status = Literal["ok", "warn", "missing"]

DOCKER_FIX = (
    "apt-get install -y docker.io && (dockerd > /tmp/dockerd.log 2>&1 &) && "
    "until docker info > /dev/null 2>&1; do sleep 1; done"
)
PACKER_FIX = (
    "apt-get install -y packer  (Debian's 1.6.6; or a release from https://developer.hashicorp.com/packer/install)"
)
DEBOOTSTRAP_FIX = "apt-get install -y debootstrap"
GIT_FIX = "apt-get install -y git"
RUN_EXTRA_FIX = "pip install 'pipeline-as-code[run]'"
AWS_SERVICES = ("ec2", "cloudformation")
"""What the aws profile calls first (the bake's AMIs, the stacks): each one's endpoint must answer
and accept the credentials."""
PACKER_INIT_FROM = (1, 10, 0)
"""Packer releases from here on no longer bundle the docker and amazon plugins."""


@dataclass(frozen=True)
class Finding:
    """One thing a profile needs."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    """The exact command or setting that makes it `ok` (empty when nothing is to be done)."""
    exit_code: int = 1
    """What `pipeline doctor` exits with when this is missing: the exit code a run meeting the
    same fault exits with (2 for AWS credentials, as a CredentialsError; 1 otherwise)."""


@dataclass
class Report:
    profile: Profile
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.status != "missing" for f in self.findings)

    @property
    def missing(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "missing"]

    @property
    def exit_code(self) -> int:
        """0 when ready, else the highest exit code of what is missing."""
        return max((f.exit_code for f in self.missing), default=0)


class Probes:
    """The real world, asked as cheaply as possible (no Packer build, no image pull)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)

    def which(self, name: str) -> str | None:
        return shutil.which(name, path=self.environ.get("PATH"))

    def module(self, name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    def command_output(self, command: list[str]) -> str | None:
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return (proc.stdout + proc.stderr).strip() if proc.returncode == 0 else None

    def docker_engine(self) -> tuple[str | None, str]:
        """(engine version, '') when reachable, else (None, why)."""
        try:
            import docker
            import docker.errors
        except ImportError:
            return None, "the Python package 'docker' is not installed"
        try:
            client = docker.from_env(timeout=10)
            version = client.version()
        except docker.errors.DockerException as exc:
            from pipeline.engines.docker_client import engine_unreachable

            return None, engine_unreachable(exc).message  # what a run would say
        return str(version.get("Version", "?")), ""

    def image_exists(self, name: str) -> bool:
        try:
            import docker
            import docker.errors
        except ImportError:
            return False
        try:
            docker.from_env(timeout=10).images.get(name)
        except docker.errors.DockerException:
            return False
        return True

    def packer(self) -> tuple[str | None, tuple[int, int, int] | None]:
        from pipeline.engines.packer import packer_version_quick

        return packer_version_quick()

    def aws_targets(self) -> list[AwsTarget]:
        """Where the aws profile's first services are reached (region, endpoint), as a run would."""
        from pipeline.engines.aws.session import AwsSession
        from pipeline.model import AwsSettings

        session = AwsSession(AwsSettings(), self.environ)
        return [session.target(service) for service in AWS_SERVICES]

    def aws_access(self) -> PipelineError | None:
        """One read-only call per service of `AWS_SERVICES`, through the session every AWS path
        uses: None when each answers and accepts the credentials, else the error a run would meet."""
        from pipeline.engines.aws.session import AwsSession
        from pipeline.errors import PipelineError
        from pipeline.model import AwsSettings

        session = AwsSession(AwsSettings(), self.environ)
        try:
            for service in AWS_SERVICES:
                session.check_access(service)
        except PipelineError as exc:
            return exc
        return None


@dataclass(frozen=True)
class Asked:
    """What `pipeline doctor` was asked about beyond the profile."""

    base_image: str = "pipeline-base:bookworm"
    """The base image local bakes start from (`--base-image`)."""


Check = Callable[[Probes, Asked], Finding]
"""One thing a profile needs, looked at through the probes."""


# --- the checks the profiles choose from ---------------------------------------------------------------


def python_packages(probes: Probes, asked: Asked) -> Finding:
    wanted = {"docker": "docker", "testinfra": "pytest-testinfra", "boto3": "boto3"}
    absent = [package for module, package in wanted.items() if not probes.module(module)]
    if absent:
        return Finding("python packages", "missing", f"not installed: {', '.join(absent)}", RUN_EXTRA_FIX)
    return Finding("python packages", "ok", "docker, pytest-testinfra, boto3")


def docker_engine(probes: Probes, asked: Asked) -> Finding:
    version, why = probes.docker_engine()
    if version is None:
        return Finding("docker engine", "missing", why, DOCKER_FIX)
    host = probes.environ.get("DOCKER_HOST", "the default socket")
    return Finding("docker engine", "ok", f"Docker {version} at {host}")


def packer(probes: Probes, asked: Asked) -> Finding:
    binary, version = probes.packer()
    if binary is None:
        return Finding("packer", "missing", "not on PATH", PACKER_FIX)
    if version is None:
        return Finding("packer", "missing", f"{binary} does not tell its version", PACKER_FIX)
    text = ".".join(map(str, version))
    if version >= PACKER_INIT_FROM:
        return Finding(
            "packer",
            "ok",
            f"Packer {text} ({binary}): plugins are installed by `packer init` from images/plugins.pkr.hcl, "
            "which the bake runs (needs GitHub access the first time)",
        )
    if version >= (1, 7, 0):
        return Finding("packer", "ok", f"Packer {text} ({binary}): docker and amazon plugins bundled")
    return Finding("packer", "ok", f"Packer {text} ({binary}): builders built in, no `packer init` needed")


def base_image(probes: Probes, asked: Asked) -> Finding:
    name = asked.base_image
    debootstrap = probes.which("debootstrap")
    present = probes.image_exists(name)
    if present:
        extra = "" if debootstrap else "; debootstrap is not installed (only needed to rebuild it)"
        return Finding("base image", "ok", f"{name} is present{extra}")
    # Our default name is derived from debian:bookworm-slim where Docker reaches a registry (no root).
    pulled = "derived from debian:bookworm-slim where Docker reaches a registry"
    default = name == "pipeline-base:bookworm"
    if debootstrap:
        how = f"the first bake makes it ({pulled}, else with debootstrap: ~30 s, needs root)"
        return Finding(
            "base image",
            "warn",
            f"{name} is not built yet; "
            + (how if default else "the first bake builds it with debootstrap (~30 s, needs root)"),
            "pipeline image base",
        )
    return Finding(
        "base image",
        "missing",
        f"{name} is absent and debootstrap is not installed to build it" + (f" (it is {pulled})" if default else ""),
        f"{DEBOOTSTRAP_FIX} && pipeline image base",
    )


def git(probes: Probes, asked: Asked) -> Finding:
    if probes.which("git") is None:
        return Finding("git", "missing", "not on PATH", GIT_FIX)
    version = probes.command_output(["git", "--version"]) or "git"
    return Finding("git", "ok", version)


def aws_access(probes: Probes, asked: Asked) -> Finding:
    """The same answer a run gives (pipeline/engines/aws/session.py): the same message, the hint as
    the fix, and the same exit code."""
    from pipeline.errors import CredentialsError

    error = probes.aws_access()
    if error is not None:
        name = "aws credentials" if isinstance(error, CredentialsError) else "aws endpoint"
        return Finding(name, "missing", error.message, error.hint or "", exit_code=error.exit_code)
    targets = probes.aws_targets()
    endpoints = {target.endpoint for target in targets}
    where = ", ".join(target.where for target in targets)
    if len(endpoints) == 1:
        endpoint = targets[0].endpoint
        where = f"the emulator at {endpoint}" if targets[0].emulated else endpoint or f"AWS ({targets[0].region})"
    if all(target.emulated for target in targets):
        return Finding("aws endpoint", "ok", f"{where} answers (any credentials are accepted)")
    return Finding("aws credentials", "ok", f"{where} answers and accepts the credentials")
