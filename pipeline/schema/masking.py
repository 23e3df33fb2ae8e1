"""Masking a test stack's copy of production: every column the definition marks sensitive
(`Database(sensitive=[...])`) is overwritten before the rehearsal reads it."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.model import Sensitive


def mask_statements(sensitive: Sequence[Sensitive]) -> list[str]:
    """One guarded UPDATE per column: a column the copied schema does not have (not added yet, or
    already contracted away) is skipped, not an error."""
    statements = []
    for item in sensitive:
        parts = item.column.split(".")
        schema, table, column = (["public", *parts] if len(parts) == 2 else parts)[:3]
        statements.append(
            "DO $mask$ BEGIN "
            "IF EXISTS (SELECT 1 FROM information_schema.columns "
            f"WHERE table_schema = '{schema}' AND table_name = '{table}' AND column_name = '{column}') THEN "
            f'UPDATE "{schema}"."{table}" SET "{column}" = {item.mask}; '
            "END IF; END $mask$;"
        )
    return statements


def mask_script(sensitive: Sequence[Sensitive]) -> str:
    """The statements as one script, in one transaction (psql -1)."""
    return "\n".join(mask_statements(sensitive)) + ("\n" if sensitive else "")


__all__ = ["mask_script", "mask_statements"]
