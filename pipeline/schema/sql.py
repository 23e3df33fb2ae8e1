"""Each revision's SQL, rendered offline for PostgreSQL (no database), with the line of the
migration file whose `op.*` call emitted each statement: what the lint reads and reports."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import BadInputError
from pipeline.schema.migrations import LOCK_TIMEOUT, Migrations, Revision


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int
    """Line of the migration file that emitted it (1-based; 0 when it could not be told)."""


def revision_sql(migrations: Migrations, revision: Revision) -> list[Statement]:
    """The statements `revision`'s upgrade() runs, in order, each with its source line."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    script = migrations.scripts().get_revision(revision.id)
    if script is None:  # pragma: no cover - revisions() just listed it
        raise BadInputError(f"no revision {revision.id} in {migrations.folder}")
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql", opts={"as_sql": True, "output_buffer": buffer, "literal_binds": True}
    )
    statements: list[Statement] = []
    source = str(Path(revision.path).resolve())
    original = context.impl._exec

    def capture(construct: Any, *args: Any, **kwargs: Any) -> Any:
        line = _caller_line(source)
        start = buffer.tell()
        result = original(construct, *args, **kwargs)
        text = buffer.getvalue()[start:].strip()
        if text:
            statements.append(Statement(text, line))
        return result

    context.impl._exec = capture  # type: ignore[method-assign]
    try:
        with Operations.context(context):
            script.module.upgrade()
    except Exception as exc:
        raise BadInputError(
            f"{revision.path}: its upgrade() cannot be rendered as SQL: {type(exc).__name__}: {exc}",
            hint="a migration must work offline too (no reads of the database while it builds its statements)",
        ) from None
    return statements


def _caller_line(source: str) -> int:
    frame = sys._getframe(1)
    while frame is not None:
        if str(Path(frame.f_code.co_filename).resolve()) == source:
            return frame.f_lineno
        frame = frame.f_back  # type: ignore[assignment]
    return 0


def lint_script(statements: list[Statement]) -> tuple[str, dict[int, Statement]]:
    """The statements as one SQL file for the linter (after the lock timeout every session sets),
    and which statement each of its lines (0-based) belongs to."""
    lines = [f"SET lock_timeout = '{LOCK_TIMEOUT}';"]
    owner: dict[int, Statement] = {}
    for statement in statements:
        text = statement.sql if statement.sql.rstrip().endswith(";") else statement.sql.rstrip() + ";"
        for piece in text.splitlines():
            owner[len(lines)] = statement
            lines.append(piece)
    return "\n".join(lines) + "\n", owner


__all__ = ["Statement", "lint_script", "revision_sql"]
