"""The `pipeline` command: a thin layer over the library. The only place that prints."""

from __future__ import annotations

import signal
import sys
from typing import NoReturn

from pipeline.cli.app import app, err_console
from pipeline.errors import PipelineError, ToolMissingError

# Importing the command modules registers their commands on `app`.
from pipeline.cli import commands, doctor, image, render, rollback  # noqa: F401  # isort: skip


def main() -> NoReturn:
    """Console-script entry point: expected errors become one readable block and an exit code.

    Typer handles its own usage errors (exit 2) and `typer.Exit`; our errors propagate to here."""
    # CI systems stop a build with SIGTERM: treat it like Ctrl-C, so teardown stages still run.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app(prog_name="pipeline")
    except PipelineError as exc:
        print_error(exc)
        sys.exit(exc.exit_code)
    except ModuleNotFoundError as exc:
        missing = run_extra_module(exc)
        if missing is None:
            raise
        error = ToolMissingError(
            f"this command needs the Python package {missing!r}, which comes with the [run] extra "
            "(the plain install renders and validates definitions only)",
            hint=f"{RUN_EXTRA_INSTALL} (it brings docker, boto3, gitpython, pytest-testinfra and cfn-lint)",
        )
        print_error(error)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        sys.exit(130)
    sys.exit(0)  # pragma: no cover - app() always exits in standalone mode


RUN_EXTRA_INSTALL = "pip install 'pipeline-as-code[run]'"
RUN_EXTRA_MODULES = frozenset({"docker", "boto3", "botocore", "git", "gitdb", "testinfra", "cfnlint", "pytest"})
"""Top-level modules of the [run] extra's packages: missing ones mean the plain install."""


def run_extra_module(exc: ModuleNotFoundError) -> str | None:
    """The [run] extra's module that `exc` says is missing, or None (another import failed)."""
    name = (exc.name or "").split(".")[0]
    return name if name in RUN_EXTRA_MODULES else None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def print_error(exc: PipelineError) -> None:
    from rich.markup import escape

    # soft_wrap: a message stays one line in a log (greppable); a terminal wraps it by itself
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    if exc.hint:
        err_console.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True)
