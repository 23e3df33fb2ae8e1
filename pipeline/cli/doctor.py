"""`pipeline doctor`: each tool the profile needs, whether it is there, and the fix when it is not."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.app import ProfileOption, app, console

_MARKS = {"ok": "[green]ok[/]     ", "warn": "[yellow]warn[/]   ", "missing": "[red]missing[/]"}


@app.command()
def doctor(
    profile: ProfileOption = None,
    base_image: Annotated[
        str, typer.Option("--base-image", help="The base image local bakes start from.")
    ] = "pipeline-base:bookworm",
) -> None:
    """Check the tools a profile needs (Docker engine, Packer, debootstrap, git, AWS) and show the fixes."""
    from rich.markup import escape

    from pipeline.profiles import diagnose

    report = diagnose(profile or "local", base_image=base_image)
    console.print(f"[bold]pipeline doctor[/] ({report.profile} profile)")
    width = max(len(f.name) for f in report.findings)
    for finding in report.findings:
        console.print(f"  {_MARKS[finding.status]} {finding.name:<{width}}  {escape(finding.detail)}", soft_wrap=True)
        if finding.fix and finding.status != "ok":
            console.print(f"  {'':7} {'':<{width}}  [dim]fix:[/] {escape(finding.fix)}", soft_wrap=True)
    if report.ok:
        console.print(f"[green]ready[/]: everything the {report.profile} profile needs is here")
        return
    names = ", ".join(f.name for f in report.missing)
    console.print(
        f"[red]not ready[/]: missing {names}; run the fixes above, then `pipeline doctor` again", soft_wrap=True
    )
    raise typer.Exit(report.exit_code)  # a run meeting the same fault exits with the same code
