"""Kill `pipeline run local` in the middle of a migration (SIGKILL, no cleanup), run it again, and
it converges: Alembic's version table is the truth.

One copy of the live-schema example (`pipeline init --example live-schema`) goes through its
releases; each release's run is killed at one checkpoint (pipeline/faults.py), then run again:

- inside a revision's transaction on the test stack (expand-test), after its DDL and its version
  row, before the commit;
- inside the production contract's revision (after promote);
- inside the production expand's revision (before promote);
- after the snapshot of production's database was restored into the test stack, before masking.

After each re-run: production serves the release through its balancer, its schema is at the
branch heads, the killed revision was applied exactly once, and nothing else of the pipeline
exists (no test stack container, network, data volume or snapshot file; no manifest still running).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.http_check import request
from tests.conftest import cli_env, commit_all
from tests.reliability import harness
from tests.reliability.harness import Project, Watch, explain, report, stopwatch

pytestmark = pytest.mark.e2e

TABLE = "kill -9 in the middle of a migration, then re-run"
STAGES = [
    "commit-test", "bake", "test-stack", "expand-test", "update-stack", "contract-test", "rollback", "teardown",
    "expand", "promote", "contract",
]  # fmt: skip

E3 = '''\
"""expand: visits.path (nullable; release 1.3.0 sets it)."""

import sqlalchemy as sa
from alembic import op

revision = "e3_path"
down_revision = "e2_message"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("visits", sa.Column("path", sa.Text, nullable=True))
'''


@dataclass(frozen=True)
class Scenario:
    ident: str
    where: str
    release: str
    fault: str
    killed_in: str
    revision_at_kill: str
    """Production's schema revision right after the kill."""
    revision_after: str


SCENARIOS = [
    Scenario("m1", "mid-revision of the test stack's expand", "1.1.0",
             "migrate:expand-test:e2_message:uncommitted", "expand-test", "e1_tables", "e2_message"),
    Scenario("m2", "mid-revision of production's contract (after promote)", "1.2.0",
             "migrate:contract:c1_drop_text:uncommitted", "contract", "e2_message", "c1_drop_text"),
    Scenario("m3", "mid-revision of production's expand (before promote)", "1.3.0",
             "migrate:expand:e3_path:uncommitted", "expand", "c1_drop_text", "c1_drop_text, e3_path"),
    Scenario("m4", "test stack's database restored from the snapshot, not masked yet", "1.3.1",
             "local-stack:*-test-*:database:restored", "test-stack", "c1_drop_text, e3_path",
             "c1_drop_text, e3_path"),
]  # fmt: skip


@dataclass
class SchemaProject:
    project: Project
    client: Any

    def engine(self) -> Any:
        from pipeline.engines.docker_stack import DockerStackEngine

        return DockerStackEngine(self.project.name, self.project.root / "templates" / "web.yaml", client=self.client)

    def revision(self) -> str:
        from pipeline.schema.revision import read_revision

        endpoint = self.engine().database(self.project.production)
        return read_revision(endpoint.url) if endpoint is not None else "(no database)"

    def release(self, version: str) -> None:
        root = self.project.root
        if (root / "next-releases" / version).is_dir():
            subprocess.run([sys.executable, "release.py", version], cwd=root, check=True, capture_output=True)
        else:
            if version == "1.3.0":
                (root / "migrations" / "versions" / "e3_path.py").write_text(E3)
            definition = root / "pipelinefile.py"
            text = definition.read_text()
            current = text.split('RELEASE = "', 1)[1].split('"', 1)[0]
            definition.write_text(text.replace(f'RELEASE = "{current}"', f'RELEASE = "{version}"', 1))
        self.project.git("add", "-A")
        self.project.git("commit", "-qm", f"release {version}")

    def problems(self, version: str, revision: str) -> list[str]:
        from pipeline.engines.docker_client import LABEL_PREFIX

        project = self.project
        found = []
        selector = {"label": f"{LABEL_PREFIX}.pipeline={project.name}"}
        containers = self.client.containers.list(all=True, filters=selector)
        stacks = {str(c.labels.get(f"{LABEL_PREFIX}.stack")) for c in containers}
        found += [f"orphan stack {s}" for s in sorted(stacks - {project.production})]
        roles = sorted(str(c.labels.get(f"{LABEL_PREFIX}.role")) for c in containers)
        if roles != ["database", "lb", "replica", "replica"]:
            found.append(f"production's containers: {roles}")
        found += [f"{c.name} is {c.status}" for c in containers if c.status != "running"]
        networks = sorted(n.name for n in self.client.networks.list(filters=selector))
        if networks != [f"{project.production}-net"]:
            found.append(f"networks {networks}")
        volumes = sorted(v.name for v in self.client.volumes.list(filters=selector))
        if volumes != [f"{project.production}-db-data"]:
            found.append(f"volumes {volumes}")
        found += [f"snapshot file {p}" for p in (project.cache / "pipeline" / "snapshots").rglob("*") if p.is_file()]
        state = self.engine().describe(project.production)
        if not state.url:
            found.append("production has no balancer URL")
        else:
            status, body = request(state.url, timeout=5)
            if status != 200 or f"from live-schema {version}," not in body:
                found.append(f"production answered {status} {body.strip()[:80]!r}, not {version}")
        if self.revision() != revision:
            found.append(f"production's schema is at {self.revision()}, not {revision}")
        for manifest in project.manifests():
            unfinished = {n: r.status for n, r in manifest.stages.items() if r.status in ("running", "pending")}
            if unfinished:
                found.append(f"run {manifest.run_id} still says {unfinished}")
        return found


@pytest.fixture(scope="module")
def schema_project(rel_base: Path, docker_tools: Any, session_cleanup: None) -> SchemaProject:
    name = f"{harness.PREFIX}-schema"
    root = rel_base / name
    made = subprocess.run(
        [sys.executable, "-m", "pipeline", "init", str(root), "--example", "live-schema"],
        env=cli_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, explain(made)
    definition = root / "pipelinefile.py"
    definition.write_text(definition.read_text().replace('"live-schema",\n', f'"{name}",\n', 1))
    commit_all(root, "the live-schema example")
    cache = rel_base / f"{name}.cache"
    cache.mkdir()
    project = SchemaProject(Project(root=root, name=name, cache=cache), docker_tools)
    first = project.project.run("run", "local", "--yes")
    assert first.returncode == 0, explain(first)
    return project


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[f"{s.ident}-{s.fault}" for s in SCENARIOS])
def test_a_run_killed_in_a_migration_converges_when_run_again(
    scenario: Scenario, schema_project: SchemaProject
) -> None:
    project = schema_project.project
    schema_project.release(scenario.release)
    with stopwatch() as until_kill:
        killed = project.run("run", "local", "--yes", PIPELINE_FAULT=scenario.fault)
    assert killed.returncode == -signal.SIGKILL, f"the run was not killed at {scenario.fault}\n{explain(killed)}"
    dead = {n: r.status for n, r in project.last_run().stages.items()}
    running = [n for n in STAGES if dead.get(n) == "running"]
    assert running == [scenario.killed_in], dead
    at_kill = schema_project.revision()
    with Watch(schema_project.client, project) as watch, stopwatch() as rerun_time:
        rerun = project.run("run", "local", "--yes")
    statuses = {n: r.status for n, r in project.run_of(rerun).stages.items()}
    problems = schema_project.problems(scenario.release, scenario.revision_after)
    migrated = {
        n: r.outputs.get("applied", "")
        for n, r in project.run_of(rerun).stages.items()
        if n in ("expand-test", "contract-test", "expand", "contract") and r.outputs.get("applied")
    }
    report(
        TABLE,
        scenario=f"{scenario.ident} {scenario.where}",
        checkpoint=scenario.fault,
        killed_in=scenario.killed_in,
        schema_at_kill=at_kill,
        rerun=f"exit {rerun.returncode} in {rerun_time[0]:.0f}s; applied {migrated or 'nothing'}",
        after=f"production serves {scenario.release} on {scenario.revision_after}, no orphans"
        if not problems and rerun.returncode == 0
        else f"PROBLEMS: {problems[:2]}",
        seconds=f"{until_kill[0]:.0f}+{rerun_time[0]:.0f}",
    )
    assert at_kill == scenario.revision_at_kill, "the killed revision's transaction did not roll back"
    assert rerun.returncode == 0, explain(rerun)
    assert set(statuses.values()) <= {"succeeded", "up-to-date"}, statuses
    assert not problems, "\n".join(problems)
    assert watch.max_test_stacks <= 1, f"{watch.max_test_stacks} test stacks existed at once during the re-run"
    assert watch.max_production_lbs <= 1


def test_the_story_leaves_only_production(schema_project: SchemaProject) -> None:
    """After every scenario: the database kept every visit (no release lost data)."""
    import psycopg

    endpoint = schema_project.engine().database(schema_project.project.production)
    assert endpoint is not None
    with psycopg.connect(endpoint.url) as connection:
        row = connection.execute("SELECT count(*), min(id) FROM visits").fetchone()
    assert row is not None
    count, first = row
    assert first == 1, "the first visit of release 1.0.0 is gone"
    assert count > 40, textwrap.shorten(str(row), 80)
