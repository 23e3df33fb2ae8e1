"""The `pipeline` command: a thin layer over the library. The only place that prints."""

from __future__ import annotations

import signal
import sys
from typing import NoReturn

from pipeline.cli.app import app, err_console
from pipeline.errors import EXIT_BAD_INPUT, PipelineError

# Importing the command modules registers their commands on `app`.
from pipeline.cli import commands  # noqa: F401  # isort: skip


def main() -> NoReturn:
    """Console-script entry point: expected errors become one readable block and an exit code."""
    # CI systems stop a build with SIGTERM: treat it like Ctrl-C, so teardown stages still run.
    signal.signal(signal.SIGTERM, lambda signum, frame: _raise_interrupt())
    try:
        # Without standalone mode click returns the code of `typer.Exit` instead of exiting.
        code = app(standalone_mode=False, prog_name="pipeline")
    except PipelineError as exc:
        print_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors and friends
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(EXIT_BAD_INPUT if isinstance(exc, click.UsageError) else exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            err_console.print("[bold red]aborted[/]")
            sys.exit(130)
        raise
    sys.exit(code if isinstance(code, int) else 0)


def _raise_interrupt() -> None:
    raise KeyboardInterrupt


def print_error(exc: PipelineError) -> None:
    err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
    if exc.hint:
        err_console.print(f"[yellow]hint:[/] {exc.hint}", highlight=False)
