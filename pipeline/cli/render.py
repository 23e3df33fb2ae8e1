"""`pipeline render`: write the CI configs for one or every target, or check the committed ones."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import FileOption, app, console, err_console

TARGET_HELP = "jenkins, teamcity, github, or all (plugins add more)."


@app.command()
def render(
    target: Annotated[str, typer.Option("--target", "-t", help=TARGET_HELP)] = "all",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Write under this folder (default: the definition's folder).", show_default=False
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Write nothing; exit 1 and show a diff when the committed files differ."),
    ] = False,
    file: FileOption = None,
) -> None:
    """Render the CI configs (Jenkinsfile, .teamcity/, .github/workflows/) from the definition."""
    from pipeline.errors import RenderDriftError
    from pipeline.loader import load
    from pipeline.render import check as check_drift
    from pipeline.render import render as render_files
    from pipeline.render import resolve_targets, write
    from pipeline.render.base import RenderContext

    targets = resolve_targets(target)  # an unknown target fails before the definition is imported
    loaded = load(file)
    root = (out or loaded.root).resolve()
    definition = Path(os.path.relpath(loaded.file, root)).as_posix()
    files = render_files(loaded.spec, targets, RenderContext(definition=definition))
    if check:
        try:
            check_drift(files, root)
        except RenderDriftError as exc:
            sys.stdout.write(exc.diff)
            sys.stdout.flush()
            err_console.print(
                f"[bold red]error:[/] {len(exc.paths)} rendered file(s) differ from the committed ones: "
                f"{', '.join(exc.paths)}",
                highlight=False,
                soft_wrap=True,
            )
            err_console.print(f"[yellow]hint:[/] {exc.hint}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        console.print(f"[green]ok[/]: {len(files)} files match a fresh render ({', '.join(targets)})")
        return
    for path, changed in write(files, root):
        shown = Path(os.path.relpath(root / path)).as_posix()
        console.print(f"{'wrote' if changed else 'unchanged'} {shown}")
