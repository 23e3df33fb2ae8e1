"""What a run of one of our rendered GitHub workflows left behind, read back for assertions: the
stages each job runs (`pipeline run stage NAME` steps) and the run manifests each job uploaded."""

from __future__ import annotations

import json
import zipfile
from typing import Any

from tests.ci_runners.act import ActRun


def stage_steps(job: dict[str, Any]) -> dict[str, str]:
    """The steps of a rendered job that run `pipeline run stage NAME`: step name -> stage NAME."""
    found = {}
    for step in job["steps"]:
        command = str(step.get("run", ""))
        if command.startswith("pipeline run stage "):
            found[step["name"]] = command.split()[3]
    return found


def manifests_in(run: ActRun) -> dict[str, dict[str, Any]]:
    """What each uploaded artifact holds: artifact name -> {stage: that stage's manifest entry}."""
    held: dict[str, dict[str, Any]] = {}
    for folder in sorted(run.artifacts.iterdir()):
        with zipfile.ZipFile(folder / f"{folder.name}.zip") as archive:
            entries: dict[str, Any] = {}
            for member in archive.namelist():
                data = json.loads(archive.read(member))
                assert member == f"{next(iter(data['stages']))}.json", member
                entries.update(data["stages"])
            held[folder.name] = entries
    return held


def downloads_saw_earlier_uploads(run: ActRun, held: dict[str, dict[str, Any]]) -> list[str]:
    """Jobs whose `Download run manifests` step did not find exactly the manifests uploaded by the
    jobs that finished before it started (the pattern is manifest-*); empty when all did."""
    wrong = []
    uploaded_before = 0
    for job_id in run.started_order():
        if "Download run manifests" in {s.name for s in run.jobs[job_id].steps}:
            expected = f"Filtering artifacts by pattern 'manifest-*': {uploaded_before} of {uploaded_before}"
            if expected not in run.jobs[job_id].log:
                wrong.append(f"{job_id}: expected {expected!r}")
        uploaded_before += f"manifest-{job_id}" in held
    return wrong
