"""Verify a service the way its users see it: HTTP requests through its load balancer.

Engine-neutral (the local and the aws engine both call it with their stack's URL); standard
library only. A check waits up to `wait_seconds` for the first good answer (a stack that was
just updated may need a moment), then sends the remaining requests, which must all pass.

Also here, because it is engine-neutral too: the load client (steady traffic through a URL) and
the health judge of a deployment's observation windows (`judge`: a pure function of the new and
the old version's numbers and the `Health` thresholds).
"""

from __future__ import annotations

import http.client
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Literal, Self, TypeVar
from urllib.parse import urljoin, urlsplit

from pipeline.engines.deploy_report import VersionStats
from pipeline.engines.stack import OnEvent, VerifyReport
from pipeline.model import Verify
from pipeline.strategy import Health

BODY_LIMIT = 1 << 20
"""Bytes of a response body read and searched for the expected text."""
SNIPPET = 80
NOT_READY = frozenset({502, 503, 504})
"""Statuses a balancer gives while no healthy target serves: keep waiting."""
SETTLE_SECONDS = 5.0
"""How long the same wrong answer must repeat before the check stops waiting for a better one."""


S = TypeVar("S")


def _ignore(text: str) -> None:
    pass


@dataclass(frozen=True)
class Answer:
    """One request's outcome: `problem` is empty when it passed the check."""

    status: int | None
    body: str
    problem: str
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.problem


def target_url(base_url: str, path: str) -> str:
    """The stack URL joined with a check's absolute path (`http://h:p/` + `/health`)."""
    return urljoin(base_url, path)


def request(url: str, *, timeout: float = 5.0) -> tuple[int, str]:
    """GET `url` on a fresh connection; returns (status, body). Raises OSError/HTTPException."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_class(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request("GET", path, headers={"User-Agent": "pipeline-verify", "Connection": "close"})
        response = conn.getresponse()
        body = response.read(BODY_LIMIT).decode("utf-8", errors="replace")
        return response.status, body
    finally:
        conn.close()


def probe(url: str, check: Verify, *, timeout: float = 5.0) -> Answer:
    """One request, judged against `check` (status and text)."""
    started = time.monotonic()
    try:
        status, body = request(url, timeout=timeout)
    except ConnectionRefusedError:
        return Answer(None, "", "connection refused", time.monotonic() - started)
    except TimeoutError:
        return Answer(None, "", f"no answer within {timeout:g} s", time.monotonic() - started)
    except (OSError, http.client.HTTPException) as exc:
        reason = str(exc) or type(exc).__name__
        return Answer(None, "", f"request failed: {reason}", time.monotonic() - started)
    seconds = time.monotonic() - started
    snippet = _snippet(body)
    if status != check.expect_status:
        return Answer(
            status, body, f"status {status} (expected {check.expect_status}); body starts {snippet!r}", seconds
        )
    if check.expect_text is not None and check.expect_text not in body:
        return Answer(status, body, f"the body does not contain {check.expect_text!r}; it starts {snippet!r}", seconds)
    return Answer(status, body, "", seconds)


def _snippet(body: str) -> str:
    flat = " ".join(body.split())
    return flat if len(flat) <= SNIPPET else flat[: SNIPPET - 3] + "..."


def verify(
    base_url: str,
    check: Verify,
    *,
    on_event: OnEvent = _ignore,
    request_timeout: float = 5.0,
    interval: float = 0.2,
    cancel: threading.Event | None = None,
    settle: float = SETTLE_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> VerifyReport:
    """Wait up to `check.wait_seconds` for a good answer, then require `check.requests` in a row.

    While the service is not ready (no connection, a timeout, 502/503/504 from a balancer with no
    healthy target) the check waits the whole `wait_seconds`. A service that answers, but wrongly,
    and gives the same wrong answer for `settle` seconds has given its answer: the check fails
    then instead of waiting out the rest (a failed release is rolled back sooner).

    The first good answer counts as the first of the `requests`. `failures` counts the requests
    after it that failed (while waiting, failures are expected and only reported if the wait
    runs out)."""
    url = target_url(base_url, check.path)
    expectation = f"{check.expect_status}" + (f" with {check.expect_text!r}" if check.expect_text is not None else "")
    real = (f"HTTP GET {url} x{check.requests}, expecting {expectation}",)
    started = clock()
    deadline = started + check.wait_seconds
    tries = 0
    same_since: float | None = None
    previous = ""
    while True:
        tries += 1
        answer = probe(url, check, timeout=request_timeout)
        if answer.ok:
            break
        if cancel is not None and cancel.is_set():
            return VerifyReport(False, tries, tries, f"interrupted while waiting for {url}", real=real)
        now = clock()
        if answer.status is None or answer.status in NOT_READY or answer.problem != previous:
            same_since = None if answer.status is None or answer.status in NOT_READY else now
        previous = answer.problem
        if same_since is not None and now - same_since >= settle:
            return VerifyReport(
                ok=False,
                requests=tries,
                failures=tries,
                detail=f"{url} gave the same wrong answer for {now - same_since:.0f} s ({tries} tries): {answer.problem}",
                real=real,
            )
        if now + interval >= deadline:
            return VerifyReport(
                ok=False,
                requests=tries,
                failures=tries,
                detail=f"no good answer from {url} within {check.wait_seconds:g} s ({tries} tries); last: {answer.problem}",
                real=real,
            )
        if tries == 1:
            on_event(f"waiting for {url} ({answer.problem})")
        sleep(interval)
    if tries > 1:
        on_event(f"{url} answers after {tries} tries")
    failures = 0
    first_failure = ""
    for index in range(2, check.requests + 1):
        answer = probe(url, check, timeout=request_timeout)
        if not answer.ok:
            failures += 1
            first_failure = first_failure or f"request {index} of {check.requests}: {answer.problem}"
    if failures:
        detail = f"{failures} of {check.requests} requests to {url} failed; first: {first_failure}"
    else:
        detail = f"{check.requests}/{check.requests} requests to {url} answered {expectation}"
    on_event(detail)
    return VerifyReport(ok=failures == 0, requests=check.requests, failures=failures, detail=detail, real=real)


@dataclass(frozen=True)
class Sample:
    """One request of a load run."""

    started: float
    """time.monotonic() when it was sent."""
    seconds: float
    status: int | None
    body: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 400 and not self.error


@dataclass(frozen=True)
class LoadStats:
    requests: int
    failures: int
    rate: float
    """Requests per second over the window."""
    p50: float
    p99: float
    bodies: dict[str, int]
    """Response bodies (whitespace-trimmed) and how often each came back."""
    first_failure: str = ""


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (0.0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


class PacedTraffic(Generic[S]):
    """Requests from a background thread, paced at `rate` per second, bounded in count
    (`max_requests`; None: unbounded) and time. A context manager; `samples` holds what `_send`
    returned for each request, in order. Subclasses say what one request is (`_send`)."""

    def __init__(self, *, rate: float, timeout: float, max_requests: int | None, max_seconds: float, name: str) -> None:
        self.rate = rate
        self.timeout = timeout
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.samples: list[S] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[S]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout + 5)
        return self.samples

    def _loop(self) -> None:
        begin = time.monotonic()
        interval = 1.0 / self.rate
        index = 0
        while self.max_requests is None or index < self.max_requests:
            due = begin + index * interval
            now = time.monotonic()
            if due > now and self._stop.wait(due - now):
                return
            if self._stop.is_set() or now - begin > self.max_seconds:
                return
            self.samples.append(self._send(index))
            index += 1

    def _send(self, index: int) -> S:
        """Request number `index` (from 0), sent now; its sample."""
        raise NotImplementedError


class LoadClient(PacedTraffic[Sample]):
    """Steady traffic against a URL from a background thread: a fresh connection per request
    (as curl in a loop), paced at `rate` requests per second, bounded in count and time.

    Use as a context manager; `samples` holds every request, `stats(start, end)` summarises a window
    (e.g. the seconds an update took)."""

    def __init__(
        self,
        url: str,
        *,
        rate: float = 100.0,
        timeout: float = 5.0,
        max_requests: int = 200_000,
        max_seconds: float = 900.0,
    ) -> None:
        super().__init__(
            rate=rate, timeout=timeout, max_requests=max_requests, max_seconds=max_seconds, name="load-client"
        )
        self.url = url

    def _send(self, index: int) -> Sample:
        started = time.monotonic()
        try:
            status, body = request(self.url, timeout=self.timeout)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return Sample(started, time.monotonic() - started, None, "", str(exc) or type(exc).__name__)
        return Sample(started, time.monotonic() - started, status, body)

    def stats(self, start: float | None = None, end: float | None = None) -> LoadStats:
        """Requests sent between `start` and `end` (time.monotonic() values; default: all)."""
        window = [
            s for s in list(self.samples) if (start is None or s.started >= start) and (end is None or s.started <= end)
        ]
        failures = [s for s in window if not s.ok]
        span = (window[-1].started - window[0].started) if len(window) > 1 else 0.0
        bodies: dict[str, int] = {}
        for sample in window:
            key = sample.body.strip() if sample.ok else f"<{sample.status or sample.error}>"
            bodies[key] = bodies.get(key, 0) + 1
        first = failures[0] if failures else None
        return LoadStats(
            requests=len(window),
            failures=len(failures),
            rate=(len(window) - 1) / span if span > 0 else 0.0,
            p50=percentile([s.seconds for s in window], 0.50),
            p99=percentile([s.seconds for s in window], 0.99),
            bodies=bodies,
            first_failure=(first.error or f"status {first.status}") if first else "",
        )


# --------------------------------------------------------------------------- the health judge


@dataclass(frozen=True)
class Hit:
    """One request one version of the service answered, as the balancer saw it."""

    at: float
    """When it was answered (seconds since the epoch)."""
    new: bool
    """Answered by a replica of the new version (else: of the old one)."""
    ok: bool
    """False for a 5xx status, a refused or reset connection, a timeout."""
    seconds: float


def version_stats(hits: Iterable[Hit]) -> VersionStats:
    """Requests, errors, p50 and p99 (milliseconds) of `hits`."""
    listed = list(hits)
    latencies = [h.seconds * 1000 for h in listed]
    return VersionStats(
        requests=len(listed),
        errors=sum(1 for h in listed if not h.ok),
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
    )


@dataclass(frozen=True)
class Verdict:
    """The judgement of one observation window (so far)."""

    state: Literal["pass", "breach", "wait"]
    """'wait': not enough requests to the new version yet, or the window is not over."""
    new: VersionStats
    old: VersionStats
    reason: str = ""
    """For a breach: the threshold crossed, then the numbers."""

    @property
    def numbers(self) -> str:
        return numbers(self.new, self.old)


def p99_limit(old: VersionStats, health: Health) -> float | None:
    """The largest p99 (ms) the new version may have: max_p99_ratio x the old version's p99, but
    never below min_p99_ms. None without a baseline (the old version answered nothing)."""
    if not old.requests:
        return None
    return max(health.max_p99_ratio * old.p99_ms, health.min_p99_ms)


def numbers(new: VersionStats, old: VersionStats) -> str:
    """The new version's error rate, requests and p99 next to the old version's."""
    text = (
        f"the new version failed {new.errors} of {new.requests} requests ({new.error_rate:.1%}), "
        f"p99 {new.p99_ms:.1f} ms"
    )
    if old.requests:
        text += (
            f"; the old version failed {old.errors} of {old.requests} ({old.error_rate:.1%}), p99 {old.p99_ms:.1f} ms"
        )
    else:
        text += "; no baseline from the old version"
    return text


def judge(new: VersionStats, old: VersionStats, health: Health, *, final: bool, exhausted: bool = False) -> Verdict:
    """Judge an observation window from the new version's numbers and the old version's (the
    baseline: the same window, or before the change when the old version got no traffic).

    - error rate: a breach as soon as at least `min_requests` reached the new version and more
      than `max_error_rate` of them failed (before the window ends: less harm);
    - p99: at the end of the window, a breach when the new version's p99 is above
      `max_p99_ratio` x the old version's, unless it is under `min_p99_ms` (noise on fast pages);
    - a window passes only when it is over (`final`) and at least `min_requests` reached the new
      version; with fewer, it waits, and when it may not wait any longer (`exhausted`) that is a
      breach too: the new version could not be judged.
    """
    if new.requests >= health.min_requests and new.error_rate > health.max_error_rate:
        reason = (
            f"error rate {new.error_rate:.1%} of the new version is above the limit {health.max_error_rate:.1%}; "
            + numbers(new, old)
        )
        return Verdict("breach", new, old, reason)
    if not final:
        return Verdict("wait", new, old)
    if new.requests < health.min_requests:
        if exhausted:
            reason = (
                f"only {new.requests} requests reached the new version, fewer than the {health.min_requests} "
                f"needed to judge it; " + numbers(new, old)
            )
            return Verdict("breach", new, old, reason)
        return Verdict("wait", new, old)
    limit = p99_limit(old, health)
    if limit is not None and new.p99_ms > limit:
        reason = (
            f"p99 {new.p99_ms:.1f} ms of the new version is above the limit {limit:.1f} ms "
            f"(max of {health.max_p99_ratio:g} x the old version's {old.p99_ms:.1f} ms and {health.min_p99_ms:g} ms); "
            + numbers(new, old)
        )
        return Verdict("breach", new, old, reason)
    return Verdict("pass", new, old)


__all__ = [
    "Answer",
    "Hit",
    "LoadClient",
    "LoadStats",
    "PacedTraffic",
    "Sample",
    "Verdict",
    "judge",
    "numbers",
    "p99_limit",
    "percentile",
    "probe",
    "request",
    "target_url",
    "verify",
    "version_stats",
]
