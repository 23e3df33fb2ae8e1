"""One interface for the two kinds of environment: Docker on this machine, CloudFormation on AWS.

A stack runs one image behind a load balancer. `deploy` creates or updates it idempotently
(update and rollback are the same operation with a different image); `delete` removes everything
of the stack and nothing else; `describe` reads the real world (never an in-memory cache).
Stage executors talk only to this protocol; each profile (`pipeline.profiles`) hands out its engine.

`deploy` takes a deployment strategy (`pipeline.strategy`: cutover, rolling, pilot, half, canary,
blue-green) and the health thresholds watched while the new version takes traffic. The returned
state carries a `DeployReport` (what was done, and the numbers the balancer saw); a health breach
rolls the stack back by itself and raises `HealthBreachError`, whose `report` has the same numbers.
See docs/strategies.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.engines.deploy_report import DeployReport
from pipeline.model import Profile, Verify
from pipeline.strategy import Health, Strategy

OnEvent = Callable[[str], None]


def _ignore(text: str) -> None:
    pass


@dataclass(frozen=True)
class StackState:
    """What a stack is, as observed now."""

    name: str
    exists: bool
    image: str | None = None
    """The image every replica / instance runs (None while mixed or absent)."""
    url: str | None = None
    status: str = "absent"
    """'ready', 'updating', 'failed' or 'absent' (engine-specific detail in `details`)."""
    parameters: Mapping[str, str] = field(default_factory=dict)
    """Template parameters the stack runs with (aws) or their local equivalent."""
    details: Mapping[str, str] = field(default_factory=dict)
    report: DeployReport | None = field(default=None, compare=False)
    """Set on the state `deploy` returns: what the deployment did (not part of the stack's
    identity, so a deploy's state still equals a later `describe`)."""


@dataclass(frozen=True)
class DatabaseEndpoint:
    """How this machine reaches a stack's database (the Migrate stage, `pipeline status`)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    name: str

    @property
    def url(self) -> str:
        """A postgresql:// URL (with the password: never log it; `where` says it without)."""
        from urllib.parse import quote

        return f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}@{self.host}:{self.port}/{quote(self.name, safe='')}"

    @property
    def where(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.name}"


@dataclass(frozen=True)
class Replica:
    """One server of a stack's fleet, as the engine observes it (a container, an instance group)."""

    name: str
    image: str
    serving: bool = True
    """False: running but not routed (a blue-green set kept warm, ready to switch back to)."""


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of verifying a stack through its load balancer."""

    ok: bool
    requests: int
    failures: int
    detail: str = ""
    """The first failure, or a one-line summary."""
    real: tuple[str, ...] = ()
    """Checks that ran against the real data plane (HTTP through the balancer)."""
    emulated: tuple[str, ...] = ()
    """Checks that only an emulator's control plane could answer (stack status, image id)."""


DEPLOY_OWNED_PARAMETERS = (
    "CanaryImageId",
    "CanaryCapacity",
    "PrimaryWeight",
    "CanaryWeight",
    "RollingMaxBatchSize",
    "RollingMinInService",
    "RollingPauseTime",
)
"""Template parameters a deployment strategy owns (the canary slot and the rolling-update policy of
templates/web.yaml): the state of one deploy, never carried to another stack or another update."""
DATABASE_OWNED_PARAMETERS = ("DatabaseSnapshot", "DatabasePassword")
"""The database's parameters: the snapshot only a stack's creation reads, and the password (a NoEcho
parameter AWS never reads back; the aws engine fills it from the secret each time). Never carried
from one stack to another, never shown."""
DEPLOY_OWNED_PATTERN = re.compile(r"^(CanaryStickySeconds|Group[0-9]+(Header|Values))$")
"""More of them, by name: a sticky canary's stickiness and a phased rollout's group rules."""


class StackEngine(Protocol):
    """Create, update, describe, verify and delete stacks of one pipeline on one profile.

    The whole contract is here: executors call these methods and nothing else (no probing for
    optional methods). `BaseStackEngine` gives the checks their no-op defaults."""

    profile: Profile

    def describe(self, stack: str) -> StackState: ...

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
        """Create the stack, or move it to `image` with `strategy` (None: rolling, as the
        template's UpdatePolicy says); idempotent. While the new version takes traffic, `health`
        is judged through the balancer in each of the strategy's observation windows (None: no
        judging; the windows only pace the steps). A breach rolls the stack back to the old
        image, then raises HealthBreachError. The returned state's `report` says what was done."""
        ...

    def delete(self, stack: str, *, on_event: OnEvent = _ignore) -> None:
        """Remove every resource of the stack; a missing stack is not an error."""
        ...

    def verify(self, state: StackState, check: Verify, *, on_event: OnEvent = _ignore) -> VerifyReport: ...

    def stacks(self) -> list[str]:
        """Names of every stack of this pipeline that exists now (to find orphans)."""
        ...

    def ready(self, stack: str) -> None:
        """Before a run: the engine answers (the Docker engine, the AWS endpoint and credentials),
        else a PipelineError naming what is missing and the fix. `stack` is the environment's
        stack, which an engine may describe as its read-only probe. No change."""
        ...

    def check_template(self) -> None:
        """Preflight: the template is one this engine can run (TemplateError, exit 2). Offline."""
        ...

    def check_strategy(self, strategy: Strategy | None, health: Health | None = None) -> None:
        """Preflight: this engine can carry out `strategy` with this template (BadInputError). Offline."""
        ...

    def check_deploy(
        self, stack: str, image: str, *, parameters: Mapping[str, str] | None = None, on_event: OnEvent = _ignore
    ) -> None:
        """Every check `deploy` makes before it changes anything, without deploying: promote calls
        it before it commits the image, so bad input leaves no commit to revert."""
        ...

    def carried_parameters(self, state: StackState, image_parameter: str) -> dict[str, str] | None:
        """The parameters a stack runs with that an update to another image (or a copy of the
        stack) keeps: all but the image and the deploy-owned ones. None when there are none."""
        ...

    def fleet(self, stack: str) -> list[Replica]:
        """Every server of the stack that runs now, with its image, serving or kept warm (a
        contract migration may run only when none runs an older release)."""
        ...

    def database(self, stack: str) -> DatabaseEndpoint | None:
        """How to reach the stack's database from this machine (None: the stack has none)."""
        ...

    def prepare_database(self, stack: str, *, on_event: OnEvent = _ignore) -> DatabaseEndpoint | None:
        """The stack's database, made ahead of the stack when the engine can (a first release's
        expand runs before the promote that creates the stack); None when it cannot or the
        template declares none."""
        ...

    def database_parameters(self, snapshot: str | None) -> dict[str, str]:
        """The template parameters that make a new stack's database start from `snapshot` (None:
        empty); {} when the template declares no database."""
        ...

    def snapshot_database(self, stack: str, name: str, *, on_event: OnEvent = _ignore) -> str:
        """A snapshot of the stack's database, called `name` (deleted with the stack that bears
        that name); returns its id for `database_parameters`."""
        ...


class BaseStackEngine:
    """Defaults for the parts of the contract an engine may not need (checks with nothing to check)."""

    def ready(self, stack: str) -> None:
        return None

    def check_template(self) -> None:
        return None

    def check_strategy(self, strategy: Strategy | None, health: Health | None = None) -> None:
        return None

    def check_deploy(
        self, stack: str, image: str, *, parameters: Mapping[str, str] | None = None, on_event: OnEvent = _ignore
    ) -> None:
        return None

    def carried_parameters(self, state: StackState, image_parameter: str) -> dict[str, str] | None:
        if not state.exists or not state.parameters:
            return None
        skipped = {image_parameter, *DEPLOY_OWNED_PARAMETERS, *DATABASE_OWNED_PARAMETERS}
        return {k: v for k, v in state.parameters.items() if k not in skipped and not DEPLOY_OWNED_PATTERN.match(k)}

    def fleet(self, stack: str) -> list[Replica]:
        state = self.describe(stack)  # type: ignore[attr-defined]
        return [Replica(name=stack, image=state.image)] if state.exists and state.image else []

    def database(self, stack: str) -> DatabaseEndpoint | None:
        return None

    def prepare_database(self, stack: str, *, on_event: OnEvent = _ignore) -> DatabaseEndpoint | None:
        return self.database(stack)

    def database_parameters(self, snapshot: str | None) -> dict[str, str]:
        return {}

    def snapshot_database(self, stack: str, name: str, *, on_event: OnEvent = _ignore) -> str:
        from pipeline.errors import StackOperationError

        raise StackOperationError(f"stack {stack} has no database to take a snapshot of")


__all__ = [
    "DATABASE_OWNED_PARAMETERS",
    "DEPLOY_OWNED_PARAMETERS",
    "DEPLOY_OWNED_PATTERN",
    "BaseStackEngine",
    "DatabaseEndpoint",
    "OnEvent",
    "Replica",
    "StackEngine",
    "StackState",
    "VerifyReport",
]
