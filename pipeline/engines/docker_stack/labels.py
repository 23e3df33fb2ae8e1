"""The names and labels of a stack's Docker objects, and the stack as the engine finds it by them.

The engine keeps nothing in memory: every deploy, describe and delete finds the network, the
balancer and the replicas by their labels, so a crash half-way through is repaired by the next run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pipeline.engines.docker_client import LABEL_PREFIX
from pipeline.errors import StackOperationError

L_PIPELINE = f"{LABEL_PREFIX}.pipeline"
L_STACK = f"{LABEL_PREFIX}.stack"
L_ROLE = f"{LABEL_PREFIX}.role"
L_IMAGE = f"{LABEL_PREFIX}.image"
"""The image as the caller named it (a tag or an id)."""
L_IMAGE_ID = f"{LABEL_PREFIX}.image-id"
L_SPEC = f"{LABEL_PREFIX}.spec"
"""Digest of what makes a replica what it is (image id, port, launch parameters)."""
L_PARAMETERS = f"{LABEL_PREFIX}.parameters"
L_PORT = f"{LABEL_PREFIX}.port"
"""On the network: the 127.0.0.1 port the stack's balancer publishes (reused if it is recreated)."""
L_LISTEN = f"{LABEL_PREFIX}.listen"
L_ENGINE = f"{LABEL_PREFIX}.engine"
ENGINE = "local"
"""The value of L_ENGINE: the profile's name (stacks made by earlier versions carry it too)."""

ROLE_REPLICA = "replica"
ROLE_LB = "lb"
ROLE_NETWORK = "network"
ROLE_LB_IMAGE = "lb-image"
ROLE_DATABASE = "database"
SERVICE_ROLES = (ROLE_DATABASE,)
"""Containers of a stack beside the replicas and the balancer (the template's other resources,
e.g. its database): kept by every deploy, removed with the stack."""
ROLE_FLAG_STORE = "flag-store"
"""The stack's flag store containers (flag_store.py)."""
ROLE_FLAG_STORE_IMAGE = "flag-store-image"


@dataclass(frozen=True)
class StackId:
    """One stack of one pipeline: the names and labels of its Docker objects."""

    pipeline: str
    name: str

    @property
    def network(self) -> str:
        return f"{self.name}-net"

    @property
    def balancer(self) -> str:
        return f"{self.name}-lb"

    def labels(self, role: str, **extra: str) -> dict[str, str]:
        return {L_PIPELINE: self.pipeline, L_STACK: self.name, L_ROLE: role, L_ENGINE: ENGINE, **extra}

    def filters(self) -> dict[str, list[str]]:
        return pipeline_filters(self.pipeline, self.name)


def pipeline_filters(pipeline: str, stack: str | None = None) -> dict[str, list[str]]:
    """Docker list filters for the pipeline's objects (of one stack, if given)."""
    labels = [f"{L_PIPELINE}={pipeline}"]
    if stack is not None:
        labels.append(f"{L_STACK}={stack}")
    return {"label": labels}


@dataclass
class Observed:
    """The stack as the Docker engine reports it right now."""

    network: Any = None
    lb: Any = None
    replicas: list[Any] = field(default_factory=list)
    flag_store: list[Any] = field(default_factory=list)
    """The flag store's containers (master and replicas), when the template declares one."""
    strays: list[Any] = field(default_factory=list)
    """Containers of the stack with an unknown role (left by another version): removed on delete."""
    services: list[Any] = field(default_factory=list)
    """Containers of SERVICE_ROLES (the database): kept by deploys, removed on delete."""

    @property
    def exists(self) -> bool:
        return bool(self.network or self.lb or self.replicas or self.flag_store or self.strays or self.services)


def observe(client: Any, stack: StackId) -> Observed:
    """The stack's network, balancer and replicas (oldest first), found by label."""
    import docker.errors

    observed = Observed()
    try:
        containers = client.containers.list(all=True, filters=stack.filters(), ignore_removed=True)
        networks = client.networks.list(filters=stack.filters())
    except docker.errors.DockerException as exc:
        raise StackOperationError(f"cannot read stack {stack.name} from the Docker engine: {exc}") from None
    for container in containers:
        role = container.labels.get(L_ROLE)
        if role == ROLE_LB and observed.lb is None:
            observed.lb = container
        elif role == ROLE_REPLICA:
            observed.replicas.append(container)
        elif role in SERVICE_ROLES:
            observed.services.append(container)
        elif role == ROLE_FLAG_STORE:
            observed.flag_store.append(container)
        else:
            observed.strays.append(container)
    observed.replicas.sort(key=lambda c: str(c.attrs.get("Created", "")))
    for network in networks:
        if network.attrs.get("Labels", {}).get(L_ROLE) == ROLE_NETWORK and observed.network is None:
            observed.network = network
    return observed


def running(container: Any) -> bool:
    return str(container.status) == "running"


def json_labels(text: str | None) -> dict[str, str]:
    """A JSON object of strings as a label or config comment holds it; {} when it is not one."""
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
