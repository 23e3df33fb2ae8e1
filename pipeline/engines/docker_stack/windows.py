"""A deployment's observation windows: after each step of a strategy, the health signals of the new
version are judged against the thresholds (and the old version's numbers) until they pass or breach.

The signals come from the balancer's request log (access_log.py); while a strategy observes, a
probe sends steady load through the balancer so that a window has requests to judge. This module
keeps the steps the deployment report lists; rolling back after a breach is deployment.py's job.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.engines.deploy_report import DeployReport, DeployStep, VersionStats
from pipeline.engines.docker_stack.access_log import AccessLog
from pipeline.engines.docker_stack.shaping import OTHERS
from pipeline.engines.docker_stack.shaping_logs import ShapingLogs
from pipeline.engines.http_check import Verdict, judge, numbers
from pipeline.engines.stack import OnEvent
from pipeline.engines.user_load import User, UserLoad
from pipeline.errors import StackOperationError
from pipeline.strategy import Group, Health, Strategy

POLL = 0.25
"""Seconds between reads of the request log during an observation window."""
BASELINE_MAX = 10.0
"""Longest wait for the old version's baseline (min_requests answers) before the first change."""
EXTEND_MIN = 10.0
"""A window short of min_requests to the new version may run this much longer (or observe_seconds)."""


class Breached(Exception):
    """A window's verdict was a breach (internal). Raised again once the stack is back on the
    old version, with the times of detection and restore."""

    def __init__(self, what: str, reason: str, detected: float | None = None, restored: float | None = None) -> None:
        super().__init__(reason)
        self.what = what
        self.reason = reason
        self.detected = detected
        self.restored = restored


class Windows:
    """The health signals of one deployment, its observation windows and the steps it took."""

    def __init__(self, strategy: Strategy, health: Health | None, on_event: OnEvent) -> None:
        self.strategy = strategy
        self.health = health
        self.on_event = on_event
        self.log: AccessLog | None = None
        """The balancer's request log, once it is on."""
        self.shaped: ShapingLogs | None = None
        """The mirror's and the groups' logs (a dark launch, a phased rollout)."""
        self.baseline = VersionStats()
        self.steps: list[DeployStep] = []
        self.windows: list[tuple[float, float]] = []
        """(start, end) of every observation window, in epoch seconds."""
        self.exposed: float | None = None
        """time.monotonic() when the new version first took traffic."""
        self.url: str | None = None
        """The balancer's URL, once the probe runs."""
        self.group_probe: UserLoad | None = None

    @property
    def observing(self) -> bool:
        """Whether the strategy's steps are judged (health thresholds and a window length)."""
        return self.health is not None and self.strategy.observe_seconds > 0

    def open_log(self, lb: Any, port: int, network: str) -> bool:
        """Start the balancer's request log afresh; False (and said so) when it cannot be."""
        log = AccessLog(lb, port, network, self.on_event)
        try:
            log.truncate()
        except StackOperationError as exc:
            self.on_event(f"no health signals for this update: {exc}")
            return False
        self.log = log
        self.shaped = ShapingLogs(log)
        return True

    def watch_mirror(self) -> None:
        """A dark launch: the mirrored requests' answers count for the new version from now on."""
        if self.shaped is not None:
            self.shaped.watch_mirror()

    def watch_groups(self) -> None:
        """A phased rollout: count each group's requests apart from now on."""
        if self.shaped is not None:
            self.shaped.watch_groups()

    def read(self) -> None:
        """Parse what the balancer logged since the last read (every log that is on)."""
        if self.log is not None:
            self.log.read()
        if self.shaped is not None:
            self.shaped.read()

    def assign(self, replicas: list[Any], *, new: bool) -> None:
        """Requests these replicas answer from now on count for the new (or old) version."""
        if self.log is not None:
            self.log.assign(replicas, new=new)

    def take_baseline(self, url: str) -> None:
        """Start the probe on `url` and take the old version's numbers before the first change."""
        assert self.log is not None
        assert self.health is not None
        log = self.log
        self.url = url
        log.start_probe(url, self.health.requests_per_second)
        begin = time.time()
        deadline = time.monotonic() + BASELINE_MAX
        while time.monotonic() < deadline:
            time.sleep(POLL)
            log.read()
            if log.stats(begin, new=False).requests >= self.health.min_requests:
                break
        self.baseline = log.stats(begin, new=False)
        self.on_event(f"baseline of the old version: {self.baseline.describe()}")

    def probe_groups(self, groups: tuple[Group, ...]) -> None:
        """A phased rollout: besides the anonymous probe, half as many requests again as members of
        the routed `groups` in turn (each group's header or cookie, its first value), so the new
        version has requests to be judged on even when no user of those groups calls."""
        if self.group_probe is not None:
            self.group_probe.stop()
            self.group_probe = None
        if self.url is None or self.health is None or not groups:
            return
        users = [
            User(g.name, headers={g.header: g.values[0]})
            if g.header
            else User(g.name, cookies={str(g.cookie): g.values[0]})
            for g in groups
        ]
        self.group_probe = UserLoad(self.url, users, rate=self.health.requests_per_second / 2, timeout=5.0)
        self.group_probe.__enter__()

    def close(self) -> None:
        """Stop the probes and read the last lines (safe to call twice)."""
        if self.group_probe is not None:
            self.group_probe.stop()
            self.group_probe = None
        if self.log is not None and not self.log.closed:
            self.log.close()
            if self.shaped is not None:
                self.shaped.read()

    def expose(self) -> None:
        """The new version takes traffic (the first time counts, for the time to detect)."""
        if self.exposed is None:
            self.exposed = time.monotonic()

    def record(self, what: str, share: float, started: float) -> None:
        """A step that is not observed."""
        self.steps.append(DeployStep(what, share, time.monotonic() - started))

    def window(
        self, what: str, share: float, started: float, *, seconds: float | None = None, groups: tuple[Group, ...] = ()
    ) -> None:
        """One observation window after a step: judge the health signals; raise Breached on a
        breach (the caller rolls back). Records the step either way. `seconds`: the window's
        length when it is not the strategy's (the strategy after a dark launch); `groups`: the
        groups of users the new version serves, each also judged on its own."""
        seconds = self.strategy.observe_seconds if seconds is None else seconds
        log = self.log
        if seconds <= 0:
            self.record(what, share, started)
            return
        if log is None or self.health is None:
            self.on_event(f"{what}: waiting {seconds:g} s (no health thresholds to watch)")
            time.sleep(seconds)
            self.record(what, share, started)
            return
        health = self.health
        self.on_event(f"{what}: observing for {seconds:g} s")
        begin = time.time()
        end = begin + seconds
        give_up = end + max(EXTEND_MIN, seconds)
        waited = False
        while True:
            time.sleep(POLL)
            self.read()
            if log.alert_raised():
                self.windows.append((begin, time.time()))
                self.steps.append(DeployStep(what, share, time.monotonic() - started, "breach"))
                raise Breached(what, "an alert was raised through the balancer's alert route")
            now = time.time()
            new = log.stats(begin, new=True)
            same = log.stats(begin, new=False)
            old = same if same.requests >= health.min_requests else self.baseline
            verdict = judge(new, old, health, final=now >= end, exhausted=now >= give_up)
            verdict = self._judge_groups(verdict, groups, begin, old, health)
            if verdict.state == "wait":
                if now >= end and not waited:
                    waited = True
                    self.on_event(
                        f"{what}: {new.requests} requests reached the new version, {health.min_requests} are "
                        "needed: observing longer"
                    )
                continue
            self.windows.append((begin, now))
            outcome = "passed" if verdict.state == "pass" else "breach"
            per_group = self._group_numbers(groups, begin)
            self.steps.append(DeployStep(what, share, time.monotonic() - started, outcome, new, old, per_group))
            if verdict.state == "pass":
                self.on_event(f"{what}: healthy ({verdict.numbers})")
                return
            raise Breached(what, verdict.reason)

    def _judge_groups(
        self, verdict: Verdict, groups: tuple[Group, ...], begin: float, old: VersionStats, health: Health
    ) -> Verdict:
        """Each group the new version serves on its own: a group that fails more than the limit
        is a breach even when the others' requests would dilute it in the whole."""
        if verdict.state == "breach" or self.shaped is None:
            return verdict
        for group in groups:
            mine = self.shaped.group_stats(group.name, begin, new=True)
            if mine.requests >= health.min_requests and mine.error_rate > health.max_error_rate:
                reason = (
                    f"error rate {mine.error_rate:.1%} of the new version for group {group.name} is above the limit "
                    f"{health.max_error_rate:.1%}; {numbers(mine, old)}"
                )
                return Verdict("breach", verdict.new, verdict.old, reason)
        return verdict

    def _group_numbers(
        self, groups: tuple[Group, ...], begin: float
    ) -> tuple[tuple[str, VersionStats, VersionStats], ...]:
        """Per group seen in the groups log since `begin` (the phase's, and any other: everyone
        else is the group ""): the new and the old version's numbers."""
        if not groups or self.shaped is None:
            return ()
        names = [g.name for g in groups] + sorted(set(self.shaped.group_hits) - {g.name for g in groups} - {OTHERS})
        return tuple(
            (name, self.shaped.group_stats(name, begin, new=True), self.shaped.group_stats(name, begin, new=False))
            for name in [*names, OTHERS]
        )

    def numbers(self) -> tuple[VersionStats, VersionStats, VersionStats | None]:
        """(new, old, served) for the report: per version over the windows, and what users got."""
        log = self.log
        if log is None:
            return VersionStats(), VersionStats(), None
        return log.stats_in(self.windows, new=True), log.stats_in(self.windows, new=False), log.served_stats()


def breach_message(stack: str, what: str, report: DeployReport) -> str:
    text = (
        f"health breach at {what} ({report.strategy} of {stack} to {report.image}): {report.breach}; "
        f"rolled back to {report.previous_image}"
    )
    if report.time_to_restore is not None:
        text += f" in {report.time_to_restore:.2f} s"
    if report.time_to_detect is not None:
        text += f" (the breach was detected {report.time_to_detect:.1f} s after the new version took traffic)"
    if report.served is not None:
        text += f"; {report.served.errors} of {report.served.requests} requests through the balancer failed during the change"
    return text


__all__ = ["Breached", "Windows", "breach_message"]
