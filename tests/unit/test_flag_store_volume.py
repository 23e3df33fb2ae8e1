"""The flag store master's data volume, against a fake Docker client (the order of what ensure()
does is the point: an old master is stopped and its data copied before it is removed; a new
master starts only after its volume is given to redis). The real thing: tests/integration/test_flag_store.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import docker.errors
import pytest

from pipeline.engines.docker_stack.flag_store import FlagStoreContainers, delete_volume, volume_name
from pipeline.engines.docker_stack.labels import StackId
from pipeline.engines.flag_store_shape import FlagStoreShape

STACK = StackId("shop", "prod")
SHAPE = FlagStoreShape("FlagStore", 1, 6379)


@dataclass
class Volume:
    name: str
    labels: dict[str, str]
    log: list[str]

    @property
    def attrs(self) -> dict[str, Any]:
        return {"Labels": self.labels}

    def remove(self, force: bool = False) -> None:
        self.log.append(f"volume rm {self.name}")


@dataclass
class Container:
    name: str
    labels: dict[str, str]
    log: list[str]
    mounts: dict[str, str] = field(default_factory=dict)
    status: str = "running"
    command: Any = None

    @property
    def attrs(self) -> dict[str, Any]:
        mounts = [{"Type": "volume", "Name": n, "Destination": d} for n, d in self.mounts.items()]
        ports = {f"{SHAPE.port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": "40000"}]}
        return {"Mounts": mounts, "NetworkSettings": {"Ports": ports}}

    def stop(self, timeout: int = 10) -> None:
        self.log.append(f"stop {self.name}")
        self.status = "exited"

    def remove(self, force: bool = False, v: bool = False) -> None:
        self.log.append(f"rm {self.name}" + (" -v" if v else ""))

    def start(self) -> None:
        self.log.append(f"start {self.name}: {self.command[-1] if self.command else ''}")

    def wait(self, timeout: float = 0) -> dict[str, int]:
        return {"StatusCode": 0}

    def reload(self) -> None:
        pass


class Client:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.volume_store: dict[str, Volume] = {}
        self.images = self
        self.volumes = _Volumes(self)
        self.containers = _Containers(self)

    def get(self, name: str) -> Any:  # images.get
        return type("Image", (), {"id": "sha256:new"})()


class _Volumes:
    def __init__(self, client: Client) -> None:
        self.client = client

    def get(self, name: str) -> Volume:
        if name not in self.client.volume_store:
            raise docker.errors.NotFound(name)
        return self.client.volume_store[name]

    def create(self, name: str, labels: dict[str, str]) -> Volume:
        self.client.log.append(f"volume create {name}")
        self.client.volume_store[name] = Volume(name, labels, self.client.log)
        return self.client.volume_store[name]

    def list(self, filters: dict[str, list[str]]) -> list[Volume]:
        wanted = [f.split("=", 1) for f in filters["label"]]
        return [v for v in self.client.volume_store.values() if all(v.labels.get(k) == w for k, w in wanted)]


class _Containers:
    def __init__(self, client: Client) -> None:
        self.client = client

    def get(self, name: str) -> Container:
        raise docker.errors.NotFound(name)

    def create(self, image: str, command: list[str], *, name: str, volumes: dict[str, Any], **_: Any) -> Container:
        mounts = {n: m["bind"] for n, m in volumes.items()}
        return Container(name, {}, self.client.log, mounts, "created", command)

    def run(self, image: str, command: list[str], *, name: str, volumes: Any, labels: Any, **_: Any) -> Container:
        self.client.log.append(f"run {name}" + (f" with {sorted(volumes)}" if volumes else ""))
        return Container(name, labels, self.client.log, {n: m["bind"] for n, m in (volumes or {}).items()})


class Store(FlagStoreContainers):
    def _wait_ready(self, addresses: Any) -> None:  # no Redis here
        pass


def store(client: Client) -> Store:
    return Store(client, STACK, SHAPE, "pipeline-flags:x", lambda line: None)


def running_store(client: Client, master_volume: str, master_spec: str) -> list[Container]:
    made = store(client)
    master = Container(
        "prod-flags-0",
        STACK.labels("flag-store", **{"io.pipeline.flag-index": "0", "io.pipeline.spec": master_spec}),
        client.log,
        {master_volume: "/data"},
    )
    replica = Container(
        "prod-flags-1",
        STACK.labels("flag-store", **{"io.pipeline.flag-index": "1", "io.pipeline.spec": made.spec(1)}),
        client.log,
        {"anon-replica": "/data"},
    )
    return [master, replica]


def test_a_new_store_gets_a_labelled_volume_given_to_redis_before_the_master_starts() -> None:
    client = Client()
    store(client).ensure([], "prod-net", {})
    assert client.log == [
        f"volume create {volume_name(STACK)}",
        "start prod-flags-prepare: chown -R redis:redis /data",
        "rm prod-flags-prepare",
        "run prod-flags-0 with ['prod-flags-data']",
        "run prod-flags-1",
    ]
    assert client.volume_store["prod-flags-data"].labels == STACK.labels("flag-store")


def test_a_master_replaced_for_another_spec_keeps_its_named_volume() -> None:
    client = Client()
    client.volumes.create("prod-flags-data", STACK.labels("flag-store"))
    client.log.clear()
    store(client).ensure(running_store(client, "prod-flags-data", "old-image"), "prod-net", {})
    assert client.log == [
        "stop prod-flags-0",  # Redis finishes its append-only file
        "rm prod-flags-0 -v",  # -v removes anonymous volumes only: the named one stays
        "start prod-flags-prepare: chown -R redis:redis /data",
        "rm prod-flags-prepare",
        "run prod-flags-0 with ['prod-flags-data']",
    ]


def test_a_master_made_before_the_named_volume_has_its_data_copied_before_it_goes() -> None:
    client = Client()
    store(client).ensure(running_store(client, "anon-master", "before-volumes"), "prod-net", {})
    assert client.log == [
        "volume create prod-flags-data",
        "stop prod-flags-0",
        "start prod-flags-prepare: cp -a /from/. /data/ && chown -R redis:redis /data",
        "rm prod-flags-prepare",
        "rm prod-flags-0 -v",  # only once the copy is done
        "start prod-flags-prepare: chown -R redis:redis /data",
        "rm prod-flags-prepare",
        "run prod-flags-0 with ['prod-flags-data']",
    ]


def test_a_volume_of_that_name_that_is_not_the_stacks_is_refused_not_used() -> None:
    from pipeline.errors import StackOperationError

    client = Client()
    client.volumes.create("prod-flags-data", StackId("other", "prod").labels("flag-store"))
    with pytest.raises(StackOperationError, match="not the flag store data of stack prod of pipeline shop"):
        store(client).ensure([], "prod-net", {})


def test_deleting_the_stack_removes_its_flag_volume_and_no_other() -> None:
    client = Client()
    client.volumes.create("prod-flags-data", STACK.labels("flag-store"))
    client.volumes.create("test-flags-data", StackId("shop", "test").labels("flag-store"))
    client.log.clear()
    delete_volume(client, STACK, on_event=lambda line: None)
    assert client.log == ["volume rm prod-flags-data"]


def test_a_delete_rerun_after_the_containers_went_removes_the_database_and_flag_volumes(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete killed after it removed the containers and the network: the re-run finds no stack,
    and still removes what the stack owns outside them (the database's and the flag store's
    volumes), not only the flag store's."""
    from pathlib import Path

    from pipeline.engines.docker_stack.engine import DockerStackEngine

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    client = Client()
    client.containers.list = lambda **_: []  # type: ignore[attr-defined]
    client.networks = type("Networks", (), {"list": staticmethod(lambda **_: [])})()  # type: ignore[attr-defined]
    client.volumes.create("prod-db-data", STACK.labels("database"))
    client.volumes.create("prod-flags-data", STACK.labels("flag-store"))
    client.log.clear()
    template = Path(__file__).resolve().parents[2] / "templates" / "web.yaml"
    DockerStackEngine("shop", template, client=client).delete("prod")
    assert sorted(client.log) == ["volume rm prod-db-data", "volume rm prod-flags-data"]
