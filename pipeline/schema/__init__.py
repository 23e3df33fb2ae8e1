"""Live schema changes: Alembic migrations split into an `expand` and a `contract` branch (the
pattern OpenStack Neutron uses), linted before they run, applied by the Migrate stage.

    migrations.py  the script folder: branches, revisions, heads; upgrading a database
    env.py         what a project's migrations/env.py calls (one transaction per revision,
                   a lock timeout, the fault checkpoints of the crash tests)
    sql.py         each revision's SQL, rendered offline, with the line of the migration file
                   that emitted each statement
    lint.py        squawk over that SQL: locking operations, and drops or renames in an expand
    masking.py     the SQL that masks sensitive columns of a test stack's copy of production
    fleet.py       whether a contract may run: every replica runs the release that ships it

Nothing here is imported by the spec or the renderers; alembic, sqlalchemy and psycopg come with
the `schema` extra (`pip install pipeline-as-code[schema]`).
"""
