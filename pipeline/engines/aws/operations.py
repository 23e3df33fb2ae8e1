"""Stack operations on CloudFormation: create, update and delete, each watched to its end.

No boto3 waiters: they poll for up to an hour and misread rollback states. `StackOperation` polls
`describe_stacks`, streams the operation's new `describe_stack_events` into `on_event`, and
classifies the terminal state itself. A failed operation is a `CloudFormationError` naming the
first resource that failed, why, where the stack is now and the command that gets it out.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.engines.aws import plans
from pipeline.engines.aws.session import AwsSession, botocore_exceptions
from pipeline.engines.aws.template import StackTemplate
from pipeline.engines.deploy_report import DeployReport, DeployStep
from pipeline.engines.stack import OnEvent, StackState
from pipeline.errors import BadInputError, CloudFormationError, TemplateError

PIPELINE_TAG = "pipeline"
"""Tag key every stack created by the engine carries; its value is the pipeline's name."""
URL_OUTPUT = "Url"

HEALTHY = frozenset(
    {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE", "IMPORT_ROLLBACK_COMPLETE"}
)
"""Terminal states in which the stack serves and accepts an update."""
DEAD = frozenset({"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "REVIEW_IN_PROGRESS"})
"""A failed create (or a never-executed change set): only delete-and-create gets out of it."""
FAILED_EVENT = frozenset({"CREATE_FAILED", "UPDATE_FAILED", "DELETE_FAILED", "IMPORT_FAILED"})

_STACK_NAME = re.compile(r"^[A-Za-z][-A-Za-z0-9]{0,127}$")
_NO_UPDATES = "No updates are to be performed"


@dataclass
class Pacing:
    """How often the engine polls and how long it waits. One object, shared by the operations, the
    metrics and the rollout, so that a value set on the engine holds for all of them."""

    poll_seconds: float = 5.0
    timeout_seconds: float = 7200.0
    """How long one stack operation may take."""
    healthy_timeout_seconds: float = 900.0
    """How long a slot step waits for its new instances to pass the target group's health check."""
    metrics_grace_seconds: float = 0.0
    """How long after an observation window CloudWatch is read for late requests (see the engine)."""
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    """The wall clock CloudWatch metrics are read by."""


def check_stack_name(stack: str) -> None:
    if not _STACK_NAME.match(stack):
        raise BadInputError(
            f"{stack!r} is not a valid CloudFormation stack name",
            hint="use letters, digits and hyphens, starting with a letter, at most 128 characters",
        )


@dataclass
class StackOperation:
    """One stack operation being watched: new events of this operation, in order, streamed once."""

    stacks: StackOperations
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
            page = self.stacks.session.call("cloudformation", "describe_stack_events", **kwargs)
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
        stacks, pacing = self.stacks, self.stacks.pacing
        deadline = pacing.clock() + pacing.timeout_seconds
        delay = min(1.0, pacing.poll_seconds)
        while True:
            self.poll_events()
            stack = stacks.describe_raw(self.stack_id)
            status = stack["StackStatus"] if stack else "DELETE_COMPLETE"
            if not status.endswith("_IN_PROGRESS"):
                self.poll_events()
                return None if status == "DELETE_COMPLETE" else stack
            if pacing.clock() >= deadline:
                what = "delete" if deleting else "operation"
                raise CloudFormationError(
                    f"stack {self.stack_id} is still {status} after {pacing.timeout_seconds:g} s",
                    hint=f"the {what} goes on in CloudFormation: re-run to keep waiting for it"
                    + ("" if deleting else ", or stop it with `aws cloudformation cancel-update-stack`"),
                    stack=self.stack_id,
                    status=status,
                )
            pacing.sleep(delay)
            delay = min(pacing.poll_seconds, delay * 1.5)

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


def _token(kind: str) -> str:
    """A fresh ClientRequestToken: botocore's own retries reuse it, so CloudFormation runs an operation
    once even when a response is lost; events carry it, so an operation's events can be told apart."""
    return f"pipeline-{kind}-{uuid.uuid4().hex}"


def _parameter_list(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(values.items())]


def parameters_of(raw: Mapping[str, Any]) -> dict[str, str]:
    return {str(p["ParameterKey"]): str(p.get("ParameterValue", "")) for p in raw.get("Parameters", [])}


def tags_of(raw: Mapping[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in raw.get("Tags", [])}


def _status_word(status: str) -> str:
    if status.endswith("_IN_PROGRESS"):
        return "updating"
    if status in HEALTHY:
        return "ready"
    if status == "DELETE_COMPLETE":
        return "absent"
    return "failed"


def fix_for(stack: str, status: str, region: str) -> str:
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


class StackOperations:
    """One pipeline's stacks through one session: read them, and create, update or delete one,
    waiting for the operation to end. Every stack it creates is tagged `pipeline=<name>`."""

    def __init__(self, session: AwsSession, template: StackTemplate, pipeline: str, pacing: Pacing) -> None:
        self.session = session
        self.template = template
        self.pipeline = pipeline
        self.pacing = pacing

    def describe_raw(self, stack: str, *, probe: bool = False) -> dict[str, Any] | None:
        """The stack as `describe_stacks` shows it; None when there is none. `probe`: with the
        session's readiness client (few attempts)."""
        ClientError = botocore_exceptions().ClientError
        call = self.session.probe if probe else self.session.call
        try:
            stacks = call("cloudformation", "describe_stacks", StackName=stack).get("Stacks", [])
        except ClientError as exc:
            if "does not exist" in str(exc.response.get("Error", {}).get("Message", "")):
                return None
            raise
        if not stacks or stacks[0].get("StackStatus") == "DELETE_COMPLETE":
            return None
        result: dict[str, Any] = stacks[0]
        return result

    def newest_event(self, stack_id: str) -> str | None:
        events = self.session.call("cloudformation", "describe_stack_events", StackName=stack_id).get("StackEvents", [])
        return str(events[0]["EventId"]) if events else None

    def state(self, stack: str, raw: Mapping[str, Any] | None) -> StackState:
        if raw is None:
            return StackState(name=stack, exists=False)
        # NoEcho parameters (a database password) are never shown: AWS answers "****"; emulators may not.
        hidden = {k for k, d in self.template.parameters().items() if str(d.get("NoEcho", "")).lower() == "true"}
        params = {k: "****" if k in hidden else v for k, v in parameters_of(raw).items()}
        outputs = {str(o["OutputKey"]): str(o.get("OutputValue", "")) for o in raw.get("Outputs", [])}
        status = str(raw["StackStatus"])
        details = {
            "stack_status": status,
            "stack_id": str(raw["StackId"]),
            "region": self.session.region,
            "endpoint": self.session.endpoint("cloudformation") or "aws",
        }
        if raw.get("StackStatusReason"):
            details["reason"] = str(raw["StackStatusReason"])
        details.update({f"output.{k}": v for k, v in outputs.items()})
        return StackState(
            name=stack,
            exists=True,
            image=params.get(self.template.image_parameter),
            url=outputs.get(URL_OUTPUT),
            status=_status_word(status),
            parameters=params,
            details=details,
        )

    def check_image_exists(self, image: str) -> None:
        ClientError = botocore_exceptions().ClientError
        try:
            images = self.session.call("ec2", "describe_images", ImageIds=[image]).get("Images", [])
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if not code.startswith("InvalidAMIID"):
                raise
            images = []
        if not images:
            raise TemplateError(
                f"image {image} does not exist in {self.session.region} (or this account cannot see it)",
                hint="bake it first (the bake stage), check the region, or share the AMI with this account",
            )
        state = images[0].get("State", "available")
        if state != "available":
            raise TemplateError(
                f"image {image} is {state}, not available", hint="wait until the AMI is available, or bake it again"
            )

    def create(
        self, stack: str, image: str, desired: Mapping[str, str], capabilities: Sequence[str], on_event: OnEvent
    ) -> StackState:
        token = _token("create")
        on_event(f"creating stack {stack} with {self.template.image_parameter}={image}")
        answer = self.session.call(
            "cloudformation",
            "create_stack",
            StackName=stack,
            TemplateBody=self.template.text(),
            Parameters=_parameter_list(desired),
            Capabilities=list(capabilities),
            Tags=[{"Key": PIPELINE_TAG, "Value": self.pipeline}],
            OnFailure="ROLLBACK",
            ClientRequestToken=token,
        )
        operation = StackOperation(self, answer["StackId"], token, on_event)
        final = operation.wait()
        status = final["StackStatus"] if final else "DELETE_COMPLETE"
        if status == "CREATE_COMPLETE" and final is not None:
            on_event(f"stack {stack} created")
            return self.state(stack, final)
        resource, reason = operation.first_failure()
        reason = reason or (final or {}).get("StackStatusReason") or "no reason given"
        deleted = False
        if final is not None and status in DEAD | {"CREATE_FAILED"}:
            on_event(f"stack {stack} is in {status} after the failed create: deleting it")
            self.delete_and_wait(stack, final["StackId"], on_event)
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

    def update(
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
        previous = parameters_of(current).get(self.template.image_parameter)
        marker = self.newest_event(stack_id)
        token = _token("update")
        on_event(f"updating stack {stack}: " + (what or f"{self.template.image_parameter} {previous} -> {image}"))
        ClientError = botocore_exceptions().ClientError
        kwargs: dict[str, Any] = {}
        if rollback_configuration is not None:
            kwargs["RollbackConfiguration"] = dict(rollback_configuration)
        try:
            self.session.call(
                "cloudformation",
                "update_stack",
                StackName=stack_id,
                TemplateBody=self.template.text(),
                Parameters=_parameter_list(desired),
                Capabilities=list(capabilities),
                ClientRequestToken=token,
                **kwargs,
            )
        except ClientError as exc:
            if _NO_UPDATES in str(exc.response.get("Error", {}).get("Message", "")):
                on_event(f"stack {stack}: no updates are to be performed")
                return self.describe_raw(stack)
            raise
        operation = StackOperation(self, stack_id, token, on_event, after_event=marker)
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
            raise self.rollback_failed(stack, operation.rollback_failures(), f"{where}{reason}", common)
        raise CloudFormationError(
            f"{doing} ended in {status}: {where}{reason}",
            hint=fix_for(stack, status, self.session.region),
            **common,
        )

    def rollback_failed(
        self, stack: str, resources: Sequence[str], cause: str, common: Mapping[str, Any]
    ) -> CloudFormationError:
        skip = f" --resources-to-skip {' '.join(resources)}" if resources else ""
        return CloudFormationError(
            f"stack {stack} is in UPDATE_ROLLBACK_FAILED: the update failed ({cause}) and so did the rollback"
            + (f" of {', '.join(resources)}" if resources else ""),
            hint="fix what blocks the rollback (often a resource changed or deleted outside CloudFormation), then "
            f"aws cloudformation continue-update-rollback --stack-name {stack} --region {self.session.region}{skip}"
            " (skipped resources are left as they are), and re-run",
            **common,
        )

    def delete_and_wait(self, stack: str, stack_id: str, on_event: OnEvent) -> None:
        marker = self.newest_event(stack_id)
        token = _token("delete")
        on_event(f"deleting stack {stack}")
        ClientError = botocore_exceptions().ClientError
        try:
            self.session.call("cloudformation", "delete_stack", StackName=stack_id, ClientRequestToken=token)
        except ClientError as exc:
            # The observed state wins: moto deletes what it can, forgets the stack, then raises
            # (e.g. DependencyViolation for a VPC whose route table it cannot delete). AWS itself
            # reports such failures asynchronously (DELETE_FAILED), leaving the stack in place.
            if self.describe_raw(stack_id) is not None:
                raise
            error = exc.response.get("Error", {})
            on_event(
                f"delete_stack answered {error.get('Code')}: {error.get('Message')}; the stack is gone "
                "(resources the endpoint could not delete may remain in it)"
            )
            return
        operation = StackOperation(self, stack_id, token, on_event, after_event=marker)
        final = operation.wait(deleting=True)
        if final is None:
            on_event(f"stack {stack} deleted")
            return
        resource, reason = operation.first_failure()
        reason = reason or final.get("StackStatusReason") or "no reason given"
        where = f"resource {resource}: " if resource else ""
        raise CloudFormationError(
            f"deleting stack {stack} ended in {final['StackStatus']}: {where}{reason}",
            hint=fix_for(stack, final["StackStatus"], self.session.region),
            stack=stack,
            status=final["StackStatus"],
            resource=resource,
            reason=reason,
        )

    def settle(self, stack: str, on_event: OnEvent) -> dict[str, Any] | None:
        """The stack once no operation runs on it (waits out one left running by an earlier run)."""
        current = self.describe_raw(stack)
        if current is None or not current["StackStatus"].endswith("_IN_PROGRESS"):
            return current
        if current["StackStatus"] == "REVIEW_IN_PROGRESS":
            return current
        on_event(f"stack {stack} is {current['StackStatus']} (an earlier operation): waiting for it to finish")
        operation = StackOperation(
            self, current["StackId"], None, on_event, after_event=self.newest_event(current["StackId"])
        )
        final = operation.wait()
        return None if final is None else self.describe_raw(stack)

    def refuse_stuck(self, stack: str, current: Mapping[str, Any]) -> None:
        status = current["StackStatus"]
        if status in HEALTHY:
            return
        common: dict[str, Any] = {"stack": stack, "status": status, "reason": current.get("StackStatusReason")}
        if status == "UPDATE_ROLLBACK_FAILED":
            raise self.rollback_failed(stack, [], str(current.get("StackStatusReason") or "an earlier update"), common)
        raise CloudFormationError(
            f"stack {stack} is in {status} and cannot be updated: {current.get('StackStatusReason') or 'no reason given'}",
            hint=fix_for(stack, status, self.session.region),
            **common,
        )

    def up_to_date(self, current: Mapping[str, Any], desired: Mapping[str, str]) -> bool:
        if parameters_of(current) != dict(desired):
            return False
        try:
            body = self.session.call("cloudformation", "get_template", StackName=current["StackId"]).get("TemplateBody")
        except Exception:
            return False
        ours = self.template.text()
        if isinstance(body, str):
            return body.strip() == ours.strip()
        try:
            return bool(body == json.loads(ours))
        except ValueError:
            return False

    def slot_arns(self, stack_id: str) -> tuple[str | None, str | None, str | None]:
        """Physical ids (ARNs) of the web group's and the slot's target groups and the balancer,
        read now (an emulator may replace them on an update)."""
        primary, canary, balancer = self.template.slot_logical_ids()
        resources = self.session.call("cloudformation", "describe_stack_resources", StackName=stack_id).get(
            "StackResources", []
        )
        ids = {
            str(r.get("LogicalResourceId")): str(r.get("PhysicalResourceId"))
            for r in resources
            if r.get("PhysicalResourceId")
        }
        return ids.get(primary or ""), ids.get(canary or ""), ids.get(balancer or "")


@dataclass
class DeployRun:
    """One deploy in progress: the stack as last observed, and how to move it one step."""

    stacks: StackOperations
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
        return parameters_of(self.current)

    def apply(self, values: Mapping[str, str], what: str) -> None:
        """One update-stack to exactly `values` (skipped when the stack has them already and runs
        this template), then the stack as it ends."""
        values = dict(values)
        if self.parameters() == values and self.stacks.up_to_date(self.current, values):
            self.on_event(f"{what}: already so")
            return
        final = self.stacks.update(
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
            seconds=self.stacks.pacing.clock() - self.started,
            **kwargs,
        )


__all__ = [
    "DEAD",
    "HEALTHY",
    "PIPELINE_TAG",
    "URL_OUTPUT",
    "DeployRun",
    "Pacing",
    "StackOperation",
    "StackOperations",
    "check_stack_name",
    "fix_for",
    "parameters_of",
    "tags_of",
]
