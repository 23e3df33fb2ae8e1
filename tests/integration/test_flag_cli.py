"""`pipeline flag` against real Redis servers (Debian's redis-server on 127.0.0.1: a master and a
read-only replica started here): set/get/list/history, the ledger's record, bad input exit 2; and
`pipeline flag alert` against the balancer's real alert agent (run here as a process, no Docker)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import pipeline.engines.docker_stack
from pipeline.engines.stack import StackState
from pipeline.testing import FakeEngines, FakeStackEngine
from tests.conftest import Cli, cli_env, need
from tests.unit.cli_inprocess import run_cli

pytestmark = pytest.mark.integration

DEFINITION = """
from pipeline import CommitTest, Environment, Flag, Pipeline

with Pipeline(
    "shop",
    flags=[Flag(name="new-greeting", default=False), Flag(name="greeting", default="hi")],
    environments=[Environment(name="production", flags={"greeting": "hello"})],
):
    CommitTest(name="unit", commands=["true"])
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(port: int) -> None:
    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port).ping()
            return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def redis_pair(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A real master and a read-only replica of it; yields their ports."""
    need(shutil.which("redis-server") is not None, "redis-server is not installed (apt-get install redis-server)")
    master, replica = _free_port(), _free_port()
    base = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    procs = [subprocess.Popen([*base, "--port", str(master)], stdout=subprocess.DEVNULL)]
    _wait(master)
    procs.append(
        subprocess.Popen(
            [*base, "--port", str(replica), "--replicaof", "127.0.0.1", str(master)], stdout=subprocess.DEVNULL
        )
    )
    _wait(replica)
    import redis

    deadline = time.monotonic() + 10
    while redis.Redis(port=replica).info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica never synced"
        time.sleep(0.05)
    try:
        yield master, replica
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def test_set_reaches_the_replica_and_is_recorded_in_store_and_ledger(
    cli: Cli, project: object, redis_pair: tuple[int, int]
) -> None:
    root = project(DEFINITION)  # type: ignore[operator]
    master, replica = redis_pair
    env = cli_env(
        PIPELINE_FLAGS_URL=f"127.0.0.1:{master}",
        PIPELINE_FLAGS_REPLICAS=f"127.0.0.1:{replica}",
        PIPELINE_ACTOR="ana",
    )
    done = cli("flag", "set", "production", "new-greeting", "on", "--percent", "10", "--why", "try", cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    assert "1 replica(s) acknowledged" in done.stdout
    import redis

    stored = json.loads(redis.Redis(port=replica).get("pipeline:flag:new-greeting"))  # type: ignore[arg-type]
    assert stored["value"] is True
    assert stored["percent"] == 10
    assert stored["base"] is False
    assert stored["by"] == "ana"
    got = cli("flag", "get", "production", "new-greeting", cwd=root, env=env)
    assert got.returncode == 0, got.stderr
    assert "(same)" in got.stdout
    listed = cli("flag", "list", "production", cwd=root, env=env)
    assert "new-greeting" in listed.stdout
    assert "true for 10% (else false)" in listed.stdout
    history = cli("flag", "history", "production", cwd=root, env=env)
    assert "ana new-greeting: null@-% -> true@10.0% (try)" in history.stdout
    ledger = (root / ".pipeline" / "flags" / "shop" / "production.jsonl").read_text().splitlines()
    record = json.loads(ledger[-1])
    assert record["flag"] == "new-greeting"
    assert record["by"] == "ana"
    assert record["to"]["percent"] == 10
    assert record["from"] is None


def test_status_shows_each_environments_flags_beside_the_definition(
    cli: Cli, project: object, redis_pair: tuple[int, int]
) -> None:
    """`pipeline status` lists what the store serves for every declared flag (as `flag list` does),
    with the rollouts in flight and a raised alert; a store that does not answer is a note, and the
    rest of the status is still shown (exit 0)."""
    root = project(DEFINITION)  # type: ignore[operator]
    master, _ = redis_pair
    env = cli_env(PIPELINE_FLAGS_URL=f"127.0.0.1:{master}", PIPELINE_ACTOR="ana")
    done = cli("flag", "set", "production", "new-greeting", "on", "--percent", "10", cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    _start_rollout(master, "new-greeting")
    import redis

    redis.Redis(port=master).set("pipeline:flags:alert", json.dumps({"at": "2026-12-05T10:00:00Z", "by": "monitor"}))
    status = cli("status", cwd=root, env=env)
    assert status.returncode == 0, status.stderr
    flags = status.stdout[status.stdout.index("production: flags (PIPELINE_FLAGS_URL)") :]
    rows = {line.split("│")[1].strip(): line for line in flags.splitlines() if line.count("│") > 2}
    assert "true for 10% (else false) [rollout in flight]" in rows["new-greeting"]
    assert "ana" in rows["new-greeting"]
    assert '"hi" (not in the store)' in rows["greeting"]
    assert '"hello"' in rows["greeting"]  # production's value in the definition
    assert "production: alert raised at 2026-12-05T10:00:00Z by monitor" in status.stdout
    assert "last runs" in status.stdout

    gone = cli_env(PIPELINE_FLAGS_URL=f"127.0.0.1:{_free_port()}")  # nothing listens there
    unread = cli("status", "production", cwd=root, env=gone)
    assert unread.returncode == 0, unread.stderr
    assert "production: flags not read: the flag store at 127.0.0.1:" in unread.stdout
    assert "flags (PIPELINE_FLAGS_URL)" not in unread.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("new-greting", "on"), "declares no flag 'new-greting' (did you mean 'new-greeting'?)"),
        (("new-greeting", "maybe"), "is a boolean: give true/false"),
        (("new-greeting", "on", "--percent", "120"), "--percent must be 0..100"),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(
    cli: Cli, project: object, redis_pair: tuple[int, int], args: tuple[str, ...], message: str
) -> None:
    root = project(DEFINITION)  # type: ignore[operator]
    env = cli_env(PIPELINE_FLAGS_URL=f"127.0.0.1:{redis_pair[0]}")
    done = cli("flag", "set", "production", *args, cwd=root, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    import redis

    assert redis.Redis(port=redis_pair[0]).keys("pipeline:flag:*") == []


def test_an_environment_without_a_stack_names_the_fix(cli: Cli, project: object) -> None:
    root = project(
        DEFINITION.replace('Environment(name="production"', 'Environment(name="production", template="t.yaml"')
    )  # type: ignore[operator]
    (root / "t.yaml").write_text("Resources: {}\n")
    done = cli("flag", "list", "production", cwd=root, env=cli_env(DOCKER_HOST="unix:///nonexistent.sock"))
    assert done.returncode != 0
    assert "error:" in done.stderr


AGENT = Path(pipeline.engines.docker_stack.__file__).parent / "lb" / "alert_agent.py"
ALERTED = DEFINITION.replace('name="production",', 'name="production", alert_secret="SHOP_ALERT_TOKEN",')


@dataclass
class BalancerWithAlertRoute(FakeStackEngine):
    """The stack as `describe` shows it: its balancer's URL is the alert agent's."""

    def describe(self, stack: str) -> StackState:
        return StackState(stack, True, "shop:1", self.url, "ready", details={"alert_route": "/.pipeline/alert"})


@pytest.fixture
def alert_agent(tmp_path: Path, redis_pair: tuple[int, int]) -> Iterator[tuple[str, str]]:
    """The balancer's alert agent (the file the engine copies into the balancer) on 127.0.0.1,
    switching off rollouts on the master of `redis_pair`; yields its URL and token."""
    token = secrets.token_hex(16)
    config = tmp_path / "alert.json"
    settings = {
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "redis": f"127.0.0.1:{redis_pair[0]}",
        "marker": str(tmp_path / "alert.marker"),
    }
    config.write_text(json.dumps(settings))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(AGENT), str(port)], env={**os.environ, "PIPELINE_ALERT_CONFIG": str(config)}
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, "the alert agent exited"
            assert time.monotonic() < deadline, "the alert agent never listened"
            time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/", token
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _start_rollout(master: int, flag: str) -> None:
    import redis

    redis.Redis(port=master).sadd("pipeline:flags:rollouts", flag)


def test_flag_alert_records_each_flag_it_switches_off_in_the_ledger(
    cli: Cli,
    project: object,
    redis_pair: tuple[int, int],
    alert_agent: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = project(ALERTED)  # type: ignore[operator]
    master, _ = redis_pair
    url, token = alert_agent
    env = cli_env(PIPELINE_FLAGS_URL=f"127.0.0.1:{master}", PIPELINE_ACTOR="ana")
    done = cli("flag", "set", "production", "new-greeting", "true", "--percent", "10", cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    _start_rollout(master, "new-greeting")
    monkeypatch.setenv("SHOP_ALERT_TOKEN", token)
    monkeypatch.setenv("PIPELINE_ACTOR", "oncall-bo")
    result = run_cli(
        ["flag", "alert", "production"], root, capsys, engines=FakeEngines(BalancerWithAlertRoute(url=url))
    )
    assert result.code == 0, result.err
    said = " ".join(result.out.split())  # the console wraps at its width
    assert "flags switched off: new-greeting" in said
    assert "1 change(s) recorded in the ledger" in said
    records = [json.loads(line) for line in (root / ".pipeline/flags/shop/production.jsonl").read_text().splitlines()]
    assert [r["by"] for r in records] == ["ana", "oncall-bo"]
    switched = records[-1]
    assert switched["flag"] == "new-greeting"
    assert switched["from"]["percent"] == 10
    assert switched["to"]["percent"] == 0
    assert switched["why"] == "alert: rollout switched off"
    assert "alert route" in switched["where"]
    history = cli("flag", "history", "production", cwd=root, env=env)
    assert history.returncode == 0, history.stderr
    assert "oncall-bo new-greeting: true@10.0% -> true@0.0% (alert: rollout switched off)" in history.stdout
    assert "store only" not in history.stdout


def test_flag_history_marks_what_the_ledger_lacks_and_record_copies_it(
    cli: Cli, project: object, redis_pair: tuple[int, int], alert_agent: tuple[str, str]
) -> None:
    root = project(ALERTED)  # type: ignore[operator]
    master, _ = redis_pair
    url, token = alert_agent
    env = cli_env(PIPELINE_FLAGS_URL=f"127.0.0.1:{master}", PIPELINE_ACTOR="ana")
    done = cli("flag", "set", "production", "new-greeting", "true", "--percent", "50", cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    _start_rollout(master, "new-greeting")
    # a monitor calls the balancer's alert route itself: the change is in the store only
    request = urllib.request.Request(
        url + ".pipeline/alert", method="POST", headers={"Authorization": f"Bearer {token}", "X-Alert-By": "monitor"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert json.loads(answer.read())["flags_off"] == ["new-greeting"]
    history = cli("flag", "history", "production", cwd=root, env=env)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    by_monitor = [line for line in lines if " monitor new-greeting:" in line]
    by_ana = [line for line in lines if " ana new-greeting:" in line]
    assert len(by_monitor) == 1
    assert "(store only: not in this machine's ledger)" in by_monitor[0]
    assert len(by_ana) == 1
    assert "store only" not in by_ana[0]
    assert "1 change(s) are in the store only" in history.stdout
    recorded = cli("flag", "history", "production", "--record", cwd=root, env=env)
    assert "recorded 1 change(s) from the store in this machine's ledger" in recorded.stdout
    records = [json.loads(line) for line in (root / ".pipeline/flags/shop/production.jsonl").read_text().splitlines()]
    assert [(r["by"], r["to"]["percent"]) for r in records] == [("ana", 50), ("monitor", 0)]
    again = cli("flag", "history", "production", cwd=root, env=env)
    assert "store only" not in again.stdout
