"""Migrations against a real PostgreSQL server (Debian's, on 127.0.0.1): expand and contract on
their branches, Alembic's version table as the truth after a crash in the middle of a revision,
a failing revision rolled back whole, the lock timeout, N-1 compatibility of the example's SQL,
masking and the revision `pipeline status` shows."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import SchemaError
from pipeline.model import Sensitive
from pipeline.schema.masking import mask_statements
from pipeline.schema.migrations import Migrations
from pipeline.schema.revision import read_revision
from tests.conftest import REPO, cli_env
from tests.integration.postgres import Server, postgres_server

pytestmark = pytest.mark.integration
EXAMPLE = REPO / "examples" / "live-schema"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with postgres_server() as running:
        yield running


@pytest.fixture
def database(server: Server, request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]
    return server.create_database(name)


def project_migrations(tmp_path: Path, *releases: str) -> Path:
    folder = tmp_path / "migrations"
    shutil.copytree(EXAMPLE / "migrations", folder)
    add_releases(folder, *releases)
    return folder


def add_releases(folder: Path, *releases: str) -> None:
    for release in releases:
        for path in (EXAMPLE / "next-releases" / release / "migrations" / "versions").glob("*.py"):
            shutil.copy2(path, folder / "versions" / path.name)


def columns(url: str, table: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
            (table,),
        ).fetchall()
    return [str(r[0]) for r in rows]


def app_sql(release: str | None) -> tuple[str, str]:
    """The greeting query and the visit insert of the example app of `release` (None: 1.0.0)."""
    path = EXAMPLE / "app" / "app.py" if release is None else EXAMPLE / "next-releases" / release / "app" / "app.py"
    text = path.read_text()
    greeting = re.search(r'^GREETING = "(.+)"$', text, re.M)
    visit = re.search(r'^RECORD_VISIT = "(.+)"$', text, re.M)
    assert greeting
    assert visit
    return greeting.group(1), visit.group(1)


def serve_page(url: str, release: str | None) -> str:
    """What the page of `release` does against the database at `url` (raises if it refuses)."""
    import psycopg

    greeting_sql, visit_sql = app_sql(release)
    with psycopg.connect(url, autocommit=True) as connection:
        greeting = connection.execute(greeting_sql).fetchone()
        visit = connection.execute(visit_sql, ("test-agent",)).fetchone()
    assert greeting is not None
    assert visit is not None
    return f"{greeting[0]} (visit {visit[0]})"


def test_expand_then_contract_brings_each_branch_to_its_head(tmp_path: Path, database: str) -> None:
    folder = project_migrations(tmp_path, "1.1.0")
    migrations = Migrations(folder)
    first = migrations.upgrade(database, "expand")
    assert first.before == ()
    assert first.applied == ("e1_tables", "e2_message")
    assert first.after == ("e2_message",)
    assert "message" in columns(database, "greetings")
    assert migrations.upgrade(database, "contract").applied == ()  # no contract branch yet
    again = migrations.upgrade(database, "expand")
    assert again.applied == ()
    assert again.after == ("e2_message",)

    add_releases(folder, "1.2.0")
    assert [r.id for r in migrations.pending(database, "expand")] == []
    assert [r.id for r in migrations.pending(database, "contract")] == ["c1_drop_text"]
    contracted = migrations.upgrade(database, "contract")
    assert contracted.applied == ("c1_drop_text",)
    # c1 depends on e2: Alembic's version table keeps the one head that implies both.
    assert contracted.after == ("c1_drop_text",)
    assert columns(database, "greetings") == ["id", "message"]
    assert read_revision(database) == "c1_drop_text"
    # The next release's expand goes on from there.
    (folder / "versions" / "e3_visit_path.py").write_text(
        (folder / "versions" / "e2_message.py")
        .read_text()
        .replace('revision = "e2_message"', 'revision = "e3_visit_path"')
        .replace('down_revision = "e1_tables"', 'down_revision = "e2_message"')
        .replace(
            'op.add_column("greetings", sa.Column("message", sa.Text, nullable=True))',
            'op.add_column("visits", sa.Column("path", sa.Text, nullable=True))',
        )
        .replace('op.execute("UPDATE greetings SET message = text WHERE message IS NULL")', "")
    )
    assert migrations.upgrade(database, "expand").applied == ("e3_visit_path",)
    assert "path" in columns(database, "visits")
    assert migrations.upgrade(database, "contract").applied == ()


def test_the_previous_release_works_on_the_expanded_schema_and_a_breaking_expand_shows(
    tmp_path: Path, server: Server, database: str
) -> None:
    folder = project_migrations(tmp_path)
    migrations = Migrations(folder)
    migrations.upgrade(database, "expand")
    assert serve_page(database, None) == "Hello World (visit 1)"
    add_releases(folder, "1.1.0")
    migrations.upgrade(database, "expand")
    assert serve_page(database, None) == "Hello World (visit 2)"  # 1.0.0 on 1.1.0's schema
    assert serve_page(database, "1.1.0") == "Hello World (visit 3)"
    add_releases(folder, "1.2.0")
    migrations.upgrade(database, "contract")
    assert serve_page(database, "1.1.0") == "Hello World (visit 4)"  # the rollback target after the contract
    import psycopg

    with pytest.raises(psycopg.errors.UndefinedColumn):
        serve_page(database, None)  # why a contract waits for the whole fleet

    # An expand the lint passes (a NOT VALID constraint takes no long lock) that still breaks the
    # release before it: its inserts lack the new column. Only running the old code shows it.
    other = server.create_database("breaking_expand")
    bad = project_migrations(tmp_path / "bad")
    (bad / "versions" / "e2_path.py").write_text(BREAKING_EXPAND)
    Migrations(bad).upgrade(other, "expand")
    with pytest.raises(psycopg.errors.CheckViolation):
        serve_page(other, None)


BREAKING_EXPAND = textwrap.dedent(
    '''\
    """expand: visits.path, required from now on (but release 1.0.0 does not set it)."""
    import sqlalchemy as sa
    from alembic import op

    revision = "e2_path"
    down_revision = "e1_tables"
    branch_labels = None
    depends_on = None


    def upgrade() -> None:
        op.add_column("visits", sa.Column("path", sa.Text, nullable=True))
        op.create_check_constraint("visits_path_set", "visits", "path IS NOT NULL", postgresql_not_valid=True)
    '''
)


def test_a_crash_in_the_middle_of_a_revision_leaves_the_revision_before_and_a_rerun_converges(
    tmp_path: Path, database: str
) -> None:
    folder = project_migrations(tmp_path, "1.1.0")
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from pipeline.schema.migrations import Migrations
        Migrations(Path({str(folder)!r}), stage="crash").upgrade({database!r}, "expand")
        """
    )
    killed = subprocess.run(
        [sys.executable, "-c", code],
        env=cli_env(PIPELINE_FAULT="migrate:crash:e2_message:uncommitted"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # e1 committed before the kill; e2's DDL, backfill and version row died with its transaction.
    assert read_revision(database) == "e1_tables"
    assert "message" not in columns(database, "greetings")
    rerun = Migrations(folder).upgrade(database, "expand")
    assert rerun.before == ("e1_tables",)
    assert rerun.applied == ("e2_message",)
    assert "message" in columns(database, "greetings")


def test_a_failing_revision_is_rolled_back_whole_and_named(tmp_path: Path, database: str) -> None:
    folder = project_migrations(tmp_path)
    (folder / "versions" / "e2_broken.py").write_text(
        textwrap.dedent(
            '''\
            """expand: a column, then a statement the database refuses."""
            import sqlalchemy as sa
            from alembic import op

            revision = "e2_broken"
            down_revision = "e1_tables"
            branch_labels = None
            depends_on = None


            def upgrade() -> None:
                op.add_column("visits", sa.Column("path", sa.Text))
                op.execute("UPDATE no_such_table SET x = 1")
            '''
        )
    )
    with pytest.raises(SchemaError, match=r"revision e2_broken failed and was rolled back .*stays at e1_tables"):
        Migrations(folder).upgrade(database, "expand")
    assert read_revision(database) == "e1_tables"
    assert "path" not in columns(database, "visits")


def test_a_migration_that_cannot_get_its_lock_gives_up_instead_of_queueing_requests(
    tmp_path: Path, database: str
) -> None:
    import psycopg

    folder = project_migrations(tmp_path)
    migrations = Migrations(folder)
    migrations.upgrade(database, "expand")
    add_releases(folder, "1.1.0")
    with psycopg.connect(database) as reader:
        reader.execute("SELECT * FROM greetings").fetchall()  # a transaction holding a lock on greetings
        with pytest.raises(SchemaError, match="lock timeout"):
            migrations.upgrade(database, "expand")
        reader.rollback()
    assert read_revision(database) == "e1_tables"
    assert migrations.upgrade(database, "expand").applied == ("e2_message",)


def test_masking_overwrites_the_sensitive_columns_the_copy_has(database: str) -> None:
    import psycopg

    with psycopg.connect(database, autocommit=True) as connection:
        connection.execute("CREATE TABLE visits (id int, agent text)")
        connection.execute("INSERT INTO visits VALUES (1, 'alice@example.com'), (2, NULL)")
        for statement in mask_statements(
            [Sensitive(column="visits.agent", mask="'masked-' || id"), Sensitive(column="visits.email")]
        ):
            connection.execute(statement)
        rows = connection.execute("SELECT id, agent FROM visits ORDER BY id").fetchall()
    assert rows == [(1, "masked-1"), (2, "masked-2")]


def test_the_revision_of_a_database_without_a_version_table(database: str) -> None:
    assert read_revision(database) == "none"
    assert read_revision(database.replace("app-password", "wrong")).startswith("(unreadable: ")
