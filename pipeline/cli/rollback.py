"""`pipeline rollback ENV [--to IMAGE]`: back to the previous (or a named) known-good image, verified."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from pipeline.cli.app import ENGINES, FileOption, ProfileOption, app, console


@app.command()
def rollback(
    environment: Annotated[str, typer.Argument(help="The environment to roll back (e.g. production).")],
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="The image to go back to (default: the previous known-good one).", show_default=False
        ),
    ] = None,
    file: FileOption = None,
    profile: ProfileOption = None,
) -> None:
    """Move an environment back to its previous known-good image (or --to IMAGE), verify it, record it."""
    from pipeline.loader import load
    from pipeline.rollback import rollback as roll_back

    loaded = load(file)

    def show(line: str) -> None:
        console.print(f"[dim]{escape(line)}[/]")

    result = roll_back(loaded, environment, to=to, profile=profile, on_event=show, engines=ENGINES.get())
    if result.from_image == result.to_image:
        console.print(f"[green]ok[/]: {result.environment} already ran {escape(result.to_image)}; it verifies")
    else:
        console.print(
            f"[green]ok[/]: {result.environment} rolled back from {escape(str(result.from_image))} "
            f"to {escape(result.to_image)} in {result.seconds:.1f} s"
        )
    console.print(f"verified: {escape(result.report.detail)}")
    if result.url:
        console.print(f"url: {result.url}")
    if not result.known_good:
        console.print(f"[yellow]note:[/] {escape(result.to_image)} was not a known-good image of {result.environment}")
    if result.commit:
        console.print(f"recorded in git: {result.commit}")
    if result.pushed_to:
        console.print(f"pushed to: {escape(result.pushed_to)}")
