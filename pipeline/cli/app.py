"""The typer app and the options every command shares."""

from __future__ import annotations

import os
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console

if TYPE_CHECKING:
    from pipeline.profiles.base import Engines

ENGINES: ContextVar[Engines | None] = ContextVar("pipeline_cli_engines", default=None)
"""The engines the commands use: None for the profiles' own; `main(engines=...)` injects others."""

app = typer.Typer(
    name="pipeline",
    help="Write a release pipeline once in Python; run it here, render it for Jenkins, TeamCity and GitHub.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from pipeline import __version__

        typer.echo(f"pipeline {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Show the version (CI installs exactly it)."
        ),
    ] = False,
) -> None:
    """Write a release pipeline once in Python; run it here, render it for Jenkins, TeamCity and GitHub."""


run_app = typer.Typer(help="Run the pipeline (or one stage) on this machine.", no_args_is_help=True)
app.add_typer(run_app, name="run")

# Off a terminal (CI logs, a pipe) rich would fold tables at 80 columns, splitting image names
# and URLs; log viewers are wider. COLUMNS still decides where it is set.
_LOG_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 132
console = Console(highlight=False, width=_LOG_WIDTH)
err_console = Console(stderr=True, highlight=False, width=_LOG_WIDTH)

FileOption = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="Definition file (default: the nearest pipelinefile.py).", show_default=False),
]
ProfileName = Literal["local", "aws"]
ProfileOption = Annotated[
    ProfileName | None,
    typer.Option("--profile", "-p", help="local (Docker on this machine) or aws (CloudFormation).", show_default=False),
]


def is_plain() -> bool:
    """Plain, line-oriented output when stdout is not a terminal or CI is set."""
    return bool(os.environ.get("CI")) or not sys.stdout.isatty()
