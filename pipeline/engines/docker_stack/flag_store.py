"""The stack's flag store on the local engine: a Redis master `<stack>-flags-0` and read-only
replicas `<stack>-flags-1..n` (the template's ElastiCache replication group in miniature), on the
stack network, each published on a 127.0.0.1 port for the pipeline's own commands.

Like everything else of a stack, the store is found by labels (`io.pipeline.role=flag-store`,
`io.pipeline.flag-index`, `io.pipeline.spec`) every time: `ensure` creates what is missing, starts
what stopped, replaces a container whose spec changed (another image or port) and removes extra
ones, so a run killed half-way is finished by the next one; `delete` of the stack removes it with
the rest. Replicas serve reads only (`replica-read-only yes`).

The master writes an append-only file (`--appendonly yes`) in the named volume `<stack>-flags-data`
(labelled like the stack), made once and kept when the master container is replaced (a rebuilt store
image, another port), as the database keeps `<stack>-db-data`: production's flags survive every
re-creation of the master and go only with the stack (`delete_volume`), not when a template stops
declaring the store. Before a master starts, a one-shot container of the store image (as root) gives
the volume to the image's `redis` user (a rebuilt image may number it differently) and, when the
master it replaces kept its data in an anonymous volume (stores made before the named volume),
copies that data in first; the old master is removed only after the copy. Replicas keep anonymous
volumes: they resync from the master.

The web replicas learn the addresses from `environment()` (PIPELINE_FLAGS_MASTER/_REPLICAS, read by
pipeline.flags.provider). New flags are seeded from the definition; a flag already in the store
keeps its state.
"""

from __future__ import annotations

import contextlib
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
from pipeline.engines.docker_stack.volumes import owned_volume, remove_volumes
from pipeline.engines.flag_store_shape import FlagStoreShape
from pipeline.engines.stack import OnEvent
from pipeline.errors import StackOperationError
from pipeline.faults import checkpoint
from pipeline.hashing import digest

FLAGS_REPOSITORY = "pipeline-flags"
L_FLAG_INDEX = "io.pipeline.flag-index"
"""0 for the master, 1..n for the replicas."""
READY_TIMEOUT = 30.0
PREPARE_TIMEOUT = 120.0
DATA = "/data"
PREPARE_INDEX = "prepare"
"""The L_FLAG_INDEX of the one-shot container that readies the master's volume (never kept)."""


def container_name(stack: StackId, index: int) -> str:
    return f"{stack.name}-flags-{index}"


def volume_name(stack: StackId) -> str:
    """The named volume of the master's data (kept across re-creations of the master)."""
    return f"{stack.name}-flags-data"


def data_volume(container: Any) -> str | None:
    """The name of the volume `container` mounts at /data (None: no volume there)."""
    for mount in container.attrs.get("Mounts") or []:
        if mount.get("Destination") == DATA and mount.get("Type") == "volume" and mount.get("Name"):
            return str(mount["Name"])
    return None


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
        wanted: dict[str, Any] = {"image": image_id, "command": _command(self.stack, self.shape, index)}
        if index == 0:
            wanted["data"] = volume_name(self.stack)
        return digest(wanted)[:16]

    def ensure(self, found: list[Any], network: str, flags: Mapping[str, Any]) -> dict[str, str]:
        """Bring the store to the shape; seed new flags; returns {index: 127.0.0.1 address}."""
        import docker.errors

        wanted = self.shape.replicas + 1
        volume = self._volume()
        by_index: dict[int, Any] = {}
        unwanted: list[tuple[int, Any]] = []
        for container in found:
            label = str(container.labels.get(L_FLAG_INDEX, "-1"))
            index = int(label) if label.isdigit() else -1
            if 0 <= index < wanted and index not in by_index and container.labels.get(L_SPEC) == self.spec(index):
                by_index[index] = container
            else:
                unwanted.append((index, container))
        for index, container in unwanted:
            if index == 0 and 0 not in by_index:
                self._keep_data_of(container, volume)
            self.on_event(f"removing {container.name} (not part of the flag store's shape)")
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)  # v: its anonymous volumes, never the named one
        for index in range(wanted):
            container = by_index.get(index)
            if container is None:
                if index == 0:
                    self._prepare(volume, copy_from=None)
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

    def _volume(self) -> Any:
        """The master's named data volume: found, or made (labelled like the stack) the first time."""
        return owned_volume(
            self.client,
            self.stack,
            ROLE_FLAG_STORE,
            volume_name(self.stack),
            what="the flag store data",
            on_event=self.on_event,
        )

    def _keep_data_of(self, master: Any, volume: Any) -> None:
        """Before an old master goes: stop it (Redis finishes its append-only file on the way out)
        and, when its data is not in the named volume (an anonymous volume of a store made before
        it), copy its /data into the named volume. Repeated if killed half-way: the old master
        stays until the copy is done."""
        import docker.errors

        mounted = data_volume(master)
        if running(master):
            self.on_event(f"stopping {master.name} (its flags stay in volume {volume.name})")
            with contextlib.suppress(docker.errors.NotFound):
                master.stop(timeout=10)
        if mounted is not None and mounted != volume.name:
            self._prepare(volume, copy_from=mounted)

    def _prepare(self, volume: Any, *, copy_from: str | None) -> None:
        """A one-shot root container of the store image: copies `copy_from` (a volume) into the
        named volume if given, then gives the volume to this image's redis user."""
        import docker.errors
        import requests

        name = f"{self.stack.name}-flags-prepare"
        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(name).remove(force=True)  # left by a run killed during its work
        script = f"chown -R redis:redis {DATA}"
        volumes = {volume.name: {"bind": DATA, "mode": "rw"}}
        if copy_from is not None:
            self.on_event(f"copying the flag store's data from volume {copy_from} into {volume.name}")
            script = f"cp -a /from/. {DATA}/ && {script}"
            volumes[copy_from] = {"bind": "/from", "mode": "ro"}
        labels = self.stack.labels(ROLE_FLAG_STORE, **{L_FLAG_INDEX: PREPARE_INDEX})
        container = self.client.containers.create(
            self.image, ["/bin/sh", "-c", script], name=name, user="root", volumes=volumes, labels=labels
        )
        try:
            container.start()
            try:
                code = int(container.wait(timeout=PREPARE_TIMEOUT).get("StatusCode", -1))
            except requests.exceptions.RequestException:
                raise StackOperationError(
                    f"readying the flag store's volume {volume.name} took more than {PREPARE_TIMEOUT:g} s",
                    hint="the Docker engine may be overloaded; run the deploy again (nothing was removed)",
                ) from None
            if code != 0:
                logs = container.logs(tail=10).decode(errors="replace").strip()
                raise StackOperationError(
                    f"readying the flag store's volume {volume.name} failed (exit {code}): {logs}",
                    hint=f"the volume and the old master are kept; inspect them: docker volume inspect {volume.name}",
                )
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

    def _start(self, index: int, network: str) -> Any:
        import docker.errors

        name = container_name(self.stack, index)
        role = "master" if index == 0 else "replica"
        self.on_event(f"starting {name} (flag store {role})")
        labels = self.stack.labels(ROLE_FLAG_STORE, **{L_FLAG_INDEX: str(index), L_SPEC: self.spec(index)})
        volumes = {volume_name(self.stack): {"bind": DATA, "mode": "rw"}} if index == 0 else None
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
                volumes=volumes,
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
            container.remove(force=True, v=True)  # the master's named volume stays until the stack goes
        return
    if observed.network is None:
        raise StackOperationError(f"stack {stack.name} has no network for its flag store")
    image = ensure_image(client, base_image, on_event=on_event)
    FlagStoreContainers(client, stack, shape, image, on_event).ensure(observed.flag_store, observed.network.name, flags)


def delete_volume(client: Any, stack: StackId, *, on_event: OnEvent) -> None:
    """The master's data volume, when the stack is deleted."""
    remove_volumes(client, stack, ROLE_FLAG_STORE, on_event=on_event)


__all__ = [
    "FlagStoreContainers",
    "converge_flag_store",
    "delete_volume",
    "ensure_image",
    "environment",
    "observed_addresses",
    "volume_name",
]
