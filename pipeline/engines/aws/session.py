"""Where the aws profile talks to, and how, written once for every path that calls AWS (the
CloudFormation engine, the bake's AMI half, `pipeline doctor`): region, endpoints, emulator
detection, credentials, boto3 clients, and botocore's failures as the pipeline's typed errors.

The same fault gives the same answer on every path (docs/aws.md, "Faults"):

- missing, expired, refused or insufficient credentials: `CredentialsError` (exit 2);
- an endpoint that cannot be reached (connection refused, timeout, DNS): `ToolMissingError` (exit 1);
- anything else AWS answers is the caller's to handle (a missing stack, an unknown AMI); the engine
  turns what it does not handle into a `StackOperationError` naming the action (`failures`).

Endpoints follow botocore's documented precedence (the AWS SDKs' "service-specific endpoints"): an
endpoint given in code (the definition's `AwsSettings.endpoint_url`), then `AWS_ENDPOINT_URL_<SERVICE>`,
then `AWS_ENDPOINT_URL` (neither when `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is true), then what boto3
finds in the shared config file, then AWS itself.

boto3 ships no type stubs: its clients are `Any` here, and it is imported only when a client is made.
"""

from __future__ import annotations

import functools
import importlib
import ipaddress
import os
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

from pipeline.errors import CredentialsError, PipelineError, StackOperationError, ToolMissingError
from pipeline.model import AwsSettings

Client = Any
"""A boto3 client (boto3 ships no type stubs; the engine keeps their use small and local)."""
DataPlane = Literal["auto", "http", "emulated"]

DUMMY_KEY = "testing"
"""The access key and secret an emulator gets when none is set (emulators accept any)."""

SERVICES: dict[str, tuple[str, str]] = {
    "cloudformation": ("CloudFormation", "CLOUDFORMATION"),
    "ec2": ("EC2", "EC2"),
    "autoscaling": ("Auto Scaling", "AUTO_SCALING"),
    "elbv2": ("Elastic Load Balancing", "ELASTIC_LOAD_BALANCING_V2"),
    "cloudwatch": ("CloudWatch", "CLOUDWATCH"),
    "rds": ("RDS", "RDS"),
    "sts": ("STS", "STS"),
}
"""boto3 client name -> (what messages call it, the suffix of its AWS_ENDPOINT_URL_<SERVICE>
variable: botocore's service id, upper case, spaces and hyphens as underscores)."""

REFUSED_CREDENTIALS = frozenset(
    {
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "RequestExpired",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
"""Error codes AWS answers when it does not accept the credentials (wrong, expired, or a clock
too far off to sign with)."""
DENIED_PERMISSION = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})
"""Error codes AWS answers when it accepts the credentials but they lack a permission."""

_AWS_HOST_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")
_PROBES: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
    "ec2": ("describe_regions", lambda region: {"RegionNames": [region]}),
    "cloudformation": ("describe_stacks", lambda region: {}),
    "sts": ("get_caller_identity", lambda region: {}),
}
"""The cheapest read-only call of a service: it needs an endpoint that answers and credentials it
accepts, and changes nothing."""

_NO_CREDENTIALS_HINT = (
    "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE naming a profile in ~/.aws/config, "
    "e.g. made by `aws configure`); on CI, give them to the stage as secrets. An emulator needs only "
    "AWS_ENDPOINT_URL (it accepts any keys)"
)
_REFUSED_HINT = (
    "get fresh credentials (an expired session token needs a new one: `aws sso login`, or re-export "
    "AWS_SESSION_TOKEN; on CI, update the secret), and check the machine's clock"
)
_DENIED_HINT = (
    "the credentials are accepted but lack this permission: grant it to the IAM user or role "
    "(docs/aws.md lists the calls the aws profile makes)"
)


# --- endpoints, emulators -----------------------------------------------------------------------


def is_emulator_endpoint(endpoint_url: str | None) -> bool:
    """An endpoint override that is not an AWS host (moto, MiniStack, LocalStack on some port).

    No override means real AWS. So do overrides under amazonaws.com / api.aws (FIPS, VPC endpoints).
    """
    if not endpoint_url:
        return False
    host = (urllib.parse.urlsplit(endpoint_url).hostname or "").lower()
    return not (host.endswith(_AWS_HOST_SUFFIXES) or host in {"amazonaws.com", "api.aws"})


def _is_loopback(host: str) -> bool:
    if host.lower() in {"localhost", "localhost.localdomain"} or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def data_plane_is_real(url: str | None, endpoint_url: str | None) -> bool:
    """Whether HTTP to the stack's URL reaches something real.

    On real AWS, yes. Under an emulator endpoint only a loopback URL (an emulator that serves its
    balancers on 127.0.0.1) is reachable; any other name (e.g. moto's `*.elb.amazonaws.com`) was
    made up by the emulator: it is never resolved nor requested, and the data plane is emulated.
    """
    if not url:
        return False
    if not is_emulator_endpoint(endpoint_url):
        return True
    return _is_loopback(urllib.parse.urlsplit(url).hostname or "")


def http_reaches(data_plane: DataPlane, url: str | None, endpoint_url: str | None) -> bool:
    """Whether to send HTTP requests to `url`: always ("http"), never ("emulated"), or when the
    data plane is real ("auto", see `data_plane_is_real`)."""
    return data_plane == "http" or (data_plane == "auto" and data_plane_is_real(url, endpoint_url))


def endpoint_variable(service: str) -> str:
    """The variable that sets one service's endpoint, e.g. AWS_ENDPOINT_URL_AUTO_SCALING."""
    suffix = SERVICES[service][1] if service in SERVICES else service.upper().replace("-", "_")
    return f"AWS_ENDPOINT_URL_{suffix}"


def resolve_endpoint(service: str, settings: AwsSettings, environ: Mapping[str, str]) -> str | None:
    """The endpoint of `service` in botocore's order (see the module's docstring); None: AWS, or
    what boto3 finds in the shared config file."""
    if settings.endpoint_url:
        return settings.endpoint_url
    if environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true":
        return None
    return environ.get(endpoint_variable(service)) or environ.get("AWS_ENDPOINT_URL") or None


def resolve_region(settings: AwsSettings, environ: Mapping[str, str]) -> str:
    """`AwsSettings.region` when the definition sets it, else AWS_REGION / AWS_DEFAULT_REGION,
    else the settings' default (us-east-1)."""
    if "region" in settings.model_fields_set:
        return settings.region
    return environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or settings.region


@dataclass(frozen=True)
class AwsTarget:
    """Where one AWS service is reached: its region, and its endpoint (None: AWS itself)."""

    service: str
    region: str
    endpoint: str | None

    @property
    def emulated(self) -> bool:
        """An emulator answers (an endpoint override outside AWS), not AWS itself."""
        return is_emulator_endpoint(self.endpoint)

    @property
    def where(self) -> str:
        """What messages call it: 'the EC2 endpoint http://127.0.0.1:5000', 'AWS EC2 (eu-west-1)'."""
        label = SERVICES.get(self.service, (self.service, ""))[0]
        return f"the {label} endpoint {self.endpoint}" if self.endpoint else f"AWS {label} ({self.region})"


# --- faults -----------------------------------------------------------------------------------------


def botocore_exceptions() -> Any:
    """botocore's exception classes (imported when first needed: boto3 is the [run] extra)."""
    return importlib.import_module("botocore.exceptions")


def typed_fault(exc: BaseException, target: AwsTarget) -> PipelineError | None:
    """The pipeline's error for a fault of reaching `target` (credentials, an endpoint that does
    not answer); None for anything else (the caller's to handle)."""
    errors = botocore_exceptions()
    where = target.where
    if isinstance(exc, errors.NoCredentialsError | errors.PartialCredentialsError | errors.ProfileNotFound):
        return CredentialsError(f"no usable AWS credentials for {where}: {exc}", hint=_NO_CREDENTIALS_HINT)
    if isinstance(exc, errors.CredentialRetrievalError | errors.TokenRetrievalError | errors.SSOError):
        return CredentialsError(f"the AWS credentials for {where} cannot be renewed: {exc}", hint=_REFUSED_HINT)
    if isinstance(exc, errors.ConnectionError | errors.HTTPClientError):
        return ToolMissingError(f"cannot reach {where}: {exc}", hint=_unreachable_hint(target))
    if isinstance(exc, errors.ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        if code in REFUSED_CREDENTIALS:
            return CredentialsError(
                f"{where} refused the AWS credentials: {code}: {message}".rstrip(": "), hint=_REFUSED_HINT
            )
        if code in DENIED_PERMISSION:
            return CredentialsError(
                f"{where} denied {exc.operation_name}: {code}: {message}".rstrip(": "), hint=_DENIED_HINT
            )
    return None


def _unreachable_hint(target: AwsTarget) -> str:
    variables = f"AWS_ENDPOINT_URL, {endpoint_variable(target.service)} or AwsSettings(endpoint_url=...)"
    hint = f"check {variables}, and that the service (or emulator) runs there"
    parts = urllib.parse.urlsplit(target.endpoint or "")
    if target.emulated and _is_loopback(parts.hostname or ""):
        hint += f" (moto: `moto_server -H {parts.hostname} -p {_port(parts)}`)"
    elif not target.endpoint:
        hint += "; check the network and the region"
    return hint + "; `pipeline doctor --profile aws` checks it"


def _port(parts: urllib.parse.SplitResult) -> int:
    try:
        return parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return 5000


class _FaultMappingClient:
    """A boto3 client whose calls raise the pipeline's errors for the faults of reaching AWS;
    every other answer (a ClientError the caller handles) passes through unchanged."""

    def __init__(self, client: Client, target: AwsTarget) -> None:
        self._client = client
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name.startswith("_") or name in {"meta", "exceptions"} or not callable(attribute):
            return attribute
        target = self._target

        @functools.wraps(attribute)
        def call(*args: Any, **kwargs: Any) -> Any:
            with faults(target):
                return attribute(*args, **kwargs)

        return call


@contextmanager
def faults(target: AwsTarget) -> Iterator[None]:
    """Raise the pipeline's error for a fault of reaching `target` met in the block."""
    try:
        yield
    except PipelineError:
        raise
    except Exception as exc:
        typed = typed_fault(exc, target) if _is_botocore(exc) else None
        if typed is None:
            raise
        raise typed from None


def _is_botocore(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("botocore")


# --- the session ----------------------------------------------------------------------------------


class AwsSession:
    """Region, endpoints, credentials and clients of one place: a definition's `AwsSettings` and
    an environment (default: os.environ; a stage passes it with its env and secrets on top).
    `client_factory(service)` replaces boto3 clients (tests); its clients' faults are mapped too."""

    def __init__(
        self,
        settings: AwsSettings,
        environ: Mapping[str, str] | None = None,
        *,
        client_factory: Callable[[str], Client] | None = None,
    ) -> None:
        self.settings = settings
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.region = resolve_region(settings, self.environ)
        self._factory = client_factory
        self._clients: dict[tuple[str, bool], Client] = {}

    def target(self, service: str) -> AwsTarget:
        return AwsTarget(service, self.region, resolve_endpoint(service, self.settings, self.environ))

    def endpoint(self, service: str) -> str | None:
        return self.target(service).endpoint

    def credentials(self, service: str = "ec2") -> dict[str, str]:
        """AWS_* variables for boto3 and for the tools a stage runs (Packer): the region, and the
        keys, session token or profile of the environment. An emulator endpoint for `service`
        with none of them (and no shared credentials file) gets dummy keys: emulators accept any."""
        env = {"AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region}
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            if self.environ.get(name):
                env[name] = self.environ[name]
        has_keys = "AWS_ACCESS_KEY_ID" in env or "AWS_PROFILE" in env
        shared = Path(self.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials").expanduser()
        if self.target(service).emulated and not has_keys and not shared.is_file():
            env |= {"AWS_ACCESS_KEY_ID": DUMMY_KEY, "AWS_SECRET_ACCESS_KEY": DUMMY_KEY}
        return env

    def client(self, service: str, *, probe: bool = False) -> Client:
        """A client of `service` whose faults raise the pipeline's errors. `probe`: one that gives
        up after 3 attempts (a readiness check), instead of 9 with backoff (real work)."""
        key = (service, probe and self._factory is None)
        if key not in self._clients:
            target = self.target(service)
            with faults(target):
                raw = self._factory(service) if self._factory is not None else self._boto3_client(target, probe)
            self._clients[key] = _FaultMappingClient(raw, target)
        return self._clients[key]

    def call(self, service: str, operation: str, **kwargs: Any) -> dict[str, Any]:
        answer: dict[str, Any] = getattr(self.client(service), operation)(**kwargs)
        return answer

    def probe(self, service: str, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One call with the readiness client (few attempts)."""
        answer: dict[str, Any] = getattr(self.client(service, probe=True), operation)(**kwargs)
        return answer

    def check_access(self, service: str) -> None:
        """The endpoint of `service` answers and accepts the credentials: one read-only call.
        CredentialsError (exit 2) or ToolMissingError (exit 1) naming the fix when not."""
        operation, arguments = _PROBES[service]
        self.probe(service, operation, **arguments(self.region))

    @contextmanager
    def failures(self, action: str) -> Iterator[None]:
        """What the faults leave of botocore's errors, as a StackOperationError naming `action`
        and the endpoint (the errors the caller did not handle itself)."""
        try:
            yield
        except PipelineError:
            raise
        except Exception as exc:
            if not _is_botocore(exc):
                raise
            self._unexpected(action, exc)

    def _unexpected(self, action: str, exc: Exception) -> NoReturn:
        where = self.target("cloudformation").where
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            error = response.get("Error", {})
            code = str(error.get("Code", "")) or "Error"
            raise StackOperationError(
                f"{action}: {code}: {error.get('Message', exc)}", hint=f"the request went to {where}"
            ) from None
        raise StackOperationError(
            f"{action}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
            hint=f"{where} answered something unexpected (an emulator's internal error?); re-run",
        ) from None

    def _boto3_client(self, target: AwsTarget, probe: bool) -> Client:
        try:
            boto3 = importlib.import_module("boto3")
            config_module = importlib.import_module("botocore.config")
        except ImportError as exc:  # pragma: no cover - the [run] extra installs it
            raise ToolMissingError(
                "boto3 is not installed (the aws profile needs it)", hint="pip install 'pipeline-as-code[run]'"
            ) from exc
        env = self.credentials(target.service)
        pair = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        given = [name for name in pair if name in env]
        if len(given) == 1:  # boto3 would send the request half-signed, or fall back to another identity
            missing = next(name for name in pair if name not in env)
            raise botocore_exceptions().PartialCredentialsError(provider="env", cred_var=missing)
        session = boto3.session.Session(
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=env.get("AWS_SESSION_TOKEN"),
            profile_name=env.get("AWS_PROFILE") if "AWS_ACCESS_KEY_ID" not in env else None,
            region_name=target.region,
        )
        config = config_module.Config(
            retries={"mode": "standard", "total_max_attempts": 3 if probe else 9},
            connect_timeout=5 if probe else 10,
            read_timeout=30 if probe else 60,
            user_agent_extra="pipeline-as-code",
        )
        return session.client(target.service, endpoint_url=target.endpoint, config=config)


__all__ = [
    "DENIED_PERMISSION",
    "REFUSED_CREDENTIALS",
    "SERVICES",
    "AwsSession",
    "AwsTarget",
    "Client",
    "DataPlane",
    "botocore_exceptions",
    "data_plane_is_real",
    "endpoint_variable",
    "faults",
    "http_reaches",
    "is_emulator_endpoint",
    "resolve_endpoint",
    "resolve_region",
    "typed_fault",
]
