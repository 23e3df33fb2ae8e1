"""The balancer's request log while a deployment watches its health signals: each request (and
each retry) attributed to the new or the old version by the address of the replica that answered.

The log format is the balancer config's `health` format (lb/nginx.conf.j2):
`$msec|$status|$request_time|$upstream_addr|$upstream_status|$upstream_response_time|$variant`; the
three upstream fields list every replica a request tried; the last one is the feature-flag variant
the app said it served (its `X-Flag-Variant` header, `-` or empty when none). Lines of the older
six-field format (a balancer configured by an earlier version) are read too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline.engines.deploy_report import VersionStats
from pipeline.engines.http_check import Hit, LoadClient, version_stats
from pipeline.engines.stack import OnEvent
from pipeline.errors import StackOperationError

LOG_PATH = "/var/log/nginx/health.log"
"""The balancer's request log while a deployment watches its health signals."""

_LIST_SEPARATOR = re.compile(r",\s*|\s+:\s+")
"""Between the tries of one request in nginx's $upstream_* variables (`, `; ` : ` after a redirect)."""


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def upstream_tries(addresses: str, statuses: str, times: str) -> list[tuple[str, str, str]]:
    """nginx's `$upstream_addr`, `$upstream_status` and `$upstream_response_time` of one request,
    as (address, status, seconds) per replica tried."""
    return list(
        zip(
            _LIST_SEPARATOR.split(addresses),
            _LIST_SEPARATOR.split(statuses),
            _LIST_SEPARATOR.split(times),
            strict=False,
        )
    )


def tried_hits(at: float, tries: list[tuple[str, str, str]], versions: Mapping[str, bool]) -> list[Hit]:
    """A hit per replica tried, attributed to the new or old version by its address (`versions`);
    unknown addresses are left out."""
    hits = []
    for address, code, seconds in tries:
        version = versions.get(address.strip())
        if version is None:
            continue
        answer = code.strip()
        hits.append(Hit(at, version, answer.isdigit() and int(answer) < 500, _seconds(seconds)))
    return hits


def parse_log_line(line: str, versions: Mapping[str, bool]) -> tuple[Hit | None, list[Hit]]:
    """One line of the balancer's request log: (the answer the client got, one hit per replica
    tried, attributed to the new or old version by its address; unknown addresses are left out).
    The answer's `new` is whether the replica that gave it runs the new version."""
    parts = line.split("|")
    if len(parts) not in (6, 7):
        return None, []
    stamp, status, request_time, addresses, statuses, times = parts[:6]
    try:
        at = float(stamp)
    except ValueError:
        return None, []
    tries = upstream_tries(addresses, statuses, times)
    hits = tried_hits(at, tries, versions)
    answered_by = versions.get(tries[-1][0].strip(), False) if tries else False
    failed = status.isdigit() and int(status) >= 500
    return Hit(at, answered_by, not failed, _seconds(request_time)), hits


def parse_variant(line: str, flag: str) -> Hit | None:
    """One line as an answer of a variant of `flag`: `new` is True for the variant `on`; None
    when the line names no variant of that flag (another page, or a six-field line)."""
    parts = line.split("|")
    if len(parts) != 7:
        return None
    stamp, status, request_time = parts[0], parts[1], parts[2]
    served = [v.strip() for v in _LIST_SEPARATOR.split(parts[6]) if v.strip() and v.strip() != "-"]
    if not served:
        return None
    name, _, variant = served[-1].partition("=")
    if name != flag or variant not in ("on", "off"):
        return None
    try:
        at = float(stamp)
    except ValueError:
        return None
    failed = not status.isdigit() or int(status) >= 500
    return Hit(at, variant == "on", not failed, _seconds(request_time))


def address(replica: Any, network: str, port: int) -> str | None:
    """`ip:port` of a replica on the stack network, as the balancer's log names it."""
    networks = (replica.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    ip = (networks.get(network) or {}).get("IPAddress")
    return f"{ip}:{port}" if ip else None


class AccessLog:
    """A deployment's health signals: the balancer's request log, read as it grows, each request
    (and each retry) attributed to the new or the old version by the address of the replica that
    answered; plus, while the strategy observes, a probe sending steady load through the balancer."""

    def __init__(self, lb: Any, port: int, network: str, on_event: OnEvent) -> None:
        self.lb = lb
        self.port = port
        self.network = network
        self.on_event = on_event
        self.versions: dict[str, bool] = {}
        self.hits: list[Hit] = []
        self.served: list[Hit] = []
        self.probe: LoadClient | None = None
        self.closed = False
        self._offset = 0
        self._rest = b""
        self._unreadable = False

    def truncate(self) -> None:
        """Start the log afresh (nginx appends to the file it has open)."""
        try:
            code, output = self.lb.exec_run(["/bin/sh", "-c", f": > {LOG_PATH}"])
        except Exception as exc:
            raise StackOperationError(f"cannot reset the request log of {self.lb.name}: {exc}") from None
        if code != 0:
            raise StackOperationError(f"cannot reset the request log of {self.lb.name}: {output!r}")

    def assign(self, replicas: list[Any], *, new: bool) -> None:
        """Requests answered from now on by these replicas' addresses count for the new (or old)
        version. Lines already written are read first: an address may have been another replica's."""
        addresses = {a for a in (address(r, self.network, self.port) for r in replicas) if a}
        if any(self.versions.get(a, new) != new for a in addresses):
            self.read()
        for each in addresses:
            self.versions[each] = new

    def start_probe(self, url: str, rate: float) -> None:
        self.probe = LoadClient(url, rate=rate, timeout=5.0)
        self.probe.__enter__()

    def read(self) -> None:
        """Parse what the balancer logged since the last read."""
        try:
            code, (out, _) = self.lb.exec_run(["/usr/bin/tail", "-c", f"+{self._offset + 1}", LOG_PATH], demux=True)
        except Exception as exc:
            if not self._unreadable:
                self._unreadable = True
                self.on_event(f"cannot read the request log of {self.lb.name}: {exc}")
            return
        if code != 0 or not out:
            return
        self._offset += len(out)
        self.feed(out)

    def feed(self, data: bytes) -> None:
        """Take more of the log: whole lines are parsed, a partial last line waits for the rest."""
        data = self._rest + data
        cut = data.rfind(b"\n") + 1
        self._rest = data[cut:]
        for line in data[:cut].decode(errors="replace").splitlines():
            answer, hits = parse_log_line(line, self.versions)
            if answer is not None:
                self.served.append(answer)
            self.hits.extend(hits)

    def alert_raised(self) -> bool:
        """Whether the balancer's alert route was called (its marker file exists)."""
        import docker.errors

        from pipeline.engines.docker_stack.balancer_config import ALERT_MARKER

        try:
            self.lb.get_archive(ALERT_MARKER)
        except docker.errors.NotFound:
            return False
        except Exception:
            return False
        return True

    def stats(self, since: float, *, new: bool) -> VersionStats:
        return version_stats(h for h in self.hits if h.new == new and h.at >= since)

    def stats_in(self, windows: list[tuple[float, float]], *, new: bool) -> VersionStats:
        """Over the observation windows; over everything logged when there were none."""
        if not windows:
            return version_stats(h for h in self.hits if h.new == new)
        return version_stats(h for h in self.hits if h.new == new and any(a <= h.at <= b for a, b in windows))

    def served_stats(self) -> VersionStats:
        return version_stats(self.served)

    def close(self) -> None:
        if self.probe is not None:
            self.probe.stop()
        self.read()
        self.closed = True


__all__ = ["LOG_PATH", "AccessLog", "address", "parse_log_line", "parse_variant", "tried_hits", "upstream_tries"]
