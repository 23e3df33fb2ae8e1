"""How a deploying stage (UpdateStack, Promote) moves a stack to a new image, and the health
signals that roll it back by themselves (a "cluster immune system").

Plain data, like the rest of the spec: the engines (local Docker, CloudFormation) carry it out
inside `pipeline run stage`, so the same definition renders unchanged to every CI target.

    UpdateStack(..., strategy=Canary(steps=(10, 50, 100), observe_seconds=20),
                health=Health(max_error_rate=0.01, max_p99_ratio=2.0))
"""

from __future__ import annotations

import itertools
import re
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
    sticky: bool = False
    """Split users, not requests: each user (a cookie the balancer sets) stays on one version for
    the whole step, and one on the new version stays there at the next step. Without it each
    request is split by weight, so one user may see both versions within a step."""

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


# --- traffic shaping: user groups and dark launches ----------------------------------------------

_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,40}$")
_COOKIE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_MATCH_VALUE = re.compile(r"^[A-Za-z0-9._:@+/=-]{1,128}$")
_GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
RESERVED_HEADERS = frozenset({"host", "cookie", "content-length", "transfer-encoding", "connection"})
USER_COOKIE = "pipeline_user"
"""The cookie the local balancer sets to keep a user on one version (a sticky canary)."""


class Group(Spec):
    """A group of users, recognised at the balancer by a request header or a cookie whose value is
    one of `values` (exact, regardless of case, as an ALB listener rule matches a header).

        Group(name="internal", header="X-User-Group", values=("internal",))
        Group(name="beta", cookie="beta", values=("1",))
    """

    name: str
    """Names the group in the reports (lower case letters, digits, - and _)."""
    header: str | None = None
    """The request header to match (e.g. one the edge or the login sets)."""
    cookie: str | None = None
    """The cookie to match (local profile only: an ALB rule cannot match one cookie exactly)."""
    values: tuple[str, ...]
    """The header's (or cookie's) values that put a request in the group."""

    @model_validator(mode="after")
    def _one_matcher(self) -> Self:
        if not _GROUP_NAME.match(self.name):
            raise ValueError(
                f"group name {self.name!r} must be 1-32 lower case letters, digits, '-' or '_', starting with a "
                "letter or digit"
            )
        if (self.header is None) == (self.cookie is None):
            raise ValueError(f"group {self.name!r} matches either a header or a cookie: give exactly one of them")
        if self.header is not None:
            if not _HEADER_NAME.match(self.header):
                raise ValueError(f"group {self.name!r}: header {self.header!r} must be 1-40 letters, digits or '-'")
            if self.header.lower() in RESERVED_HEADERS:
                raise ValueError(
                    f"group {self.name!r}: the {self.header} header cannot name a group"
                    + (" (use cookie=... to match a cookie)" if self.header.lower() == "cookie" else "")
                )
        if self.cookie is not None:
            if not _COOKIE_NAME.match(self.cookie):
                raise ValueError(f"group {self.name!r}: cookie {self.cookie!r} must be 1-64 letters, digits or '_'")
            if self.cookie == USER_COOKIE:
                raise ValueError(f"group {self.name!r}: the cookie {USER_COOKIE} is the balancer's own")
        if not 1 <= len(self.values) <= 10:
            raise ValueError(f"group {self.name!r} needs 1 to 10 values")
        for value in self.values:
            if not _MATCH_VALUE.match(value):
                raise ValueError(
                    f"group {self.name!r}: value {value!r} must be 1-128 letters, digits or . _ : @ + / = - "
                    "(matched exactly; no wildcards, spaces or quotes)"
                )
        return self

    @property
    def matcher(self) -> str:
        """E.g. `header X-User-Group` or `cookie beta`."""
        return f"header {self.header}" if self.header is not None else f"cookie {self.cookie}"


class Phased(Spec):
    """The new version for groups of users first, one more group per phase, then for everyone;
    an observation window each. Requests outside the phase's groups stay on the old version.

        Phased(groups=(Group(name="internal", header="X-User-Group", values=("internal",)),
                       Group(name="beta", cookie="beta", values=("1",))), observe_seconds=60)
    """

    kind: Literal["phased"] = "phased"
    groups: tuple[Group, ...]
    """In the order they get the new version; everyone else follows in the last phase."""
    observe_seconds: float = Field(default=10.0, ge=0, le=3600)
    """Seconds to watch the health signals of each phase before the next group follows."""

    @model_validator(mode="after")
    def _distinct_groups(self) -> Self:
        if not self.groups:
            raise ValueError("a phased rollout needs at least one group (then everyone follows)")
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"group names must be distinct: {', '.join(names)}")
        return self


UserFacing = Annotated[Canary | BlueGreen | Phased, Field(discriminator="kind")]
"""What follows a dark launch: a strategy that runs the new version beside the old set."""

_METHOD = re.compile(r"^[A-Z]{1,16}$")


class DarkLaunch(Spec):
    """The new version first gets a copy of the live traffic (the balancer mirrors each request to
    it and throws its answers away) and is judged on its own answers before any user reaches it;
    then `then` routes users to it. A broken release is caught with no user request failing.

        DarkLaunch(observe_seconds=30, then=Canary(steps=(10, 100), sticky=True))
    """

    kind: Literal["dark-launch"] = "dark-launch"
    observe_seconds: float = Field(default=10.0, gt=0, le=3600)
    """The dark window: how long the mirrored traffic is judged."""
    mirror_methods: tuple[str, ...] = ("GET", "HEAD")
    """Methods mirrored to the new version; others (writes) are not, so a copy never writes twice."""
    then: UserFacing = Canary()
    """How users reach the new version once its dark window passed (canary, blue-green, phased)."""

    @model_validator(mode="after")
    def _methods(self) -> Self:
        if not self.mirror_methods or any(not _METHOD.match(m) for m in self.mirror_methods):
            raise ValueError(f"mirror_methods {self.mirror_methods} must be upper-case HTTP methods, at least one")
        return self


Strategy = Annotated[
    Cutover | Rolling | Pilot | Half | Canary | BlueGreen | Phased | DarkLaunch, Field(discriminator="kind")
]
STRATEGY_KINDS: dict[str, type[Spec]] = {
    "cutover": Cutover,
    "rolling": Rolling,
    "pilot": Pilot,
    "half": Half,
    "canary": Canary,
    "blue-green": BlueGreen,
    "phased": Phased,
    "dark-launch": DarkLaunch,
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
