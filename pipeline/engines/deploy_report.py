"""What a deployment did, in the numbers the load balancer saw: plain, engine-neutral data.

Every stack engine fills these (`StackEngine.deploy`), run reports and `HealthBreachError` carry
them; they import nothing of the package, so errors and reports can name them without a circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class VersionStats:
    """Requests one version of the service answered through the balancer in some window."""

    requests: int = 0
    errors: int = 0
    """Answers with a 5xx status, and connections the version refused, reset or let time out."""
    p50_ms: float = 0.0
    p99_ms: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def describe(self) -> str:
        if not self.requests:
            return "no requests"
        return (
            f"{self.errors} of {self.requests} requests failed ({self.error_rate:.1%}), "
            f"p50 {_ms(self.p50_ms)}, p99 {_ms(self.p99_ms)}"
        )


def _ms(value: float) -> str:
    """Milliseconds; exactly 0 comes from a clock that counts whole milliseconds (nginx's)."""
    return "<1 ms" if value == 0 else f"{value:.1f} ms"


@dataclass(frozen=True)
class DeployStep:
    """One step of a deployment: what changed, and what the observation window (if any) saw."""

    what: str
    """E.g. 'canary 10%: 1 new replica, weights 2:9', 'batch 1 of 2', 'switch to the green set'."""
    new_share: float
    """Share of the routed traffic the new version got during the step (0..1)."""
    seconds: float
    """How long the step took, its observation window included."""
    verdict: str = "not observed"
    """'passed', 'breach' or 'not observed' (no window for this step)."""
    new: VersionStats = field(default_factory=VersionStats)
    old: VersionStats = field(default_factory=VersionStats)
    """The old version in the same window (or, when it got no traffic, before the change)."""
    groups: tuple[tuple[str, VersionStats, VersionStats], ...] = ()
    """A phased rollout's window per group of users: (group, new version, old version); the
    group "" is everyone else."""


@dataclass(frozen=True)
class DeployReport:
    """What one `deploy` did, with the numbers the load balancer saw. Engine-neutral."""

    strategy: str
    """The strategy kind carried out ('create' when the stack was made from nothing, 'none' when
    it already ran the image, 'switch-back' when a warm blue-green set took over again)."""
    image: str
    previous_image: str | None = None
    steps: tuple[DeployStep, ...] = ()
    new: VersionStats = field(default_factory=VersionStats)
    """The new version over every observation window."""
    old: VersionStats = field(default_factory=VersionStats)
    """The old version over the same windows (the baseline)."""
    served: VersionStats | None = None
    """Every request the balancer answered while the stack changed (failed = what users saw
    fail); None when the engine could not see them."""
    seconds: float = 0.0
    """Time to complete (to restore, after a breach)."""
    downtime_seconds: float | None = None
    """Cutover: from the old version's stop until the new one answers through the balancer."""
    rolled_back: bool = False
    breach: str = ""
    """The numbers that caused the rollback, and the threshold they crossed."""
    time_to_detect: float | None = None
    """From the new version's first routed request to the breach decision."""
    time_to_restore: float | None = None
    """From the breach decision until the balancer routes to the old version only."""

    @property
    def failed_requests(self) -> int | None:
        return self.served.errors if self.served is not None else None

    @property
    def p99_ms(self) -> float | None:
        return self.served.p99_ms if self.served is not None and self.served.requests else None

    def summary(self) -> str:
        """One line for a run report."""
        parts = [f"{self.strategy} to {self.image} in {self.seconds:.1f} s"]
        if self.steps:
            parts.append(f"{len(self.steps)} step{'s' if len(self.steps) != 1 else ''}")
        if self.new.requests:
            parts.append(f"new version: {self.new.describe()}")
        if self.old.requests:
            parts.append(f"old version: {self.old.describe()}")
        if self.served is not None:
            parts.append(f"{self.served.errors} of {self.served.requests} requests failed during the change")
        if self.downtime_seconds is not None:
            parts.append(f"downtime {self.downtime_seconds:.2f} s")
        if self.rolled_back:
            parts.append(f"rolled back: {self.breach}")
        return "; ".join(parts)
