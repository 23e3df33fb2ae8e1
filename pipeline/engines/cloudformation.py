"""The `aws` profile's stack engine: CloudFormation through boto3, written for real AWS.

It also talks to emulators (moto, MiniStack, LocalStack) through `endpoint_url`; what an emulator
cannot show (a data plane) is verified from the control plane and reported as *emulated*.

Policies (see docs/aws.md):
- Endpoint: `AwsSettings.endpoint_url`, else `AWS_ENDPOINT_URL` (boto3 also honours the
  service-specific `AWS_ENDPOINT_URL_<SERVICE>` variables). Region: `AwsSettings.region` when the
  definition sets it, else `AWS_REGION` / `AWS_DEFAULT_REGION`, else us-east-1. Credentials: the
  usual boto3 chain, or the `environ` mapping given to the engine (a stage's secrets).
- Nothing changes before the template (cfn-lint, then `validate_template`), the parameters (names,
  types, allowed values, ranges, patterns) and the image (it exists) have been checked: every
  problem found there is a `TemplateError` (exit 2).
- No boto3 waiters: they poll for up to an hour and misread rollback states. `_Operation` polls
  `describe_stacks`, streams the operation's new `describe_stack_events` into `on_event`, and
  classifies the terminal state itself.
- Parameters sent = template defaults < given parameters < the image (in `image_parameter`). Every
  parameter is sent explicitly: the template and the pipeline say what runs, not the last console edit.
- Every stack the engine creates is tagged `pipeline=<name>`; `stacks()` lists those and `delete`
  refuses stacks of another pipeline.
"""

from __future__ import annotations

import functools
import importlib
import ipaddress
import json
import os
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pipeline.engines import http_check
from pipeline.engines.cfn_template import parse_template
from pipeline.engines.stack import OnEvent, StackState, VerifyReport
from pipeline.errors import (
    BadInputError,
    PipelineError,
    StackOperationError,
    TemplateError,
    ToolMissingError,
)
from pipeline.model import AwsSettings, Profile, Verify
from pipeline.strategy import Health, Rolling, Strategy

IMAGE_PARAMETER = "ImageId"
PIPELINE_TAG = "pipeline"
"""Tag key every stack created by the engine carries; its value is the pipeline's name."""
URL_OUTPUT = "Url"
TEMPLATE_BODY_MAX = 51_200
"""CloudFormation's limit for TemplateBody (bytes); larger templates need S3 (TemplateURL)."""

HEALTHY = frozenset(
    {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE", "IMPORT_ROLLBACK_COMPLETE"}
)
"""Terminal states in which the stack serves and accepts an update."""
DEAD = frozenset({"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "REVIEW_IN_PROGRESS"})
"""A failed create (or a never-executed change set): only delete-and-create gets out of it."""
FAILED_EVENT = frozenset({"CREATE_FAILED", "UPDATE_FAILED", "DELETE_FAILED", "IMPORT_FAILED"})
ALL_LIVE_STATUSES = (
    "CREATE_IN_PROGRESS",
    "CREATE_FAILED",
    "CREATE_COMPLETE",
    "ROLLBACK_IN_PROGRESS",
    "ROLLBACK_FAILED",
    "ROLLBACK_COMPLETE",
    "DELETE_IN_PROGRESS",
    "DELETE_FAILED",
    "UPDATE_IN_PROGRESS",
    "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
    "UPDATE_COMPLETE",
    "UPDATE_FAILED",
    "UPDATE_ROLLBACK_IN_PROGRESS",
    "UPDATE_ROLLBACK_FAILED",
    "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
    "UPDATE_ROLLBACK_COMPLETE",
    "REVIEW_IN_PROGRESS",
    "IMPORT_IN_PROGRESS",
    "IMPORT_COMPLETE",
    "IMPORT_ROLLBACK_IN_PROGRESS",
    "IMPORT_ROLLBACK_FAILED",
    "IMPORT_ROLLBACK_COMPLETE",
)

_STACK_NAME = re.compile(r"^[A-Za-z][-A-Za-z0-9]{0,127}$")
_AMI = re.compile(r"^ami-[0-9a-f]{8,17}$")
_AWS_HOST_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")
_NO_UPDATES = "No updates are to be performed"
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

_VALIDATED: dict[tuple[str, str, str], tuple[str, ...]] = {}
"""(endpoint, region, template text) -> capabilities, for templates `validate_template` accepted."""

DataPlane = Literal["auto", "http", "emulated"]
Client = Any
"""A boto3 client (boto3 ships no type stubs; the engine keeps their use small and local)."""


class CloudFormationError(StackOperationError):
    """A stack operation ended badly; says which resource failed, why, and where the stack is now."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        stack: str = "",
        status: str = "",
        resource: str | None = None,
        reason: str | None = None,
        deleted: bool = False,
    ) -> None:
        super().__init__(message, hint=hint)
        self.stack = stack
        self.status = status
        self.resource = resource
        """Logical id (and type) of the first resource that failed, when known."""
        self.reason = reason
        self.deleted = deleted
        """The engine deleted the stack afterwards (a failed create left it in ROLLBACK_COMPLETE)."""


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


# --- templates ------------------------------------------------------------------------------------


def lint_template(text: str, *, source: str = "template", region: str = "us-east-1") -> list[str]:
    """Run cfn-lint on the template text. Errors raise TemplateError; warnings are returned.

    Results are cached per (text, source, region) for the life of the process: linting is pure."""
    return list(_lint(text, source, region))


@functools.lru_cache(maxsize=32)
def _lint(text: str, source: str, region: str) -> tuple[str, ...]:
    try:
        from cfnlint.api import lint
    except ImportError as exc:  # pragma: no cover - the [run] extra installs it
        raise ToolMissingError(
            "cfn-lint is not installed (templates are linted before any change)",
            hint="pip install 'pipeline-as-code[run]' (or pip install cfn-lint)",
        ) from exc
    errors: list[str] = []
    warnings: list[str] = []
    for match in lint(text, regions=[region]):
        severity = str(getattr(match.rule, "severity", "error")).lower()
        line = f"{source}:{match.linenumber}: {match.rule.id} {match.message}"
        if severity == "error":
            errors.append(line)
        elif severity == "warning":
            warnings.append(line)
    if errors:
        shown = "\n".join(f"  - {e}" for e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise TemplateError(
            f"{source} has {len(errors)} cfn-lint error{'s' if len(errors) != 1 else ''}:\n{shown}{more}",
            hint=f"fix them and check with `cfn-lint {source}`; nothing was changed",
        )
    return tuple(warnings)


def template_parameters(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    params = doc.get("Parameters") or {}
    if not isinstance(params, dict):
        raise TemplateError("the template's Parameters section is not a mapping")
    return {str(k): (v if isinstance(v, dict) else {}) for k, v in params.items()}


def _as_parameter_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def merge_parameters(
    doc: Mapping[str, Any],
    image: str,
    parameters: Mapping[str, str] | None,
    *,
    image_parameter: str = IMAGE_PARAMETER,
    source: str = "template",
) -> dict[str, str]:
    """Template defaults < `parameters` < the image, checked against the template's declarations."""
    declared = template_parameters(doc)
    if image_parameter not in declared:
        raise TemplateError(
            f"{source} has no parameter {image_parameter!r} to carry the image",
            hint=f"declare Parameters: {image_parameter}: {{Type: AWS::EC2::Image::Id}} and use it in the "
            "launch template, or set Environment(image_parameter=...)",
        )
    given = dict(parameters or {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise TemplateError(
            f"{source} declares no parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}",
            hint=f"the template's parameters are: {', '.join(sorted(declared))}",
        )
    merged: dict[str, str] = {}
    for name, decl in declared.items():
        if "Default" in decl:
            merged[name] = _as_parameter_value(decl["Default"])
    merged.update({k: str(v) for k, v in given.items()})
    merged[image_parameter] = image
    problems = [p for name, decl in declared.items() for p in _check_parameter(name, decl, merged.get(name))]
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems)
        raise TemplateError(
            f"parameters for {source} are invalid:\n{shown}", hint="fix the values; nothing was changed"
        )
    return merged


def _check_parameter(name: str, decl: Mapping[str, Any], value: str | None) -> list[str]:
    if value is None:
        return [f"{name}: required (the template gives it no Default)"]
    kind = str(decl.get("Type", "String"))
    out: list[str] = []
    allowed = decl.get("AllowedValues")
    if isinstance(allowed, list) and value not in [_as_parameter_value(a) for a in allowed]:
        out.append(f"{name}: {value!r} is not one of {', '.join(_as_parameter_value(a) for a in allowed)}")
    pattern = decl.get("AllowedPattern")
    if isinstance(pattern, str) and kind == "String":
        try:
            if not re.fullmatch(pattern, value):
                out.append(f"{name}: {value!r} does not match AllowedPattern {pattern}")
        except re.error:
            pass
    if kind == "String":
        if "MinLength" in decl and len(value) < int(decl["MinLength"]):
            out.append(f"{name}: shorter than MinLength {decl['MinLength']}")
        if "MaxLength" in decl and len(value) > int(decl["MaxLength"]):
            out.append(f"{name}: longer than MaxLength {decl['MaxLength']}")
    if kind == "Number":
        try:
            number = float(value)
        except ValueError:
            return [*out, f"{name}: {value!r} is not a number"]
        if "MinValue" in decl and number < float(decl["MinValue"]):
            out.append(f"{name}: {value} is below MinValue {decl['MinValue']}")
        if "MaxValue" in decl and number > float(decl["MaxValue"]):
            out.append(f"{name}: {value} is above MaxValue {decl['MaxValue']}")
    if kind == "AWS::EC2::Image::Id" and not _AMI.match(value):
        hint = " (pass the AMI id alone, not Packer's region:ami artifact id)" if ":" in value else ""
        out.append(f"{name}: {value!r} is not an AMI id like ami-0123456789abcdef0{hint}")
    return out


# --- the engine -----------------------------------------------------------------------------------


def _ignore(text: str) -> None:
    pass


@dataclass
class _Operation:
    """One stack operation being watched: new events of this operation, in order, streamed once."""

    engine: CloudFormationEngine
    stack_id: str
    token: str | None
    on_event: OnEvent
    after_event: str | None = None
    """Newest event id before the operation started: events up to it belong to earlier ones."""
    seen: set[str] = field(default_factory=set)
    events: list[dict[str, Any]] = field(default_factory=list)

    def poll_events(self) -> None:
        fresh: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StackName": self.stack_id}
        while True:
            page = self.engine._call("cloudformation", "describe_stack_events", **kwargs)
            stop = False
            for event in page.get("StackEvents", []):
                event_id = event.get("EventId", "")
                if event_id in self.seen or event_id == self.after_event:
                    stop = True
                    break
                fresh.append(event)
            token = page.get("NextToken")
            if stop or not token:
                break
            kwargs["NextToken"] = token
        for event in reversed(fresh):  # the API lists newest first
            self.seen.add(event.get("EventId", ""))
            other = event.get("ClientRequestToken")
            if self.token and other and other != self.token:
                continue  # another operation's event (the API tags events with the request token)
            self.events.append(event)
            self.on_event(_format_event(event))

    def wait(self, *, deleting: bool = False) -> dict[str, Any] | None:
        """Poll until the stack leaves *_IN_PROGRESS; the final stack (None once deleted)."""
        engine = self.engine
        deadline = engine._clock() + engine.timeout_seconds
        delay = min(1.0, engine.poll_seconds)
        while True:
            self.poll_events()
            stack = engine._describe_raw(self.stack_id)
            status = stack["StackStatus"] if stack else "DELETE_COMPLETE"
            if not status.endswith("_IN_PROGRESS"):
                self.poll_events()
                return None if status == "DELETE_COMPLETE" else stack
            if engine._clock() >= deadline:
                what = "delete" if deleting else "operation"
                raise CloudFormationError(
                    f"stack {self.stack_id} is still {status} after {engine.timeout_seconds:g} s",
                    hint=f"the {what} goes on in CloudFormation: re-run to keep waiting for it"
                    + ("" if deleting else ", or stop it with `aws cloudformation cancel-update-stack`"),
                    stack=self.stack_id,
                    status=status,
                )
            engine._sleep(delay)
            delay = min(engine.poll_seconds, delay * 1.5)

    def first_failure(self) -> tuple[str | None, str | None]:
        """(resource, reason) of the first resource that failed in this operation."""
        failed = [
            e
            for e in self.events
            if e.get("ResourceStatus") in FAILED_EVENT and e.get("ResourceType") != "AWS::CloudFormation::Stack"
        ]
        real = [e for e in failed if "cancel" not in str(e.get("ResourceStatusReason", "")).lower()]
        for event in real or failed:
            resource = f"{event.get('LogicalResourceId')} ({event.get('ResourceType')})"
            return resource, str(event.get("ResourceStatusReason") or "no reason given")
        for event in self.events:
            reason = str(event.get("ResourceStatusReason") or "")
            if event.get("ResourceType") == "AWS::CloudFormation::Stack" and reason and "User Initiated" not in reason:
                return None, reason
        return None, None

    def rollback_failures(self) -> list[str]:
        """Resources that failed while CloudFormation rolled an update back."""
        started = False
        names: list[str] = []
        for event in self.events:
            status = event.get("ResourceStatus", "")
            if event.get("ResourceType") == "AWS::CloudFormation::Stack" and status == "UPDATE_ROLLBACK_IN_PROGRESS":
                started = True
            elif started and status in FAILED_EVENT and event.get("ResourceType") != "AWS::CloudFormation::Stack":
                name = str(event.get("LogicalResourceId"))
                if name not in names:
                    names.append(name)
        return names


def _format_event(event: Mapping[str, Any]) -> str:
    stamp = event.get("Timestamp")
    clock = stamp.strftime("%H:%M:%S ") if isinstance(stamp, datetime) else ""
    reason = event.get("ResourceStatusReason")
    tail = f": {reason}" if reason else ""
    return f"{clock}{event.get('LogicalResourceId')} ({event.get('ResourceType')}) {event.get('ResourceStatus')}{tail}"


class CloudFormationEngine:
    """StackEngine for the `aws` profile. Safe to re-run: every method converges from observed state."""

    profile: Profile = "aws"

    def __init__(
        self,
        pipeline: str,
        template: Path,
        settings: AwsSettings,
        *,
        image_parameter: str = IMAGE_PARAMETER,
        environ: Mapping[str, str] | None = None,
        poll_seconds: float = 5.0,
        timeout_seconds: float = 7200.0,
        data_plane: DataPlane = "auto",
        client_factory: Callable[[str], Client] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`environ` (default: os.environ) supplies AWS_* variables (credentials, endpoint, region).

        `data_plane`: "auto" decides per URL (see `data_plane_is_real`), "http" always requests the
        URL, "emulated" never does. `client_factory(service)` replaces boto3 clients (tests)."""
        self.pipeline = pipeline
        self.template = template
        self.settings = settings
        self.image_parameter = image_parameter
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self.data_plane = data_plane
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._factory = client_factory
        self._sleep = sleep
        self._clock = clock
        self._clients: dict[str, Client] = {}
        self.endpoint_url: str | None = settings.endpoint_url or self._environ.get("AWS_ENDPOINT_URL") or None
        if "region" in settings.model_fields_set:
            self.region = settings.region
        else:
            self.region = self._environ.get("AWS_REGION") or self._environ.get("AWS_DEFAULT_REGION") or settings.region

    # --- public: the StackEngine protocol -------------------------------------------------------

    @property
    def emulator(self) -> bool:
        """Talking to an emulator (an endpoint override outside AWS), not to AWS itself."""
        return is_emulator_endpoint(self.endpoint_url)

    def describe(self, stack: str) -> StackState:
        self._check_stack_name(stack)
        with self._aws_errors(f"describing stack {stack}"):
            raw = self._describe_raw(stack)
        return self._state(stack, raw)

    def check_strategy(self, strategy: Strategy | None, health: Health | None = None) -> None:
        """Refuse, before any change, a deployment strategy this engine does not carry out yet
        (BadInputError, exit 2). Today: a rolling update as the template's UpdatePolicy says
        (AutoScalingRollingUpdate); the other strategies map to AWS in a later version (pilot
        group, ALB weighted target groups, a second group for blue-green, rollback triggers with
        CloudWatch alarms: docs/strategies.md)."""
        if strategy is None or strategy == Rolling():
            return
        if isinstance(strategy, Rolling):
            what = "rolling with batch_size, min_in_service or observe_seconds of its own"
            hint = "leave Rolling() at its defaults on aws (the template's UpdatePolicy decides the batches)"
        else:
            what = strategy.kind
            hint = "use the rolling strategy (the default) with the aws profile for now; the local profile runs all of them"
        raise BadInputError(f"the aws profile does not carry out {what} yet", hint=hint)

    def deploy(
        self,
        stack: str,
        image: str,
        *,
        parameters: Mapping[str, str] | None = None,
        on_event: OnEvent = _ignore,
        strategy: Strategy | None = None,
        health: Health | None = None,
    ) -> StackState:
        """Create the stack or update it to `image`; a no-op when it already runs exactly that.

        Carries out the rolling strategy only (the template's UpdatePolicy); any other `strategy`
        is refused by `check_strategy` before anything changes. `health` is not watched yet.

        Raises TemplateError (exit 2) before any change for a bad template, parameter or image, and
        CloudFormationError (a StackOperationError) when CloudFormation fails the operation."""
        self.check_strategy(strategy, health)
        self._check_stack_name(stack)
        desired = self.plan(image, parameters)
        with self._aws_errors(f"deploying stack {stack}"):
            capabilities = self.validate(on_event=on_event)
            self._check_image_exists(image)
            current = self._settle(stack, on_event)
            if current is not None and current["StackStatus"] in DEAD:
                status = current["StackStatus"]
                why = current.get("StackStatusReason") or "an earlier create failed"
                on_event(f"stack {stack} is in {status} ({why}): deleting it, then creating it again")
                self._delete_and_wait(stack, current["StackId"], on_event)
                current = None
            if current is None:
                return self._create(stack, image, desired, capabilities, on_event)
            self._refuse_stuck(stack, current)
            if self._up_to_date(current, desired):
                on_event(f"stack {stack} already runs {image} with these parameters: nothing to do")
                return self._state(stack, current)
            return self._update(stack, image, current, desired, capabilities, on_event)

    def delete(self, stack: str, *, on_event: OnEvent = _ignore) -> None:
        """Delete the stack and wait until it is gone; a missing stack is fine.

        Refuses a stack that another pipeline (or no pipeline) created: teardown must never remove
        what it did not make."""
        self._check_stack_name(stack)
        with self._aws_errors(f"deleting stack {stack}"):
            current = self._describe_raw(stack)
            if current is None:
                on_event(f"stack {stack} does not exist: nothing to delete")
                return
            owner = _tags(current).get(PIPELINE_TAG)
            if owner != self.pipeline:
                raise CloudFormationError(
                    f"stack {stack} was not created by pipeline {self.pipeline!r} "
                    f"(its {PIPELINE_TAG!r} tag is {owner!r}): refusing to delete it",
                    hint=f"delete it yourself if it must go: aws cloudformation delete-stack --stack-name {stack}",
                    stack=stack,
                    status=current["StackStatus"],
                )
            self._delete_and_wait(stack, current["StackId"], on_event)

    def stacks(self) -> list[str]:
        """Every live stack tagged with this pipeline's name (ephemeral ones included)."""
        names: list[str] = []
        with self._aws_errors("listing stacks"):
            kwargs: dict[str, Any] = {}
            while True:
                page = self._call("cloudformation", "describe_stacks", **kwargs)
                for stack in page.get("Stacks", []):
                    if stack.get("StackStatus") == "DELETE_COMPLETE":
                        continue
                    if _tags(stack).get(PIPELINE_TAG) == self.pipeline:
                        names.append(stack["StackName"])
                token = page.get("NextToken")
                if not token:
                    break
                kwargs["NextToken"] = token
        return sorted(set(names))

    def verify(self, state: StackState, check: Verify, *, on_event: OnEvent = _ignore) -> VerifyReport:
        """Check the stack serves as `check` says.

        Real AWS: the control plane (stack status, launch template image, the group's instances on
        that version, InService and healthy) and HTTP through the balancer's URL. Under an emulator
        with a made-up URL: the control plane only (stack status, launch template image), reported
        in `VerifyReport.emulated`."""
        with self._aws_errors(f"verifying stack {state.name}"):
            raw = self._describe_raw(state.name)
            if raw is None:
                return VerifyReport(ok=False, requests=0, failures=1, detail=f"stack {state.name} does not exist")
            current = self._state(state.name, raw)
            expected = state.image or current.image
            url = current.url or state.url
            http = self.data_plane == "http" or (
                self.data_plane == "auto" and data_plane_is_real(url, self.endpoint_url)
            )
            control = self._control_plane_checks(raw, expected, rollout=not self.emulator, on_event=on_event)
        if not url and not self.emulator:
            control.append(("Url output", False, "the stack has no Url output to send requests through"))
        names = tuple(name for name, _, _ in control)
        real, emulated = ((), names) if self.emulator else (names, ())
        failed = [f"{name}: {why}" for name, ok, why in control if not ok]
        requests, failures = 0, len(failed)
        if http and url:
            report = http_check.verify(url, check, on_event=on_event, sleep=self._sleep, clock=self._clock)
            requests, failures = report.requests, failures + report.failures
            real = (*real, *report.real)
            if not report.ok:
                failed.insert(0, report.detail)
            detail = report.detail
        else:
            if url:
                why = "an emulator's made-up address" if self.emulator else "data_plane='emulated'"
                on_event(f"HTTP {check.path} not requested: {url} ({why}); the data plane is not verified")
            where = "emulated" if self.emulator else "control plane only"
            detail = f"{len(control)} control-plane checks passed ({where})"
        ok = not failed
        if failed:
            detail = "; ".join(failed)
        return VerifyReport(ok=ok, requests=requests, failures=failures, detail=detail, real=real, emulated=emulated)

    # --- public helpers the executors may use -----------------------------------------------------

    def template_text(self) -> str:
        try:
            return self.template.read_text(encoding="utf-8")
        except OSError as exc:
            raise TemplateError(
                f"cannot read template {self.template}: {exc.strerror or exc}",
                hint="check Environment(template=...) (relative to the definition file)",
            ) from None

    def check_template(self) -> None:
        """Preflight (`pipeline validate`, and before any stage of a run starts): the template is
        readable, within CloudFormation's size limit, declares the image parameter, and cfn-lint
        finds no error in it. Offline: no AWS call, no boto3 client (CloudFormation's own
        `validate_template` and the image check run at deploy time, still before any change)."""
        text = self.template_text()
        if len(text.encode("utf-8")) > TEMPLATE_BODY_MAX:
            raise TemplateError(
                f"{self.template} is larger than CloudFormation's {TEMPLATE_BODY_MAX} byte TemplateBody limit",
                hint="shorten it (or split it into nested stacks)",
            )
        doc = parse_template(text, source=str(self.template))
        if self.image_parameter not in template_parameters(doc):
            raise TemplateError(
                f"{self.template} has no parameter {self.image_parameter!r} to carry the image",
                hint=f"declare Parameters: {self.image_parameter}: {{Type: AWS::EC2::Image::Id}} and use it in the "
                "launch template, or set Environment(image_parameter=...)",
            )
        lint_template(text, source=str(self.template), region=self.region)

    def check_deploy(
        self, stack: str, image: str, *, parameters: Mapping[str, str] | None = None, on_event: OnEvent = _ignore
    ) -> None:
        """Every check `deploy` makes before it changes anything (stack name, parameters, cfn-lint,
        `validate_template`, the image exists), without deploying: promote calls it before it
        commits the image, so bad input leaves no commit to revert. TemplateError (exit 2)."""
        self._check_stack_name(stack)
        self.plan(image, parameters)
        with self._aws_errors(f"checking a deploy of stack {stack}"):
            self.validate(on_event=on_event)
            self._check_image_exists(image)

    def plan(self, image: str, parameters: Mapping[str, str] | None = None) -> dict[str, str]:
        """The parameters a deploy of `image` sends, checked locally (no AWS call)."""
        text = self.template_text()
        if len(text.encode("utf-8")) > TEMPLATE_BODY_MAX:
            raise TemplateError(
                f"{self.template} is larger than CloudFormation's {TEMPLATE_BODY_MAX} byte TemplateBody limit",
                hint="shorten it (or split it into nested stacks)",
            )
        doc = parse_template(text, source=str(self.template))
        return merge_parameters(doc, image, parameters, image_parameter=self.image_parameter, source=str(self.template))

    def validate(self, *, on_event: OnEvent = _ignore) -> list[str]:
        """cfn-lint, then CloudFormation's `validate_template`; returns the capabilities it needs.

        Done once per template text, endpoint and region in a process."""
        text = self.template_text()
        key = (self.endpoint_url or "", self.region, text)
        if key in _VALIDATED:
            return list(_VALIDATED[key])
        for warning in lint_template(text, source=str(self.template), region=self.region):
            on_event(f"cfn-lint warning: {warning}")
        ClientError = self._botocore_exceptions().ClientError
        try:
            answer = self._call("cloudformation", "validate_template", TemplateBody=text)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") not in {"ValidationError", "ValidationException"}:
                raise
            raise TemplateError(
                f"CloudFormation rejects {self.template}: {error.get('Message', exc)}",
                hint="fix the template; nothing was changed",
            ) from None
        capabilities = [str(c) for c in answer.get("Capabilities", [])]
        _VALIDATED[key] = tuple(capabilities)
        return capabilities

    # --- create / update / delete ----------------------------------------------------------------

    def _create(
        self, stack: str, image: str, desired: Mapping[str, str], capabilities: Sequence[str], on_event: OnEvent
    ) -> StackState:
        token = _token("create")
        on_event(f"creating stack {stack} with {self.image_parameter}={image}")
        answer = self._call(
            "cloudformation",
            "create_stack",
            StackName=stack,
            TemplateBody=self.template_text(),
            Parameters=_parameter_list(desired),
            Capabilities=list(capabilities),
            Tags=[{"Key": PIPELINE_TAG, "Value": self.pipeline}],
            OnFailure="ROLLBACK",
            ClientRequestToken=token,
        )
        operation = _Operation(self, answer["StackId"], token, on_event)
        final = operation.wait()
        status = final["StackStatus"] if final else "DELETE_COMPLETE"
        if status == "CREATE_COMPLETE" and final is not None:
            on_event(f"stack {stack} created")
            return self._state(stack, final)
        resource, reason = operation.first_failure()
        reason = reason or (final or {}).get("StackStatusReason") or "no reason given"
        deleted = False
        if final is not None and status in DEAD | {"CREATE_FAILED"}:
            on_event(f"stack {stack} is in {status} after the failed create: deleting it")
            self._delete_and_wait(stack, final["StackId"], on_event)
            deleted = True
        where = f"resource {resource}: " if resource else ""
        raise CloudFormationError(
            f"creating stack {stack} failed ({status}): {where}{reason}"
            + ("; the failed stack has been deleted" if deleted else ""),
            hint="fix the cause (template, parameters, image, limits or permissions) and re-run: "
            "the stack is created anew",
            stack=stack,
            status=status,
            resource=resource,
            reason=reason,
            deleted=deleted,
        )

    def _update(
        self,
        stack: str,
        image: str,
        current: Mapping[str, Any],
        desired: Mapping[str, str],
        capabilities: Sequence[str],
        on_event: OnEvent,
    ) -> StackState:
        stack_id = current["StackId"]
        previous = _parameters(current).get(self.image_parameter)
        marker = self._newest_event(stack_id)
        token = _token("update")
        on_event(f"updating stack {stack}: {self.image_parameter} {previous} -> {image}")
        ClientError = self._botocore_exceptions().ClientError
        try:
            self._call(
                "cloudformation",
                "update_stack",
                StackName=stack_id,
                TemplateBody=self.template_text(),
                Parameters=_parameter_list(desired),
                Capabilities=list(capabilities),
                ClientRequestToken=token,
            )
        except ClientError as exc:
            if _NO_UPDATES in str(exc.response.get("Error", {}).get("Message", "")):
                on_event(f"stack {stack}: no updates are to be performed")
                return self.describe(stack)
            raise
        operation = _Operation(self, stack_id, token, on_event, after_event=marker)
        final = operation.wait()
        status = final["StackStatus"] if final else "DELETE_COMPLETE"
        if status == "UPDATE_COMPLETE" and final is not None:
            on_event(f"stack {stack} updated to {image}")
            return self._state(stack, final)
        resource, reason = operation.first_failure()
        reason = reason or (final or {}).get("StackStatusReason") or "no reason given"
        where = f"resource {resource}: " if resource else ""
        common: dict[str, Any] = {"stack": stack, "status": status, "resource": resource, "reason": reason}
        if status == "UPDATE_ROLLBACK_COMPLETE":
            raise CloudFormationError(
                f"updating stack {stack} to {image} failed: {where}{reason}; CloudFormation rolled it back "
                f"(UPDATE_ROLLBACK_COMPLETE): the stack is healthy on the previous version ({previous})",
                hint="fix the cause (see the failed resource) and re-run",
                **common,
            )
        if status == "UPDATE_ROLLBACK_FAILED":
            raise self._rollback_failed(stack, operation.rollback_failures(), f"{where}{reason}", common)
        raise CloudFormationError(
            f"updating stack {stack} to {image} ended in {status}: {where}{reason}",
            hint=_fix_for(stack, status, self.region),
            **common,
        )

    def _rollback_failed(
        self, stack: str, resources: Sequence[str], cause: str, common: Mapping[str, Any]
    ) -> CloudFormationError:
        skip = f" --resources-to-skip {' '.join(resources)}" if resources else ""
        return CloudFormationError(
            f"stack {stack} is in UPDATE_ROLLBACK_FAILED: the update failed ({cause}) and so did the rollback"
            + (f" of {', '.join(resources)}" if resources else ""),
            hint="fix what blocks the rollback (often a resource changed or deleted outside CloudFormation), then "
            f"aws cloudformation continue-update-rollback --stack-name {stack} --region {self.region}{skip}"
            " (skipped resources are left as they are), and re-run",
            **common,
        )

    def _delete_and_wait(self, stack: str, stack_id: str, on_event: OnEvent) -> None:
        marker = self._newest_event(stack_id)
        token = _token("delete")
        on_event(f"deleting stack {stack}")
        ClientError = self._botocore_exceptions().ClientError
        try:
            self._call("cloudformation", "delete_stack", StackName=stack_id, ClientRequestToken=token)
        except ClientError as exc:
            # The observed state wins: moto deletes what it can, forgets the stack, then raises
            # (e.g. DependencyViolation for a VPC whose route table it cannot delete). AWS itself
            # reports such failures asynchronously (DELETE_FAILED), leaving the stack in place.
            if self._describe_raw(stack_id) is not None:
                raise
            error = exc.response.get("Error", {})
            on_event(
                f"delete_stack answered {error.get('Code')}: {error.get('Message')}; the stack is gone "
                "(resources the endpoint could not delete may remain in it)"
            )
            return
        operation = _Operation(self, stack_id, token, on_event, after_event=marker)
        final = operation.wait(deleting=True)
        if final is None:
            on_event(f"stack {stack} deleted")
            return
        resource, reason = operation.first_failure()
        reason = reason or final.get("StackStatusReason") or "no reason given"
        where = f"resource {resource}: " if resource else ""
        raise CloudFormationError(
            f"deleting stack {stack} ended in {final['StackStatus']}: {where}{reason}",
            hint=_fix_for(stack, final["StackStatus"], self.region),
            stack=stack,
            status=final["StackStatus"],
            resource=resource,
            reason=reason,
        )

    def _settle(self, stack: str, on_event: OnEvent) -> dict[str, Any] | None:
        """The stack once no operation runs on it (waits out one left running by an earlier run)."""
        current = self._describe_raw(stack)
        if current is None or not current["StackStatus"].endswith("_IN_PROGRESS"):
            return current
        if current["StackStatus"] == "REVIEW_IN_PROGRESS":
            return current
        on_event(f"stack {stack} is {current['StackStatus']} (an earlier operation): waiting for it to finish")
        operation = _Operation(
            self, current["StackId"], None, on_event, after_event=self._newest_event(current["StackId"])
        )
        final = operation.wait()
        return None if final is None else self._describe_raw(stack)

    def _refuse_stuck(self, stack: str, current: Mapping[str, Any]) -> None:
        status = current["StackStatus"]
        if status in HEALTHY:
            return
        common: dict[str, Any] = {"stack": stack, "status": status, "reason": current.get("StackStatusReason")}
        if status == "UPDATE_ROLLBACK_FAILED":
            raise self._rollback_failed(stack, [], str(current.get("StackStatusReason") or "an earlier update"), common)
        raise CloudFormationError(
            f"stack {stack} is in {status} and cannot be updated: {current.get('StackStatusReason') or 'no reason given'}",
            hint=_fix_for(stack, status, self.region),
            **common,
        )

    def _up_to_date(self, current: Mapping[str, Any], desired: Mapping[str, str]) -> bool:
        if _parameters(current) != dict(desired):
            return False
        try:
            body = self._call("cloudformation", "get_template", StackName=current["StackId"]).get("TemplateBody")
        except Exception:
            return False
        ours = self.template_text()
        if isinstance(body, str):
            return body.strip() == ours.strip()
        try:
            return bool(body == json.loads(ours))
        except ValueError:
            return False

    # --- verification ------------------------------------------------------------------------------

    def _control_plane_checks(
        self, raw: Mapping[str, Any], image: str | None, *, rollout: bool, on_event: OnEvent
    ) -> list[tuple[str, bool, str]]:
        checks: list[tuple[str, bool, str]] = []
        status = raw["StackStatus"]
        checks.append(
            (f"stack status {status}", status in {"CREATE_COMPLETE", "UPDATE_COMPLETE"}, f"stack is {status}")
        )
        resources = self._call("cloudformation", "describe_stack_resources", StackName=raw["StackId"]).get(
            "StackResources", []
        )
        template_id = _resource(resources, "AWS::EC2::LaunchTemplate", "LaunchTemplate")
        group = _resource(resources, "AWS::AutoScaling::AutoScalingGroup", "WebGroup")
        latest: str | None = None
        if template_id is None:
            on_event("no launch template in the stack: image check skipped")
        else:
            versions = self._call(
                "ec2", "describe_launch_template_versions", LaunchTemplateId=template_id, Versions=["$Latest"]
            ).get("LaunchTemplateVersions", [])
            found = versions[0]["LaunchTemplateData"].get("ImageId") if versions else None
            latest = str(versions[0]["VersionNumber"]) if versions else None
            checks.append(
                (
                    f"launch template {template_id} version {latest} ImageId {found}",
                    image is None or found == image,
                    f"launch template runs {found}, expected {image}",
                )
            )
        if rollout and group is not None and latest is not None:
            groups = self._call("autoscaling", "describe_auto_scaling_groups", AutoScalingGroupNames=[group]).get(
                "AutoScalingGroups", []
            )
            if groups:
                checks.append(_rollout_check(groups[0], latest))
        for name, ok, _ in checks:
            on_event(f"{'ok' if ok else 'FAILED'}: {name}")
        return checks

    # --- AWS plumbing --------------------------------------------------------------------------------

    def _client(self, service: str) -> Client:
        if service not in self._clients:
            if self._factory is not None:
                self._clients[service] = self._factory(service)
            else:
                self._clients[service] = self._make_client(service)
        return self._clients[service]

    def _make_client(self, service: str) -> Client:
        try:
            boto3 = importlib.import_module("boto3")
            config_module = importlib.import_module("botocore.config")
        except ImportError as exc:  # pragma: no cover - the [run] extra installs it
            raise ToolMissingError(
                "boto3 is not installed (the aws profile needs it)", hint="pip install 'pipeline-as-code[run]'"
            ) from exc
        env = self._environ
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

    def _call(self, service: str, operation: str, **kwargs: Any) -> dict[str, Any]:
        answer: dict[str, Any] = getattr(self._client(service), operation)(**kwargs)
        return answer

    @staticmethod
    def _botocore_exceptions() -> Any:
        return importlib.import_module("botocore.exceptions")

    def _describe_raw(self, stack: str) -> dict[str, Any] | None:
        ClientError = self._botocore_exceptions().ClientError
        try:
            stacks = self._call("cloudformation", "describe_stacks", StackName=stack).get("Stacks", [])
        except ClientError as exc:
            if "does not exist" in str(exc.response.get("Error", {}).get("Message", "")):
                return None
            raise
        if not stacks or stacks[0].get("StackStatus") == "DELETE_COMPLETE":
            return None
        result: dict[str, Any] = stacks[0]
        return result

    def _newest_event(self, stack_id: str) -> str | None:
        events = self._call("cloudformation", "describe_stack_events", StackName=stack_id).get("StackEvents", [])
        return str(events[0]["EventId"]) if events else None

    def _check_image_exists(self, image: str) -> None:
        ClientError = self._botocore_exceptions().ClientError
        try:
            images = self._call("ec2", "describe_images", ImageIds=[image]).get("Images", [])
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if not code.startswith("InvalidAMIID"):
                raise
            images = []
        if not images:
            raise TemplateError(
                f"image {image} does not exist in {self.region} (or this account cannot see it)",
                hint="bake it first (the bake stage), check the region, or share the AMI with this account",
            )
        state = images[0].get("State", "available")
        if state != "available":
            raise TemplateError(
                f"image {image} is {state}, not available", hint="wait until the AMI is available, or bake it again"
            )

    def _check_stack_name(self, stack: str) -> None:
        if not _STACK_NAME.match(stack):
            raise BadInputError(
                f"{stack!r} is not a valid CloudFormation stack name",
                hint="use letters, digits and hyphens, starting with a letter, at most 128 characters",
            )

    def _state(self, stack: str, raw: Mapping[str, Any] | None) -> StackState:
        if raw is None:
            return StackState(name=stack, exists=False)
        params = _parameters(raw)
        outputs = {str(o["OutputKey"]): str(o.get("OutputValue", "")) for o in raw.get("Outputs", [])}
        status = str(raw["StackStatus"])
        details = {
            "stack_status": status,
            "stack_id": str(raw["StackId"]),
            "region": self.region,
            "endpoint": self.endpoint_url or "aws",
        }
        if raw.get("StackStatusReason"):
            details["reason"] = str(raw["StackStatusReason"])
        details.update({f"output.{k}": v for k, v in outputs.items()})
        return StackState(
            name=stack,
            exists=True,
            image=params.get(self.image_parameter),
            url=outputs.get(URL_OUTPUT),
            status=_status_word(status),
            parameters=params,
            details=details,
        )

    @contextmanager
    def _aws_errors(self, action: str) -> Iterator[None]:
        """Turn botocore's exceptions into the pipeline's typed errors, with what to do."""
        exceptions = self._botocore_exceptions()
        where = self.endpoint_url or f"AWS ({self.region})"
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


# --- small pure helpers ----------------------------------------------------------------------------


def _token(kind: str) -> str:
    """A fresh ClientRequestToken: botocore's own retries reuse it, so CloudFormation runs an operation
    once even when a response is lost; events carry it, so an operation's events can be told apart."""
    return f"pipeline-{kind}-{uuid.uuid4().hex}"


def _parameter_list(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(values.items())]


def _parameters(raw: Mapping[str, Any]) -> dict[str, str]:
    return {str(p["ParameterKey"]): str(p.get("ParameterValue", "")) for p in raw.get("Parameters", [])}


def _tags(raw: Mapping[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in raw.get("Tags", [])}


def _status_word(status: str) -> str:
    if status.endswith("_IN_PROGRESS"):
        return "updating"
    if status in HEALTHY:
        return "ready"
    if status == "DELETE_COMPLETE":
        return "absent"
    return "failed"


def _resource(resources: Sequence[Mapping[str, Any]], kind: str, preferred: str) -> str | None:
    matching = [r for r in resources if r.get("ResourceType") == kind and r.get("PhysicalResourceId")]
    for r in matching:
        if r.get("LogicalResourceId") == preferred:
            return str(r["PhysicalResourceId"])
    return str(matching[0]["PhysicalResourceId"]) if matching else None


def _rollout_check(group: Mapping[str, Any], latest: str) -> tuple[str, bool, str]:
    name = str(group.get("AutoScalingGroupName"))
    wanted = int(group.get("DesiredCapacity", 0))
    version = str((group.get("LaunchTemplate") or {}).get("Version", ""))
    good = [
        i
        for i in group.get("Instances", [])
        if str((i.get("LaunchTemplate") or {}).get("Version", "")) == latest
        and i.get("LifecycleState") == "InService"
        and i.get("HealthStatus") == "Healthy"
    ]
    ok = version == latest and len(good) >= wanted
    why = (
        f"group {name} uses launch template version {version or '?'}, {len(good)} of {wanted} instances "
        f"InService and healthy on version {latest}"
    )
    return (f"group {name}: {len(good)}/{wanted} instances on launch template version {latest}", ok, why)


def _fix_for(stack: str, status: str, region: str) -> str:
    base = f"--stack-name {stack} --region {region}"
    if status in {"CREATE_FAILED", "UPDATE_FAILED"}:
        return (
            f"the stack was changed with rollback disabled: aws cloudformation rollback-stack {base} "
            "(or delete it), then re-run"
        )
    if status == "DELETE_FAILED":
        return (
            f"remove what blocks the delete (see the resource), then aws cloudformation delete-stack {base} "
            "(--deletion-mode FORCE_DELETE_STACK leaves the stuck resources behind)"
        )
    if status in {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED"}:
        return f"a failed create: aws cloudformation delete-stack {base}, then re-run"
    return f"inspect it: aws cloudformation describe-stack-events {base}"


__all__ = [
    "HEALTHY",
    "IMAGE_PARAMETER",
    "PIPELINE_TAG",
    "CloudFormationEngine",
    "CloudFormationError",
    "data_plane_is_real",
    "is_emulator_endpoint",
    "lint_template",
    "merge_parameters",
]
