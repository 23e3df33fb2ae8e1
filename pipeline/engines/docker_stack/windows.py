"""A deployment's observation windows: after each step of a strategy, the health signals of the new
version are judged against the thresholds (and the old version's numbers) until they pass or breach.

The signals come from the balancer's request log (access_log.py); while a strategy observes, a
probe sends steady load through the balancer so that a window has requests to judge. This module
keeps the steps the deployment report lists; rolling back after a breach is deployment.py's job.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.engines.docker_stack.access_log import AccessLog
from pipeline.engines.http_check import judge
from pipeline.engines.stack import DeployReport, DeployStep, OnEvent, VersionStats
from pipeline.errors import StackOperationError
from pipeline.strategy import Health, Strategy

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
        self.baseline = VersionStats()
        self.steps: list[DeployStep] = []
        self.windows: list[tuple[float, float]] = []
        """(start, end) of every observation window, in epoch seconds."""
        self.exposed: float | None = None
        """time.monotonic() when the new version first took traffic."""

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
        return True

    def assign(self, replicas: list[Any], *, new: bool) -> None:
        """Requests these replicas answer from now on count for the new (or old) version."""
        if self.log is not None:
            self.log.assign(replicas, new=new)

    def take_baseline(self, url: str) -> None:
        """Start the probe on `url` and take the old version's numbers before the first change."""
        assert self.log is not None
        assert self.health is not None
        log = self.log
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

    def close(self) -> None:
        """Stop the probe and read the last lines (safe to call twice)."""
        if self.log is not None and not self.log.closed:
            self.log.close()

    def expose(self) -> None:
        """The new version takes traffic (the first time counts, for the time to detect)."""
        if self.exposed is None:
            self.exposed = time.monotonic()

    def record(self, what: str, share: float, started: float) -> None:
        """A step that is not observed."""
        self.steps.append(DeployStep(what, share, time.monotonic() - started))

    def window(self, what: str, share: float, started: float) -> None:
        """One observation window after a step: judge the health signals; raise Breached on a
        breach (the caller rolls back). Records the step either way."""
        seconds = self.strategy.observe_seconds
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
            log.read()
            if log.alert_raised():
                self.windows.append((begin, time.time()))
                self.steps.append(DeployStep(what, share, time.monotonic() - started, "breach"))
                raise Breached(what, "an alert was raised through the balancer's alert route")
            now = time.time()
            new = log.stats(begin, new=True)
            same = log.stats(begin, new=False)
            old = same if same.requests >= health.min_requests else self.baseline
            verdict = judge(new, old, health, final=now >= end, exhausted=now >= give_up)
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
            self.steps.append(DeployStep(what, share, time.monotonic() - started, outcome, new, old))
            if verdict.state == "pass":
                self.on_event(f"{what}: healthy ({verdict.numbers})")
                return
            raise Breached(what, verdict.reason)

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
