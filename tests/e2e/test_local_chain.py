"""The reference service end to end on this machine: `pipeline init`, then `pipeline run local`
through commit test, bake (Packer + testinfra), test stack, update, simulated rollback, teardown
and promote, on real containers behind a real load balancer.

One project goes through the story in order (each test builds on the one before): the first
release, a run with nothing changed, a new release (with traffic on production during it), a
release that fails in the test stack, one that fails at promote, `pipeline rollback`, and at the
end nothing may exist that the ledger does not account for.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.docker_client import LABEL_PREFIX
from pipeline.engines.http_check import LoadClient, request
from pipeline.ledger import Ledger, Manifest
from tests.conftest import cli_env, commit_all, init_reference_service, need, remove_everything_of

pytestmark = pytest.mark.e2e

STAGES = ["commit-test", "bake", "test-stack", "update-stack", "rollback", "teardown", "promote"]


@dataclass
class Service:
    root: Path
    name: str
    client: Any
    images: dict[str, str] = field(default_factory=dict)
    """Baked image per release (filled in as the story goes)."""
    seconds: dict[str, float] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            cwd=self.root,
            env=cli_env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def last_run(self) -> Manifest:
        ledger = Ledger(self.root)
        manifest = ledger.manifest(ledger.runs()[-1])
        assert manifest is not None
        return manifest

    def statuses(self) -> dict[str, str]:
        return {name: result.status for name, result in self.last_run().stages.items()}

    def edit(self, old: str, new: str) -> None:
        path = self.root / "pipelinefile.py"
        text = path.read_text()
        assert old in text, f"{old!r} not in the definition"
        path.write_text(text.replace(old, new))
        subprocess.run(["git", "commit", "-qam", f"edit: {new[:40]}"], cwd=self.root, check=True)

    @property
    def production_stack(self) -> str:
        return f"{self.name}-production"

    def production_url(self) -> str:
        from pipeline.engines.docker_stack import DockerStackEngine

        state = DockerStackEngine(self.name, self.root / "templates" / "web.yaml").describe(self.production_stack)
        assert state.exists
        assert state.url is not None
        return state.url

    def page(self) -> str:
        status, body = request(self.production_url(), timeout=5)
        assert status == 200
        return body.strip()

    def containers(self, **labels: str) -> list[Any]:
        selector = [f"{LABEL_PREFIX}.pipeline={self.name}"] + [f"{LABEL_PREFIX}.{k}={v}" for k, v in labels.items()]
        return list(self.client.containers.list(all=True, filters={"label": selector}))


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def service(docker_client: Any, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    need(shutil.which("packer") is not None, "packer is not installed (apt-get install -y packer)")
    need(shutil.which("cfn-lint") is not None, "cfn-lint is not installed (pip install cfn-lint)")
    need(shutil.which("git") is not None, "git is not installed")
    name = f"e2e-{secrets.token_hex(3)}"
    root = commit_all(
        init_reference_service(tmp_path_factory.mktemp("e2e") / "hello-web", name), "the reference service"
    )
    service = Service(root=root, name=name, client=docker_client)
    try:
        yield service
    finally:
        remove_everything_of(docker_client, name, images=True)


def test_the_first_release_runs_the_whole_chain(service: Service) -> None:
    started = time.monotonic()
    result = service.run("run", "local", "--yes")
    service.seconds["cold"] = time.monotonic() - started
    assert result.returncode == 0, _explain(result)
    assert service.statuses() == dict.fromkeys(STAGES, "succeeded")
    stages = service.last_run().stages
    image = stages["bake"].outputs["image"]
    service.images["1.0.0"] = image
    # No production yet: the test stack starts from the new image, and says so.
    assert stages["test-stack"].outputs["fresh"] == "true"
    assert "has no stack yet" in stages["test-stack"].message
    assert stages["teardown"].outputs["deleted"] == stages["test-stack"].outputs["stack"]
    assert stages["promote"].outputs["image"] == image
    assert service.page() == "Hello World 1.0.0"
    assert stages["promote"].outputs["url"] == service.production_url()
    assert service.production_url().startswith("http://127.0.0.1:")
    status = service.run("status")
    assert status.returncode == 0, _explain(status)
    assert service.production_stack in status.stdout
    assert image in status.stdout


def test_a_second_run_with_nothing_changed_is_all_up_to_date(service: Service) -> None:
    started = time.monotonic()
    result = service.run("run", "local", "--yes")
    warm = time.monotonic() - started
    assert result.returncode == 0, _explain(result)
    assert service.statuses() == dict.fromkeys(STAGES, "up-to-date")
    assert warm < service.seconds["cold"] / 4, (warm, service.seconds["cold"])
    assert service.page() == "Hello World 1.0.0"


def test_a_stopped_docker_engine_stops_a_stack_stage_before_it_starts(service: Service, tmp_path: Path) -> None:
    """The bake's outputs exist, so `--only test-stack` could start; with no Docker engine the
    stage's readiness check (one describe of the stack) fails the run first, naming the fix."""
    runs = len(Ledger(service.root).runs())
    unreachable = f"unix://{tmp_path}/no-docker.sock"
    result = service.run("run", "local", "--only", "test-stack", "--force", "--yes", DOCKER_HOST=unreachable)
    assert result.returncode == 1, _explain(result)
    assert f"needs the Docker engine, and the one at {unreachable} does not answer" in result.stderr
    assert "pipeline doctor" in result.stderr
    assert "Traceback" not in result.stderr
    assert "[test-stack]" not in result.stdout, "the stage started although its engine cannot be reached"
    assert len(Ledger(service.root).runs()) == runs, "a refused run left a run behind"


def test_a_new_release_runs_only_what_it_affects_and_production_never_fails_a_request(service: Service) -> None:
    service.edit('RELEASE = "1.0.0"', 'RELEASE = "1.0.1"')
    with LoadClient(service.production_url(), rate=60) as load:
        result = service.run("run", "local", "--yes")
        time.sleep(0.5)
    assert result.returncode == 0, _explain(result)
    statuses = service.statuses()
    assert statuses["commit-test"] == "up-to-date"  # its inputs (templates, images) did not change
    assert {s: statuses[s] for s in STAGES[1:]} == dict.fromkeys(STAGES[1:], "succeeded")
    stages = service.last_run().stages
    new = stages["bake"].outputs["image"]
    old = service.images["1.0.0"]
    assert new != old
    service.images["1.0.1"] = new
    # The rehearsal: test stack from what production ran, update to the new image, back again.
    assert stages["test-stack"].outputs["image"] == old
    assert stages["test-stack"].outputs["fresh"] == "false"
    assert stages["update-stack"].outputs["previous_image"] == old
    assert stages["update-stack"].outputs["image"] == new
    assert stages["rollback"].outputs["from_image"] == new
    assert stages["rollback"].outputs["image"] == old
    assert float(stages["rollback"].outputs["time_to_restore"]) > 0
    assert service.page() == "Hello World 1.0.1"
    stats = load.stats()
    assert stats.failures == 0, stats.first_failure
    assert set(stats.bodies) == {"Hello World 1.0.0", "Hello World 1.0.1"}
    assert stats.rate >= 50


def test_keep_keeps_the_test_stack_until_the_next_run(service: Service) -> None:
    from pipeline.engines.docker_stack import DockerStackEngine

    kept = service.run("run", "local", "--yes", "--keep", "--force", "--from", "test-stack")
    assert kept.returncode == 0, _explain(kept)
    stages = service.last_run().stages
    stack = stages["test-stack"].outputs["stack"]
    assert stages["teardown"].outputs["kept"] == stack
    url = stages["teardown"].outputs["url"]
    assert f"kept test stack {stack} (--keep): {url}" in stages["teardown"].message
    # Production already ran 1.0.1, so the rehearsal started from the release before it.
    assert stages["test-stack"].outputs["image"] == service.images["1.0.0"]
    engine = DockerStackEngine(service.name, service.root / "templates" / "web.yaml")
    assert engine.describe(stack).url == url
    status = service.run("status")
    assert status.returncode == 0, _explain(status)
    assert stack in status.stdout
    assert "kept by run" in status.stdout
    # The next run without --keep removes it, and has nothing else to do.
    again = service.run("run", "local", "--yes")
    assert again.returncode == 0, _explain(again)
    statuses = service.statuses()
    assert statuses.pop("teardown") == "succeeded"
    assert set(statuses.values()) == {"up-to-date"}
    assert not engine.describe(stack).exists
    assert service.page() == "Hello World 1.0.1"


def test_a_release_that_fails_in_the_test_stack_never_reaches_production(service: Service) -> None:
    # The page says another version than the one the pipeline expects.
    service.edit('RELEASE = "1.0.1"', 'RELEASE = "1.0.2"')
    service.edit('variables={"version": RELEASE}', 'variables={"version": "0.9.9-wrong"}')
    result = service.run("run", "local", "--yes")
    assert result.returncode == 1, _explain(result)
    statuses = service.statuses()
    assert statuses["update-stack"] == "failed"
    assert statuses["rollback"] == "skipped"
    assert statuses["teardown"] == "succeeded"
    assert statuses["promote"] == "skipped"
    stages = service.last_run().stages
    assert "does not contain 'Hello World 1.0.2'" in stages["update-stack"].message
    assert stages["teardown"].outputs["deleted"] == stages["test-stack"].outputs["stack"]
    assert service.containers(stack=stages["test-stack"].outputs["stack"]) == []
    assert service.page() == "Hello World 1.0.1"
    service.images["0.9.9-wrong"] = stages["bake"].outputs["image"]


def test_a_release_that_fails_at_promote_is_rolled_back_automatically(service: Service) -> None:
    # The rehearsal only checks health, so the wrong page gets as far as production.
    service.edit(
        'update = UpdateStack(name="update-stack", stack=test_stack, image=bake, verify=page)',
        'update = UpdateStack(name="update-stack", stack=test_stack, image=bake, verify=healthy)',
    )
    with LoadClient(service.production_url(), rate=60) as load:
        result = service.run("run", "local", "--yes")
        time.sleep(0.5)
    assert result.returncode == 1, _explain(result)
    statuses = service.statuses()
    assert {s: statuses[s] for s in STAGES[2:6]} == dict.fromkeys(STAGES[2:6], "succeeded")
    assert statuses["promote"] == "failed"
    message = service.last_run().stages["promote"].message
    assert "failed verification in production" in message
    assert f"rolled back automatically to {service.images['1.0.1']}" in message
    assert re.search(r"rolled back\b.*in \d+\.\d s", message)
    assert service.page() == "Hello World 1.0.1"
    stats = load.stats()
    assert stats.failures == 0, stats.first_failure
    assert set(stats.bodies) <= {"Hello World 1.0.1", "Hello World 0.9.9-wrong"}
    releases = Ledger(service.root).releases(service.name, "production")
    assert [(r.image, r.status) for r in releases][-2:] == [
        (service.images["0.9.9-wrong"], "failed"),
        (service.images["1.0.1"], "live"),
    ]


def test_pipeline_rollback_goes_back_to_the_previous_known_good_image(service: Service) -> None:
    result = service.run("rollback", "production")
    assert result.returncode == 0, _explain(result)
    assert f"rolled back from {service.images['1.0.1']} to {service.images['1.0.0']}" in result.stdout
    assert service.page() == "Hello World 1.0.0"
    status = service.run("status", "production")
    assert status.returncode == 0, _explain(status)
    assert service.images["1.0.0"] in status.stdout
    # And forward again to a named image.
    forward = service.run("rollback", "production", "--to", service.images["1.0.1"])
    assert forward.returncode == 0, _explain(forward)
    assert service.page() == "Hello World 1.0.1"
    # An image that was rolled back is not a rollback target any more.
    releases = Ledger(service.root).releases(service.name, "production")
    assert releases[-1].image == service.images["1.0.1"]
    assert releases[-1].status == "live"


def test_rolling_back_an_unknown_or_ephemeral_environment_is_bad_input(service: Service) -> None:
    unknown = service.run("rollback", "staging")
    assert unknown.returncode == 2
    assert "no environment named 'staging'" in unknown.stderr
    ephemeral = service.run("rollback", "test")
    assert ephemeral.returncode == 2
    assert "ephemeral" in ephemeral.stderr


def test_an_interrupted_run_removes_its_test_stack(service: Service) -> None:
    """SIGTERM (what CI sends to stop a build; Ctrl-C is the same) while the test stack updates."""
    import signal

    events = service.root / ".pipeline" / "events.jsonl"
    seen = events.stat().st_size
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "local", "--yes", "--force", "--from", "test-stack"],
        cwd=service.root,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            with events.open() as fh:
                fh.seek(seen)
                fresh = fh.read()
            if '"event": "stage-started"' in fresh and '"stage": "update-stack"' in fresh:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before update-stack started"
        time.sleep(0.3)  # in the middle of the rolling update
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out + err  # SIGTERM: 128 + 15, as a CI system expects
    statuses = service.statuses()
    assert statuses["update-stack"] == "interrupted"
    assert statuses["teardown"] == "succeeded"
    assert statuses["promote"] == "skipped"
    stack = service.last_run().stages["test-stack"].outputs["stack"]
    assert service.containers(stack=stack) == []
    assert service.page() == "Hello World 1.0.1"


def test_nothing_is_left_that_the_ledger_does_not_account_for(service: Service) -> None:
    ledger = Ledger(service.root)
    # Containers and networks: only the production stack's.
    containers = service.containers()
    assert containers
    assert {c.labels[f"{LABEL_PREFIX}.stack"] for c in containers} == {service.production_stack}
    assert sorted(c.labels[f"{LABEL_PREFIX}.role"] for c in containers) == ["lb", "replica", "replica"]
    networks = service.client.networks.list(filters={"label": f"{LABEL_PREFIX}.pipeline={service.name}"})
    assert [n.name for n in networks] == [f"{service.production_stack}-net"]
    # Images: every one the pipeline made is an output of a run or a release in the ledger.
    accounted: set[str] = {r.image for r in ledger.releases(service.name, "production")}
    for run_id in ledger.runs():
        manifest = ledger.manifest(run_id)
        assert manifest is not None
        accounted |= {v for result in manifest.stages.values() for k, v in result.outputs.items() if "image" in k}
    accounted_ids = {service.client.images.get(ref).id for ref in accounted if ref}
    made = service.client.images.list(filters={"label": f"{LABEL_PREFIX}.pipeline={service.name}"})
    assert made
    for image in made:
        assert image.id in accounted_ids, f"{image.tags or image.id} is not in the ledger"
    dangling = service.client.images.list(
        filters={"dangling": True, "label": f"{LABEL_PREFIX}.pipeline={service.name}"}
    )
    assert dangling == []
