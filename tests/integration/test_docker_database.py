"""The local engine's database (pipeline/engines/docker_stack/database.py) on real Docker: a
PostgreSQL container per stack found by labels, its data in a volume that outlives the container,
a snapshot of one stack's database seeding another's with the sensitive columns masked, exactly
once, and nothing left after `delete`."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.cfn_template import load_template
from pipeline.engines.docker_stack import DockerStackEngine
from pipeline.engines.docker_stack import database as db
from pipeline.engines.docker_stack.labels import StackId
from pipeline.engines.topology import topology
from pipeline.model import Sensitive
from tests.conftest import REPO, remove_everything_of

pytestmark = pytest.mark.integration

TEMPLATE = REPO / "examples" / "live-schema" / "templates" / "web.yaml"
MASKS = (Sensitive(column="visits.agent", mask="'masked'"), Sensitive(column="visits.email"))


@pytest.fixture
def stacks(docker_client: Any, base_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    name = f"dbtest-{secrets.token_hex(3)}"
    try:
        yield name
    finally:
        remove_everything_of(docker_client, name)


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(sql)
        return [tuple(r) for r in cursor.fetchall()] if cursor.description else []


def test_a_stacks_database_is_found_by_labels_kept_in_its_volume_and_removed_with_the_stack(
    stacks: str, docker_client: Any
) -> None:
    engine = DockerStackEngine(stacks, TEMPLATE, masks=MASKS)
    production = f"{stacks}-production"
    endpoint = engine.prepare_database(production)
    assert endpoint is not None
    assert engine.prepare_database(production) == endpoint  # idempotent: the same container
    query(endpoint.url, "CREATE TABLE visits (id int PRIMARY KEY, agent text)")
    query(endpoint.url, "INSERT INTO visits VALUES (1, 'alice-browser'), (2, 'bob-browser')")
    container = db.find(docker_client, StackId(stacks, production))
    assert container.labels["io.pipeline.role"] == "database"
    # A container that is gone comes back on the next deploy, with its data (the volume).
    container.remove(force=True)
    again = engine.prepare_database(production)
    assert again is not None
    assert query(again.url, "SELECT count(*) FROM visits") == [(2,)]
    assert engine.stacks() == [production]
    engine.delete(production)
    assert engine.stacks() == []
    assert docker_client.volumes.list(filters={"label": f"io.pipeline.pipeline={stacks}"}) == []


def test_a_snapshot_seeds_another_stacks_database_masked_once(stacks: str, docker_client: Any) -> None:
    engine = DockerStackEngine(stacks, TEMPLATE, masks=MASKS)
    production = f"{stacks}-production"
    test = f"{stacks}-test-1"
    source = engine.prepare_database(production)
    assert source is not None
    query(source.url, "CREATE TABLE visits (id int PRIMARY KEY, agent text)")
    query(source.url, "INSERT INTO visits VALUES (1, 'alice-browser'), (2, 'bob-browser')")
    assert engine.snapshot_database(production, test) == test
    assert db.snapshot_path(stacks, test).is_file()
    parameters = engine.database_parameters(test)
    assert parameters == {"DatabaseSnapshot": test}
    shape = topology(load_template(TEMPLATE), parameters).database
    assert shape is not None
    stack = StackId(stacks, test)
    db.ensure(docker_client, stack, shape, base_image=engine.base_image, masks=MASKS, on_event=lambda _: None)
    copy = engine.database(test)
    assert copy is not None
    assert copy.port != source.port
    assert query(copy.url, "SELECT id, agent FROM visits ORDER BY id") == [(1, "masked"), (2, "masked")]
    assert query(source.url, "SELECT agent FROM visits ORDER BY id") == [("alice-browser",), ("bob-browser",)]
    # Seeded once: a second ensure (a re-run's deploy) restores nothing over what the stack wrote since.
    query(copy.url, "INSERT INTO visits VALUES (3, 'written by the rehearsal')")
    db.ensure(docker_client, stack, shape, base_image=engine.base_image, masks=MASKS, on_event=lambda _: None)
    assert query(copy.url, "SELECT count(*) FROM visits") == [(3,)]
    # Replicas of the test stack reach their own database by name on the stack network.
    env = db.replica_environment(docker_client, stack)
    assert env["PGHOST"] == f"{test}-db"
    assert (env["PGUSER"], env["PGDATABASE"]) == ("app", "app")
    engine.delete(test)
    assert not db.snapshot_path(stacks, test).exists()
    assert engine.stacks() == [production]
