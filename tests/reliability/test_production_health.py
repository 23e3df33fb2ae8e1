"""A release that passes the test stack but fails in production is rolled back automatically, and
the user requests it fails are counted and bounded.

How a release can pass the rehearsal and still fail in production, honestly: release 3 reads a
setting of the environment it runs in, and the file production needs was forgotten. The web
server's start script looks at its host name (replicas are named after their stack:
`<pipeline>-production-<id>`, `<pipeline>-test-<run>-<id>`); in production, without
`/etc/hello-web/production.conf`, the page becomes unreadable and `/` answers 403, while
`/health` still answers 200. So the image passes its testinfra checks (a throwaway container), the
test stack's update and rollback rehearsal (the page is fine there), and production's health
checks (the balancer routes to the new replicas), and fails only the promote's verification of
the page in production: a real incident that the pipeline must end by itself.

A load client sends steady traffic through production's balancer for the whole run. From the
promote's log (each line stamped as it arrives) the test knows which replicas run the bad release
and when the balancer's routing changed; with MaxBatchSize 1 of 2 replicas, the share of requests
that can fail is 1/2 while one batch is in service, 1 from the end of the rollout until the
rollback's first batch is routed, and 0 before and after. The failures must:

- all fall inside that window (none before the first bad replica is routed, none after the last
  one is taken out of the balancer);
- be at most what those shares allow for the requests sent in each phase (the bound by the batch
  size), plus a request per phase for the moment the balancer switches;
- last no longer than the rollout, the verification window (the check gives up once the same
  wrong answer has repeated for a few seconds, well inside the Verify's `wait_seconds`) and the
  rollback.

The numbers are reported in the session's table.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import pytest

from pipeline.engines.http_check import SETTLE_SECONDS, LoadClient
from tests.reliability.conftest import ProjectMaker
from tests.reliability.harness import SESSION, V1, explain, production_page, report, run_timed

pytestmark = pytest.mark.e2e

BROKEN = f"3.0.0-{SESSION}"
RATE = 40.0
START_SCRIPT = "#!/bin/sh\nset -e\n. /etc/apache2/envvars\n"
FORGOTTEN_SETTING = """#!/bin/sh
set -e
# Release 3 reads the settings of the environment it runs in; production's file was forgotten.
case "$(hostname)" in
    *-production-*) [ -f /etc/hello-web/production.conf ] || chmod 000 /var/www/html/index.html ;;
esac
. /etc/apache2/envvars
"""


@dataclass
class Phase:
    start: float
    end: float
    share: float
    """Share of the routed replicas that run the bad release."""


def phases(lines: list[tuple[float, str]], bad_image: str) -> tuple[list[Phase], dict[str, float]]:
    """The promote's routing over time: phases of constant bad share, and the times of its steps."""
    bad: set[str] = set()
    routes: list[tuple[float, float]] = []
    steps: dict[str, float] = {}
    for at, line in lines:
        if not line.startswith("[promote] "):
            continue
        text = line[len("[promote] ") :]
        started = re.match(r"starting (\S+) \((\S+)\)$", text)
        if started and started.group(2) == bad_image:
            bad.add(started.group(1))
            steps.setdefault("first bad replica", at)
        routed = re.match(r"\S+-lb routes to (.+)$", text)
        if routed:
            names = [n.strip() for n in routed.group(1).split(",")]
            routes.append((at, sum(1 for n in names if n in bad) / len(names)))
        if text.startswith("-> verifying production"):
            steps.setdefault("verify", at)
        if text.startswith("-> rolling "):
            steps.setdefault("rollback", at)
        if text.startswith("failed"):
            steps.setdefault("failed", at)
    result = []
    # Nothing bad can be served before the first bad replica started.
    previous_at, previous_share = steps.get("first bad replica", 0.0), 0.0
    for at, share in routes:
        if at < previous_at:
            continue
        # Between two routing lines the balancer switched at some moment: count the larger share.
        result.append(Phase(previous_at, at, max(previous_share, share)))
        previous_at, previous_share = at, share
    result.append(Phase(previous_at, float("inf"), previous_share))
    return result, steps


def test_a_release_failing_only_in_production_is_rolled_back_with_bounded_failures(
    make: ProjectMaker, baked: dict[str, str], docker_tools: Any
) -> None:
    client = docker_tools
    project = make("health", V1)
    first = project.run("run", "local", "--yes")
    assert first.returncode == 0, explain(first)
    good_image = project.last_run().stages["promote"].outputs["image"]
    project.edit("images/web/provision.sh", START_SCRIPT, FORGOTTEN_SETTING, commit=False)
    project.release(BROKEN)

    from pipeline.engines.docker_stack import DockerStackEngine

    url = DockerStackEngine(project.name, project.root / "templates" / "web.yaml").describe(project.production).url
    assert url is not None
    with LoadClient(url, rate=RATE) as load:
        timeline = run_timed(project, "run", "local", "--yes")
        time.sleep(0.5)
    assert timeline.returncode == 1, f"exit {timeline.returncode}\n{timeline.stdout[-6000:]}\n{timeline.stderr}"

    manifest = project.last_run()
    statuses = {n: r.status for n, r in manifest.stages.items()}
    assert statuses.pop("promote") == "failed", statuses
    assert set(statuses.values()) == {"succeeded"}, f"the release should pass everything before promote: {statuses}"
    bad_image = manifest.stages["bake"].outputs["image"]
    message = manifest.stages["promote"].message
    assert "failed verification in production" in message, message
    assert "status 403" in message, message
    assert f"rolled back automatically to {good_image}" in message, message
    assert production_page(project, client) == [f"200 Hello World {V1}"] * 10
    releases = project.ledger.releases(project.name, "production")
    assert [(r.image, r.status) for r in releases][-2:] == [(bad_image, "failed"), (good_image, "live")]

    steps_phases, steps = phases(timeline.lines, bad_image)
    incident = [p for p in steps_phases if p.share > 0]
    assert incident, "the promote never routed to the new release"
    window_start, window_end = incident[0].start, incident[-1].end
    samples = list(load.samples)
    failures = [s for s in samples if not s.ok]
    assert failures, "no request failed: the incident was not real (or not measured)"
    outside = [s for s in failures if not window_start <= s.started <= window_end]
    assert outside == [], f"{len(outside)} requests failed outside the incident window (first: {outside[0]})"
    # The bound by the batch size: per phase, the bad share of the requests sent in it (+1 at the switch).
    allowed = 0.0
    for phase in incident:
        sent = sum(1 for s in samples if phase.start < s.started <= phase.end)
        allowed += phase.share * sent + 1
    assert len(failures) <= allowed, f"{len(failures)} failed requests, more than the {allowed:.0f} the batches allow"
    half = [p for p in incident if 0 < p.share <= 0.5]
    assert half, "no phase with one batch in service: the rollout did not go batch by batch"
    # The verification window: the check gave up once the wrong answer settled, not at its timeout.
    verify_window = steps["rollback"] - steps["verify"]
    wait_seconds = 60.0  # the reference Verify's default wait_seconds
    assert verify_window < wait_seconds, f"verification took {verify_window:.1f} s"
    in_window = [s for s in samples if window_start <= s.started <= window_end]
    full = sum(p.end - p.start for p in incident if p.share == 1.0)
    shares = ", ".join(
        f"{p.share:.1f} for {p.end - p.start:.1f} s ({sum(1 for s in failures if p.start < s.started <= p.end)} failed)"
        for p in incident
    )
    report(
        "production health: a release that fails only in production",
        failed_requests=f"{len(failures)} of {len(in_window)} sent during the incident ({len(samples)} during the run)",
        bound=f"<= {allowed:.0f} (bad share per phase x requests sent: 1/2 per batch of 1 of 2 replicas, 1 after)",
        incident=f"{window_end - window_start:.1f} s, of which {full:.1f} s fully on the bad release",
        phases=shares,
        verification=f"{verify_window:.1f} s (gives up after {SETTLE_SECONDS:g} s of one wrong answer; Verify waits up "
        f"to {wait_seconds:g} s)",
        outcome=f"rolled back automatically; production serves {V1.split('-')[0]}",
    )
