"""`pipeline flag` against real Redis servers (Debian's redis-server on 127.0.0.1: a master and a
read-only replica started here): set/get/list/history, the ledger's record, bad input exit 2."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli, cli_env, need

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
