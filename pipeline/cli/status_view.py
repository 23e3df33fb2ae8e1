"""`pipeline status` output."""

from __future__ import annotations

from rich.table import Table

from pipeline.cli.app import console
from pipeline.loader import Loaded
from pipeline.status import collect


def show_status(loaded: Loaded, environment: str | None) -> None:
    report = collect(loaded, environment)
    envs = Table(title=f"pipeline {report.pipeline}: environments", title_justify="left")
    for column in ("environment", "profile", "stack", "image", "url", "known-good"):
        envs.add_column(column, overflow="fold")
    for env in report.environments:
        envs.add_row(
            env.name,
            env.profile,
            env.stack,
            env.image or "[dim](nothing deployed)[/]",
            env.url or "",
            str(len(env.known_good)),
        )
    console.print(envs)
    if environment is not None:
        return
    runs = Table(title="last runs", title_justify="left")
    runs.add_column("run")
    runs.add_column("profile")
    runs.add_column("outcome")
    runs.add_column("stages", overflow="fold")
    for run in report.runs:
        style = {"ok": "green", "failed": "red"}.get(run.outcome, "yellow")
        stages = ", ".join(f"{name}={status}" for name, status in run.stages.items())
        runs.add_row(run.run_id, run.profile, f"[{style}]{run.outcome}[/]", stages)
    if not report.runs:
        runs.add_row("[dim](no runs yet)[/]", "", "", "")
    console.print(runs)
