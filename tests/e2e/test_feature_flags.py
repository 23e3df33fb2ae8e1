"""The feature-flags example end to end on the local profile: `pipeline init --example
feature-flags`, `pipeline run local` (real Packer bake, real stacks, a real Redis master and two
replicas, the real balancer), the flag moved by `pipeline flag set` with no deploy, and a release
whose new variant is broken switched off by the FlagRollout by itself."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.docker_client import LABEL_PREFIX
from pipeline.ledger import Ledger
from tests.conftest import cli_env, commit_all, need, remove_everything_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory, docker_client: Any, base_image: str) -> Iterator[Path]:
    need(shutil.which("packer") is not None, "packer is not installed")
    root = tmp_path_factory.mktemp("ff") / "project"
    made = subprocess.run(
        [sys.executable, "-m", "pipeline", "init", str(root), "--example", "feature-flags"],
        env=cli_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    name = f"e2eff-{secrets.token_hex(2)}"
    definition = root / "pipelinefile.py"
    definition.write_text(definition.read_text().replace('"feature-flags",', f'"{name}",', 1))
    commit_all(root)
    yield root
    remove_everything_of(docker_client, name, images=True)
    for image in docker_client.images.list(name=f"{name}-bake"):
        docker_client.images.remove(image.id, force=True)


ALERT_TOKEN = secrets.token_hex(16)
"""The example's production declares alert_secret="FF_ALERT_TOKEN": its deploys need the token."""


def run(root: Path, *args: str, alert_token: str | None = ALERT_TOKEN) -> subprocess.CompletedProcess[str]:
    env = cli_env()
    env.pop("FF_ALERT_TOKEN", None)
    if alert_token is not None:
        env["FF_ALERT_TOKEN"] = alert_token
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def page(url: str, user: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"X-User": user})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.headers.get("X-Flag-Variant", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-Flag-Variant", "")


def production_url(root: Path, client: Any) -> str:
    lb = client.containers.get(f"{_pipeline(root)}-production-lb")
    port = lb.attrs["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"]
    return f"http://127.0.0.1:{port}"


def outputs_of(root: Path, stage: str) -> dict[str, str]:
    ledger = Ledger(root)
    manifest = ledger.manifest(ledger.runs()[-1])
    assert manifest is not None
    return manifest.stages[stage].outputs


def test_the_chain_releases_the_feature_step_by_step_with_no_deploy(example: Path, docker_client: Any) -> None:
    refused = run(example, "run", "local", "--yes", alert_token=None)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "'production' declares an alert route" in refused.stderr
    assert "FF_ALERT_TOKEN is not set" in refused.stderr
    assert not Ledger(example).runs(), "the refusal came after a stage ran"
    done = run(example, "run", "local", "--yes")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    out = outputs_of(example, "release-feature")
    assert out["percent"] == "100"
    assert out["steps"] == "10%: passed; 50%: passed; 100%: passed"
    assert int(out["on_requests"]) > 0
    assert out["on_failed"] == "0"
    url = production_url(example, docker_client)
    assert {page(url + "/feature", f"u{i}") for i in range(30)} == {(200, "new-feature=on")}
    lb = docker_client.containers.get(f"{_pipeline(example)}-production-lb")
    assert "location = /.pipeline/alert" in lb.exec_run(["/bin/cat", "/etc/nginx/nginx.conf"]).output.decode()
    listed = run(example, "flag", "list", "production")
    assert "new-feature" in listed.stdout
    assert "true" in listed.stdout
    # moved by hand: every replica serves it when `set` returns; no container changed
    labels = {"label": f"{LABEL_PREFIX}.pipeline={_pipeline(example)}"}
    before = sorted(c.id for c in docker_client.containers.list(all=True, filters=labels))
    off = run(example, "flag", "set", "production", "new-feature", "off", "--why", "e2e")
    assert off.returncode == 0, off.stderr
    assert {page(url + "/feature", f"u{i}") for i in range(30)} == {(404, "new-feature=off")}
    assert sorted(c.id for c in docker_client.containers.list(all=True, filters=labels)) == before
    changes = Ledger(example).flag_changes(_pipeline(example), "production")
    assert changes[-1]["why"] == "e2e"
    assert changes[-1]["to"]["value"] is False
    # `pipeline status` finds the store through the stack (no PIPELINE_FLAGS_URL) and shows the move
    status = run(example, "status", "production")
    assert status.returncode == 0, status.stderr
    flags = status.stdout[status.stdout.index("production: flags (the flag store of") :]
    (row,) = [line for line in flags.splitlines() if "new-feature" in line]
    assert "false" in row.split("│")[3]  # serving: what `flag set` left
    assert "not read" not in status.stdout


def _pipeline(root: Path) -> str:
    return next(line for line in (root / "pipelinefile.py").read_text().splitlines() if '"e2eff-' in line).strip(' ",')


def test_a_broken_new_variant_is_switched_off_by_the_rollout_itself(example: Path, docker_client: Any) -> None:
    definition = example / "pipelinefile.py"
    text = definition.read_text()
    definition.write_text(
        text.replace('variables={"version": RELEASE}', 'variables={"version": RELEASE, "feature_fault": "500"}')
    )
    subprocess.run(["git", "commit", "-qam", "a release whose new variant fails"], cwd=example, check=True)
    started = time.monotonic()
    done = run(example, "run", "local", "--yes")
    assert done.returncode == 1, done.stdout[-4000:]
    out = outputs_of(example, "release-feature")
    assert out["rolled_back"] == "true"
    assert out["percent"] == "0"
    assert out["steps"] == "10%: breach"
    assert float(out["time_to_restore"]) < time.monotonic() - started
    assert int(out["on_failed"]) > 0
    url = production_url(example, docker_client)
    assert {page(url + "/feature", f"u{i}") for i in range(30)} == {(404, "new-feature=off")}
    assert page(url + "/", "anyone")[0] == 200  # the deploy itself was fine: only the feature is off
    history = run(example, "flag", "history", "production", "--limit", "1")
    assert "breach at 10%" in history.stdout
