"""Simulated users through a URL: each keeps its own cookies, as a browser does, and sends its own
headers (a user group's), so what one user saw can be told from what another saw.

Engine-neutral, standard library only (like http_check's LoadClient, which sends anonymous
requests). Used by the engines' probes during a phased rollout (a request as a member of each
routed group, so the new version has traffic to be judged on even on an idle stack), and by the
tests and benches that check stickiness per user.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from pipeline.engines.http_check import BODY_LIMIT, PacedTraffic, Sample


@dataclass(frozen=True)
class User:
    """One simulated user: a name, the headers it sends, the cookies it starts with."""

    name: str
    headers: Mapping[str, str] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UserSample(Sample):
    """One request of one user: a load run's sample, plus whose it was."""

    user: str = field(kw_only=True)

    @property
    def ended(self) -> float:
        return self.started + self.seconds


def user_request(
    url: str, *, headers: Mapping[str, str], cookies: Mapping[str, str], timeout: float = 5.0
) -> tuple[int, str, dict[str, str]]:
    """GET `url` on a fresh connection as a user; returns (status, body, the cookies it set)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http URL: {url!r}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sent = {"User-Agent": "pipeline-user", "Connection": "close", **headers}
        if cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        conn.request("GET", path, headers=sent)
        response = conn.getresponse()
        body = response.read(BODY_LIMIT).decode("utf-8", errors="replace")
        given: dict[str, str] = {}
        for header in response.headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(header)
            except CookieError:
                continue
            given.update({key: morsel.value for key, morsel in jar.items()})
        return response.status, body, given
    finally:
        conn.close()


class UserLoad(PacedTraffic[UserSample]):
    """Steady traffic from simulated users, in turn, at `rate` requests per second in all, from a
    background thread; each user keeps the cookies the service set. A context manager, like
    http_check.LoadClient; `samples` holds every request."""

    def __init__(
        self, url: str, users: Sequence[User], *, rate: float = 100.0, timeout: float = 5.0, max_seconds: float = 900.0
    ) -> None:
        if not users:
            raise ValueError("a user load needs at least one user")
        super().__init__(rate=rate, timeout=timeout, max_requests=None, max_seconds=max_seconds, name="user-load")
        self.url = url
        self.users = list(users)
        self.jars: dict[str, dict[str, str]] = {u.name: dict(u.cookies) for u in self.users}

    def _send(self, index: int) -> UserSample:
        return self._one(self.users[index % len(self.users)])

    def _one(self, user: User) -> UserSample:
        started = time.monotonic()
        try:
            status, body, given = user_request(
                self.url, headers=user.headers, cookies=self.jars[user.name], timeout=self.timeout
            )
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return UserSample(
                started, time.monotonic() - started, None, "", str(exc) or type(exc).__name__, user=user.name
            )
        self.jars[user.name].update(given)
        return UserSample(started, time.monotonic() - started, status, body, user=user.name)

    def of(self, user: str) -> list[UserSample]:
        """Every request of one user, in order."""
        return [s for s in list(self.samples) if s.user == user]


__all__ = ["User", "UserLoad", "UserSample", "user_request"]
