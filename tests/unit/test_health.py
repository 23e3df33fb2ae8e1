"""The health judge of a deployment's observation windows (a pure function of the new and the old
version's numbers and the thresholds), and the deployment report. The pieces the Docker engine
feeds it from are tested in test_access_log.py (the balancer's request log) and
test_docker_balancer.py (canary weights and the balancer configuration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.engines.deploy_report import DeployReport, DeployStep, VersionStats
from pipeline.engines.http_check import Hit, judge, numbers, p99_limit, version_stats
from pipeline.strategy import Health

REPO = Path(__file__).resolve().parents[2]
HEALTH = Health(max_error_rate=0.01, max_p99_ratio=2.0, min_p99_ms=20.0, min_requests=20)


def hits(count: int, *, new: bool = True, failed: int = 0, ms: float = 2.0) -> list[Hit]:
    """`count` hits, the first `failed` of them failed, each taking `ms`."""
    return [Hit(at=1000.0 + i, new=new, ok=i >= failed, seconds=ms / 1000) for i in range(count)]


def stats(count: int, *, failed: int = 0, ms: float = 2.0) -> VersionStats:
    return version_stats(hits(count, failed=failed, ms=ms))


# --- version_stats ----------------------------------------------------------------------------------


def test_version_stats_counts_errors_and_takes_nearest_rank_percentiles() -> None:
    sample = [Hit(0, True, True, s / 1000) for s in range(1, 101)] + [Hit(0, True, False, 0.5)]
    result = version_stats(sample)
    assert result.requests == 101
    assert result.errors == 1
    assert result.error_rate == pytest.approx(1 / 101)
    assert result.p50_ms == pytest.approx(51.0)
    assert result.p99_ms == pytest.approx(100.0)
    assert version_stats([]) == VersionStats()
    assert VersionStats().error_rate == 0.0


# --- the judge: error rate ----------------------------------------------------------------------------


def test_a_window_without_errors_and_with_enough_requests_passes_at_its_end() -> None:
    verdict = judge(stats(40), stats(200), HEALTH, final=True)
    assert verdict.state == "pass"
    assert verdict.reason == ""


def test_a_window_that_is_not_over_waits_even_when_healthy() -> None:
    assert judge(stats(40), stats(200), HEALTH, final=False).state == "wait"


def test_an_error_rate_above_the_limit_is_a_breach_before_the_window_ends() -> None:
    verdict = judge(stats(30, failed=9), stats(200), HEALTH, final=False)
    assert verdict.state == "breach"
    # The numbers that caused it: the rate, the requests, the limit, and the old version's numbers.
    assert "error rate 30.0% of the new version is above the limit 1.0%" in verdict.reason
    assert "failed 9 of 30 requests" in verdict.reason
    assert "p99 2.0 ms" in verdict.reason
    assert "the old version failed 0 of 200" in verdict.reason


def test_the_error_rate_limit_itself_is_allowed() -> None:
    health = Health(max_error_rate=0.05, min_requests=20)
    assert judge(stats(20, failed=1), stats(100), health, final=True).state == "pass"  # 5.0% == limit
    assert judge(stats(20, failed=2), stats(100), health, final=True).state == "breach"  # 10% > limit


def test_errors_are_not_judged_before_min_requests_reached_the_new_version() -> None:
    # 5 of 10 failed: bad, but too few to say; the window waits for more.
    assert judge(stats(10, failed=5), stats(200), HEALTH, final=False).state == "wait"
    assert judge(stats(10, failed=5), stats(200), HEALTH, final=True).state == "wait"


def test_a_window_that_cannot_reach_min_requests_is_a_breach_when_it_may_not_wait_longer() -> None:
    verdict = judge(stats(7), stats(200), HEALTH, final=True, exhausted=True)
    assert verdict.state == "breach"
    assert "only 7 requests reached the new version, fewer than the 20 needed" in verdict.reason


def test_a_zero_error_limit_fails_on_a_single_error() -> None:
    strict = Health(max_error_rate=0.0, min_requests=20)
    assert judge(stats(100, failed=1), stats(100), strict, final=False).state == "breach"
    assert judge(stats(100), stats(100), strict, final=True).state == "pass"


# --- the judge: latency -------------------------------------------------------------------------------


def test_a_p99_above_ratio_times_the_baseline_is_a_breach_at_the_end_of_the_window() -> None:
    new, old = stats(50, ms=120.0), stats(200, ms=40.0)
    assert judge(new, old, HEALTH, final=False).state == "wait"  # latency is judged on a whole window
    verdict = judge(new, old, HEALTH, final=True)
    assert verdict.state == "breach"
    assert "p99 120.0 ms of the new version is above the limit 80.0 ms" in verdict.reason
    assert "2 x the old version's 40.0 ms" in verdict.reason


def test_a_p99_within_ratio_times_the_baseline_passes() -> None:
    assert judge(stats(50, ms=79.0), stats(200, ms=40.0), HEALTH, final=True).state == "pass"


def test_a_p99_under_min_p99_ms_is_never_a_breach_however_large_the_ratio() -> None:
    # 15 ms is 15 x a 1 ms baseline, but under 20 ms: noise on a fast page.
    assert judge(stats(50, ms=15.0), stats(200, ms=1.0), HEALTH, final=True).state == "pass"
    assert judge(stats(50, ms=21.0), stats(200, ms=1.0), HEALTH, final=True).state == "breach"
    assert p99_limit(stats(200, ms=1.0), HEALTH) == 20.0
    assert p99_limit(stats(200, ms=40.0), HEALTH) == 80.0


def test_without_a_baseline_latency_is_not_judged() -> None:
    assert p99_limit(VersionStats(), HEALTH) is None
    verdict = judge(stats(50, ms=500.0), VersionStats(), HEALTH, final=True)
    assert verdict.state == "pass"
    assert "no baseline from the old version" in numbers(verdict.new, verdict.old)


def test_errors_are_judged_before_latency() -> None:
    verdict = judge(stats(50, failed=10, ms=500.0), stats(200, ms=1.0), HEALTH, final=True)
    assert verdict.state == "breach"
    assert verdict.reason.startswith("error rate")


# --- the report --------------------------------------------------------------------------------------


def test_the_report_summary_says_what_was_done_and_the_numbers() -> None:
    report = DeployReport(
        strategy="canary",
        image="web:2",
        previous_image="web:1",
        steps=(DeployStep("canary 10%", 0.1, 2.0, "breach", stats(30, failed=9), stats(200)),),
        new=stats(30, failed=9),
        old=stats(200),
        served=VersionStats(requests=400, errors=9, p50_ms=1.0, p99_ms=3.0),
        seconds=3.5,
        rolled_back=True,
        breach="error rate 30.0% ...",
        time_to_detect=1.5,
        time_to_restore=0.3,
    )
    assert report.failed_requests == 9
    assert report.p99_ms == 3.0
    summary = report.summary()
    assert summary.startswith("canary to web:2 in 3.5 s; 1 step")
    assert "new version: 9 of 30 requests failed (30.0%)" in summary
    assert "9 of 400 requests failed during the change" in summary
    assert "rolled back: error rate 30.0%" in summary
    unseen = DeployReport(strategy="rolling", image="web:2")
    assert unseen.failed_requests is None
    assert unseen.p99_ms is None
