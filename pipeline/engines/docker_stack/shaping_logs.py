"""The request logs of a shaped deployment besides the health log (access_log.py): the dark
launch's mirror log (the new version's answers to the copies of the users' requests, which no user
ever sees) and the groups log (which group each request matched, and who answered it).

Both are files in the balancer container (shaping.py names them), read as they grow like the
health log; each try is attributed to the new or the old version by the replica's address, with
the health log's own address table, so a mirrored request counts for the new version exactly as
a routed one would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.engines.deploy_report import VersionStats
from pipeline.engines.docker_stack.access_log import AccessLog, tried_hits, upstream_tries
from pipeline.engines.docker_stack.shaping import GROUPS_LOG, MIRROR_LOG
from pipeline.engines.http_check import Hit, version_stats


def parse_mirror_line(line: str, versions: Mapping[str, bool]) -> list[Hit]:
    """`$msec|$upstream_addr|$upstream_status|$upstream_response_time` of one mirrored request: a
    hit per replica tried (a request not mirrored, e.g. a write, has none)."""
    parts = line.split("|")
    if len(parts) != 4:
        return []
    try:
        at = float(parts[0])
    except ValueError:
        return []
    return tried_hits(at, upstream_tries(parts[1], parts[2], parts[3]), versions)


def parse_group_line(line: str, versions: Mapping[str, bool]) -> tuple[str, list[Hit]] | None:
    """`$msec|$pipeline_group|$upstream_addr|$upstream_status|$upstream_response_time`: the group
    the request matched ("" for none) and a hit per replica tried."""
    parts = line.split("|")
    if len(parts) != 5:
        return None
    try:
        at = float(parts[0])
    except ValueError:
        return None
    return parts[1], tried_hits(at, upstream_tries(parts[2], parts[3], parts[4]), versions)


class SideLog:
    """One more log file in the balancer container, read as it grows (best effort)."""

    def __init__(self, lb: Any, path: str) -> None:
        self.lb = lb
        self.path = path
        self._offset = 0
        self._rest = b""

    def truncate(self) -> None:
        """Start it afresh (nginx appends to the file it has open; it creates a missing one)."""
        self.lb.exec_run(["/bin/sh", "-c", f": > {self.path}"])
        self._offset = 0
        self._rest = b""

    def lines(self) -> list[str]:
        """The whole lines written since the last call."""
        try:
            code, (out, _) = self.lb.exec_run(["/usr/bin/tail", "-c", f"+{self._offset + 1}", self.path], demux=True)
        except Exception:
            return []
        if code != 0 or not out:
            return []
        self._offset += len(out)
        data = self._rest + out
        cut = data.rfind(b"\n") + 1
        self._rest = data[cut:]
        text: str = data[:cut].decode(errors="replace")
        return text.splitlines()


class ShapingLogs:
    """The mirror and groups logs of one deployment. Mirrored answers join the health log's hits
    (they are the new version's answers); the groups' hits are kept per group."""

    def __init__(self, log: AccessLog) -> None:
        self.log = log
        self.mirror = SideLog(log.lb, MIRROR_LOG)
        self.groups = SideLog(log.lb, GROUPS_LOG)
        self.mirroring = False
        self.grouping = False
        self.group_hits: dict[str, list[Hit]] = {}

    def watch_mirror(self) -> None:
        """From now on, read the mirror log (truncated first: before the balancer writes to it)."""
        if not self.mirroring:
            self.mirror.truncate()
            self.mirroring = True

    def watch_groups(self) -> None:
        if not self.grouping:
            self.groups.truncate()
            self.grouping = True

    def read(self) -> None:
        versions = self.log.versions
        if self.mirroring:
            for line in self.mirror.lines():
                self.log.hits.extend(parse_mirror_line(line, versions))
        if self.grouping:
            for line in self.groups.lines():
                parsed = parse_group_line(line, versions)
                if parsed is not None:
                    self.group_hits.setdefault(parsed[0], []).extend(parsed[1])

    def group_stats(self, group: str, since: float, *, new: bool) -> VersionStats:
        """The requests of `group` ("" for no group) one version answered since `since`."""
        return version_stats(h for h in self.group_hits.get(group, []) if h.new == new and h.at >= since)


__all__ = ["ShapingLogs", "SideLog", "parse_group_line", "parse_mirror_line"]
