"""The `aws` profile's stack engine: CloudFormation through boto3, written for real AWS.

It also talks to emulators (moto, MiniStack, LocalStack) through `endpoint_url`; what an emulator
cannot show (a data plane) is verified from the control plane and reported as *emulated*.

The engine is a facade over the package's parts (see docs/aws.md for the policies):
- `session`: region, endpoint, credentials, boto3 clients and botocore's failures as typed errors;
- `template`: cfn-lint, `validate_template`, and the parameters a deploy sends, all checked before
  anything changes (a `TemplateError`, exit 2);
- `operations`: create, update and delete, each watched to its end without boto3 waiters;
- `rollout` with `plans` and `metrics`: the deployment strategies, judged from CloudWatch;
- `verification`: what the control plane says about a deployed stack.

Every stack the engine creates is tagged `pipeline=<name>`; `stacks()` lists those and `delete`
refuses stacks of another pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.engines import http_check
from pipeline.engines.aws import plans
from pipeline.engines.aws.database import StackDatabase
from pipeline.engines.aws.metrics import HealthMetrics
from pipeline.engines.aws.operations import (
    DEAD,
    PIPELINE_TAG,
    DeployRun,
    Pacing,
    StackOperations,
    check_stack_name,
    tags_of,
)
from pipeline.engines.aws.rollout import Rollout
from pipeline.engines.aws.session import AwsSession, Client, DataPlane, http_reaches
from pipeline.engines.aws.template import StackTemplate, template_parameters
from pipeline.engines.aws.verification import control_plane_checks
from pipeline.engines.deploy_report import DeployReport
from pipeline.engines.stack import (
    BaseStackEngine,
    DatabaseEndpoint,
    OnEvent,
    Replica,
    StackState,
    VerifyReport,
)
from pipeline.engines.topology import TARGET_GROUP
from pipeline.errors import BadInputError, CloudFormationError, ProfileCannotError
from pipeline.model import IMAGE_PARAMETER, AwsSettings, Database, Profile, Sensitive, Verify
from pipeline.strategy import Health, Strategy


def _ignore(text: str) -> None:
    pass


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
        database: Database | None = None,
        masks: Sequence[Sensitive] = (),
    ) -> None:
        """`environ` (default: os.environ) supplies AWS_* variables (credentials, endpoint, region).

        `data_plane`: "auto" decides per URL (see `session.data_plane_is_real`), "http" always
        requests the URL, "emulated" never does. `client_factory(service)` replaces boto3 clients
        (tests). `now` is the wall clock CloudWatch metrics are read by. `metrics_grace_seconds`:
        how long after an observation window the engine keeps reading CloudWatch for requests that
        reached the new version before it gives up judging (default: 180 s on AWS, whose load
        balancer metrics arrive a minute or more late; 0 under an emulator). `masks`: the columns to
        overwrite in a stack restored from a snapshot (a test stack's; database.py)."""
        self.pipeline = pipeline
        self.template = template
        self.settings = settings
        self.image_parameter = image_parameter
        self.data_plane = data_plane
        self.session = AwsSession(settings, environ, client_factory=client_factory)
        self.pacing = Pacing(poll_seconds, timeout_seconds, sleep=sleep, clock=clock, now=now)
        self.metrics_grace_seconds = (
            (0.0 if self.emulator else 180.0) if metrics_grace_seconds is None else metrics_grace_seconds
        )
        self._template = StackTemplate(template, image_parameter)
        self._stacks = StackOperations(self.session, self._template, pipeline, self.pacing)
        self._metrics = HealthMetrics(self._stacks)
        self._rollout = Rollout(self._stacks, self._metrics, data_plane=data_plane)
        self._database = StackDatabase(
            self.session,
            self._template,
            self.pacing,
            self.session.environ,
            database.password_secret if database is not None else None,
            masks,
        )

    # --- where, and how long: the session's and the pacing's, settable on the engine ---------------

    @property
    def region(self) -> str:
        return self.session.region

    @property
    def endpoint_url(self) -> str | None:
        return self.session.endpoint("cloudformation")

    @property
    def emulator(self) -> bool:
        """Talking to an emulator (an endpoint override outside AWS), not to AWS itself."""
        return self.session.target("cloudformation").emulated

    @property
    def poll_seconds(self) -> float:
        return self.pacing.poll_seconds

    @poll_seconds.setter
    def poll_seconds(self, value: float) -> None:
        self.pacing.poll_seconds = value

    @property
    def timeout_seconds(self) -> float:
        return self.pacing.timeout_seconds

    @timeout_seconds.setter
    def timeout_seconds(self, value: float) -> None:
        self.pacing.timeout_seconds = value

    @property
    def healthy_timeout_seconds(self) -> float:
        """How long a slot step waits for its new instances to pass the target group's health check."""
        return self.pacing.healthy_timeout_seconds

    @healthy_timeout_seconds.setter
    def healthy_timeout_seconds(self, value: float) -> None:
        self.pacing.healthy_timeout_seconds = value

    @property
    def metrics_grace_seconds(self) -> float:
        return self.pacing.metrics_grace_seconds

    @metrics_grace_seconds.setter
    def metrics_grace_seconds(self, value: float) -> None:
        self.pacing.metrics_grace_seconds = value

    # --- public: the StackEngine protocol -------------------------------------------------------

    def ready(self, stack: str) -> None:
        """The CloudFormation endpoint answers and accepts the credentials: one read-only call
        (describing the environment's stack) that gives up after a few attempts. CredentialsError
        (exit 2) or ToolMissingError (exit 1) naming the endpoint and the fix if not (session.py)."""
        check_stack_name(stack)
        with self.session.failures(f"describing stack {stack}"):
            self._stacks.describe_raw(stack, probe=True)

    def describe(self, stack: str) -> StackState:
        check_stack_name(stack)
        with self.session.failures(f"describing stack {stack}"):
            raw = self._stacks.describe_raw(stack)
        return self._stacks.state(stack, raw)

    def check_strategy(self, strategy: Strategy | None, health: Health | None = None) -> None:
        """Refuse, before any change, a deployment strategy the template gives this engine no
        means to carry out (BadInputError, exit 2). Offline: reads the template only.

        Rolling with values of its own and cutover need the rolling-update parameters; pilot,
        half, canary and blue-green need the canary slot (a second group and target group, weighted
        listener rule), a sticky canary its stickiness parameter, a phased rollout a group rule per
        group; templates/web.yaml declares them (docs/aws.md). A dark launch is refused (an ALB
        cannot mirror), and so is a group an ALB rule cannot match (a cookie, more than 3 values)."""
        why = plans.unsupported(strategy)
        if why and strategy is not None:
            raise ProfileCannotError(
                "aws",
                strategy.kind,
                why,
                hint="choose another strategy for the stages that deploy on the aws profile (docs/strategies.md: "
                "what each profile can do); a dark launch runs on the local profile",
            )
        if strategy is None or not plans.required_parameters(strategy):
            return
        doc = self._template.doc()
        missing = plans.missing_parameters(strategy, template_parameters(doc))
        if strategy.kind in plans.SLOT_STRATEGIES and not self._template.slot_logical_ids(doc)[1]:
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
        check_stack_name(stack)
        desired = self.plan(image, parameters)
        desired.update(plans.owned_defaults(self._template.parameters()))
        kind = strategy.kind if strategy is not None else "rolling"
        capacity = plans.as_int(desired.get(plans.CAPACITY_PARAMETER), 1)
        if kind not in plans.SLOT_STRATEGIES:
            desired.update(plans.rolling_values(strategy, capacity))
        started = self.pacing.clock()
        stacks = self._stacks
        with self.session.failures(f"deploying stack {stack}"):
            capabilities = self.validate(on_event=on_event)
            stacks.check_image_exists(image)
            current = stacks.settle(stack, on_event)
            if current is not None and current["StackStatus"] in DEAD:
                status = current["StackStatus"]
                why = current.get("StackStatusReason") or "an earlier create failed"
                on_event(f"stack {stack} is in {status} ({why}): deleting it, then creating it again")
                stacks.delete_and_wait(stack, current["StackId"], on_event)
                current = None
            if current is None:
                created = stacks.create(stack, image, desired, capabilities, on_event)
                self._mask_if_restored(created, on_event)
                seconds = self.pacing.clock() - started
                return replace(created, report=DeployReport(strategy="create", image=image, seconds=seconds))
            stacks.refuse_stuck(stack, current)
            if self._database.masks and current["StackStatus"] == "CREATE_COMPLETE":
                # a re-run after a crash between the create and the masking (the UPDATEs are idempotent)
                self._mask_if_restored(stacks.state(stack, current), on_event)
            run = DeployRun(stacks, stack, image, dict(current), desired, capabilities, on_event, started)
            if kind in plans.SLOT_STRATEGIES and strategy is not None:
                return self._rollout.in_slot(run, strategy, health)
            return self._rollout.rolling(run, strategy, health)

    def delete(self, stack: str, *, on_event: OnEvent = _ignore) -> None:
        """Delete the stack and wait until it is gone; a missing stack is fine.

        Refuses a stack that another pipeline (or no pipeline) created: teardown must never remove
        what it did not make."""
        check_stack_name(stack)
        with self.session.failures(f"deleting stack {stack}"):
            current = self._stacks.describe_raw(stack)
            if current is None:
                on_event(f"stack {stack} does not exist: nothing to delete")
                return
            owner = tags_of(current).get(PIPELINE_TAG)
            if owner != self.pipeline:
                raise CloudFormationError(
                    f"stack {stack} was not created by pipeline {self.pipeline!r} "
                    f"(its {PIPELINE_TAG!r} tag is {owner!r}): refusing to delete it",
                    hint=f"delete it yourself if it must go: aws cloudformation delete-stack --stack-name {stack}",
                    stack=stack,
                    status=current["StackStatus"],
                )
            self._stacks.delete_and_wait(stack, current["StackId"], on_event)
            self._database.delete_snapshot(stack, on_event=on_event)  # a test stack's seed
        # rollback-trigger alarms a deploy killed mid-update left behind (deploys delete their own)
        self._metrics.delete_alarms(stack, on_event)

    def stacks(self) -> list[str]:
        """Every live stack tagged with this pipeline's name (ephemeral ones included)."""
        names: list[str] = []
        with self.session.failures("listing stacks"):
            kwargs: dict[str, Any] = {}
            while True:
                page = self.session.call("cloudformation", "describe_stacks", **kwargs)
                for stack in page.get("Stacks", []):
                    if stack.get("StackStatus") == "DELETE_COMPLETE":
                        continue
                    if tags_of(stack).get(PIPELINE_TAG) == self.pipeline:
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
        with self.session.failures(f"verifying stack {state.name}"):
            raw = self._stacks.describe_raw(state.name)
            if raw is None:
                return VerifyReport(ok=False, requests=0, failures=1, detail=f"stack {state.name} does not exist")
            current = self._stacks.state(state.name, raw)
            expected = state.image or current.image
            url = current.url or state.url
            http = http_reaches(self.data_plane, url, self.endpoint_url)
            control = control_plane_checks(self.session, raw, expected, rollout=not self.emulator, on_event=on_event)
        if not url and not self.emulator:
            control.append(("Url output", False, "the stack has no Url output to send requests through"))
        names = tuple(name for name, _, _ in control)
        real, emulated = ((), names) if self.emulator else (names, ())
        failed = [f"{name}: {why}" for name, ok, why in control if not ok]
        requests, failures = 0, len(failed)
        if http and url:
            report = http_check.verify(url, check, on_event=on_event, sleep=self.pacing.sleep, clock=self.pacing.clock)
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

    # --- checks before any change ------------------------------------------------------------------

    def check_template(self) -> None:
        """Preflight (`pipeline validate`, and before any stage of a run starts): the template is
        readable, within CloudFormation's size limit, declares the image parameter, and cfn-lint
        finds no error in it. Offline: no AWS call, no boto3 client (CloudFormation's own
        `validate_template` and the image check run at deploy time, still before any change)."""
        self._template.check(self.region)

    def check_deploy(
        self, stack: str, image: str, *, parameters: Mapping[str, str] | None = None, on_event: OnEvent = _ignore
    ) -> None:
        """Every check `deploy` makes before it changes anything (stack name, parameters, cfn-lint,
        `validate_template`, the image exists), without deploying: promote calls it before it
        commits the image, so bad input leaves no commit to revert. TemplateError (exit 2)."""
        check_stack_name(stack)
        self.plan(image, parameters)
        with self.session.failures(f"checking a deploy of stack {stack}"):
            self.validate(on_event=on_event)
            self._stacks.check_image_exists(image)

    def plan(self, image: str, parameters: Mapping[str, str] | None = None) -> dict[str, str]:
        """The parameters a deploy of `image` sends, checked locally (no AWS call); the database's
        password comes from its secret every time (AWS never reads a NoEcho parameter back)."""
        return self._template.plan(image, {**(parameters or {}), **self._database.secret_parameters()})

    # --- the database and the fleet (pipeline/engines/aws/database.py) ---------------------------

    def fleet(self, stack: str) -> list[Replica]:
        """The instances the stack's groups run (EC2's ImageId of each), then each group's configured
        image (database.py): a contract refuses unless all of them run the release."""
        state = self.describe(stack)
        with self.session.failures(f"reading the instances of stack {stack}"):
            return self._database.fleet(state, self.image_parameter)

    def _mask_if_restored(self, state: StackState, on_event: OnEvent) -> None:
        """A stack whose database was restored from a snapshot gets its sensitive columns masked."""
        if self._database.masks and self._database.restored_from(state):
            self._database.mask(state, on_event=on_event)

    def database(self, stack: str) -> DatabaseEndpoint | None:
        return self._database.endpoint(self.describe(stack))

    def database_parameters(self, snapshot: str | None) -> dict[str, str]:
        return self._database.parameters(snapshot)

    def snapshot_database(self, stack: str, name: str, *, on_event: OnEvent = _ignore) -> str:
        with self.session.failures(f"taking a snapshot of the database of stack {stack}"):
            return self._database.snapshot(stack, name, on_event=on_event)

    def validate(self, *, on_event: OnEvent = _ignore) -> list[str]:
        """cfn-lint, then CloudFormation's `validate_template`; returns the capabilities it needs.

        Done once per template text, endpoint and region in a process."""
        return self._template.validate(self.session, on_event=on_event)


__all__ = ["CloudFormationEngine"]
