"""A database's schema revision as Alembic's version table says (for `pipeline status`): one query,
no Alembic import."""

from __future__ import annotations


def read_revision(url: str, *, timeout: int = 3) -> str:
    """The revisions in `alembic_version` ("none" for a database without one); a short reason in
    parentheses when it cannot be read."""
    try:
        import psycopg
    except ImportError:
        return "(install pipeline-as-code[schema] to read it)"
    try:
        with psycopg.connect(url, connect_timeout=timeout) as connection:
            row = connection.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
            if not row or not row[0]:
                return "none"
            revisions = [str(r[0]) for r in connection.execute("SELECT version_num FROM alembic_version")]
    except psycopg.Error as exc:
        return f"(unreadable: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})"
    return ", ".join(sorted(revisions)) or "none"


__all__ = ["read_revision"]
