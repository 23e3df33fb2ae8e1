"""Where the aws profile talks to, and how: region, endpoint, emulator detection, credentials,
boto3 clients, and botocore's failures as the pipeline's typed errors.

boto3 ships no type stubs: its clients are `Any` here, and imported only when a client is made.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

from pipeline.errors import PipelineError, StackOperationError, ToolMissingError
from pipeline.model import AwsSettings

Client = Any
"""A boto3 client (boto3 ships no type stubs; the engine keeps their use small and local)."""
DataPlane = Literal["auto", "http", "emulated"]

_AWS_HOST_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")
_CREDENTIAL_ERRORS = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "AuthFailure",
    }
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


# --- the session ----------------------------------------------------------------------------------


class AwsSession:
    """Region, endpoint, credentials and clients of one place (a definition's `AwsSettings` and
    an environment). `client_factory(service)` replaces boto3 clients (tests)."""

    def __init__(
        self,
        settings: AwsSettings,
        environ: Mapping[str, str] | None = None,
        *,
        client_factory: Callable[[str], Client] | None = None,
    ) -> None:
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.endpoint_url: str | None = settings.endpoint_url or self.environ.get("AWS_ENDPOINT_URL") or None
        if "region" in settings.model_fields_set:
            self.region = settings.region
        else:
            self.region = self.environ.get("AWS_REGION") or self.environ.get("AWS_DEFAULT_REGION") or settings.region
        self._factory = client_factory
        self._clients: dict[str, Client] = {}

    @property
    def emulator(self) -> bool:
        """Talking to an emulator (an endpoint override outside AWS), not to AWS itself."""
        return is_emulator_endpoint(self.endpoint_url)

    @property
    def where(self) -> str:
        return self.endpoint_url or f"AWS ({self.region})"

    def client(self, service: str) -> Client:
        if service not in self._clients:
            if self._factory is not None:
                self._clients[service] = self._factory(service)
            else:
                self._clients[service] = self._make_client(service)
        return self._clients[service]

    def call(self, service: str, operation: str, **kwargs: Any) -> dict[str, Any]:
        answer: dict[str, Any] = getattr(self.client(service), operation)(**kwargs)
        return answer

    def _make_client(self, service: str) -> Client:
        try:
            boto3 = importlib.import_module("boto3")
            config_module = importlib.import_module("botocore.config")
        except ImportError as exc:  # pragma: no cover - the [run] extra installs it
            raise ToolMissingError(
                "boto3 is not installed (the aws profile needs it)", hint="pip install 'pipeline-as-code[run]'"
            ) from exc
        env = self.environ
        session_kwargs: dict[str, Any] = {"region_name": self.region}
        if env is not os.environ:
            for key, arg in (
                ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
                ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
                ("AWS_SESSION_TOKEN", "aws_session_token"),
                ("AWS_PROFILE", "profile_name"),
            ):
                if env.get(key):
                    session_kwargs[arg] = env[key]
        session = boto3.session.Session(**session_kwargs)
        config = config_module.Config(
            retries={"mode": "standard", "max_attempts": 8},
            connect_timeout=10,
            read_timeout=60,
            user_agent_extra="pipeline-as-code",
        )
        client_kwargs: dict[str, Any] = {"config": config}
        if self.endpoint_url:
            client_kwargs["endpoint_url"] = self.endpoint_url
        return session.client(service, **client_kwargs)

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """Turn botocore's exceptions into the pipeline's typed errors, with what to do."""
        exceptions = botocore_exceptions()
        where = self.where
        try:
            yield
        except PipelineError:
            raise
        except (exceptions.NoCredentialsError, exceptions.PartialCredentialsError) as exc:
            raise ToolMissingError(
                f"{action}: no usable AWS credentials ({exc})",
                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), e.g. as the environment's "
                "secrets; emulators accept any values",
            ) from None
        except (exceptions.EndpointConnectionError, exceptions.ConnectTimeoutError) as exc:
            raise ToolMissingError(
                f"{action}: cannot reach {where} ({exc})",
                hint="check AwsSettings.endpoint_url / AWS_ENDPOINT_URL and the network; `pipeline doctor --profile aws`",
            ) from None
        except exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "")) or "Error"
            message = str(error.get("Message", exc))
            if code in _CREDENTIAL_ERRORS:
                raise StackOperationError(
                    f"{action}: {code}: {message}",
                    hint="the credentials are wrong, expired, or lack CloudFormation/EC2/AutoScaling permissions",
                ) from None
            raise StackOperationError(f"{action}: {code}: {message}", hint=f"the request went to {where}") from None
        except exceptions.BotoCoreError as exc:
            raise StackOperationError(
                f"{action}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                hint=f"the endpoint {where} answered something unexpected (an emulator's internal error?); re-run",
            ) from None


def botocore_exceptions() -> Any:
    """botocore's exception classes (imported when first needed: boto3 is the [run] extra)."""
    return importlib.import_module("botocore.exceptions")


def client_error_code(exc: Any) -> str:
    """The error code of a botocore ClientError ('' when it has none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def client_error_message(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))


__all__ = [
    "AwsSession",
    "Client",
    "DataPlane",
    "botocore_exceptions",
    "client_error_code",
    "client_error_message",
    "data_plane_is_real",
    "http_reaches",
    "is_emulator_endpoint",
]
