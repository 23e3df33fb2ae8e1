"""The `pipeline` command: a thin layer over the library. The only place that prints."""

from __future__ import annotations

import contextlib
import os
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
        found = extra_of_missing_module(exc)
        if found is None:
            raise
        missing, extra = found
        error = ToolMissingError(
            f"this command needs the Python package {missing!r}, which comes with the [{extra}] extra "
            f"({EXTRA_PURPOSE[extra]})",
            hint=f"pip install 'pipeline-as-code[{extra}]' (it brings {EXTRA_BRINGS[extra]})",
        )
        print_error(error)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        interrupted(whole_process=argv is None)
    except SystemExit as exc:
        # Typer turns a KeyboardInterrupt that leaves a command (a signal before the run's stages,
        # while the definition loads) into a silent exit 130, whichever signal it was.
        if caused_by_keyboard_interrupt(exc):
            interrupted(whole_process=argv is None)
        if interrupts.requested() is not None and argv is None:
            exit_now(exc.code if isinstance(exc.code, int) else 1)
        raise
    sys.exit(0)  # pragma: no cover - app() always exits in standalone mode


def interrupted(*, whole_process: bool) -> NoReturn:
    interrupts.record_if_none()
    err_console.print(f"[bold red]interrupted[/] ({interrupts.name()})")
    if whole_process:
        exit_now(interrupts.exit_code())
    sys.exit(interrupts.exit_code())


def exit_now(code: int) -> NoReturn:
    """Leave the process with `code` once a signal stopped it (its cleanup is done by now).

    Not through sys.exit: run as `python -m pipeline`, CPython 3.11 ends the process by re-raising
    SIGINT at the very end (exit -2, "130" to a shell, whatever code the program chose) once a
    KeyboardInterrupt has left an `exec()` of a string, and dataclasses build their methods that way
    while modules are imported; a SIGTERM would look like a SIGINT. So: flush, then os._exit."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def caused_by_keyboard_interrupt(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is among the exceptions `exc` was raised from or while handling."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc.__cause__, exc.__context__]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        stack += [current.__cause__, current.__context__]
    return False


EXTRA_MODULES: dict[str, frozenset[str]] = {
    "run": frozenset({"docker", "boto3", "botocore", "git", "gitdb", "testinfra", "cfnlint", "pytest", "redis"}),
    "schema": frozenset({"alembic", "sqlalchemy", "psycopg"}),
    "flags": frozenset({"openfeature"}),
}
"""Top-level modules of each extra's packages: a missing one means the install lacks that extra."""
EXTRA_BRINGS = {
    "run": "docker, boto3, gitpython, pytest-testinfra, cfn-lint and redis",
    "schema": "alembic, SQLAlchemy, psycopg and squawk",
    "flags": "the OpenFeature SDK and redis",
}
EXTRA_PURPOSE = {
    "run": "the plain install renders and validates definitions only",
    "schema": "Migrate stages read and lint their Alembic migrations with it",
    "flags": "the application side of feature flags",
}


def extra_of_missing_module(exc: ModuleNotFoundError) -> tuple[str, str] | None:
    """(module, extra) when `exc` says a module of one of our extras is missing, else None (another
    import failed: a bug or the user's own code, shown as it is)."""
    name = (exc.name or "").split(".")[0]
    for extra, modules in EXTRA_MODULES.items():
        if name in modules:
            return name, extra
    return None


def print_error(exc: PipelineError) -> None:
    from rich.markup import escape

    # soft_wrap: a message stays one line in a log (greppable); a terminal wraps it by itself
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    if exc.hint:
        err_console.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True)
