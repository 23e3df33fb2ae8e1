"""`pipeline image base`: make the base image local images start from (pulled and derived, or built
with debootstrap)."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.app import app, console

image_app = typer.Typer(help="Images on this machine.", no_args_is_help=True)
app.add_typer(image_app, name="image")


@image_app.command("base")
def base(
    tag: Annotated[str, typer.Option("--tag", "-t", help="Name of the base image.")] = "pipeline-base:bookworm",
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if it exists.")] = False,
    no_pull: Annotated[
        bool,
        typer.Option("--no-pull", help="Build from Debian's mirror with debootstrap (root) without trying a registry."),
    ] = False,
) -> None:
    """Make sure the base image exists. The default one is derived from debian:bookworm-slim where a
    registry is reachable (no root), another name is pulled; else (or with --no-pull) it is built from
    Debian's mirror with debootstrap, as root."""
    from pipeline.engines.base_image import ensure_base_image

    def show(line: str) -> None:
        console.print(f"[dim]{line}[/]", markup=True, highlight=False)

    image_id = ensure_base_image(tag, on_line=show, force=force, allow_pull=not no_pull)
    console.print(f"[green]ok[/]: {tag} is {image_id[:19]}")
