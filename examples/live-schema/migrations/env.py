"""Alembic's environment for this service: the pipeline's (one transaction per revision with its
version row, a lock timeout, offline SQL for the lint). See docs/schema.md."""

from pipeline.schema.env import run_migrations

run_migrations()
