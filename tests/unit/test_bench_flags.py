"""bench/flags's results and report without Docker: each section's result is built by the same
function the section calls, then printed by `report`, so a key the report reads and no section
writes (a KeyError after an hour of benchmarking) fails here."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "flags"


@pytest.fixture(scope="module")
def bench() -> dict[str, Any]:
    return runpy.run_path(str(BENCH), run_name="bench_flags")


def _probe(sent: int, failed: int, by_user: dict[str, set[str]] | None = None) -> SimpleNamespace:
    return SimpleNamespace(sent=sent, failed=failed, by_user=by_user or {})


def _results(bench: dict[str, Any], *, step_users: dict[str, set[str]], alert_failed: int = 0) -> dict[str, Any]:
    rows = [
        {"attempt": 1, "to": "on", "command_s": 0.61, "store_replicas_ms": 0.4, "every_web_replica_s": 0.66},
        {"attempt": 1, "to": "off", "command_s": 0.6, "store_replicas_ms": 0.3, "every_web_replica_s": 0.71},
    ]
    outputs = {"time_to_detect": 1.3, "time_to_restore": 0.006, "breach": "error rate", "steps": [10], "percent": 0}
    return {
        "flag-set": bench["flag_set_result"](rows, _probe(539, 0), ["a", "b"], ["a", "b"], 2),
        "rollout": bench["rollout_result"](1, 40.2, outputs, _probe(400, 13), first_step=10),
        "alert": bench["alert_result"](
            0.179,
            {"routed_seconds": 0.00085, "flags_off": ["new-feature"]},
            0.28,
            True,
            _probe(266, alert_failed),
            _probe(250, 0, step_users),
        ),
    }


def test_the_report_prints_every_section_with_its_goals(
    bench: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    users = {"user-0": {"new-feature=on"}, "user-1": {"new-feature=off"}, "user-2": {"new-feature=off", ""}}
    bench["report"](_results(bench, step_users=users))
    out = capsys.readouterr().out
    assert "worst 0.71 s (goal < 1 s: met); deploys 0 (goal 0: met); failed 0 of 539 user requests (goal 0: met)" in out
    assert "user requests failed 13 of 400 (bound: the 10% step's share = 40: within: met)" in out
    assert "0 of 3 users saw both variants (1 on the new one; 250 requests, 0 failed) (goal 0: met)" in out
    assert "200 users checked: all off: met" in out
    assert "failed 0 of 266 (goal 0: met)" in out
    assert "bench/strategies --only dark-launch sticky-canary" in out
    assert "MISSED" not in out


def test_a_user_served_both_variants_and_a_failed_request_are_missed(
    bench: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    users = {"user-0": {"new-feature=on", "new-feature=off"}, "user-1": {"new-feature=off"}}
    results = _results(bench, step_users=users, alert_failed=2)
    assert results["alert"]["users_seeing_both"] == 1
    bench["report"](results)
    out = capsys.readouterr().out
    assert "1 of 2 users saw both variants" in out
    assert "(goal 0: MISSED)" in out
    assert "failed 2 of 266 (goal 0: MISSED)" in out


def test_only_the_sections_run_are_reported(bench: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    results = _results(bench, step_users={})
    bench["report"]({"rollout": results["rollout"]})
    out = capsys.readouterr().out
    assert "FlagRollout over a broken new variant" in out
    assert "flag set ->" not in out
    assert "alert route" not in out
