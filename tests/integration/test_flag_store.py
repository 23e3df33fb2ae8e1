"""The local engine's flag store against a real Docker engine: a Redis master and two read-only
replicas (Debian's redis-server) in the stack, made from the template's ElastiCache replication
group; seeded from the definition, told to every web replica, found by labels, repaired, killed
mid-creation and converged by the next deploy, removed with the stack. No fakes: real Redis.

The web servers are busybox images built here (as in test_docker_stack.py)."""

from __future__ import annotations

import io
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.docker_client import LABEL_PREFIX
from pipeline.flags.state import FlagState
from pipeline.flags.store import FlagEndpoint, FlagStore
from tests.conftest import remove_everything_of

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "examples" / "feature-flags" / "templates" / "web.yaml"
TEST_LABEL = f"{LABEL_PREFIX}.test"
WEB = """
FROM {base}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends busybox \\
    && rm -rf /var/lib/apt/lists/* && mkdir -p /srv/www && echo "Hello World" > /srv/www/index.html \\
    && echo ok > /srv/www/health
ENTRYPOINT []
CMD ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/srv/www"]
"""
FLAGS = {"new-greeting": False, "greeting": "hi"}


@pytest.fixture(scope="module")
def web_image(docker_client: Any, base_image: str) -> Iterator[str]:
    tag = f"pipeline-test-web:flags-{secrets.token_hex(3)}"
    docker_client.images.build(
        fileobj=io.BytesIO(WEB.format(base=base_image).encode()), tag=tag, labels={TEST_LABEL: "flag-store"}, rm=True
    )
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "web.yaml"
    path.write_text(TEMPLATE.read_text().replace("HealthCheckGracePeriod: 60", "HealthCheckGracePeriod: 5"))
    return path


@pytest.fixture
def pipeline_name(docker_client: Any, web_image: str) -> Iterator[str]:
    name = f"itflags-{secrets.token_hex(3)}"
    yield name
    remove_everything_of(docker_client, name)


def engine_of(name: str, template: Path, client: Any) -> Any:
    from pipeline.engines.docker_stack import DockerStackEngine

    return DockerStackEngine(pipeline=name, template=template, client=client, flags=FLAGS)


def of_role(client: Any, pipeline: str, role: str) -> list[Any]:
    labels = [f"{LABEL_PREFIX}.pipeline={pipeline}", f"{LABEL_PREFIX}.role={role}"]
    return client.containers.list(all=True, filters={"label": labels})


def store_of(state: Any) -> FlagStore:
    replicas = tuple(a for a in state.details["flags_replicas"].split(",") if a)
    return FlagStore(FlagEndpoint(state.details["flags_master"], replicas))


def test_a_stack_gets_a_master_and_two_read_only_replicas_seeded_from_the_definition(
    pipeline_name: str, template: Path, docker_client: Any, web_image: str
) -> None:
    engine = engine_of(pipeline_name, template, docker_client)
    state = engine.deploy("web", web_image)
    stores = of_role(docker_client, pipeline_name, "flag-store")
    assert sorted(c.name for c in stores) == [f"web-flags-{i}" for i in range(3)]
    store = store_of(state)
    assert {k: v.value for k, v in store.all().items()} == FLAGS
    # every web replica is told where the store is
    for replica in of_role(docker_client, pipeline_name, "replica"):
        env = dict(e.split("=", 1) for e in replica.attrs["Config"]["Env"])
        assert env["PIPELINE_FLAGS_MASTER"] == "web-flags-0:6379"
        assert env["PIPELINE_FLAGS_REPLICAS"] == "web-flags-1:6379,web-flags-2:6379"
    # a change reaches every replica before `set` returns; replicas refuse writes
    change = store.set("new-greeting", FlagState(True, 25, False), by="test")
    assert change.replicas_acked == 2
    assert [s.percent if s else None for s in store.replica_values("new-greeting")] == [25.0, 25.0]
    import redis

    host, _, port = store.endpoint.replicas[0].rpartition(":")
    with pytest.raises(redis.ReadOnlyError):
        redis.Redis(host=host, port=int(port)).set("pipeline:flag:x", "{}")
    # a second deploy changes nothing and keeps the flags (the store is the truth, not the definition)
    ids = sorted(c.id for c in stores)
    engine.deploy("web", web_image)
    assert sorted(c.id for c in of_role(docker_client, pipeline_name, "flag-store")) == ids
    assert store.get("new-greeting").percent == 25  # type: ignore[union-attr]
    engine.delete("web")
    assert of_role(docker_client, pipeline_name, "flag-store") == []
    assert docker_client.networks.list(filters={"label": f"{LABEL_PREFIX}.pipeline={pipeline_name}"}) == []


def test_a_stopped_or_removed_store_container_is_repaired_and_the_flags_survive_a_restart(
    pipeline_name: str, template: Path, docker_client: Any, web_image: str
) -> None:
    engine = engine_of(pipeline_name, template, docker_client)
    state = engine.deploy("web", web_image)
    store_of(state).set("greeting", FlagState("hello"), by="test")
    master = docker_client.containers.get("web-flags-0")
    master.stop(timeout=5)
    docker_client.containers.get("web-flags-2").remove(force=True)
    state = engine.deploy("web", web_image)
    assert len(of_role(docker_client, pipeline_name, "flag-store")) == 3
    store = store_of(state)
    assert store.get("greeting").value == "hello"  # type: ignore[union-attr]  # append-only file in its volume
    assert [s.value if s else None for s in store.replica_values("greeting")] == ["hello", "hello"]


STORE_PORT = "AutomaticFailoverEnabled: true\n      Port: 6379"


def with_store_port(template: Path, port: int) -> Path:
    """A copy of `template` whose flag store listens on `port` (every store container is replaced)."""
    text = template.read_text()
    assert STORE_PORT in text, "the feature-flags template no longer declares its store's port as expected"
    path = template.with_name(f"web-{port}.yaml")
    path.write_text(text.replace(STORE_PORT, STORE_PORT.replace("6379", str(port))))
    return path


def volumes_of(client: Any, pipeline: str) -> list[str]:
    return sorted(v.name for v in client.volumes.list(filters={"label": f"{LABEL_PREFIX}.pipeline={pipeline}"}))


def mounted_at_data(container: Any) -> list[str]:
    return [str(m.get("Name")) for m in container.attrs["Mounts"] if m.get("Destination") == "/data"]


def until_replicas_follow(store: FlagStore, timeout: float = 60.0) -> None:
    """Until the master answers and every replica is linked to it (polled, no fixed sleep)."""
    import time

    import redis

    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        try:
            states = [store.replica_clients[i].info("replication") for i in range(len(store.endpoint.replicas))]
            seen = [s.get("master_link_status") for s in states]
            master = store.master_client.info("replication")
            if seen == ["up"] * len(states) and master.get("connected_slaves") == len(states):
                return
        except redis.RedisError as exc:
            seen = exc
        time.sleep(0.2)  # the poll's interval, not a wait for an event
    raise AssertionError(f"the flag store's replicas never followed its master: {seen}")


def assert_everywhere(store: FlagStore, name: str, value: Any, percent: float) -> None:
    """The flag has this state on the master and on every replica."""
    master = store.get(name)
    assert master is not None, f"flag {name} is gone from the master"
    assert (master.value, master.percent) == (value, percent), master
    on_replicas = [(s.value, s.percent) if s else None for s in store.replica_values(name)]
    assert on_replicas == [(value, percent)] * len(store.endpoint.replicas), on_replicas


def test_the_flags_outlive_a_master_replaced_for_another_spec_and_go_with_the_stack(
    pipeline_name: str, template: Path, docker_client: Any, web_image: str
) -> None:
    """A new port (as a rebuilt store image would) replaces every store container: the master's
    data is in the named volume, so `pipeline flag set` values are kept, not re-seeded."""
    engine = engine_of(pipeline_name, template, docker_client)
    store = store_of(engine.deploy("web", web_image))
    store.set("new-greeting", FlagState(True, 25, False), by="test")
    store.set("greeting", FlagState("hello"), by="test")
    master = docker_client.containers.get("web-flags-0")
    assert mounted_at_data(master) == ["web-flags-data"]
    assert volumes_of(docker_client, pipeline_name) == ["web-flags-data"]

    moved = engine_of(pipeline_name, with_store_port(template, 6380), docker_client)
    state = moved.deploy("web", web_image)
    again = docker_client.containers.get("web-flags-0")
    assert again.id != master.id, "the master was not replaced: the test proves nothing"
    assert "6380/tcp" in again.attrs["NetworkSettings"]["Ports"]
    assert mounted_at_data(again) == ["web-flags-data"]
    store = store_of(state)
    store.wait_replicas()  # the new replicas have made their first sync with the reloaded master
    assert_everywhere(store, "new-greeting", True, 25.0)
    assert_everywhere(store, "greeting", "hello", 100.0)
    assert not any(h["why"] == "seeded from the definition" for h in store.history(2)), store.history(2)

    moved.delete("web")
    assert volumes_of(docker_client, pipeline_name) == []
    assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_PREFIX}.pipeline={pipeline_name}"}) == []


def test_a_master_made_before_the_named_volume_hands_its_flags_over_when_it_is_replaced(
    pipeline_name: str, template: Path, docker_client: Any, web_image: str
) -> None:
    """Stores made by earlier versions keep the master's data in an anonymous volume: the first
    deploy with the named volume copies it over before it removes that master."""
    engine = engine_of(pipeline_name, template, docker_client)
    engine.deploy("web", web_image)
    # the master as an earlier version made it: same image, command and labels (another spec),
    # its data in the image's anonymous /data volume, no named volume
    master = docker_client.containers.get("web-flags-0")
    image, command, labels = master.attrs["Config"]["Image"], master.attrs["Config"]["Cmd"], dict(master.labels)
    network = next(iter(master.attrs["NetworkSettings"]["Networks"]))
    master.remove(force=True)
    docker_client.volumes.get("web-flags-data").remove(force=True)
    old = docker_client.containers.run(
        image, command, name="web-flags-0", hostname="web-flags-0", detach=True, network=network,
        ports={"6379/tcp": ("127.0.0.1", None)}, labels={**labels, f"{LABEL_PREFIX}.spec": "before-volumes"},
    )  # fmt: skip
    old.reload()
    anonymous = mounted_at_data(old)
    assert len(anonymous) == 1
    assert anonymous != ["web-flags-data"]
    store = store_of(engine.describe("web"))
    until_replicas_follow(store)  # the web-flags-1/2 reconnect to the new web-flags-0 by name
    store.set("greeting", FlagState("kept"), by="test")

    store = store_of(engine.deploy("web", web_image))
    new = docker_client.containers.get("web-flags-0")
    assert new.id != old.id
    assert mounted_at_data(new) == ["web-flags-data"]
    store.wait_replicas()
    assert_everywhere(store, "greeting", "kept", 100.0)
    engine.delete("web")
    assert volumes_of(docker_client, pipeline_name) == []


@pytest.mark.parametrize("checkpoint", ["flag-store:master-started", "flag-store:ready"])
def test_a_deploy_killed_while_it_makes_the_store_is_finished_by_the_next_one(
    checkpoint: str, pipeline_name: str, template: Path, docker_client: Any, web_image: str
) -> None:
    script = (
        "from pathlib import Path\n"
        "from pipeline.engines.docker_stack import DockerStackEngine\n"
        f"DockerStackEngine(pipeline={pipeline_name!r}, template=Path({str(template)!r}), flags={FLAGS!r})"
        f".deploy('web', {web_image!r})\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PIPELINE_FAULT": f"local-stack:web:{checkpoint}"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert of_role(docker_client, pipeline_name, "replica") == []  # the store comes before any web replica
    engine = engine_of(pipeline_name, template, docker_client)
    state = engine.deploy("web", web_image)
    assert sorted(c.name for c in of_role(docker_client, pipeline_name, "flag-store")) == [
        f"web-flags-{i}" for i in range(3)
    ]
    assert len(of_role(docker_client, pipeline_name, "replica")) == 2
    assert {k: v.value for k, v in store_of(state).all().items()} == FLAGS
    engine.delete("web")
    left = docker_client.containers.list(all=True, filters={"label": f"{LABEL_PREFIX}.pipeline={pipeline_name}"})
    assert left == []


# --- the alert route --------------------------------------------------------------------------------------------


def _post(url: str, token: str | None, method: str = "POST") -> tuple[int, dict[str, Any]]:
    import json
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if body.startswith(b"{") else {}


def test_the_alert_route_needs_the_token_routes_to_stable_and_switches_rollouts_off(
    pipeline_name: str, template: Path, docker_client: Any, web_image: str
) -> None:
    from pipeline.engines.docker_stack import DockerStackEngine

    token = secrets.token_hex(16)
    engine = DockerStackEngine(
        pipeline=pipeline_name, template=template, client=docker_client, flags=FLAGS, alert_token=token
    )
    state = engine.deploy("web", web_image)
    assert state.details["alert"] == "clear"
    store = store_of(state)
    store.set("new-greeting", FlagState(True, 50, False), by="test")
    store.begin_rollout("new-greeting")
    store.set("greeting", FlagState("hello"), by="test")  # not in a rollout: untouched
    url = state.url.rstrip("/") + "/.pipeline/alert"
    assert _post(url, None)[0] == 403
    assert _post(url, "wrong")[0] == 403
    assert store.alert() is None
    # the token is not in the balancer, only its digest
    lb = docker_client.containers.get("web-lb")
    assert token not in lb.exec_run(["/bin/cat", "/etc/pipeline/alert.json", "/etc/nginx/nginx.conf"]).output.decode()
    status, answer = _post(url, token)
    assert status == 200, answer
    assert answer["flags_off"] == ["new-greeting"]
    assert store.get("new-greeting").percent == 0  # type: ignore[union-attr]
    assert store.get("greeting").value == "hello"  # type: ignore[union-attr]
    assert store.alert() is not None
    assert engine.describe("web").details["alert"] == "raised"
    assert store.history(1)[0]["why"] == "alert: rollout switched off"
    assert _post(url, token, "DELETE")[0] == 200
    assert engine.describe("web").details["alert"] == "clear"
    assert store.alert() is None


def test_without_a_token_there_is_no_alert_route(
    pipeline_name: str, template: Path, docker_client: Any, web_image: str
) -> None:
    engine = engine_of(pipeline_name, template, docker_client)
    state = engine.deploy("web", web_image)
    assert "alert_route" not in state.details
    status, answer = _post(state.url.rstrip("/") + "/.pipeline/alert", "anything")
    # the balancer passes it on like any page: busybox answers (501 to a POST), no agent does
    assert status == 501
    assert answer == {}


def test_an_alert_during_a_canary_sends_everything_to_the_old_version_and_stops_the_deploy(
    pipeline_name: str, template: Path, docker_client: Any, web_image: str
) -> None:
    import threading
    import time

    from pipeline.engines.docker_stack import DockerStackEngine
    from pipeline.engines.http_check import request
    from pipeline.errors import HealthBreachError
    from pipeline.strategy import Canary, Health

    token = secrets.token_hex(16)
    engine = DockerStackEngine(
        pipeline=pipeline_name, template=template, client=docker_client, flags=FLAGS, alert_token=token
    )
    state = engine.deploy("web", web_image)
    v2 = f"{web_image}-v2"
    docker_client.images.build(
        fileobj=io.BytesIO(f'FROM {web_image}\nRUN echo "Hello World v2" > /srv/www/index.html\n'.encode()),
        tag=v2,
        labels={TEST_LABEL: "flag-store"},
    )
    outcome: dict[str, Any] = {}

    def deploy() -> None:
        try:
            engine.deploy(
                "web", v2, strategy=Canary(steps=(50, 100), observe_seconds=60), health=Health(min_p99_ms=1000)
            )
        except HealthBreachError as exc:
            outcome["breach"] = exc

    thread = threading.Thread(target=deploy)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while "Hello World v2" not in {request(state.url, timeout=5)[1].strip() for _ in range(10)}:
            assert time.monotonic() < deadline, "the canary never routed to v2"
        assert _post(state.url.rstrip("/") + "/.pipeline/alert", token)[0] == 200
        bodies = {request(state.url, timeout=5)[1].strip() for _ in range(30)}
        assert bodies == {"Hello World"}  # the stable (old) version only, from the next request on
    finally:
        thread.join(timeout=180)
        docker_client.images.remove(v2, force=True)
    breach = outcome.get("breach")
    assert breach is not None, "the deploy went on after the alert"
    assert "an alert was raised" in str(breach)
    assert engine.describe("web").image == web_image
