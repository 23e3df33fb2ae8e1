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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pipeline.engines import http_check
from pipeline.engines.aws import plans
from pipeline.engines.cfn_template import parse_template
from pipeline.engines.stack import (
    BaseStackEngine,
    DeployReport,
    DeployStep,
    OnEvent,
    StackState,
    VerifyReport,
    VersionStats,
)
from pipeline.engines.topology import ALB, TARGET_GROUP, is_canary_slot
from pipeline.errors import (
    BadInputError,
    HealthBreachError,
    PipelineError,
    StackOperationError,
    TemplateError,
    ToolMissingError,
)
from pipeline.model import IMAGE_PARAMETER, AwsSettings, Profile, Verify
from pipeline.strategy import BlueGreen, Health, Strategy

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


@dataclass
class _Run:
    """One deploy in progress: the stack as last observed, and how to move it one step."""

    engine: CloudFormationEngine
    stack: str
    image: str
    current: dict[str, Any]
    desired: dict[str, str]
    capabilities: Sequence[str]
    on_event: OnEvent
    started: float

    @property
    def stack_id(self) -> str:
        return str(self.current["StackId"])

    def parameters(self) -> dict[str, str]:
        return _parameters(self.current)

    def apply(self, values: Mapping[str, str], what: str) -> None:
        """One update-stack to exactly `values` (skipped when the stack has them already and runs
        this template), then the stack as it ends."""
        values = dict(values)
        if self.parameters() == values and self.engine._up_to_date(self.current, values):
            self.on_event(f"{what}: already so")
            return
        final = self.engine._update_raw(
            self.stack, self.image, self.current, values, self.capabilities, self.on_event, what=what
        )
        if final is not None:
            self.current = final

    def report(
        self, strategy: str, previous: str | None, *, steps: tuple[DeployStep, ...] = (), **kwargs: Any
    ) -> DeployReport:
        observed = [s for s in steps if s.verdict != "not observed"]
        return DeployReport(
            strategy=strategy,
            image=self.image,
            previous_image=previous,
            steps=steps,
            new=plans.combine([s.new for s in observed]),
            old=plans.combine([s.old for s in observed]),
            seconds=self.engine._clock() - self.started,
            **kwargs,
        )


def _int(value: str | None, default: int) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default


def _pick(values: Mapping[str, str], names: Sequence[str]) -> dict[str, str]:
    return {k: values[k] for k in names if k in values}


def _weights(primary: int, canary: int) -> dict[str, str]:
    return {plans.PRIMARY_WEIGHT: str(primary), plans.CANARY_WEIGHT: str(canary)}


class CloudFormationEngine(BaseStackEngine):
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
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics_grace_seconds: float | None = None,
    ) -> None:
        """`environ` (default: os.environ) supplies AWS_* variables (credentials, endpoint, region).

        `data_plane`: "auto" decides per URL (see `data_plane_is_real`), "http" always requests the
        URL, "emulated" never does. `client_factory(service)` replaces boto3 clients (tests).
        `now` is the wall clock CloudWatch metrics are read by. `metrics_grace_seconds`: how long
        after an observation window the engine keeps reading CloudWatch for requests that reached
        the new version before it gives up judging (default: 180 s on AWS, whose load balancer
        metrics arrive a minute or more late; 0 under an emulator)."""
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
        self._now = now
        self._clients: dict[str, Client] = {}
        self.endpoint_url: str | None = settings.endpoint_url or self._environ.get("AWS_ENDPOINT_URL") or None
        if "region" in settings.model_fields_set:
            self.region = settings.region
        else:
            self.region = self._environ.get("AWS_REGION") or self._environ.get("AWS_DEFAULT_REGION") or settings.region
        if metrics_grace_seconds is None:
            metrics_grace_seconds = 0.0 if self.emulator else 180.0
        self.metrics_grace_seconds = metrics_grace_seconds
        self.healthy_timeout_seconds = 900.0
        """How long a slot step waits for its new instances to pass the target group's health check."""

    # --- public: the StackEngine protocol -------------------------------------------------------

    @property
    def emulator(self) -> bool:
        """Talking to an emulator (an endpoint override outside AWS), not to AWS itself."""
        return is_emulator_endpoint(self.endpoint_url)

    def ready(self, stack: str) -> None:
        """The endpoint answers and the credentials work: one read-only call (describing the
        environment's stack). ToolMissingError or StackOperationError naming the fix if not."""
        self.describe(stack)

    def describe(self, stack: str) -> StackState:
        self._check_stack_name(stack)
        with self._aws_errors(f"describing stack {stack}"):
            raw = self._describe_raw(stack)
        return self._state(stack, raw)

    def check_strategy(self, strategy: Strategy | None, health: Health | None = None) -> None:
        """Refuse, before any change, a deployment strategy the template gives this engine no
        means to carry out (BadInputError, exit 2). Offline: reads the template only.

        Rolling with values of its own and cutover need the rolling-update parameters; pilot,
        half, canary and blue-green need the canary slot (a second group and target group, weighted
        listener rule); templates/web.yaml declares both (docs/aws.md)."""
        if strategy is None or not plans.required_parameters(strategy):
            return
        doc = parse_template(self.template_text(), source=str(self.template))
        missing = plans.missing_parameters(strategy, template_parameters(doc))
        if strategy.kind in plans.SLOT_STRATEGIES and not self._slot_logical_ids(doc)[1]:
            missing.append(f"a {TARGET_GROUP} marked Metadata: {{Pipeline: {{Role: canary-slot}}}}")
        if missing:
            what = "rolling with values of its own" if strategy.kind == "rolling" else strategy.kind
            raise BadInputError(
                f"the aws profile cannot carry out {what} with {self.template}: it lacks " + ", ".join(missing),
                hint=plans.TEMPLATE_HINT,
            )

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
        """Create the stack or move it to `image` with `strategy`; a no-op when it already runs
        exactly that. The returned state's `report` is a DeployReport.

        - None / rolling / cutover: one update-stack, with the strategy's rolling-update parameters;
          with `health`, CloudWatch alarms as the update's rollback triggers (a breach: CloudFormation
          rolls back, then HealthBreachError).
        - pilot, half, canary, blue-green: a sequence of updates of the canary slot (see
          `plans`), each window judged from CloudWatch by `http_check.judge`; a breach
          routes everything back to the web group, empties the slot, then HealthBreachError.

        `health` is judged only where the strategy has an observation window (`observe_seconds`
        > 0), as on the local engine: the default rolling update observes nothing, so it needs no
        CloudWatch permission.

        The slot's and the rolling-update parameters are the engine's: values given for them in
        `parameters` are replaced (the slot idle, the template's rolling defaults).

        Raises TemplateError / BadInputError (exit 2) before any change for a bad template,
        parameter, image or strategy, and CloudFormationError (a StackOperationError) when
        CloudFormation fails an operation."""
        self.check_strategy(strategy, health)
        if strategy is None or plans.observe_seconds(strategy) <= 0:
            health = None  # no observation window, nothing to judge (as on the local engine)
        self._check_stack_name(stack)
        desired = self.plan(image, parameters)
        doc = parse_template(self.template_text(), source=str(self.template))
        desired.update(plans.owned_defaults(template_parameters(doc)))
        kind = strategy.kind if strategy is not None else "rolling"
        capacity = _int(desired.get(plans.CAPACITY_PARAMETER), 1)
        if kind not in plans.SLOT_STRATEGIES:
            desired.update(plans.rolling_values(strategy, capacity))
        started = self._clock()
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
                created = self._create(stack, image, desired, capabilities, on_event)
                return replace(
                    created, report=DeployReport(strategy="create", image=image, seconds=self._clock() - started)
                )
            self._refuse_stuck(stack, current)
            run = _Run(self, stack, image, dict(current), desired, capabilities, on_event, started)
            if kind in plans.SLOT_STRATEGIES and strategy is not None:
                return self._slot_deploy(run, strategy, health)
            return self._rolling_deploy(run, strategy, health)

    # --- strategies ---------------------------------------------------------------------------------

    def _rolling_deploy(self, run: _Run, strategy: Strategy | None, health: Health | None) -> StackState:
        """Rolling or cutover: one update-stack; with `health`, alarms as its rollback triggers."""
        kind = strategy.kind if strategy is not None else "rolling"
        previous = run.parameters().get(self.image_parameter)
        if plans.slot_active(run.parameters()):
            self._empty_slot(run, "an interrupted deploy left the canary slot in use")
        if self._up_to_date(run.current, run.desired):
            run.on_event(f"stack {run.stack} already runs {run.image} with these parameters: nothing to do")
            return replace(self._state(run.stack, run.current), report=run.report("none", previous))
        alarms: list[tuple[str, str]] = []
        rollback: dict[str, Any] | None = None
        if health is not None:
            alarms = self._put_alarms(run, health)
            rollback = {
                "RollbackTriggers": [{"Arn": arn, "Type": "AWS::CloudWatch::Alarm"} for _, arn in alarms],
                "MonitoringTimeInMinutes": plans.monitoring_minutes(strategy),
            }
        what = None
        if kind == "cutover":
            what = f"cutover to {run.image}: every instance at once, none kept in service"
        step_started = self._clock()
        try:
            with self._probing(run, health):
                final = self._update_raw(
                    run.stack,
                    run.image,
                    run.current,
                    run.desired,
                    run.capabilities,
                    run.on_event,
                    what=what,
                    rollback_configuration=rollback,
                )
        except CloudFormationError as exc:
            breach = self._alarm_breach(alarms, exc) if alarms and exc.status == "UPDATE_ROLLBACK_COMPLETE" else ""
            if not breach:
                raise
            seconds = self._clock() - run.started
            report = DeployReport(
                strategy=kind,
                image=run.image,
                previous_image=previous,
                steps=(DeployStep(f"{kind} update", 1.0, self._clock() - step_started, "breach"),),
                seconds=seconds,
                rolled_back=True,
                breach=breach,
            )
            raise HealthBreachError(
                f"health breach during the {kind} update of {run.stack} to {run.image}: {breach}; CloudFormation "
                f"rolled the stack back to {previous} (UPDATE_ROLLBACK_COMPLETE) in {seconds:.1f} s",
                hint="the alarm's metrics cover the whole target group (old and new instances); see the "
                "alarm's history in CloudWatch, fix the release and re-run",
                report=report,
            ) from None
        finally:
            if alarms:
                self._delete_alarms(run.stack, run.on_event)
        step = DeployStep(
            what or f"{kind} update",
            1.0,
            self._clock() - step_started,
            "passed" if alarms else "not observed",
        )
        state = self._state(run.stack, final)
        return replace(state, report=run.report(kind, previous, steps=(step,)))

    def _slot_deploy(self, run: _Run, strategy: Strategy, health: Health | None) -> StackState:
        """Pilot, half, canary, blue-green: the new version in the canary slot, step by step."""
        image, p = run.image, plans
        now = run.parameters()
        old = now.get(self.image_parameter) or ""
        steps = p.slot_steps(strategy, _int(run.desired.get(p.CAPACITY_PARAMETER), 1))
        slot_image = now.get(p.CANARY_IMAGE, "")
        if old == image:
            if slot_image == image:  # interrupted while finishing: the web group already runs it
                self._finish(run, steps[-1])
                return replace(self._state(run.stack, run.current), report=run.report(strategy.kind, old))
            if p.slot_active(now):
                self._empty_slot(run, "an interrupted deploy left the canary slot in use")
            if self._up_to_date(run.current, run.desired):
                run.on_event(f"stack {run.stack} already runs {image} with these parameters: nothing to do")
                return replace(self._state(run.stack, run.current), report=run.report("none", old))
            run.apply(run.desired, f"parameters other than the image ({image} runs already)")
            return replace(self._state(run.stack, run.current), report=run.report(strategy.kind, old))
        if slot_image not in ("", image) or (slot_image == "" and p.slot_active(now)):
            self._empty_slot(run, f"the canary slot holds another version ({slot_image or 'none'})")
            now = run.parameters()
            slot_image = ""
        start = p.resume_index(steps, now) if slot_image == image else 0
        if start:
            run.on_event(
                f"the canary slot already runs {image} (an interrupted deploy): going on at {steps[start].what}"
            )
        base = {**run.desired, self.image_parameter: old}
        weights = (now.get(p.PRIMARY_WEIGHT, "100"), now.get(p.CANARY_WEIGHT, "0")) if slot_image else ("100", "0")
        with self._probing(run, health):
            try:
                records = self._slot_steps(run, strategy, health, steps[start:], base, weights, old)
                if isinstance(strategy, BlueGreen):
                    records += self._keep_warm(run, strategy, health, steps[-1], records, old)
            except CloudFormationError as exc:
                raise self._abandoned(run, old, exc) from exc
        self._finish(run, steps[-1])
        return replace(self._state(run.stack, run.current), report=run.report(strategy.kind, old, steps=tuple(records)))

    def _slot_steps(
        self,
        run: _Run,
        strategy: Strategy,
        health: Health | None,
        steps: Sequence[plans.SlotStep],
        base: Mapping[str, str],
        weights: tuple[str, str],
        old: str,
    ) -> list[DeployStep]:
        """Each step: the slot grows, the balancer's weights give it the step's share, a window."""
        p, image = plans, run.image
        baseline = self._baseline(run) if health is not None else VersionStats()
        records: list[DeployStep] = []
        window = p.observe_seconds(strategy)
        for step in steps:
            step_started = self._clock()
            launch = {**base, **step.values(image), p.PRIMARY_WEIGHT: weights[0], p.CANARY_WEIGHT: weights[1]}
            run.apply(launch, f"{step.what}: {step.capacity} instance(s) of {image} in the canary slot")
            self._wait_healthy(run, step.capacity)
            run.apply(
                {**base, **step.values(image)},
                f"{step.what}: weights {step.primary_weight} (web group, {old}) : {step.canary_weight} (canary slot)",
            )
            weights = (str(step.primary_weight), str(step.canary_weight))
            routed = self._clock()
            verdict, new_stats, old_stats = self._observe(run, step, window, health, baseline)
            state = "not observed" if verdict is None else {"pass": "passed"}.get(verdict.state, verdict.state)
            records.append(DeployStep(step.what, step.share, self._clock() - step_started, state, new_stats, old_stats))
            if verdict is not None and verdict.state == "breach":
                self._restore(run, strategy, step, records, verdict.reason, routed, old)
        return records

    def _keep_warm(
        self,
        run: _Run,
        strategy: BlueGreen,
        health: Health | None,
        last: plans.SlotStep,
        records: list[DeployStep],
        old: str,
    ) -> list[DeployStep]:
        """Blue-green: after the switch, the old (blue) set, the web group still on the old image,
        stays at full size and unrouted until `keep_old_seconds` have passed since the switch; the
        green set's health is watched all that time, and a breach is an instant switch back (a
        weights change: the old instances never stopped). Only then does `_finish` move the web
        group to the new image. The deploy holds for that time (nothing runs after it to end the
        warm period); an interrupted hold is resumed by the next deploy like any other step."""
        hold = strategy.keep_old_seconds - strategy.observe_seconds
        if hold <= 0:
            return []
        started = self._clock()
        switched = started - strategy.observe_seconds
        warm = plans.SlotStep(
            f"blue-green: the old set ({old}) kept warm", last.capacity, last.primary_weight, last.canary_weight
        )
        run.on_event(f"keeping the old set ({old}) warm for {hold:g} s more, for an instant switch back")
        baseline = self._baseline(run) if health is not None else VersionStats()
        verdict, new_stats, old_stats = self._observe(run, warm, hold, health, baseline)
        state = "not observed" if verdict is None else {"pass": "passed"}.get(verdict.state, verdict.state)
        step = DeployStep(warm.what, warm.share, self._clock() - started, state, new_stats, old_stats)
        if verdict is not None and verdict.state == "breach":
            self._restore(run, strategy, warm, [*records, step], verdict.reason, switched, old)
        return [step]

    def _restore(
        self,
        run: _Run,
        strategy: Strategy,
        step: plans.SlotStep,
        records: list[DeployStep],
        reason: str,
        routed: float,
        old: str,
    ) -> None:
        """After a breach: every request to the web group (the old version) first, then the slot
        emptied; raises HealthBreachError with the report."""
        decided = self._clock()
        run.on_event(f"health breach at {step.what}: {reason}; routing everything back to {old}")
        slot = run.parameters()
        run.apply(
            {**run.desired, self.image_parameter: old, **_pick(slot, plans.SLOT_PARAMETERS), **_weights(100, 0)},
            f"back to {old}: weights 100 : 0",
        )
        restored = self._clock()
        run.apply({**run.desired, self.image_parameter: old}, "emptying the canary slot")
        report = run.report(
            strategy.kind,
            old,
            steps=tuple(records),
            rolled_back=True,
            breach=reason,
            time_to_detect=decided - routed,
            time_to_restore=restored - decided,
        )
        raise HealthBreachError(
            f"health breach at {step.what} ({strategy.kind} of {run.stack} to {run.image}): {reason}; "
            f"rolled back to {old} in {restored - decided:.1f} s (detected {decided - routed:.1f} s after the "
            "new version took traffic)",
            hint="the numbers are the load balancer's CloudWatch metrics per target group; fix the release and re-run",
            report=report,
        )

    def _abandoned(self, run: _Run, old: str, exc: CloudFormationError) -> CloudFormationError:
        """A step failed (an update CloudFormation rolled back, new instances never healthy): the
        traffic goes back to the web group (the old version) and the slot is emptied, as after a
        breach, so a failed deploy leaves no share of the traffic on the new version. Best effort:
        if that fails too, the next deploy does it (the slot is in the stack's parameters)."""
        try:
            self._empty_slot(run, f"the {run.image} deploy failed ({exc.message})")
            after = f"traffic is back on the web group ({old}) and the canary slot is empty"
        except PipelineError as cleanup:
            after = f"emptying the canary slot failed too ({cleanup.message}); the next deploy empties it"
        return CloudFormationError(
            f"{exc.message}; {after}",
            hint=exc.hint,
            stack=exc.stack,
            status=exc.status,
            resource=exc.resource,
            reason=exc.reason,
        )

    def _finish(self, run: _Run, last: plans.SlotStep) -> None:
        """The web group moves to the new image while the slot serves, then takes all traffic
        back, then the slot is emptied. Each step is skipped when the stack is already there."""
        p, image = plans, run.image
        now = run.parameters()
        slot = _pick(now, p.SLOT_PARAMETERS) if now.get(p.CANARY_IMAGE) == image else last.values(image)
        if now.get(self.image_parameter) != image:
            move = {**run.desired, **slot}
            idle = _int(slot.get(p.PRIMARY_WEIGHT), 0) == 0
            if idle and p.ROLLING_BATCH in move and p.ROLLING_MIN_IN_SERVICE in move:
                move[p.ROLLING_BATCH] = str(max(1, _int(run.desired.get(p.CAPACITY_PARAMETER), 1)))
                move[p.ROLLING_MIN_IN_SERVICE] = "0"  # it gets no traffic: replace it at once
            run.apply(move, f"the web group to {image} while the canary slot serves")
        if _int(slot.get(p.CANARY_WEIGHT), 0) != 0:
            run.apply({**run.desired, **slot, **_weights(100, 0)}, f"all traffic to the web group ({image})")
            slot = {**slot, **_weights(100, 0)}
        run.apply(dict(run.desired), "emptying the canary slot")

    def _empty_slot(self, run: _Run, why: str) -> None:
        """Traffic back to the web group, then no instance in the slot (two updates: the weights
        change before the slot's instances go)."""
        run.on_event(f"{why}: emptying it")
        now = run.parameters()
        # what the stack runs now (the template's new parameters at their values): only the slot changes
        base = {**run.desired, **{k: v for k, v in now.items() if k in run.desired}}
        if _int(now.get(plans.CANARY_WEIGHT), 0) != 0:
            run.apply({**base, **_weights(100, 0)}, "weights 100 : 0")
        run.apply({**base, **plans.IDLE_SLOT}, "emptying the canary slot")

    @contextmanager
    def _probing(self, run: _Run, health: Health | None) -> Iterator[None]:
        """With `health`, where the stack's URL is reachable (real AWS): `requests_per_second`
        through the balancer for the whole deploy, so every window has requests to judge even on
        an idle service (the load balancer's metrics count them like the users')."""
        url = self._state(run.stack, run.current).url
        reachable = self.data_plane == "http" or (
            self.data_plane == "auto" and data_plane_is_real(url, self.endpoint_url)
        )
        if health is None or not url or not reachable:
            yield
            return
        run.on_event(f"probe: {health.requests_per_second:g} requests/s through {url} during the deploy")
        with http_check.LoadClient(url, rate=health.requests_per_second, timeout=5.0):
            yield

    def _slot_logical_ids(self, doc: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
        """(web group's target group, canary slot's target group, load balancer) logical ids."""
        resources = doc.get("Resources") or {}
        primary = canary = balancer = None
        for name, res in resources.items():
            kind = res.get("Type") if isinstance(res, dict) else None
            if kind == TARGET_GROUP:
                if is_canary_slot(res):
                    canary = canary or str(name)
                else:
                    primary = primary or str(name)
            elif kind == ALB:
                balancer = balancer or str(name)
        return primary, canary, balancer

    def _arns(self, run: _Run) -> tuple[str | None, str | None, str | None]:
        """Physical ids (ARNs) of the web group's and the slot's target groups and the balancer,
        read now (an emulator may replace them on an update)."""
        doc = parse_template(self.template_text(), source=str(self.template))
        primary, canary, balancer = self._slot_logical_ids(doc)
        resources = self._call("cloudformation", "describe_stack_resources", StackName=run.stack_id).get(
            "StackResources", []
        )
        ids = {
            str(r.get("LogicalResourceId")): str(r.get("PhysicalResourceId"))
            for r in resources
            if r.get("PhysicalResourceId")
        }
        return ids.get(primary or ""), ids.get(canary or ""), ids.get(balancer or "")

    def _wait_healthy(self, run: _Run, count: int) -> None:
        """Until `count` targets of the slot's target group pass its health check (AWS routes to
        nothing else). Under an emulator that registers no targets, skipped with a note."""
        _, canary, _ = self._arns(run)
        if canary is None:
            return
        deadline = self._clock() + min(self.timeout_seconds, self.healthy_timeout_seconds)
        delay = min(1.0, self.poll_seconds)
        while True:
            health = self._call("elbv2", "describe_target_health", TargetGroupArn=canary).get(
                "TargetHealthDescriptions", []
            )
            healthy = [t for t in health if (t.get("TargetHealth") or {}).get("State") == "healthy"]
            if len(healthy) >= count:
                run.on_event(f"canary slot: {len(healthy)} healthy target(s)")
                return
            if not health and self.emulator:
                run.on_event(
                    "canary slot: the emulator registered no targets (it launches no instances); not waited for"
                )
                return
            if self._clock() >= deadline:
                reasons = sorted({str((t.get("TargetHealth") or {}).get("Reason") or "") for t in health} - {""})
                raise CloudFormationError(
                    f"the canary slot of {run.stack} has {len(healthy)} of {count} healthy targets running "
                    f"{run.image} after {min(self.timeout_seconds, self.healthy_timeout_seconds):g} s"
                    + (f" ({', '.join(reasons)})" if reasons else ""),
                    hint="the new image does not pass the target group's health check: fix it and re-run",
                    stack=run.stack,
                    status="UPDATE_COMPLETE",
                    reason="targets not healthy",
                )
            self._sleep(delay)
            delay = min(self.poll_seconds, delay * 1.5)

    def _observe(
        self, run: _Run, step: plans.SlotStep, window: float, health: Health | None, baseline: VersionStats
    ) -> tuple[http_check.Verdict | None, VersionStats, VersionStats]:
        """One observation window: CloudWatch metrics of the slot's target group (the new version)
        and the web group's (the old one, or the baseline when it got too little traffic), judged
        by `http_check.judge` as they come in. No `health`: the window only paces the step."""
        since = self._now()
        start = self._clock()
        run.on_event(f"observing {step.what} for {window:g} s")
        primary, canary, balancer = self._arns(run)
        while True:
            elapsed = self._clock() - start
            final = elapsed >= window
            if health is None and not final:
                self._sleep(window - elapsed)
                continue
            new, old = self._window_stats(canary, primary, balancer, since)
            if health is None:
                return None, new, old
            judged_old = old if old.requests >= health.min_requests else baseline
            verdict = http_check.judge(
                new, judged_old, health, final=final, exhausted=elapsed >= window + self.metrics_grace_seconds
            )
            if verdict.state == "breach" and self.emulator and not new.requests and not old.requests:
                # moto and friends have no load balancer to count requests: nothing to judge, and
                # that is the emulator's limit, not the release's (like the emulated verify checks)
                run.on_event(f"{step.what}: the emulator reported no load balancer metrics: window not judged")
                return None, new, old
            if verdict.state != "wait":
                run.on_event(f"{step.what}: {verdict.state}; {verdict.numbers}")
                return verdict, new, judged_old
            self._sleep(min(self.poll_seconds, window - elapsed) if not final else self.poll_seconds)

    def _window_stats(
        self, canary: str | None, primary: str | None, balancer: str | None, since: datetime
    ) -> tuple[VersionStats, VersionStats]:
        if canary is None or primary is None or balancer is None:
            return VersionStats(), VersionStats()
        end = self._now() + timedelta(seconds=1)
        new_dims, old_dims = plans.dimensions(canary, balancer), plans.dimensions(primary, balancer)
        results = self._call(
            "cloudwatch",
            "get_metric_data",
            MetricDataQueries=plans.count_queries("new", new_dims) + plans.count_queries("old", old_dims),
            StartTime=since,
            EndTime=end,
        ).get("MetricDataResults", [])
        new = plans.stats_from(results, "new", self._p99(new_dims, since, end))
        old = plans.stats_from(results, "old", self._p99(old_dims, since, end))
        return new, old

    def _p99(self, dims: list[dict[str, str]], since: datetime, end: datetime) -> float | None:
        points = self._call(
            "cloudwatch",
            "get_metric_statistics",
            Namespace=plans.NAMESPACE,
            MetricName="TargetResponseTime",
            Dimensions=dims,
            StartTime=since,
            EndTime=end,
            Period=plans.METRIC_PERIOD,
            ExtendedStatistics=["p99"],
        ).get("Datapoints", [])
        return plans.p99_of(points)

    def _baseline(self, run: _Run) -> VersionStats:
        """The web group's numbers over the last minutes before the change (the old version)."""
        primary, _, balancer = self._arns(run)
        if primary is None or balancer is None:
            return VersionStats()
        since = self._now() - timedelta(minutes=10)
        dims = plans.dimensions(primary, balancer)
        end = self._now() + timedelta(seconds=1)
        results = self._call(
            "cloudwatch",
            "get_metric_data",
            MetricDataQueries=plans.count_queries("old", dims),
            StartTime=since,
            EndTime=end,
        ).get("MetricDataResults", [])
        baseline = plans.stats_from(results, "old", self._p99(dims, since, end))
        run.on_event(f"baseline of the old version (last 10 minutes): {baseline.describe()}")
        return baseline

    def _put_alarms(self, run: _Run, health: Health) -> list[tuple[str, str]]:
        """The rollback triggers of a rolling or cutover update: (name, ARN) of each alarm."""
        primary, _, balancer = self._arns(run)
        if primary is None or balancer is None:
            run.on_event("no target group or load balancer in the stack: no alarms, health not watched")
            return []
        baseline = self._baseline(run)
        requests = plans.alarm_requests(
            run.stack, plans.dimensions(primary, balancer), health, baseline.p99_ms if baseline.requests else None
        )
        for request in requests:
            self._call("cloudwatch", "put_metric_alarm", **request)
        names = [str(r["AlarmName"]) for r in requests]
        found = self._call("cloudwatch", "describe_alarms", AlarmNames=names).get("MetricAlarms", [])
        arns = {str(a["AlarmName"]): str(a["AlarmArn"]) for a in found}
        missing = [n for n in names if n not in arns]
        if missing:
            raise CloudFormationError(
                f"CloudWatch did not keep the alarm(s) {', '.join(missing)}",
                hint="check the cloudwatch:PutMetricAlarm permission; nothing was changed in the stack",
                stack=run.stack,
            )
        run.on_event(f"rollback triggers: {', '.join(names)}")
        return [(n, arns[n]) for n in names]

    def _alarm_breach(self, alarms: Sequence[tuple[str, str]], exc: CloudFormationError) -> str:
        """What made CloudFormation roll back, when it was one of our alarms ('' otherwise)."""
        names = [n for n, _ in alarms]
        found = self._call("cloudwatch", "describe_alarms", AlarmNames=names).get("MetricAlarms", [])
        for alarm in found:
            if alarm.get("StateValue") == "ALARM":
                return f"alarm {alarm['AlarmName']} is in ALARM: {alarm.get('StateReason') or 'no reason given'}"
        text = f"{exc.reason or ''} {exc}"
        for name, arn in alarms:
            if name in text or arn in text:
                return f"alarm {name} triggered the rollback: {exc.reason or 'no reason given'}"
        return ""

    def _delete_alarms(self, stack: str, on_event: OnEvent) -> None:
        """Delete the stack's rollback-trigger alarms; best effort (an alarm left behind costs
        little, triggers nothing outside an update, and the next deploy overwrites it)."""
        try:
            self._call("cloudwatch", "delete_alarms", AlarmNames=list(plans.alarm_names(stack)))
        except Exception as exc:
            on_event(f"could not delete the alarms of {stack} ({type(exc).__name__}: {exc})")

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
        # rollback-trigger alarms a deploy killed mid-update left behind (deploys delete their own)
        self._delete_alarms(stack, on_event)

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

    def _update_raw(
        self,
        stack: str,
        image: str,
        current: Mapping[str, Any],
        desired: Mapping[str, str],
        capabilities: Sequence[str],
        on_event: OnEvent,
        *,
        what: str | None = None,
        rollback_configuration: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """One update-stack call and its wait; the final stack. `what` names a step of a strategy
        (default: the image change); `rollback_configuration` carries rollback triggers."""
        stack_id = current["StackId"]
        previous = _parameters(current).get(self.image_parameter)
        marker = self._newest_event(stack_id)
        token = _token("update")
        on_event(f"updating stack {stack}: " + (what or f"{self.image_parameter} {previous} -> {image}"))
        ClientError = self._botocore_exceptions().ClientError
        kwargs: dict[str, Any] = {}
        if rollback_configuration is not None:
            kwargs["RollbackConfiguration"] = dict(rollback_configuration)
        try:
            self._call(
                "cloudformation",
                "update_stack",
                StackName=stack_id,
                TemplateBody=self.template_text(),
                Parameters=_parameter_list(desired),
                Capabilities=list(capabilities),
                ClientRequestToken=token,
                **kwargs,
            )
        except ClientError as exc:
            if _NO_UPDATES in str(exc.response.get("Error", {}).get("Message", "")):
                on_event(f"stack {stack}: no updates are to be performed")
                return self._describe_raw(stack)
            raise
        operation = _Operation(self, stack_id, token, on_event, after_event=marker)
        final = operation.wait()
        status = final["StackStatus"] if final else "DELETE_COMPLETE"
        if status == "UPDATE_COMPLETE" and final is not None:
            on_event(f"stack {stack} updated" + (f": {what}" if what else f" to {image}"))
            return final
        resource, reason = operation.first_failure()
        reason = reason or (final or {}).get("StackStatusReason") or "no reason given"
        where = f"resource {resource}: " if resource else ""
        common: dict[str, Any] = {"stack": stack, "status": status, "resource": resource, "reason": reason}
        doing = f"updating stack {stack} ({what})" if what else f"updating stack {stack} to {image}"
        if status == "UPDATE_ROLLBACK_COMPLETE":
            raise CloudFormationError(
                f"{doing} failed: {where}{reason}; CloudFormation rolled it back "
                f"(UPDATE_ROLLBACK_COMPLETE): the stack is healthy on the previous version ({previous})",
                hint="fix the cause (see the failed resource) and re-run",
                **common,
            )
        if status == "UPDATE_ROLLBACK_FAILED":
            raise self._rollback_failed(stack, operation.rollback_failures(), f"{where}{reason}", common)
        raise CloudFormationError(
            f"{doing} ended in {status}: {where}{reason}",
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
    "PIPELINE_TAG",
    "CloudFormationEngine",
    "CloudFormationError",
    "data_plane_is_real",
    "is_emulator_endpoint",
    "lint_template",
    "merge_parameters",
]
