"""`pipeline status` output."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from pipeline.cli.app import console
from pipeline.cli.flags_view import alert_line, flags_table
from pipeline.loader import Loaded
from pipeline.model import Profile
from pipeline.profiles.base import Engines
from pipeline.status import EnvironmentStatus, collect

_STATE_STYLE = {"ready": "green", "updating": "yellow", "failed": "red", "absent": "dim"}


def show_status(
    loaded: Loaded, environment: str | None, profile: Profile | None = None, *, engines: Engines | None = None
) -> None:
    report = collect(loaded, environment, profile=profile, engines=engines)
    envs = Table(title=f"pipeline {report.pipeline}: environments", title_justify="left")
    schemas = any(env.schema for env in report.environments)
    columns = ("environment", "profile", "stack", "state", "image", *(("schema",) if schemas else ()), "url")
    for column in (*columns, "known-good"):
        envs.add_column(column, overflow="fold")
    for env in report.environments:
        envs.add_row(
            env.name,
            env.profile,
            env.stack,
            _state(env),
            escape(env.image) if env.image else "[dim](nothing deployed)[/]",
            *((escape(env.schema),) if schemas else ()),
            env.url or "",
            str(len(env.known_good)),
        )
    console.print(envs)
    for env in report.environments:
        if env.last_release:
            console.print(f"{env.name}: last release {escape(env.last_release)}; history from {escape(env.history)}")
        if env.known_good:
            console.print(f"{env.name}: known-good images, newest first: {escape(', '.join(env.known_good))}")
        if env.note:
            console.print(f"[yellow]{env.name}:[/] {escape(env.note)}")
        if env.flags_note:
            console.print(f"[yellow]{env.name}:[/] {escape(env.flags_note)}")
    for env in report.environments:
        if env.flags is not None:
            console.print(flags_table(env.flags, f"{env.name}: flags"))
            alert = alert_line(env.flags)
            if alert is not None:
                console.print(f"{env.name}: {alert}")
    if report.test_stacks:
        tests = Table(title="test stacks that exist now", title_justify="left")
        for column in ("environment", "stack", "state", "image", "url", "why"):
            tests.add_column(column, overflow="fold")
        for stack in report.test_stacks:
            tests.add_row(
                stack.name,
                stack.stack,
                _state(stack),
                escape(stack.image or ""),
                stack.url or "",
                escape(stack.note),
            )
        console.print(tests)
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
        runs.add_row("[dim](no runs on this machine)[/]", "", "", "")
    console.print(runs)


def _state(env: EnvironmentStatus) -> str:
    if not env.observed:
        return "[yellow]not observed[/]"
    style = _STATE_STYLE.get(env.state, "")
    return f"[{style}]{env.state}[/]" if style else env.state
