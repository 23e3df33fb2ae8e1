"""The stack's flag store on the local engine: a Redis master `<stack>-flags-0` and read-only
replicas `<stack>-flags-1..n` (the template's ElastiCache replication group in miniature), on the
stack network, each published on a 127.0.0.1 port for the pipeline's own commands.

Like everything else of a stack, the store is found by labels (`io.pipeline.role=flag-store`,
`io.pipeline.flag-index`, `io.pipeline.spec`) every time: `ensure` creates what is missing, starts
what stopped, replaces a container whose spec changed (another image or port) and removes extra
ones, so a run killed half-way is finished by the next one; `delete` of the stack removes it with
the rest. The master writes an append-only file in its volume (`--appendonly yes`): a restarted
container keeps its flags. Replicas serve reads only (`replica-read-only yes`).

The web replicas learn the addresses from `environment()` (PIPELINE_FLAGS_MASTER/_REPLICAS, read by
pipeline.flags.provider). New flags are seeded from the definition; a flag already in the store
keeps its state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pipeline.engines.docker_stack.labels import (
    L_SPEC,
    ROLE_FLAG_STORE,
    ROLE_FLAG_STORE_IMAGE,
    Observed,
    StackId,
    running,
)
from pipeline.engines.docker_stack.service_image import ServiceImage, ensure_service_image
from pipeline.engines.flag_store_shape import FlagStoreShape
from pipeline.engines.stack import OnEvent
from pipeline.errors import StackOperationError
from pipeline.faults import checkpoint
from pipeline.hashing import digest

FLAGS_REPOSITORY = "pipeline-flags"
L_FLAG_INDEX = "io.pipeline.flag-index"
"""0 for the master, 1..n for the replicas."""
READY_TIMEOUT = 30.0


def container_name(stack: StackId, index: int) -> str:
    return f"{stack.name}-flags-{index}"


def environment(stack: StackId, shape: FlagStoreShape | None) -> dict[str, str]:
    """What a web replica is told about the store (nothing when the stack has none)."""
    if shape is None:
        return {}
    replicas = [f"{container_name(stack, i)}:{shape.port}" for i in range(1, shape.replicas + 1)]
    return {
        "PIPELINE_FLAGS_MASTER": f"{container_name(stack, 0)}:{shape.port}",
        "PIPELINE_FLAGS_REPLICAS": ",".join(replicas),
    }


def _command(stack: StackId, shape: FlagStoreShape, index: int) -> list[str]:
    command = [
        "/usr/bin/redis-server",
        "--bind",
        "0.0.0.0",
        "--port",
        str(shape.port),
        "--protected-mode",
        "no",
        "--dir",
        "/data",
        "--appendonly",
        "yes",
        "--save",
        "",
    ]
    if index > 0:
        command += ["--replicaof", container_name(stack, 0), str(shape.port), "--replica-read-only", "yes"]
    return command


def published(container: Any, port: int) -> str | None:
    """127.0.0.1:<port> where this machine reaches the container's Redis port."""
    bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{port}/tcp") or []
    for binding in bindings:
        if binding.get("HostPort"):
            return f"127.0.0.1:{binding['HostPort']}"
    return None


class FlagStoreContainers:
    """Create, repair and describe one stack's flag store (see the module docstring)."""

    def __init__(self, client: Any, stack: StackId, shape: FlagStoreShape, image: str, on_event: OnEvent) -> None:
        self.client = client
        self.stack = stack
        self.shape = shape
        self.image = image
        self.on_event = on_event

    def spec(self, index: int) -> str:
        image_id = str(self.client.images.get(self.image).id)
        return digest({"image": image_id, "command": _command(self.stack, self.shape, index)})[:16]

    def ensure(self, found: list[Any], network: str, flags: Mapping[str, Any]) -> dict[str, str]:
        """Bring the store to the shape; seed new flags; returns {index: 127.0.0.1 address}."""
        wanted = self.shape.replicas + 1
        by_index: dict[int, Any] = {}
        for container in found:
            index = int(container.labels.get(L_FLAG_INDEX, "-1"))
            if 0 <= index < wanted and index not in by_index and container.labels.get(L_SPEC) == self.spec(index):
                by_index[index] = container
            else:
                self.on_event(f"removing {container.name} (not part of the flag store's shape)")
                container.remove(force=True, v=True)
        for index in range(wanted):
            container = by_index.get(index)
            if container is None:
                by_index[index] = self._start(index, network)
                if index == 0:
                    checkpoint(f"local-stack:{self.stack.name}:flag-store:master-started")
            elif not running(container):
                self.on_event(f"starting {container.name} again")
                container.start()
        addresses = {}
        for index, container in sorted(by_index.items()):
            container.reload()
            address = published(container, self.shape.port)
            if address is None:
                raise StackOperationError(f"the flag store container {container.name} publishes no port")
            addresses[str(index)] = address
        self._wait_ready(addresses)
        checkpoint(f"local-stack:{self.stack.name}:flag-store:ready")
        if flags:
            from pipeline.flags.store import FlagEndpoint, FlagStore

            replicas = tuple(a for i, a in addresses.items() if i != "0")
            store = FlagStore(FlagEndpoint(addresses["0"], replicas, where=f"{self.stack.name} flag store"))
            seeded = store.seed(flags)
            if seeded:
                store.wait_replicas()
                self.on_event(f"flag store of {self.stack.name}: seeded {', '.join(seeded)} from the definition")
        return addresses

    def _start(self, index: int, network: str) -> Any:
        import docker.errors

        name = container_name(self.stack, index)
        role = "master" if index == 0 else "replica"
        self.on_event(f"starting {name} (flag store {role})")
        labels = self.stack.labels(ROLE_FLAG_STORE, **{L_FLAG_INDEX: str(index), L_SPEC: self.spec(index)})
        try:
            return self.client.containers.run(
                self.image,
                _command(self.stack, self.shape, index),
                name=name,
                hostname=name,
                detach=True,
                network=network,
                ports={f"{self.shape.port}/tcp": ("127.0.0.1", None)},
                labels=labels,
                restart_policy={"Name": "unless-stopped"},
            )
        except docker.errors.APIError as exc:
            raise StackOperationError(
                f"cannot start the flag store container {name}: {exc.explanation or exc}",
                hint=f"if a container named {name} exists outside this pipeline, remove or rename it",
            ) from None

    def _wait_ready(self, addresses: Mapping[str, str]) -> None:
        """Until the master answers and every replica follows it (master_link_status:up)."""
        import redis

        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            try:
                for index, address in addresses.items():
                    host, _, port = address.rpartition(":")
                    client = redis.Redis(host=host, port=int(port), socket_timeout=1, socket_connect_timeout=1)
                    info = client.info("replication")
                    if index != "0" and info.get("master_link_status") != "up":
                        raise redis.RedisError(f"replica {index} is not in sync with the master yet")
                return
            except redis.RedisError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise StackOperationError(f"the flag store of {self.stack.name} is not ready after {READY_TIMEOUT:g} s: {last}")


def observed_addresses(observed: Observed, shape: FlagStoreShape | None) -> dict[str, str]:
    """{index: 127.0.0.1 address} of the store's running containers, as found."""
    found = {}
    for container in observed.flag_store:
        ports = container.attrs.get("NetworkSettings", {}).get("Ports") or {}
        port = shape.port if shape is not None else int(next(iter(ports), "6379/tcp").split("/")[0])
        address = published(container, port) if running(container) else None
        if address is not None:
            found[str(container.labels.get(L_FLAG_INDEX, "?"))] = address
    return found


FLAG_STORE_IMAGE = ServiceImage(
    folder="flags",
    files={"Dockerfile": "dockerfile"},
    repository=FLAGS_REPOSITORY,
    role=ROLE_FLAG_STORE_IMAGE,
    noun="flag store image",
    software="redis-server",
    package="redis-server",
)


def ensure_image(client: Any, base_image: str, *, on_event: OnEvent) -> str:
    """The flag store image (redis-server on the base image), built once per machine."""
    return ensure_service_image(client, base_image, FLAG_STORE_IMAGE, on_event=on_event)


def converge_flag_store(
    client: Any,
    stack: StackId,
    shape: FlagStoreShape | None,
    observed: Observed,
    *,
    base_image: str,
    flags: Mapping[str, Any],
    on_event: OnEvent,
) -> None:
    """The deploy's hook: the store as the template says (removed when it declares none)."""
    if shape is None:
        for container in observed.flag_store:
            on_event(f"removing {container.name} (the template declares no flag store)")
            container.remove(force=True, v=True)
        return
    if observed.network is None:
        raise StackOperationError(f"stack {stack.name} has no network for its flag store")
    image = ensure_image(client, base_image, on_event=on_event)
    FlagStoreContainers(client, stack, shape, image, on_event).ensure(observed.flag_store, observed.network.name, flags)


__all__ = ["FlagStoreContainers", "converge_flag_store", "ensure_image", "environment", "observed_addresses"]
