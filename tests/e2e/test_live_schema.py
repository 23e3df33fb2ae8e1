"""The live-schema example end to end on this machine: `pipeline init --example live-schema`, then
`pipeline run local` through its releases, on real containers (the app, nginx, PostgreSQL).

One project goes through the story in order (each test builds on the one before):

1. release 1.0.0 creates the tables (an expand) on the test stack and in production;
2. release 1.1.0 expands (a new column the new code reads) under steady traffic on production:
   no request fails, every answer is 1.0.0's or 1.1.0's; the test stack started from a masked
   snapshot of production's database; the rehearsal ran 1.0.0 on the expanded schema;
3. a release whose expand breaks the previous image (a constraint 1.0.0's inserts violate) fails
   in the test stack, exit 1: production's image and schema are untouched;
4. release 1.2.0 contracts (drops the column 1.0.0 read): rehearsed with 1.1.0 on the contracted
   schema, then applied in production once every replica runs 1.2.0;
5. `pipeline rollback` moves the code back under steady traffic (no request fails, every answer is
   1.2.0's or 1.1.0's) and leaves the schema; a contract attempted while a
   replica runs an older release is refused, naming it, with nothing changed;
6. nothing is left of the test stacks (containers, networks, volumes, snapshots).

A second project, on its own, takes the automatic rollback: its first release (1.0.0) runs in
production, then 1.1.0 (an expand) passes the test stack but fails the promote's verification in
production only; the promote rolls the code back to 1.0.0 by itself and the expanded schema stays,
with every row written before and during the release.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.docker_client import LABEL_PREFIX
from pipeline.engines.http_check import LoadClient, request
from pipeline.ledger import Ledger, Manifest
from tests.conftest import cli_env, commit_all, need, remove_everything_of

pytestmark = pytest.mark.e2e

STAGES = [
    "commit-test", "bake", "test-stack", "expand-test", "update-stack", "contract-test", "rollback", "teardown",
    "expand", "promote", "contract",
]  # fmt: skip
VERSION = re.compile(r"from live-schema (\S+), visit (\d+)")


@dataclass
class Service:
    root: Path
    name: str
    client: Any
    cache: Path

    def run(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            cwd=self.root,
            env=cli_env(XDG_CACHE_HOME=str(self.cache)),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def release(self, version: str) -> None:
        subprocess.run([sys.executable, "release.py", version], cwd=self.root, check=True, capture_output=True)
        self.git("add", "-A")
        self.git("commit", "-qm", f"release {version}")

    def git(self, *args: str) -> None:
        subprocess.run(["git", *args], cwd=self.root, check=True, capture_output=True)

    def last_run(self) -> Manifest:
        ledger = Ledger(self.root)
        manifest = ledger.manifest(ledger.runs()[-1])
        assert manifest is not None
        return manifest

    def statuses(self) -> dict[str, str]:
        return {name: result.status for name, result in self.last_run().stages.items()}

    @property
    def production(self) -> str:
        return f"{self.name}-production"

    def engine(self) -> Any:
        from pipeline.engines.docker_stack import DockerStackEngine

        return DockerStackEngine(self.name, self.root / "templates" / "web.yaml")

    def url(self) -> str:
        state = self.engine().describe(self.production)
        assert state.url
        return str(state.url)

    def page(self) -> tuple[str, int]:
        status, body = request(self.url(), timeout=5)
        assert status == 200, body
        found = VERSION.search(body)
        assert found, body
        return found.group(1), int(found.group(2))

    def revision(self) -> str:
        from pipeline.schema.revision import read_revision

        endpoint = self.engine().database(self.production)
        assert endpoint is not None
        return read_revision(endpoint.url)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        endpoint = self.engine().database(self.production)
        assert endpoint is not None
        with psycopg.connect(endpoint.url) as connection:
            return [tuple(row) for row in connection.execute(sql).fetchall()]

    def leftovers(self) -> list[str]:
        """Anything of the pipeline but production's containers, network and volume."""
        selector = {"label": f"{LABEL_PREFIX}.pipeline={self.name}"}
        stacks = {
            str(c.labels.get(f"{LABEL_PREFIX}.stack")) for c in self.client.containers.list(all=True, filters=selector)
        }
        found = [f"stack {s}" for s in sorted(stacks - {self.production})]
        found += [
            f"network {n.name}"
            for n in self.client.networks.list(filters=selector)
            if n.name != f"{self.production}-net"
        ]
        found += [
            f"volume {v.name}"
            for v in self.client.volumes.list(filters=selector)
            if v.name != f"{self.production}-db-data"
        ]
        found += [f"snapshot {p.name}" for p in (self.cache / "pipeline" / "snapshots").rglob("*.dump")]
        return found  # fmt: skip


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-8000:]}\n--- stderr\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def service(docker_client: Any, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with _new_service(docker_client, tmp_path_factory) as made:
        yield made


@pytest.fixture
def another_service(docker_client: Any, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A project of its own (another pipeline name, production and ledger), for a story apart."""
    with _new_service(docker_client, tmp_path_factory) as made:
        yield made


@contextlib.contextmanager
def _new_service(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`pipeline init --example live-schema` under a pipeline name of its own, committed; everything
    the Docker engine holds of it is removed afterwards."""
    need(shutil.which("packer") is not None, "packer is not installed (apt-get install -y packer)")
    need(shutil.which("cfn-lint") is not None, "cfn-lint is not installed (pip install cfn-lint)")
    need(shutil.which("git") is not None, "git is not installed")
    name = f"ls-{secrets.token_hex(3)}"
    base = tmp_path_factory.mktemp("live-schema")
    root = base / "service"
    made = subprocess.run(
        [sys.executable, "-m", "pipeline", "init", str(root), "--example", "live-schema"],
        env=cli_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, _explain(made)
    definition = root / "pipelinefile.py"
    definition.write_text(definition.read_text().replace('"live-schema",\n', f'"{name}",\n', 1))
    commit_all(root, "the live-schema example")
    cache = base / "cache"
    cache.mkdir()
    service = Service(root=root, name=name, client=docker_client, cache=cache)
    try:
        yield service
    finally:
        remove_everything_of(docker_client, name, images=True)


def test_the_first_release_creates_the_tables_by_an_expand(service: Service) -> None:
    result = service.run("run", "local", "--yes")
    assert result.returncode == 0, _explain(result)
    assert service.statuses() == dict.fromkeys(STAGES, "succeeded")
    stages = service.last_run().stages
    assert stages["expand-test"].outputs["applied"] == "e1_tables"
    assert stages["expand"].outputs["applied"] == "e1_tables"  # made ahead of the stack, before promote
    assert stages["contract"].outputs["applied"] == ""
    assert service.page()[0] == "1.0.0"
    assert service.revision() == "e1_tables"
    status = service.run("status")
    assert status.returncode == 0, _explain(status)
    assert "e1_tables" in status.stdout


def test_an_expand_release_under_traffic_fails_no_request(service: Service) -> None:
    _, visits_before = service.page()
    service.release("1.1.0")
    with LoadClient(service.url(), rate=40) as load:
        result = service.run("run", "local", "--yes")
        time.sleep(0.5)
    assert result.returncode == 0, _explain(result)
    stages = service.last_run().stages
    assert {s: service.statuses()[s] for s in STAGES[1:]} == dict.fromkeys(STAGES[1:], "succeeded")
    # The test stack started from production's data, masked; expanded; then 1.0.0 on it again.
    assert "starts from snapshot" in stages["test-stack"].message
    assert "masked: visits.agent" in stages["test-stack"].message
    assert stages["expand-test"].outputs["applied"] == "e2_message"
    assert stages["expand-test"].outputs["previous_revision"] == "e1_tables"
    assert stages["rollback"].outputs["image"] == stages["test-stack"].outputs["image"]
    assert stages["expand"].outputs["applied"] == "e2_message"
    assert service.revision() == "e2_message"
    version, visits_after = service.page()
    assert version == "1.1.0"
    assert visits_after > visits_before  # production's data went through the release
    stats = load.stats()
    assert stats.failures == 0, stats.first_failure
    versions = {m.group(1) for body in stats.bodies if (m := VERSION.search(body))}
    assert versions == {"1.0.0", "1.1.0"}, stats.bodies.keys()
    assert all(VERSION.search(body) for body in stats.bodies)
    # Production's own data was never masked: only the copy was.
    assert service.query("SELECT count(*) FROM visits WHERE agent = 'masked'") == [(0,)]


BREAKING_EXPAND = '''\
"""expand: visits.path, required from now on (release 1.0.0's inserts do not set it)."""

import sqlalchemy as sa
from alembic import op

revision = "e3_path"
down_revision = "e2_message"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("visits", sa.Column("path", sa.Text, nullable=True))
    op.create_check_constraint("visits_path_set", "visits", "path IS NOT NULL", postgresql_not_valid=True)
'''


def test_a_release_whose_expand_breaks_the_previous_image_stops_in_the_test_stack(service: Service) -> None:
    image_before = service.engine().describe(service.production).image
    app = service.root / "app" / "app.py"
    app.write_text(
        app.read_text().replace(
            'RECORD_VISIT = "INSERT INTO visits (agent) VALUES (%s) RETURNING id"',
            "RECORD_VISIT = \"INSERT INTO visits (agent, path) VALUES (%s, '/') RETURNING id\"",
        )
    )
    (service.root / "migrations" / "versions" / "e3_path.py").write_text(BREAKING_EXPAND)
    definition = service.root / "pipelinefile.py"
    definition.write_text(definition.read_text().replace('RELEASE = "1.1.0"', 'RELEASE = "1.1.1"'))
    service.git("add", "-A")
    service.git("commit", "-qm", "a release whose expand breaks 1.1.0")
    result = service.run("run", "local", "--yes")
    assert result.returncode == 1, _explain(result)
    statuses = service.statuses()
    assert statuses["expand-test"] == "succeeded"
    assert statuses["update-stack"] == "succeeded"
    assert statuses["rollback"] == "failed"
    assert statuses["teardown"] == "succeeded"
    assert {statuses[s] for s in ("expand", "promote", "contract")} == {"skipped"}
    assert "the database refused" in service.last_run().stages["rollback"].message
    # Production: same image, same schema, still serving.
    assert service.engine().describe(service.production).image == image_before
    assert service.revision() == "e2_message"
    assert service.page()[0] == "1.1.0"
    assert "path" not in {r[0] for r in service.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'visits'")}  # fmt: skip
    service.git("reset", "-q", "--hard", "HEAD~1")


def test_a_contract_release_is_rehearsed_on_the_contracted_schema_then_applied(service: Service) -> None:
    service.release("1.2.0")
    result = service.run("run", "local", "--yes")
    assert result.returncode == 0, _explain(result)
    stages = service.last_run().stages
    assert stages["expand-test"].outputs["applied"] == ""
    assert stages["contract-test"].outputs["applied"] == "c1_drop_text"
    assert stages["rollback"].status == "succeeded"  # 1.1.0 on the contracted schema
    assert stages["contract"].outputs["applied"] == "c1_drop_text"
    assert service.revision() == "c1_drop_text"
    assert service.page()[0] == "1.2.0"
    columns = {r[0] for r in service.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'greetings'")}  # fmt: skip
    assert columns == {"id", "message"}


def test_a_rollback_moves_the_code_only_and_a_contract_waits_for_the_fleet(service: Service) -> None:
    # Under steady traffic: the rollback (1.2.0 -> 1.1.0 on the contracted schema) fails no request.
    with LoadClient(service.url(), rate=40) as load:
        back = service.run("rollback", "production")
        time.sleep(0.5)
    assert back.returncode == 0, _explain(back)
    stats = load.stats()
    assert stats.failures == 0, stats.first_failure
    assert all(VERSION.search(body) for body in stats.bodies), stats.bodies.keys()
    versions = {m.group(1) for body in stats.bodies if (m := VERSION.search(body))}
    assert versions == {"1.2.0", "1.1.0"}, stats.bodies.keys()
    assert service.page()[0] == "1.1.0"
    assert service.revision() == "c1_drop_text"  # never undone
    # A next release's contract, attempted while the fleet runs 1.1.0: refused, nothing changed.
    (service.root / "migrations" / "versions" / "c2_drop_agent.py").write_text(
        textwrap.dedent(
            '''\
            """contract: drop visits.agent."""

            from alembic import op

            revision = "c2_drop_agent"
            down_revision = "c1_drop_text"
            branch_labels = None
            depends_on = None


            def upgrade() -> None:
                op.drop_column("visits", "agent")
            '''
        )
    )
    definition = service.root / "pipelinefile.py"
    definition.write_text(definition.read_text().replace('RELEASE = "1.2.0"', 'RELEASE = "1.3.0"'))
    service.git("add", "-A")
    service.git("commit", "-qm", "release 1.3.0 contracts visits.agent")
    baked = service.run("run", "local", "--only", "bake")
    assert baked.returncode == 0, _explain(baked)
    refused = service.run("run", "local", "--only", "contract", "--yes")
    assert refused.returncode == 1, _explain(refused)
    replicas = [r.name for r in service.engine().fleet(service.production)]
    assert len(replicas) == 2
    for name in replicas:
        assert name in refused.stdout
    assert "contract refused" in refused.stdout
    assert "nothing was changed" in refused.stdout
    assert service.revision() == "c1_drop_text"
    assert "agent" in {r[0] for r in service.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'visits'")}  # fmt: skip
    assert service.page()[0] == "1.1.0"


def test_nothing_is_left_of_the_test_stacks(service: Service) -> None:
    assert service.leftovers() == []


# Release 1.1.0 reads a setting of the environment it runs in, and production's file was forgotten:
# replicas are named after their stack (`<pipeline>-production-<id>`, `<pipeline>-test-<run>-<id>`),
# so the page fails in production only, while /health answers everywhere. The image passes its
# checks, the test stack's update and rollback rehearsal, and production's health checks; only the
# promote's verification of the page in production catches it (as in the reliability suite's
# test_a_release_failing_only_in_production_is_rolled_back_with_bounded_failures).
HANDLER = "    def do_GET(self) -> None:  # the standard library's name\n"
FORGOTTEN_SETTING = HANDLER + (
    '        if self.path == "/" and "-production-" in os.uname().nodename'
    ' and not os.path.exists("/etc/live-schema/production.conf"):\n'
    '            self.answer(500, f"live-schema {RELEASE}: /etc/live-schema/production.conf is missing\\n")\n'
    "            return\n"
)


def test_an_automatic_rollback_at_promote_moves_the_code_back_and_keeps_the_expanded_schema(
    another_service: Service,
) -> None:
    service = another_service
    first = service.run("run", "local", "--yes")
    assert first.returncode == 0, _explain(first)
    good_image = service.last_run().stages["promote"].outputs["image"]
    assert service.page()[0] == "1.0.0"
    assert service.revision() == "e1_tables"
    rows_before = set(service.query("SELECT id, at, agent FROM visits"))
    assert rows_before  # the verifications and the page above were recorded

    service.release("1.1.0")
    app = service.root / "app" / "app.py"
    assert HANDLER in app.read_text()
    app.write_text(app.read_text().replace(HANDLER, FORGOTTEN_SETTING, 1))
    service.git("add", "-A")
    service.git("commit", "-qm", "release 1.1.0 reads production's settings file, which was forgotten")
    with LoadClient(service.url(), rate=40, max_seconds=1200) as load:  # longer than the run may take
        result = service.run("run", "local", "--yes")
    assert result.returncode == 1, _explain(result)

    # Everything up to promote passed (the test stack never sees the fault); promote failed. The
    # commit test's inputs did not change (the app is not among them): it is up to date.
    statuses = service.statuses()
    assert statuses[STAGES[0]] == "up-to-date", statuses
    assert {s: statuses[s] for s in STAGES[1:]} == {
        **dict.fromkeys(STAGES[1:], "succeeded"),
        "promote": "failed",
        "contract": "skipped",
    }, statuses
    stages = service.last_run().stages
    bad_image = stages["bake"].outputs["image"]
    assert bad_image != good_image
    assert stages["expand"].outputs["previous_revision"] == "e1_tables"
    assert stages["expand"].outputs["applied"] == "e2_message"  # ran before promote
    message = stages["promote"].message
    assert f"{bad_image} failed verification in production" in message, message
    assert "production.conf is missing" in message, message
    assert f"rolled back automatically to {good_image}" in message, message
    assert "which verifies" in message, message
    releases = Ledger(service.root).releases(service.name, "production")
    assert [(r.image, r.status) for r in releases][-2:] == [(bad_image, "failed"), (good_image, "live")]
    # The incident was real: production served the bad release's answer before the rollback.
    assert any(s.status == 500 and "production.conf is missing" in s.body for s in load.samples)

    # The code went back; the schema did not: the expand stays (1.0.0 runs on it), nothing was downgraded.
    assert service.engine().describe(service.production).image == good_image
    assert service.page()[0] == "1.0.0"
    assert service.revision() == "e2_message"
    greetings = {r[0] for r in service.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'greetings'")}  # fmt: skip
    assert {"text", "message"} <= greetings
    assert service.query("SELECT text, message FROM greetings WHERE id = 1") == [("Hello World", "Hello World")]

    # No row was lost: those written before the release, every visit the traffic was answered with
    # during it, and those written between the expand and the end of the promote (on the expanded
    # schema: 1.0.0's replicas during the rolling update, the rollback's verification).
    rows_after = service.query("SELECT id, at, agent FROM visits")
    assert rows_before <= set(rows_after)
    ids = {row[0] for row in rows_after}
    answered = {int(m.group(2)) for s in load.samples if s.status == 200 and (m := VERSION.search(s.body))}
    assert answered, "the traffic got no answer from production during the run"
    assert answered <= ids, sorted(answered - ids)[:10]
    expanded = datetime.fromisoformat(str(stages["expand"].finished_at))
    promoted = datetime.fromisoformat(str(stages["promote"].finished_at))
    assert any(expanded < row[1] < promoted for row in rows_after), "no row written during the release"

    # `pipeline status` shows the expanded revision next to 1.0.0's image.
    status = service.run("status")
    assert status.returncode == 0, _explain(status)
    row = next((line for line in status.stdout.splitlines() if service.production in line), "")
    assert good_image in row, status.stdout
    assert "e2_message" in row, status.stdout
