"""`pipeline doctor`: each tool a profile needs, and the exact fix when it is missing.

The library is tested with fake probes (every combination, no real tools needed); the command is
run once for real at the end (this machine's answer, whatever it is, must be well-formed)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from pipeline.doctor import DOCKER_FIX, PACKER_FIX, Probes
from pipeline.errors import CredentialsError, PipelineError, ToolMissingError
from pipeline.profiles import diagnose


@dataclass
class FakeProbes(Probes):
    tools: dict[str, str] = field(
        default_factory=lambda: {"git": "/usr/bin/git", "debootstrap": "/usr/sbin/debootstrap"}
    )
    modules: set[str] = field(default_factory=lambda: {"docker", "testinfra", "boto3"})
    engine: str | None = "20.10.24"
    packer_found: tuple[str | None, tuple[int, int, int] | None] = ("/usr/bin/packer", (1, 6, 6))
    images: set[str] = field(default_factory=lambda: {"pipeline-base:bookworm"})
    aws_error: PipelineError | None = None
    """What the AWS session answered (tests/unit/test_aws_faults.py runs the real one)."""
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.environ = self.env

    def which(self, name: str) -> str | None:
        return self.tools.get(name)

    def module(self, name: str) -> bool:
        return name in self.modules

    def command_output(self, command: list[str]) -> str | None:
        return "git version 2.39.5" if command[0] == "git" else None

    def docker_engine(self) -> tuple[str | None, str]:
        if self.engine is None:
            return None, "Error while fetching server API version: connection refused"
        return self.engine, ""

    def image_exists(self, name: str) -> bool:
        return name in self.images

    def packer(self) -> tuple[str | None, tuple[int, int, int] | None]:
        return self.packer_found

    def aws_access(self) -> PipelineError | None:
        return self.aws_error


def _by_name(probes: FakeProbes) -> dict[str, object]:
    return {f.name: f for f in diagnose("local", probes=probes).findings}


def test_a_complete_machine_is_ready_for_local() -> None:
    report = diagnose("local", probes=FakeProbes())
    assert report.ok
    assert [f.name for f in report.findings] == ["python packages", "docker engine", "packer", "base image", "git"]
    assert all(f.status == "ok" for f in report.findings)


def test_local_does_not_ask_for_aws() -> None:
    assert "aws credentials" not in _by_name(FakeProbes())


def test_an_unreachable_engine_is_missing_with_the_start_command() -> None:
    report = diagnose("local", probes=FakeProbes(engine=None))
    assert not report.ok
    finding = report.missing[0]
    assert finding.name == "docker engine"
    assert "connection refused" in finding.detail
    assert finding.fix == DOCKER_FIX
    assert "dockerd" in finding.fix
    assert "docker info" in finding.fix


def test_no_packer_is_missing_with_the_install_command() -> None:
    report = diagnose("local", probes=FakeProbes(packer_found=(None, None)))
    assert [f.name for f in report.missing] == ["packer"]
    assert report.missing[0].fix == PACKER_FIX


@pytest.mark.parametrize(
    ("version", "says"),
    [
        ((1, 6, 6), "no `packer init` needed"),
        ((1, 9, 4), "plugins bundled"),
        ((1, 11, 2), "packer init"),
    ],
)
def test_packer_version_is_reported_with_what_it_needs(version: tuple[int, int, int], says: str) -> None:
    finding = diagnose("local", probes=FakeProbes(packer_found=("/opt/packer", version))).findings[2]
    assert finding.status == "ok"
    assert ".".join(map(str, version)) in finding.detail
    assert says in finding.detail


def test_a_missing_base_image_is_only_a_warning_when_debootstrap_can_build_it() -> None:
    report = diagnose("local", probes=FakeProbes(images=set()))
    finding = next(f for f in report.findings if f.name == "base image")
    assert report.ok
    assert finding.status == "warn"
    assert finding.fix == "pipeline image base"
    assert "derived from debian:bookworm-slim where Docker reaches a registry" in finding.detail


def test_only_the_default_base_image_is_said_to_be_derived_from_a_registry_image() -> None:
    report = diagnose("local", base_image="pipeline-own:1", probes=FakeProbes(images=set()))
    finding = next(f for f in report.findings if f.name == "base image")
    assert (
        finding.detail
        == "pipeline-own:1 is not built yet; the first bake builds it with debootstrap (~30 s, needs root)"
    )


def test_no_base_image_and_no_debootstrap_is_missing() -> None:
    report = diagnose("local", probes=FakeProbes(images=set(), tools={"git": "/usr/bin/git"}))
    finding = report.missing[0]
    assert finding.name == "base image"
    assert finding.fix == "apt-get install -y debootstrap && pipeline image base"


def test_git_missing() -> None:
    report = diagnose("local", probes=FakeProbes(tools={"debootstrap": "/usr/sbin/debootstrap"}))
    assert [(f.name, f.fix) for f in report.missing] == [("git", "apt-get install -y git")]


def test_missing_python_packages_name_the_extra() -> None:
    report = diagnose("local", probes=FakeProbes(modules={"docker"}))
    finding = report.missing[0]
    assert "pytest-testinfra" in finding.detail
    assert "boto3" in finding.detail
    assert finding.fix == "pip install 'pipeline-as-code[run]'"


def test_aws_credentials_a_run_cannot_use_are_missing_with_its_message_and_exit_code() -> None:
    error = CredentialsError(
        "the EC2 endpoint http://127.0.0.1:5000 refused the AWS credentials: AuthFailure: AWS was not able to "
        "validate the provided access credentials",
        hint="get fresh credentials",
    )
    report = diagnose("aws", probes=FakeProbes(env={"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"}, aws_error=error))
    assert [f.name for f in report.missing] == ["aws credentials"]
    finding = report.missing[0]
    assert (finding.detail, finding.fix, finding.exit_code) == (error.message, error.hint, 2)
    assert report.exit_code == 2


def test_an_aws_endpoint_that_does_not_answer_is_missing_and_exits_1() -> None:
    error = ToolMissingError("cannot reach the EC2 endpoint http://127.0.0.1:4599: ...", hint="check AWS_ENDPOINT_URL")
    probes = FakeProbes(env={"AWS_ENDPOINT_URL": "http://127.0.0.1:4599"}, aws_error=error)
    report = diagnose("aws", probes=probes)
    assert [(f.name, f.detail, f.exit_code) for f in report.missing] == [("aws endpoint", error.message, 1)]
    assert report.exit_code == 1


def test_the_highest_exit_code_of_what_is_missing_wins() -> None:
    error = CredentialsError("no usable AWS credentials for AWS EC2 (us-east-1): Unable to locate credentials")
    report = diagnose("aws", probes=FakeProbes(engine=None, aws_error=error))
    assert [f.name for f in report.missing] == ["docker engine", "aws credentials"]
    assert report.exit_code == 2
    assert diagnose("aws", probes=FakeProbes()).exit_code == 0


def test_aws_with_credentials_is_ready() -> None:
    report = diagnose("aws", probes=FakeProbes(env={"AWS_REGION": "eu-west-1"}))
    assert report.ok
    assert report.findings[-1].name == "aws credentials"
    assert report.findings[-1].detail == "AWS (eu-west-1) answers and accepts the credentials"


def test_aws_with_an_answering_endpoint_is_ready() -> None:
    report = diagnose("aws", probes=FakeProbes(env={"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"}))
    assert report.ok
    assert report.findings[-1].name == "aws endpoint"
    assert report.findings[-1].detail == "the emulator at http://127.0.0.1:5000 answers (any credentials are accepted)"


def test_aws_with_endpoints_per_service_names_each() -> None:
    env = {"AWS_ENDPOINT_URL_EC2": "http://127.0.0.1:5000", "AWS_ENDPOINT_URL_CLOUDFORMATION": "http://127.0.0.1:5001"}
    detail = diagnose("aws", probes=FakeProbes(env=env)).findings[-1].detail
    assert "the EC2 endpoint http://127.0.0.1:5000" in detail
    assert "the CloudFormation endpoint http://127.0.0.1:5001" in detail


def test_the_command_on_this_machine_prints_every_tool_and_exits_0_or_1() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "doctor", "--profile", "local"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**_plain_env()},
    )
    assert proc.returncode in (0, 1), proc.stderr
    for name in ("docker engine", "packer", "base image", "git"):
        assert name in proc.stdout
    if proc.returncode == 1:
        assert "fix:" in proc.stdout
        assert "not ready" in proc.stdout
    else:
        assert "ready" in proc.stdout


def test_a_missing_tool_makes_the_command_exit_1_with_its_fix() -> None:
    # An empty PATH hides packer, git and debootstrap from the real command.
    env = {**_plain_env(), "PATH": "/nonexistent", "PIPELINE_PACKER": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "doctor"], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    verdict = next(line for line in proc.stdout.splitlines() if line.startswith("not ready"))
    assert "packer" in verdict
    assert "git" in verdict
    assert "fix: apt-get install -y packer" in proc.stdout
    assert "fix: apt-get install -y git" in proc.stdout


def _plain_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update({"CI": "1", "NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb"})
    return env


@dataclass(frozen=True)
class _EdgeProfile:
    """A profile module of a test's own: only what `diagnose` asks of it."""

    name: str = "edge"

    def doctor_checks(self) -> tuple[object, ...]:
        from pipeline.doctor import Asked, Finding, git

        def edge_device(probes: Probes, asked: Asked) -> Finding:
            return Finding("edge device", "missing", "no device answers", "plug it in", exit_code=3)

        return (git, edge_device)


EDGE = _EdgeProfile()


def test_the_checks_are_the_profile_modules_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a profile adds its doctor checks with it: `diagnose` asks the profile module."""
    import pipeline.profiles

    monkeypatch.setitem(pipeline.profiles.BUILTIN, "edge", f"{__name__}:EDGE")
    report = diagnose("edge", probes=FakeProbes())  # type: ignore[arg-type]
    assert [f.name for f in report.findings] == ["git", "edge device"]
    assert (report.ok, report.exit_code) == (False, 3)


def test_aws_asks_for_what_local_does_and_then_aws() -> None:
    local = [f.name for f in diagnose("local", probes=FakeProbes()).findings]
    aws = [
        f.name for f in diagnose("aws", probes=FakeProbes(env={"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"})).findings
    ]
    assert aws[: len(local)] == local
    assert aws[len(local) :] == ["aws endpoint"]
