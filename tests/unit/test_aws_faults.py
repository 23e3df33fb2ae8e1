"""The same AWS fault, the same answer, whichever path meets it first.

`FAULTS` is the table of docs/aws.md ("Faults"): each fault is set up for real in the process
environment (no credentials, a profile that does not exist, a closed port on 127.0.0.1, a moto
server that checks credentials, a stand-in on 127.0.0.1 that answers like AWS for what moto cannot
produce), then met by each path that calls AWS before a run changes anything: the CloudFormation
engine's readiness check (what `--only promote` meets first), the AMI bake's (what a full run
meets first) and `pipeline doctor`. Each must give the same error class, exit code, message
shape and hint. No call here leaves 127.0.0.1: the faults without an endpoint fail before sending.
"""

from __future__ import annotations

import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3", reason="boto3 is in the [run] extra")

from pipeline.doctor import Probes  # noqa: E402
from pipeline.engines.aws import session  # noqa: E402
from pipeline.engines.aws.engine import CloudFormationEngine  # noqa: E402
from pipeline.engines.aws.session import AwsSession, AwsTarget, typed_fault  # noqa: E402
from pipeline.errors import EXIT_BAD_INPUT, EXIT_FAILED, CredentialsError, PipelineError, ToolMissingError  # noqa: E402
from pipeline.model import AwsSettings  # noqa: E402
from pipeline.profiles import diagnose  # noqa: E402
from tests.conftest import REPO, need  # noqa: E402

TEMPLATE = REPO / "templates" / "web.yaml"
STACK = "hello-web-production"
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_EC2",
    "AWS_ENDPOINT_URL_CLOUDFORMATION",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)


@pytest.fixture(autouse=True)
def no_aws_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing of this machine's AWS set-up leaks in: no keys, no config files, no instance metadata."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# --- the places a fault lives -------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_answers(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="module")
def strict_moto() -> Iterator[str]:
    """A moto server on 127.0.0.1 that checks credentials like AWS (it knows no access key, so it
    refuses every one). Its own process: the setting is global to a moto process."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        need(False, f"moto[server] is not installed ({exc})")
    port = closed_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_answers(f"http://127.0.0.1:{port}/moto-api/", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def answering(code: str, message: str, status: int = 400) -> Iterator[str]:
    """An endpoint on 127.0.0.1 that answers every call with an AWS error, in the format of the
    service the request was signed for (EC2's XML, or the query protocol's of CloudFormation)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            error = f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            if "/ec2/aws4_request" in self.headers.get("Authorization", ""):
                text = f"<Response><Errors>{error}</Errors><RequestID>faults</RequestID></Response>"
            else:
                text = f"<ErrorResponse>{error}<RequestId>faults</RequestId></ErrorResponse>"
            body = f"<?xml version='1.0' encoding='UTF-8'?>{text}".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- the table -----------------------------------------------------------------------------------------

Setup = Callable[[pytest.FixtureRequest], AbstractContextManager[dict[str, str]]]


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[dict[str, str]]:
    yield values


def _variables(**values: str) -> Setup:
    return lambda request: _environ(values)


def _stand_in(code: str, message: str, status: int = 400) -> Setup:
    @contextmanager
    def setup(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
        with answering(code, message, status) as url:
            yield {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret"}

    return setup


def _refusing_moto(request: pytest.FixtureRequest) -> AbstractContextManager[dict[str, str]]:
    url = request.getfixturevalue("strict_moto")
    return _environ({"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "AKIANOSUCHKEY", "AWS_SECRET_ACCESS_KEY": "x"})


def _closed_port(request: pytest.FixtureRequest) -> AbstractContextManager[dict[str, str]]:
    return _environ({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"})


@dataclass(frozen=True)
class Fault:
    name: str
    setup: Setup
    error: type[PipelineError]
    exit_code: int
    message: str
    """A regular expression of the whole message; {where} is the service's `AwsTarget.where`."""
    hint: str
    """How the hint starts."""


FAULTS = [
    Fault(
        "no credentials",
        _variables(),
        CredentialsError,
        EXIT_BAD_INPUT,
        r"no usable AWS credentials for {where}: Unable to locate credentials",
        "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    ),
    Fault(
        "partial credentials",
        _variables(AWS_ACCESS_KEY_ID="AKIAEXAMPLE"),
        CredentialsError,
        EXIT_BAD_INPUT,
        r"no usable AWS credentials for {where}: Partial credentials found in env, missing: AWS_SECRET_ACCESS_KEY",
        "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    ),
    Fault(
        "a profile that does not exist",
        _variables(AWS_PROFILE="nosuch"),
        CredentialsError,
        EXIT_BAD_INPUT,
        r"no usable AWS credentials for {where}: The config profile \(nosuch\) could not be found",
        "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    ),
    Fault(
        "an expired session token",
        _stand_in("ExpiredToken", "The security token included in the request is expired"),
        CredentialsError,
        EXIT_BAD_INPUT,
        r"{where} refused the AWS credentials: ExpiredToken: The security token included in the request is expired",
        "get fresh credentials",
    ),
    Fault(
        "keys the endpoint does not know",
        _refusing_moto,
        CredentialsError,
        EXIT_BAD_INPUT,
        r"{where} refused the AWS credentials: (AuthFailure|InvalidClientTokenId): .+",
        "get fresh credentials",
    ),
    Fault(
        "a permission the credentials lack",
        _stand_in("AccessDenied", "User: arn:aws:iam::123456789012:user/ci is not authorized", 403),
        CredentialsError,
        EXIT_BAD_INPUT,
        r"{where} denied (DescribeRegions|DescribeStacks): AccessDenied: User: .+ is not authorized",
        "the credentials are accepted but lack this permission",
    ),
    Fault(
        "an endpoint that refuses connections",
        _closed_port,
        ToolMissingError,
        EXIT_FAILED,
        r'cannot reach {where}: Could not connect to the endpoint URL: "http://127\.0\.0\.1:\d+/"',
        "check AWS_ENDPOINT_URL",
    ),
]


# --- the paths that meet them ----------------------------------------------------------------------------


def engine_ready(tmp_path: Path) -> tuple[str, PipelineError | None]:
    """`--only promote` (and every stack stage) on the aws profile meets this first."""
    engine = CloudFormationEngine("hello-web", TEMPLATE, AwsSettings())
    try:
        engine.ready(STACK)
    except PipelineError as exc:
        return "cloudformation", exc
    return "cloudformation", None


def bake_ready(tmp_path: Path) -> tuple[str, PipelineError | None]:
    """A full run on the aws profile meets this first (the bake is the first stage)."""
    from pipeline import Bake, Pipeline
    from pipeline.executors.base import PlanContext
    from pipeline.executors.registry import executor_for
    from pipeline.ledger import Ledger

    with Pipeline("hello-web") as p:
        bake = Bake(name="bake", template="web.pkr.hcl", sources={"aws": "amazon-ebs.web"})
    try:
        executor_for(bake).ready(PlanContext(p.spec, bake, tmp_path, "aws", {}, Ledger(tmp_path)))
    except PipelineError as exc:
        return "ec2", exc
    return "ec2", None


def doctor(tmp_path: Path) -> tuple[str, PipelineError | None]:
    """`pipeline doctor --profile aws`: the finding carries the message, hint and exit code."""
    finding = diagnose("aws", probes=Probes()).findings[-1]
    if finding.status == "ok":
        return "ec2", None
    error_class = CredentialsError if finding.exit_code == EXIT_BAD_INPUT else ToolMissingError
    return "ec2", error_class(finding.detail, hint=finding.fix)


PATHS = {"engine": engine_ready, "bake": bake_ready, "doctor": doctor}


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_every_path_gives_the_same_answer(
    fault: Fault, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with fault.setup(request) as environ:
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        answers = {path: meet(tmp_path) for path, meet in PATHS.items()}
    for path, (service, error) in answers.items():
        assert error is not None, f"{path}: no error for {fault.name}"
        where = AwsSession(AwsSettings(), os.environ).target(service).where
        assert type(error) is fault.error, f"{path}: {type(error).__name__}: {error}"
        assert error.exit_code == fault.exit_code, path
        assert re.fullmatch(fault.message.format(where=re.escape(where)), error.message), f"{path}: {error.message}"
        assert error.hint is not None
        assert error.hint.startswith(fault.hint), f"{path}: {error.hint}"
    # word for word, whichever path met it (but for the name of the service's endpoint variable)
    hints = {_any_service(error.hint, service) for service, error in answers.values() if error and error.hint}
    assert len(hints) == 1, hints


def _any_service(text: str, service: str) -> str:
    return text.replace(session.endpoint_variable(service), "AWS_ENDPOINT_URL_<SERVICE>")


def test_an_unreachable_emulator_says_how_to_start_one_on_its_port(monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", f"http://127.0.0.1:{port}")
    with pytest.raises(ToolMissingError) as caught:
        AwsSession(AwsSettings()).check_access("ec2")
    assert caught.value.message.startswith(f"cannot reach the EC2 endpoint http://127.0.0.1:{port}: ")
    assert caught.value.hint is not None
    assert f"moto: `moto_server -H 127.0.0.1 -p {port}`" in caught.value.hint
    assert "AWS_ENDPOINT_URL_EC2" in caught.value.hint


def test_the_doctor_command_exits_like_a_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARIABLES}
    env.update({"AWS_PROFILE": "nosuch", "NO_COLOR": "1", "COLUMNS": "300", "TERM": "dumb"})
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "doctor", "--profile", "aws"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert proc.returncode == EXIT_BAD_INPUT, proc.stdout + proc.stderr
    assert "no usable AWS credentials for AWS EC2 (us-east-1): The config profile (nosuch) could not be found" in (
        proc.stdout
    )


@pytest.mark.parametrize(
    "exc",
    [
        ("ConnectTimeoutError", {"endpoint_url": "http://10.255.255.1:5000/"}),
        ("ReadTimeoutError", {"endpoint_url": "http://127.0.0.1:5000/"}),
        ("EndpointConnectionError", {"endpoint_url": "http://nosuch.invalid:5000/"}),
    ],
    ids=["connect timeout", "read timeout", "name not resolved"],
)
def test_timeouts_and_names_that_do_not_resolve_are_unreachable_endpoints(exc: tuple[str, dict[str, str]]) -> None:
    name, kwargs = exc
    error = getattr(session.botocore_exceptions(), name)(**kwargs)
    typed = typed_fault(error, AwsTarget("ec2", "us-east-1", "http://127.0.0.1:5000"))
    assert isinstance(typed, ToolMissingError)
    assert typed.exit_code == EXIT_FAILED
    assert typed.message.startswith("cannot reach the EC2 endpoint http://127.0.0.1:5000: ")


def test_other_answers_pass_through_for_the_caller_to_handle(request: pytest.FixtureRequest) -> None:
    with answering("InvalidAMIID.NotFound", "The image id '[ami-00000000]' does not exist") as url:
        ec2 = AwsSession(AwsSettings(endpoint_url=url), {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
        with pytest.raises(session.botocore_exceptions().ClientError) as caught:
            ec2.client("ec2", probe=True).describe_images(ImageIds=["ami-00000000"])
    assert caught.value.response["Error"]["Code"] == "InvalidAMIID.NotFound"


# --- endpoints, region, credentials ----------------------------------------------------------------------


def test_endpoints_follow_botocores_precedence() -> None:
    settings, given = AwsSettings(), AwsSettings(endpoint_url="http://given:1")
    env = {"AWS_ENDPOINT_URL": "http://all:2", "AWS_ENDPOINT_URL_EC2": "http://ec2:3"}
    assert AwsSession(given, env).endpoint("ec2") == "http://given:1"  # in code (the definition) first
    assert AwsSession(settings, env).endpoint("ec2") == "http://ec2:3"  # then the service's variable
    assert AwsSession(settings, env).endpoint("cloudformation") == "http://all:2"  # then the global one
    ignored = {**env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}
    assert AwsSession(settings, ignored).endpoint("ec2") is None
    assert AwsSession(given, ignored).endpoint("ec2") == "http://given:1"
    assert AwsSession(settings, {}).endpoint("ec2") is None


@pytest.mark.parametrize("service", sorted(session.SERVICES))
def test_each_services_variable_is_the_one_botocore_reads(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    variable = session.endpoint_variable(service)
    monkeypatch.setenv(variable, "http://127.0.0.1:59999")
    client = boto3.session.Session(region_name="us-east-1").client(service)  # botocore resolves it itself
    assert client.meta.endpoint_url == "http://127.0.0.1:59999"
    assert AwsSession(AwsSettings()).endpoint(service) == "http://127.0.0.1:59999"


def test_the_definitions_region_wins_over_the_environment() -> None:
    env = {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-central-1"}
    assert AwsSession(AwsSettings(), env).region == "eu-west-1"
    assert AwsSession(AwsSettings(), {"AWS_DEFAULT_REGION": "eu-central-1"}).region == "eu-central-1"
    assert AwsSession(AwsSettings(region="ap-south-1"), env).region == "ap-south-1"
    assert AwsSession(AwsSettings(), {}).region == "us-east-1"


def test_an_emulator_without_credentials_gets_dummy_keys_and_aws_never_does() -> None:
    emulator = AwsSession(AwsSettings(endpoint_url="http://127.0.0.1:5000"), {})
    assert emulator.credentials("ec2")["AWS_ACCESS_KEY_ID"] == session.DUMMY_KEY
    assert "AWS_ACCESS_KEY_ID" not in AwsSession(AwsSettings(), {}).credentials("ec2")
    fips = AwsSession(AwsSettings(endpoint_url="https://ec2-fips.us-east-1.amazonaws.com"), {})
    assert "AWS_ACCESS_KEY_ID" not in fips.credentials("ec2")
    given = AwsSession(AwsSettings(endpoint_url="http://127.0.0.1:5000"), {"AWS_PROFILE": "dev"})
    assert given.credentials("ec2") == {
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_PROFILE": "dev",
    }
