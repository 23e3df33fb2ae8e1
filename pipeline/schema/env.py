"""What a project's `migrations/env.py` calls: the whole of it is

    from pipeline.schema.env import run_migrations
    run_migrations()

Online, each revision runs in a transaction of its own together with its row in Alembic's version
table (PostgreSQL's DDL is transactional), so a process killed in the middle of a revision leaves
the database at the revision before it: the version table stays the truth, and a re-run applies
what is missing. Every session first sets a lock timeout (a migration that cannot get its lock
fails fast instead of queueing every request behind it). Offline (`--sql`), the SQL is rendered
for PostgreSQL with the same lock timeout, which is what the lint reads.
"""

from __future__ import annotations

from typing import Any

from pipeline.faults import checkpoint
from pipeline.schema.migrations import LOCK_TIMEOUT, sqlalchemy_url


def run_migrations(target_metadata: Any = None) -> None:
    from alembic import context

    config = context.config
    stage = str(config.attributes.get("pipeline_stage", "migrate"))
    on_event = config.attributes.get("pipeline_on_event") or (lambda text: None)
    applied: list[str] = config.attributes.setdefault("pipeline_applied", [])

    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url") or "postgresql://",
            dialect_name="postgresql",
            literal_binds=True,
            target_metadata=target_metadata,
            transaction_per_migration=True,
        )
        context.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        with context.begin_transaction():
            context.run_migrations()
        return

    def applied_one(ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        revision = str(step.up_revision_id)
        # Inside the revision's transaction, after its DDL and its version row, before the commit:
        # a kill here leaves the database at the revision before (the crash tests aim here).
        checkpoint(f"migrate:{stage}:{revision}:uncommitted")
        applied.append(revision)
        on_event(f"applied revision {revision}")

    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(sqlalchemy_url(config.get_main_option("sqlalchemy.url") or ""), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            connection.commit()
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                transaction_per_migration=True,
                on_version_apply=applied_one,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


__all__ = ["run_migrations"]
