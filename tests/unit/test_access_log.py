"""The balancer's request log (pipeline/engines/docker_stack/access_log.py): each line parsed and
attributed to the new or the old version by the address of the replica that answered, and the
per-version numbers a deployment's observation windows judge. No Docker: the balancer container
is a fake that serves a log held in memory the way `tail -c +N` would."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.engines.docker_stack.access_log import LOG_PATH, AccessLog, address, parse_log_line
from pipeline.engines.http_check import Hit

VERSIONS = {"172.18.0.2:80": False, "172.18.0.3:80": True}
NETWORK = "web-net"


class FakeBalancer:
    """The balancer container as AccessLog uses it: `exec_run` of `tail -c +N LOG_PATH` and of
    the truncation, on a log kept in memory."""

    name = "web-lb"

    def __init__(self) -> None:
        self.log = b""
        self.reads = 0

    def write(self, *lines: str, end: str = "\n") -> None:
        self.log += ("\n".join(lines) + end).encode()

    def exec_run(self, command: list[str], demux: bool = False) -> tuple[int, Any]:
        if command[0] == "/usr/bin/tail":
            assert command[1:] == ["-c", command[2], LOG_PATH]
            start = int(command[2].lstrip("+")) - 1
            self.reads += 1
            return 0, (self.log[start:] or None, None)
        assert command[:2] == ["/bin/sh", "-c"]
        assert command[2] == f": > {LOG_PATH}"
        self.log = b""
        return 0, b""


class Replica:
    def __init__(self, name: str, ip: str | None) -> None:
        self.name = name
        networks = {NETWORK: {"IPAddress": ip}} if ip else {}
        self.attrs = {"NetworkSettings": {"Networks": networks}}


def line(at: float, status: int | str, address: str, upstream: str | int, seconds: float = 0.002) -> str:
    return f"{at}|{status}|{seconds}|{address}|{upstream}|{seconds}"


def watched() -> tuple[FakeBalancer, AccessLog]:
    lb = FakeBalancer()
    log = AccessLog(lb, 80, NETWORK, lambda text: None)
    log.assign([Replica("web-old", "172.18.0.2")], new=False)
    log.assign([Replica("web-new", "172.18.0.3")], new=True)
    return lb, log


# --- one line --------------------------------------------------------------------------------------


def test_a_log_line_is_attributed_to_the_version_of_the_replica_that_answered() -> None:
    answer, tries = parse_log_line("1795482379.085|500|0.004|172.18.0.3:80|500|0.003", VERSIONS)
    assert tries == [Hit(1795482379.085, True, False, 0.003)]
    assert answer == Hit(1795482379.085, True, False, 0.004)
    answer, tries = parse_log_line("1795482379.090|200|0.001|172.18.0.2:80|200|0.001", VERSIONS)
    assert tries == [Hit(1795482379.090, False, True, 0.001)]
    assert answer is not None
    assert answer.ok


def test_a_retried_request_counts_against_each_replica_it_tried() -> None:
    """The new replica refused the connection, the old one answered: the user saw 200, but the
    new version's error counts (the balancer hid it this time)."""
    line = "1795482379.1|200|0.010|172.18.0.3:80, 172.18.0.2:80|502, 200|0.000, 0.002"
    answer, tries = parse_log_line(line, VERSIONS)
    assert tries == [Hit(1795482379.1, True, False, 0.0), Hit(1795482379.1, False, True, 0.002)]
    assert answer is not None
    assert answer.ok
    assert not answer.new


def test_tries_after_an_internal_redirect_are_split_on_the_colon_separator() -> None:
    line = "1795482379.1|200|0.010|172.18.0.3:80 : 172.18.0.2:80|502 : 200|0.001 : 0.002"
    _, tries = parse_log_line(line, VERSIONS)
    assert tries == [Hit(1795482379.1, True, False, 0.001), Hit(1795482379.1, False, True, 0.002)]


def test_log_lines_of_unknown_replicas_or_no_upstream_count_only_as_answers() -> None:
    answer, tries = parse_log_line("1795482379.2|502|0.000|-|-|-", VERSIONS)
    assert tries == []
    assert answer is not None
    assert not answer.ok
    assert parse_log_line("1795482379.2|200|0.001|10.0.0.9:80|200|0.001", VERSIONS)[1] == []


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        "",
        "x|200|0.001|172.18.0.2:80|200|0.001",  # the time is not a number
        "1795482379.2|200|0.001|172.18.0.2:80|200",  # a field short
        "1795482379.2|200|0.001|172.18.0.2:80|200|0.001|new-feature=on|extra",  # a field too many
    ],
)
def test_a_malformed_line_is_skipped(text: str) -> None:
    assert parse_log_line(text, VERSIONS) == (None, [])


def test_unreadable_times_count_as_zero_and_a_missing_status_as_a_failure_of_that_try() -> None:
    answer, tries = parse_log_line("1795482379.3|200|-|172.18.0.3:80|-|-", VERSIONS)
    assert answer == Hit(1795482379.3, True, True, 0.0)
    assert tries == [Hit(1795482379.3, True, False, 0.0)]


def test_a_replica_is_known_by_its_address_on_the_stack_network() -> None:
    assert address(Replica("web-a", "172.18.0.2"), NETWORK, 80) == "172.18.0.2:80"
    assert address(Replica("web-a", None), NETWORK, 80) is None
    assert address(Replica("web-a", "172.18.0.2"), "other-net", 80) is None


# --- the log as it grows ---------------------------------------------------------------------------


def test_the_numbers_per_version_come_from_the_lines_read_so_far() -> None:
    lb, log = watched()
    lb.write(*(line(1000.0 + i, 200, "172.18.0.2:80", 200, 0.001) for i in range(10)))
    lb.write(*(line(1000.0 + i, 500 if i < 2 else 200, "172.18.0.3:80", 500 if i < 2 else 200) for i in range(8)))
    log.read()
    old = log.stats(0, new=False)
    new = log.stats(0, new=True)
    assert (old.requests, old.errors, old.error_rate) == (10, 0, 0.0)
    assert (new.requests, new.errors) == (8, 2)
    assert new.error_rate == pytest.approx(0.25)
    assert new.p99_ms == pytest.approx(2.0)
    assert old.p99_ms == pytest.approx(1.0)
    served = log.served_stats()
    assert (served.requests, served.errors) == (18, 2)


def test_p99_is_the_nearest_rank_of_the_answer_times() -> None:
    lb, log = watched()
    lb.write(*(line(1000.0 + i, 200, "172.18.0.3:80", 200, (i + 1) / 1000) for i in range(100)))
    log.read()
    stats = log.stats(0, new=True)
    assert stats.p99_ms == pytest.approx(99.0)
    assert stats.p50_ms == pytest.approx(50.0)


def test_a_version_never_seen_has_no_requests_and_no_error_rate() -> None:
    lb, log = watched()
    lb.write(line(1000.0, 200, "172.18.0.2:80", 200))
    log.read()
    never = log.stats(0, new=True)
    assert never.requests == 0
    assert never.error_rate == 0.0
    assert never.p99_ms == 0.0
    assert never.describe() == "no requests"


def test_only_new_lines_are_read_and_a_partial_line_waits_for_its_end() -> None:
    lb, log = watched()
    lb.write(line(1000.0, 200, "172.18.0.3:80", 200))
    lb.write("1000.5|500|0.001|172.18", end="")  # nginx is in the middle of writing this one
    log.read()
    assert log.stats(0, new=True).requests == 1
    lb.write(".0.3:80|500|0.001")
    log.read()
    new = log.stats(0, new=True)
    assert (new.requests, new.errors) == (2, 1)
    log.read()  # nothing new
    assert log.stats(0, new=True).requests == 2


def test_numbers_are_taken_since_a_time_or_over_the_observation_windows() -> None:
    lb, log = watched()
    lb.write(*(line(1000.0 + i, 200, "172.18.0.3:80", 200) for i in range(10)))
    log.read()
    assert log.stats(1005.0, new=True).requests == 5
    assert log.stats_in([], new=True).requests == 10, "no windows: everything logged"
    assert log.stats_in([(1001.0, 1002.0), (1008.0, 1100.0)], new=True).requests == 4


def test_an_address_that_changes_version_keeps_the_lines_logged_before() -> None:
    """A replaced replica's address may be given to a new one: what was logged before the switch
    still counts for the old version."""
    lb, log = watched()
    lb.write(line(1000.0, 500, "172.18.0.2:80", 500))
    log.assign([Replica("web-next", "172.18.0.2")], new=True)
    lb.write(line(1001.0, 200, "172.18.0.2:80", 200))
    log.read()
    assert (log.stats(0, new=False).requests, log.stats(0, new=False).errors) == (1, 1)
    assert (log.stats(0, new=True).requests, log.stats(0, new=True).errors) == (1, 0)


def test_an_unreadable_log_is_said_once_and_gives_no_numbers() -> None:
    class Broken(FakeBalancer):
        def exec_run(self, command: list[str], demux: bool = False) -> tuple[int, Any]:
            raise OSError("the container is gone")

    said: list[str] = []
    log = AccessLog(Broken(), 80, NETWORK, said.append)
    log.read()
    log.read()
    assert said == ["cannot read the request log of web-lb: the container is gone"]
    assert log.stats(0, new=True).requests == 0


def test_truncate_starts_the_log_afresh() -> None:
    lb, log = watched()
    lb.write(line(1000.0, 200, "172.18.0.3:80", 200))
    log.truncate()
    assert lb.log == b""


# --- the variant field (feature flags) ------------------------------------------------------------------


def test_a_line_with_the_variant_field_still_counts_for_its_replica() -> None:
    old_format = parse_log_line("1795482379.2|200|0.001|172.18.0.2:80|200|0.001", VERSIONS)
    new_format = parse_log_line("1795482379.2|200|0.001|172.18.0.2:80|200|0.001|new-feature=on", VERSIONS)
    assert old_format == new_format


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1795482379.2|200|0.004|172.18.0.2:80|200|0.004|new-feature=on", (True, True, 0.004)),
        ("1795482379.2|404|0.002|172.18.0.2:80|404|0.002|new-feature=off", (False, True, 0.002)),
        ("1795482379.2|500|0.003|172.18.0.2:80|500|0.003|new-feature=on", (True, False, 0.003)),
        # retried: the variant of the last try is the one the user got
        ("1795482379.2|200|0.010|a:80, b:80|502, 200|0.001, 0.009|-, new-feature=off", (False, True, 0.010)),
    ],
)
def test_the_variant_field_splits_answers_by_variant(line: str, expected: tuple[bool, bool, float]) -> None:
    from pipeline.engines.docker_stack.access_log import parse_variant

    hit = parse_variant(line, "new-feature")
    assert hit is not None
    assert (hit.new, hit.ok, hit.seconds) == expected


@pytest.mark.parametrize(
    "line",
    [
        "1795482379.2|200|0.001|172.18.0.2:80|200|0.001",  # the older format: no variant
        "1795482379.2|200|0.001|172.18.0.2:80|200|0.001|-",  # a page no flag decided
        "1795482379.2|200|0.001|172.18.0.2:80|200|0.001|other-flag=on",
        "1795482379.2|200|0.001|172.18.0.2:80|200|0.001|new-feature=maybe",
    ],
)
def test_lines_of_no_variant_of_the_flag_are_left_out(line: str) -> None:
    from pipeline.engines.docker_stack.access_log import parse_variant

    assert parse_variant(line, "new-feature") is None
