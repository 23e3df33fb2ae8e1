"""The `pipeline` command: a thin layer over the library. The only place that prints."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from pipeline import interrupts
from pipeline.cli.app import ENGINES, app, err_console
from pipeline.errors import PipelineError, ToolMissingError

if TYPE_CHECKING:
    from pipeline.profiles.base import Engines

# Importing the command modules registers their commands on `app`.
from pipeline.cli import commands, doctor, flag, image, render, rollback  # noqa: F401  # isort: skip


def main(argv: Sequence[str] | None = None, *, engines: Engines | None = None) -> NoReturn:
    """Console-script entry point: expected errors become one readable block and an exit code.

    Typer handles its own usage errors (exit 2) and `typer.Exit`; our errors propagate to here.
    `argv` defaults to sys.argv; `engines` replaces the profiles' engines (tests)."""
    # Ctrl-C, and the SIGTERM a CI system stops a build with: recorded at once (never lost), then
    # a KeyboardInterrupt; teardown stages still run (pipeline/interrupts.py).
    interrupts.install()
    ENGINES.set(engines)
    try:
        app(args=None if argv is None else list(argv), prog_name="pipeline")
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
        interrupts.record_if_none()
        err_console.print(f"[bold red]interrupted[/] ({interrupts.name()})")
        sys.exit(interrupts.exit_code())
    sys.exit(0)  # pragma: no cover - app() always exits in standalone mode


RUN_EXTRA_INSTALL = "pip install 'pipeline-as-code[run]'"
RUN_EXTRA_MODULES = frozenset({"docker", "boto3", "botocore", "git", "gitdb", "testinfra", "cfnlint", "pytest"})
"""Top-level modules of the [run] extra's packages: missing ones mean the plain install."""


def run_extra_module(exc: ModuleNotFoundError) -> str | None:
    """The [run] extra's module that `exc` says is missing, or None (another import failed)."""
    name = (exc.name or "").split(".")[0]
    return name if name in RUN_EXTRA_MODULES else None


def print_error(exc: PipelineError) -> None:
    from rich.markup import escape

    # soft_wrap: a message stays one line in a log (greppable); a terminal wraps it by itself
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    if exc.hint:
        err_console.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True)
