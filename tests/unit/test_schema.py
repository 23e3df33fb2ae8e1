"""Live schema changes without a database: the Migrate kind's rules, the template's database read
by the local topology, the lint of the migration SQL (squawk, a real tool: no database needed),
masking statements and the contract's fleet rule."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from pipeline.engines.cfn_template import load_template
from pipeline.engines.stack import Replica
from pipeline.engines.topology import topology
from pipeline.errors import DefinitionError, MigrationLintError, TemplateError
from pipeline.executors.migrate import older_replicas
from pipeline.model import Database, Environment, Sensitive
from pipeline.schema.lint import check, lint
from pipeline.schema.masking import mask_statements
from pipeline.schema.migrations import Migrations
from tests.conftest import REPO
from tests.unit.cli_inprocess import run_cli

EXAMPLE = REPO / "examples" / "live-schema"


def migrations_copy(tmp_path: Path, *releases: str) -> Path:
    """The example's migrations, with the revisions of `releases` (next-releases/) added."""
    folder = tmp_path / "migrations"
    shutil.copytree(EXAMPLE / "migrations", folder)
    for release in releases:
        for path in (EXAMPLE / "next-releases" / release / "migrations" / "versions").glob("*.py"):
            shutil.copy2(path, folder / "versions" / path.name)
    return folder


def revision(folder: Path, name: str, body: str, *, down: str | None, label: str | None = None, deps: str | None = None) -> Path:  # fmt: skip
    path = folder / "versions" / f"{name}.py"
    path.write_text(
        textwrap.dedent(
            f'''\
            """{name}."""
            import sqlalchemy as sa
            from alembic import op

            revision = "{name}"
            down_revision = {down!r}
            branch_labels = {(label,) if label else None!r}
            depends_on = {(deps,) if deps else None!r}


            def upgrade() -> None:
            '''
        )
        + textwrap.indent(textwrap.dedent(body).strip(), "    ")
        + "\n"
    )
    return path


# --- the spec ------------------------------------------------------------------------------------------


def definition(migrate: str, *, database: bool = True) -> str:
    db = ', database=Database(migrations="migrations")' if database else ""
    return f"""
from pipeline import *
with Pipeline("p", environments=[Environment(name="test", ephemeral=True),
                                 Environment(name="production", template="web.yaml"{db})]) as p:
    bake = Bake(name="bake", template="images/web.pkr.hcl")
    stack = TestStack(name="test-stack", environment="test", image=bake)
    m = {migrate}
    t = Teardown(name="teardown", stack=stack)
    bake >> stack >> m >> t
"""


@pytest.mark.parametrize(
    ("migrate", "database", "expected"),
    [
        ('Migrate(name="m", phase="expand", image=bake)', True, "name either environment= (a persistent"),
        (
            'Migrate(name="m", phase="expand", image=bake, environment="production", stack=stack)',
            True,
            "not both or neither",
        ),
        ('Migrate(name="m", phase="expand", image=bake, environment="test")', True, "is ephemeral"),
        ('Migrate(name="m", phase="expand", image=bake, environment="production")', False, "declares no database"),
        ('Migrate(name="m", phase="expand", image=bake, stack=stack)', False, "declares no database"),
        ('Migrate(name="m", phase="sideways", image=bake, stack=stack)', True, "expand"),
    ],
)
def test_a_migrate_stage_names_one_environment_with_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], migrate: str, database: bool, expected: str
) -> None:
    (tmp_path / "pipelinefile.py").write_text(definition(migrate, database=database))
    (tmp_path / "web.yaml").write_text("Resources: {}\n")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "web.pkr.hcl").write_text("# packer\n")
    result = run_cli(["validate", "--definition-only"], tmp_path, capsys)
    assert result.code == 2, result.out + result.err
    assert expected in result.out + result.err
    assert "pipelinefile.py:" in result.out + result.err


EXAMPLE_WIRING = (
    "    commit_test >> bake >> test_stack >> expand_test >> update >> contract_test >> rollback >> teardown\n"
    "    teardown >> expand >> promote >> contract\n"
)


def validate_example_wired(tmp_path: Path, capsys: pytest.CaptureFixture[str], wiring: str) -> tuple[int, str]:
    """`pipeline validate --definition-only` on the bundled example with its stages wired by `wiring`."""
    text = (EXAMPLE / "pipelinefile.py").read_text()
    assert EXAMPLE_WIRING in text  # the example's own order, which the cases below change
    root = tmp_path / "service"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("golden"))
    (root / "pipelinefile.py").write_text(
        text.replace(EXAMPLE_WIRING, textwrap.indent(textwrap.dedent(wiring).strip(), "    ") + "\n")
    )
    result = run_cli(["validate", "--definition-only"], root, capsys)
    return result.code, result.out + result.err


def test_the_right_order_of_migrations_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = validate_example_wired(tmp_path, capsys, EXAMPLE_WIRING)
    assert code == 0, text


@pytest.mark.parametrize(
    ("wiring", "expected"),
    [
        pytest.param(
            """
            commit_test >> bake >> test_stack >> expand_test >> update >> contract_test >> rollback >> teardown
            teardown >> contract >> promote >> expand
            """,
            [
                "(contract).needs: the contract must run after 'promote', which deploys the new release to 'production'",
                "(expand).needs: the expand must run before 'promote', which deploys the new release to 'production'",
                "the right order is expand >> promote >> contract (write expand >> promote)",
                "(write promote >> contract)",
            ],
            id="production-expand-after-promote-contract-before",
        ),
        pytest.param(
            """
            commit_test >> bake >> test_stack >> update >> expand_test >> rollback >> contract_test >> teardown
            teardown >> expand >> promote >> contract
            """,
            [
                "(expand-test).needs: the expand must run before 'update-stack', which deploys the new release to the "
                "stack of 'test-stack'",
                "(contract-test).needs: the contract must run before 'rollback', the rehearsed rollback: it runs the "
                "previous image on the migrated schema",
                "the right order is expand-test >> update-stack >> contract-test >> rollback",
            ],
            id="test-stack-expand-after-update-contract-after-rollback",
        ),
        pytest.param(
            """
            commit_test >> bake >> test_stack >> expand_test >> contract_test >> update >> rollback >> teardown
            teardown >> expand >> promote >> contract
            """,
            [
                "(contract-test).needs: the contract must run after 'update-stack'",
                "(write update-stack >> contract-test)",
            ],
            id="test-stack-contract-before-update",
        ),
        pytest.param(
            """
            commit_test >> bake >> test_stack >> update >> rollback >> expand_test >> contract_test >> teardown
            teardown >> expand >> promote >> contract
            """,
            [
                "(expand-test).needs: the expand must run before 'rollback', the rehearsed rollback",
                "(contract-test).needs: the contract must run before 'rollback', the rehearsed rollback",
                "(expand-test).needs: the expand must run before 'update-stack'",
            ],
            id="test-stack-migrations-after-the-rehearsed-rollback",
        ),
        pytest.param(
            """
            commit_test >> bake >> test_stack >> expand_test >> update >> contract_test >> rollback >> teardown
            teardown >> [expand, promote]
            promote >> contract
            """,
            ["(expand).needs: the expand must run before 'promote'"],
            id="production-expand-beside-promote-not-before-it",
        ),
    ],
)
def test_migrations_out_of_order_stop_validate_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], wiring: str, expected: list[str]
) -> None:
    code, text = validate_example_wired(tmp_path, capsys, wiring)
    assert code == 2, text
    for part in expected:
        assert part in text
    assert "pipelinefile.py:" in text


def test_a_test_stack_uses_the_database_of_the_environment_it_copies() -> None:
    from pipeline.loader import load

    spec = load(EXAMPLE / "pipelinefile.py").spec
    test = spec.environment("test")
    assert test.database is None
    copied = spec.database_of(test)
    assert copied is not None
    assert copied == spec.environment("production").database
    assert copied.sensitive == (Sensitive(column="visits.agent", mask="'masked'"),)


def test_sensitive_columns_are_table_dot_column() -> None:
    assert Database(sensitive=["visits.agent"]).sensitive == (Sensitive(column="visits.agent"),)
    with pytest.raises(ValueError, match=r"must be 'table\.column'"):
        Sensitive(column="agent")
    with pytest.raises(ValueError, match=r"must be 'table\.column'"):
        Sensitive(column="visits.agent; DROP TABLE x")


def test_the_spec_round_trips_through_json_with_databases_and_migrate_stages() -> None:
    from pipeline.loader import load
    from pipeline.spec import PipelineSpec

    spec = load(EXAMPLE / "pipelinefile.py").spec
    again = PipelineSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert [s.kind for s in again.stages].count("migrate") == 4


def test_an_environment_without_a_database_is_unchanged() -> None:
    from pipeline.spec import PipelineSpec
    from pipeline.stages import Bake, Migrate

    assert Environment(name="production").database is None
    stages = (
        Bake(name="bake", template="i.pkr.hcl"),
        Migrate(name="m", phase="expand", environment="production", image="bake", needs=("bake",)),
    )
    environments = (Environment(name="production", template="t.yaml"),)
    with pytest.raises(DefinitionError, match="declares no database"):
        PipelineSpec(name="p", environments=environments, stages=stages)


# --- the template --------------------------------------------------------------------------------------


def test_the_local_topology_reads_the_templates_database() -> None:
    doc = load_template(EXAMPLE / "templates" / "web.yaml")
    shape = topology(doc).database
    assert shape is not None
    assert (shape.resource, shape.name, shape.user) == ("Database", "app", "app")
    assert shape.snapshot_parameter == "DatabaseSnapshot"
    assert shape.snapshot == ""
    seeded = topology(doc, {"DatabaseSnapshot": "lsdev-test-1"}).database
    assert seeded is not None
    assert seeded.snapshot == "lsdev-test-1"
    assert topology(load_template(REPO / "templates" / "web.yaml")).database is None


def test_a_database_the_local_engine_cannot_run_is_refused(tmp_path: Path) -> None:
    doc = load_template(EXAMPLE / "templates" / "web.yaml")
    doc["Resources"]["Database"]["Properties"]["Engine"] = "mysql"
    with pytest.raises(TemplateError, match="runs PostgreSQL only"):
        topology(doc, source="web.yaml")
    doc["Resources"]["Database"]["Properties"]["Engine"] = "postgres"
    doc["Resources"]["Other"] = doc["Resources"]["Database"]
    with pytest.raises(TemplateError, match="one database per stack; found Database, Other"):
        topology(doc, source="web.yaml")


# --- the lint ------------------------------------------------------------------------------------------


def test_the_examples_migrations_of_every_release_pass_the_lint(tmp_path: Path) -> None:
    folder = migrations_copy(tmp_path, "1.1.0", "1.2.0")
    migrations = Migrations(folder)
    assert {r.id: r.branch for r in migrations.revisions()} == {
        "e1_tables": "expand",
        "e2_message": "expand",
        "c1_drop_text": "contract",
    }
    assert migrations.heads() == {"expand": "e2_message", "contract": "c1_drop_text"}
    assert lint(migrations) == []


def test_an_expand_that_drops_or_renames_is_caught_with_its_file_and_line(tmp_path: Path) -> None:
    folder = migrations_copy(tmp_path)
    path = revision(
        folder,
        "e2_bad",
        """
        op.add_column("greetings", sa.Column("message", sa.Text))
        op.alter_column("visits", "agent", new_column_name="user_agent")
        op.drop_column("greetings", "text")
        """,
        down="e1_tables",
    )
    found = {(f.rule, f.line) for f in lint(Migrations(folder))}
    assert ("renaming-column", 13) in found
    assert ("ban-drop-column", 14) in found
    with pytest.raises(MigrationLintError) as caught:
        check(Migrations(folder), root=tmp_path)
    assert caught.value.exit_code == 2
    assert f"{path.relative_to(tmp_path)}:14: [ban-drop-column]" in str(caught.value)
    assert "expand revision e2_bad: ALTER TABLE greetings DROP COLUMN text" in str(caught.value)


def test_a_contract_may_drop_but_nothing_may_lock_a_table(tmp_path: Path) -> None:
    folder = migrations_copy(tmp_path, "1.1.0", "1.2.0")
    revision(
        folder,
        "e3_index",
        """
        op.create_index("visits_at", "visits", ["at"])
        """,
        down="e2_message",
    )
    findings = lint(Migrations(folder))
    assert [(f.revision, f.rule, f.line) for f in findings] == [("e3_index", "require-concurrent-index-creation", 12)]


def test_a_revision_may_silence_a_rule_it_has_a_reason_for(tmp_path: Path) -> None:
    folder = migrations_copy(tmp_path)
    path = revision(folder, "e2_index", 'op.create_index("visits_at", "visits", ["at"])', down="e1_tables")
    path.write_text(path.read_text() + '\nlint_ignore = ("require-concurrent-index-creation",)\n')
    assert lint(Migrations(folder)) == []


def test_a_revision_in_no_branch_is_bad_input(tmp_path: Path) -> None:
    folder = migrations_copy(tmp_path)
    revision(folder, "x1", "op.execute('SELECT 1')", down=None)
    from pipeline.errors import BadInputError

    with pytest.raises(BadInputError, match="belongs to neither the expand nor the contract branch"):
        Migrations(folder).revisions()


def test_unsafe_migrations_stop_validate_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "service"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("golden"))
    revision(root / "migrations", "e2_drop", 'op.drop_column("greetings", "text")', down="e1_tables")
    result = run_cli(["validate"], root, capsys)
    assert result.code == 2, result.out + result.err
    text = result.out + result.err
    assert "migrations/versions/e2_drop.py:12: [ban-drop-column]" in text
    assert "drops and renames go to the contract branch" in text


# --- masking and the fleet -----------------------------------------------------------------------------


def test_masking_skips_columns_the_copied_schema_lacks() -> None:
    [statement] = mask_statements([Sensitive(column="visits.agent", mask="'masked'")])
    assert "column_name = 'agent'" in statement
    assert "table_name = 'visits'" in statement
    assert "table_schema = 'public'" in statement
    assert 'UPDATE "public"."visits" SET "agent" = \'masked\'' in statement
    assert mask_statements([]) == []


def test_a_contract_needs_every_replica_on_the_release_warm_ones_too() -> None:
    fleet = [
        Replica("p-1", "svc:2"),
        Replica("p-2", "svc:2"),
        Replica("p-3", "svc:1", serving=False),
    ]
    assert older_replicas(fleet, "svc:2") == [Replica("p-3", "svc:1", serving=False)]
    assert older_replicas(fleet[:2], "svc:2") == []


def test_on_aws_only_a_test_stack_restored_from_a_snapshot_is_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The aws profile gives the masks to an ephemeral environment's engine only (production is
    never masked), and the engine masks a stack whose snapshot parameter is set, nothing else.
    The masking SQL itself runs against a real PostgreSQL in tests/integration/test_schema_aws.py."""
    from pipeline.engines.aws.engine import CloudFormationEngine
    from pipeline.engines.stack import StackState
    from pipeline.loader import load
    from pipeline.profiles.aws import AWS

    spec = load(EXAMPLE / "pipelinefile.py").spec
    template = EXAMPLE / "templates" / "web.yaml"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    test = AWS.stack_engine(spec, spec.environment("test"), template)
    production = AWS.stack_engine(spec, spec.environment("production"), template)
    assert isinstance(test, CloudFormationEngine)
    assert isinstance(production, CloudFormationEngine)
    assert test._database.masks == (Sensitive(column="visits.agent", mask="'masked'"),)
    assert production._database.masks == ()

    masked: list[str] = []
    monkeypatch.setattr(test._database, "mask", lambda state, on_event: masked.append(state.name))
    restored = StackState(name="live-schema-test-1", exists=True, parameters={"DatabaseSnapshot": "live-schema-test-1"})
    empty = StackState(name="live-schema-test-2", exists=True, parameters={"DatabaseSnapshot": ""})
    test._mask_if_restored(restored, lambda text: None)
    test._mask_if_restored(empty, lambda text: None)
    assert masked == ["live-schema-test-1"]
    monkeypatch.setattr(production._database, "mask", lambda state, on_event: masked.append("production"))
    production._mask_if_restored(restored, lambda text: None)
    assert masked == ["live-schema-test-1"]


# --- status --------------------------------------------------------------------------------------------


def test_status_shows_a_schema_column_for_environments_with_a_database(tmp_path: Path) -> None:
    from pipeline.engines.stack import DatabaseEndpoint
    from pipeline.loader import load
    from pipeline.status import collect
    from pipeline.testing import FakeEngines, FakeStackEngine

    class Unreachable(FakeStackEngine):
        def database(self, stack: str) -> DatabaseEndpoint | None:
            return DatabaseEndpoint(host="127.0.0.1", port=1, user="app", password="pw", name="app")

    root = tmp_path / "service"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("golden"))
    loaded = load(root / "pipelinefile.py")
    without = collect(loaded, "production", engines=FakeEngines(FakeStackEngine(image="svc:1")))
    assert [e.schema for e in without.environments] == ["(no database)"]
    unreachable = collect(loaded, "production", engines=FakeEngines(Unreachable(image="svc:1")))
    [env] = unreachable.environments
    assert env.image == "svc:1"
    assert env.schema.startswith("(unreadable: ")
    assert "pw" not in env.schema
