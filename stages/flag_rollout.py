"""FlagRollout: turn a feature flag on for a growing share of users, judged through the balancer,
switched off by itself on a breach. No deploy: the environment's flag store changes, nothing else."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Literal, Self

from pydantic import Field, model_validator

from pipeline.errors import Problem
from pipeline.flags.spec import check_flag_values
from pipeline.model import FlagValue, Name, Profile, Stage, StageOutputs
from pipeline.strategy import Health

if TYPE_CHECKING:
    from pipeline.model import Definition


class FlagRolloutOutputs(StageOutputs):
    flag: str
    """The flag rolled out."""
    value: str
    """The rollout's value (JSON)."""
    percent: str
    """The share of users on the value when the stage ended (0 after a breach)."""
    steps: str = ""
    """How each step went, e.g. '10%: passed; 50%: breach'."""
    rolled_back: str = ""
    """'true' after a breach switched the flag off."""
    breach: str = ""
    """What breached the health thresholds (empty when nothing did)."""
    time_to_detect: str = ""
    """Seconds from the breaching step's start to the decision."""
    time_to_restore: str = ""
    """Seconds from the decision until every replica of the store served the flag off."""
    on_requests: str = ""
    """Requests of the variant `on` (users given the value) over every window, through the balancer."""
    on_failed: str = ""
    """Of those, the failed ones."""
    on_p99_ms: str = ""
    """Their 99th percentile latency, in ms."""
    off_requests: str = ""
    """Requests of the variant `off` over the same windows."""
    off_failed: str = ""
    """Of those, the failed ones."""
    off_p99_ms: str = ""
    """Their 99th percentile latency, in ms."""


class FlagRollout(Stage):
    """Give `value` to `steps` percent of the users of `environment`, one step at a time.

    In each step's window the balancer's request log is split by variant (the app says which
    variant it served in a response header); the `on` variant is judged against `health` with
    `off` as the baseline. A breach puts the flag back to 0 % at once and fails the stage with
    the numbers. Users are bucketed by their targeting key, so one user keeps one variant.

    Example:
        FlagRollout(name="release-greeting", environment="production", flag="new-greeting",
                    steps=(10, 50, 100), observe_seconds=20, health=Health(max_error_rate=0.01))
    """

    kind: Literal["flag-rollout"] = "flag-rollout"
    environment: Name
    """The environment whose flag store the rollout changes (its balancer judges the variants)."""
    flag: Name
    """A flag the pipeline declares (Pipeline(flags=[Flag(...)]))."""
    value: FlagValue = True
    """What users in the rollout get (of the flag's type)."""
    steps: tuple[int, ...] = (10, 50, 100)
    """Percent of users per step, increasing, in 1..100."""
    observe_seconds: float = Field(default=10.0, ge=0, le=3600)
    """How long each step is watched before the next."""
    health: Health = Health()
    """The thresholds each variant is judged against in every step; a breach switches the flag off."""
    path: str = "/"
    """The page the flag changes: the probe's simulated users (each its own X-User) request it."""

    executor: ClassVar[str] = "pipeline.executors.flag_rollout:FlagRolloutExecutor"
    outputs: ClassVar[type[StageOutputs]] = FlagRolloutOutputs
    approvable: ClassVar[bool] = True
    uses_profile: ClassVar[bool] = True
    cannot_run_on: ClassVar[Mapping[Profile, str]] = {
        "aws": "a FlagRollout judges each variant through the local balancer's request log, and nothing reads "
        "an ALB's per variant yet; on aws, move the flag with `pipeline flag set` (docs/flags.md)"
    }
    own_job: ClassVar[bool] = True

    @model_validator(mode="after")
    def _steps_increase(self) -> Self:
        steps = self.steps
        if not steps or any(not 0 < s <= 100 for s in steps):
            raise ValueError(f"steps {steps} must be percentages in 1..100")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"steps {steps} must increase")
        return self

    def environment_name(self) -> str | None:
        return self.environment

    def check(self, spec: Definition, where: str) -> list[Problem]:
        if not spec.flags or self.flag not in {f.name for f in spec.flags}:
            return check_flag_values({self.flag: self.value}, spec.flags, f"{where}.flag", stage=self.name)
        return check_flag_values({self.flag: self.value}, spec.flags, f"{where}.value", stage=self.name)
