"""How a deploying stage (UpdateStack, Promote) moves a stack to a new image, and the health
signals that roll it back by themselves (a "cluster immune system").

Plain data, like the rest of the spec: the engines (local Docker, CloudFormation) carry it out
inside `pipeline run stage`, so the same definition renders unchanged to every CI target.

    UpdateStack(..., strategy=Canary(steps=(10, 50, 100), observe_seconds=20),
                health=Health(max_error_rate=0.01, max_p99_ratio=2.0))
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, Field, model_validator

from pipeline.model import Spec, StageOutputs


class Health(Spec):
    """Thresholds watched through the load balancer during every observation window.

    The new version's requests are measured apart from the old version's; a breach rolls the
    stack back to the old image and fails the stage with the numbers that caused it."""

    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    """Largest share of the new version's requests that may fail (5xx, resets, timeouts)."""
    max_p99_ratio: float = Field(default=2.0, gt=1)
    """Largest p99 latency of the new version as a multiple of the old version's (the baseline)."""
    min_p99_ms: float = Field(default=20.0, ge=0)
    """A p99 below this many milliseconds is never a breach (noise on fast pages)."""
    requests_per_second: float = Field(default=50.0, gt=0, le=1000)
    """Probe load sent through the balancer while observing, besides any real traffic."""
    min_requests: int = Field(default=20, ge=1)
    """Fewest requests to the new version before a window may pass."""


class Cutover(Spec):
    """Stop every old replica, then start the new ones: simple, with downtime (measured)."""

    kind: Literal["cutover"] = "cutover"
    observe_seconds: float = Field(default=0.0, ge=0, le=3600)
    """Seconds to watch the health signals after the new replicas take traffic (a breach rolls back)."""


class Rolling(Spec):
    """Replace replicas in batches, each health-checked before it gets traffic (the default)."""

    kind: Literal["rolling"] = "rolling"
    batch_size: int | None = Field(default=None, ge=1)
    """Replicas replaced at a time; default: the template's UpdatePolicy MaxBatchSize."""
    min_in_service: int | None = Field(default=None, ge=0)
    """Replicas that keep serving during the update; default: the template's MinInstancesInService."""
    observe_seconds: float = Field(default=0.0, ge=0, le=3600)
    """Watch health signals after each batch before the next."""


class Pilot(Spec):
    """One replica of the new version first; observe; then the rest."""

    kind: Literal["pilot"] = "pilot"
    observe_seconds: float = Field(default=10.0, ge=0, le=3600)
    """Seconds to watch the pilot replica's health signals before the rest follow."""


class Half(Spec):
    """Half the fleet first; observe; then the other half."""

    kind: Literal["half"] = "half"
    observe_seconds: float = Field(default=10.0, ge=0, le=3600)
    """Seconds to watch the first half's health signals before the other half follows."""


class Canary(Spec):
    """A share of the traffic by balancer weight, step by step, with an observation window each."""

    kind: Literal["canary"] = "canary"
    steps: tuple[int, ...] = (10, 50, 100)
    """Percent of traffic to the new version per step; increasing, ending at 100."""
    observe_seconds: float = Field(default=10.0, ge=0, le=3600)
    """Seconds to watch the health signals at each step before the next."""

    @model_validator(mode="after")
    def _steps_climb_to_100(self) -> Self:
        steps = self.steps
        if not steps or steps[-1] != 100 or any(not 0 < s <= 100 for s in steps):
            raise ValueError(f"canary steps {steps} must be percentages in 1..100 ending at 100")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"canary steps {steps} must increase")
        return self


class BlueGreen(Spec):
    """A full second set of replicas, then the balancer switches at once; the old set stays warm
    for `keep_old_seconds`, so switching back is instant."""

    kind: Literal["blue-green"] = "blue-green"
    observe_seconds: float = Field(default=10.0, ge=0, le=3600)
    """Seconds to watch the new set's health signals after the switch (a breach switches back)."""
    keep_old_seconds: float = Field(default=60.0, ge=0, le=86400)
    """Seconds the old set keeps running, unrouted, after the switch: a deploy of the old image until
    then is an instant switch back (on the aws profile the deploy waits this long)."""


Strategy = Annotated[Cutover | Rolling | Pilot | Half | Canary | BlueGreen, Field(discriminator="kind")]
STRATEGY_KINDS: dict[str, type[Spec]] = {
    "cutover": Cutover,
    "rolling": Rolling,
    "pilot": Pilot,
    "half": Half,
    "canary": Canary,
    "blue-green": BlueGreen,
}


def coerce_strategy(value: Any) -> Any:
    """Let users write strategy="canary" for the kind's defaults."""
    if isinstance(value, str):
        if value not in STRATEGY_KINDS:
            import difflib

            close = difflib.get_close_matches(value, list(STRATEGY_KINDS), n=1)
            suggestion = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown strategy {value!r}{suggestion}; choose one of {', '.join(STRATEGY_KINDS)}")
        return STRATEGY_KINDS[value]()
    return value


StrategyChoice = Annotated[Strategy, BeforeValidator(coerce_strategy)]
"""A stage's `strategy` field: a strategy object, or a kind's name for its defaults."""


class DeployOutputs(StageOutputs):
    """The key numbers of a deployment, as outputs of the stage that made it."""

    strategy: str = ""
    """The strategy that moved the stack (`none` when nothing had to change)."""
    failed_requests: str = ""
    """Answers the balancer failed while the stack changed; empty when the engine cannot see them."""
    p99_ms: str = ""
    """99th percentile latency during the change, in ms."""
    downtime_seconds: str = ""
    """A cutover's measured downtime."""
    rolled_back: str = ""
    """'true' after a health breach rolled the change back."""
    time_to_detect: str = ""
    """Seconds from the new version's first traffic to the breach."""
    time_to_restore: str = ""
    """Seconds from the breach until the old version served everything again."""
