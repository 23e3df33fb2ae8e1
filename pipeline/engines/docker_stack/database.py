"""The stack's database (the template's AWS::RDS::DBInstance) on the local profile: one PostgreSQL
container `<stack>-db` (Debian's PostgreSQL on the base image, built once per machine) on the stack
network, its data in the volume `<stack>-db-data`, its port published on 127.0.0.1 for the
Migrate stage and `pipeline status`.

Found by labels like the rest of the stack, and idempotent: `ensure` creates what is missing,
starts what stopped, and leaves a running database alone. The password is made once per stack and
kept as a label of the data volume (the data and its password live and die together). Replicas get
libpq's variables (PGHOST, PGUSER, ...) when they start.

A stack created with the template's snapshot parameter set (`DatabaseSnapshot`, which names the
DBInstance's DBSnapshotIdentifier on AWS) starts from that snapshot: a `pg_dump` of another stack's
database taken by `snapshot`, restored in one transaction, then masked (the columns the definition
marks sensitive) before any replica starts; a marker in the data volume says it was done, so a
re-run after a crash restores again or not at all, never half.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.engines.docker_stack.labels import L_ROLE, ROLE_DATABASE, StackId
from pipeline.engines.docker_stack.service_image import ServiceImage, ensure_service_image, tar_archive
from pipeline.engines.docker_stack.volumes import owned_volume, remove_volumes
from pipeline.engines.stack import DatabaseEndpoint, OnEvent
from pipeline.engines.topology import DatabaseShape
from pipeline.errors import StackOperationError
from pipeline.faults import checkpoint
from pipeline.locks import cache_dir
from pipeline.model import Sensitive

DB_REPOSITORY = "pipeline-postgres"
ROLE_DB_IMAGE = "db-image"
PORT = 5432
DATA = "/var/lib/postgresql/data"
SEEDED = f"{DATA}/.pipeline-seeded"
L_PASSWORD = "io.pipeline.db-password"
"""On the data volume: the password of the stack's database user (local stacks only)."""
READY_TIMEOUT = 90.0


@dataclass(frozen=True)
class Names:
    container: str
    volume: str


def names(stack: StackId) -> Names:
    return Names(container=f"{stack.name}-db", volume=f"{stack.name}-db-data")


def snapshot_path(pipeline: str, snapshot: str) -> Path:
    """Where a local snapshot (a pg_dump in custom format) is kept."""
    return cache_dir() / "snapshots" / pipeline / f"{snapshot}.dump"


# --------------------------------------------------------------------------------------------- create


def ensure(
    client: Any,
    stack: StackId,
    shape: DatabaseShape,
    *,
    base_image: str,
    masks: Sequence[Sensitive] = (),
    on_event: OnEvent,
) -> None:
    """The stack's database runs and answers (created, started or left alone), seeded from the
    snapshot the template's parameters name if it is new."""
    from pipeline.engines.docker_stack.balancer import create_network
    from pipeline.engines.docker_stack.labels import observe

    observed = observe(client, stack)
    network = observed.network or create_network(client, stack, on_event)
    volume = _volume(client, stack, shape, on_event)
    password = str(volume.attrs.get("Labels", {}).get(L_PASSWORD, ""))
    container = find(client, stack)
    if container is None:
        image = ensure_image(client, base_image, on_event=on_event)
        container = _create(client, stack, shape, image, network.name, volume.name, password, on_event)
    elif container.status != "running":
        on_event(f"starting {container.name} ({container.status})")
        container.start()
    wait_ready(container, shape)
    if shape.snapshot:
        _seed(client, stack, container, shape, masks, on_event)


def _volume(client: Any, stack: StackId, shape: DatabaseShape, on_event: OnEvent) -> Any:
    return owned_volume(
        client,
        stack,
        ROLE_DATABASE,
        names(stack).volume,
        what="the database's data",
        on_event=on_event,
        extra_labels={L_PASSWORD: secrets.token_urlsafe(18)},
    )


def _create(
    client: Any,
    stack: StackId,
    shape: DatabaseShape,
    image: str,
    network: str,
    volume: str,
    password: str,
    on_event: OnEvent,
) -> Any:
    import docker.errors

    name = names(stack).container
    on_event(f"starting {name} (PostgreSQL, database {shape.name})")
    try:
        return client.containers.run(
            image,
            name=name,
            hostname=name,
            detach=True,
            network=network,
            ports={f"{PORT}/tcp": ("127.0.0.1", None)},
            volumes={volume: {"bind": DATA, "mode": "rw"}},
            environment={"POSTGRES_USER": shape.user, "POSTGRES_PASSWORD": password, "POSTGRES_DB": shape.name},
            labels=stack.labels(ROLE_DATABASE),
            restart_policy={"Name": "unless-stopped"},
        )
    except docker.errors.APIError as exc:
        raise StackOperationError(
            f"cannot start the database {name}: {exc.explanation or exc}",
            hint=f"if a container named {name} exists outside this pipeline, remove or rename it",
        ) from None


def find(client: Any, stack: StackId) -> Any:
    """The stack's database container (None: there is none)."""
    import docker.errors

    try:
        containers = client.containers.list(
            all=True, filters={"label": [*stack.filters()["label"], f"{L_ROLE}={ROLE_DATABASE}"]}
        )
    except docker.errors.DockerException as exc:
        raise StackOperationError(
            f"cannot read the database of stack {stack.name} from the Docker engine: {exc}"
        ) from None
    return containers[0] if containers else None


def wait_ready(container: Any, shape: DatabaseShape) -> None:
    """Until PostgreSQL accepts connections to the stack's database (its log if it never does)."""
    deadline = time.monotonic() + READY_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        container.reload()
        if container.status in ("exited", "dead"):
            break
        result = container.exec_run(
            ["pg_isready", "-q", "-h", "127.0.0.1", "-U", shape.user, "-d", shape.name], user="postgres"
        )
        if result.exit_code == 0:
            return
        last = f"pg_isready exit {result.exit_code}"
        time.sleep(0.2)
    logs = container.logs(tail=15).decode(errors="replace").strip()
    raise StackOperationError(
        f"the database {container.name} does not accept connections ({last or container.status})"
        + (f"; its log:\n{logs}" if logs else "")
    )


# --------------------------------------------------------------------------------------------- seed


def _seed(
    client: Any, stack: StackId, container: Any, shape: DatabaseShape, masks: Sequence[Sensitive], on_event: OnEvent
) -> None:
    if container.exec_run(["test", "-e", SEEDED]).exit_code == 0:
        return
    path = snapshot_path(stack.pipeline, shape.snapshot)
    if not path.is_file():
        raise StackOperationError(
            f"the snapshot {shape.snapshot} to seed {stack.name}'s database from does not exist ({path})",
            hint="snapshots are taken by the test-stack stage from the environment it copies; re-run it",
        )
    on_event(f"restoring snapshot {shape.snapshot} into {container.name} ({path.stat().st_size} bytes)")
    container.put_archive("/tmp", tar_archive({"seed.dump": path.read_bytes()}))
    restored = container.exec_run(
        ["pg_restore", "--single-transaction", "--no-owner", "-h", "127.0.0.1", "-U", shape.user, "-d", shape.name,
         "/tmp/seed.dump"],
        user="postgres",
        environment={"PGPASSWORD": _password(client, stack)},
    )  # fmt: skip
    if restored.exit_code != 0:
        raise StackOperationError(
            f"restoring snapshot {shape.snapshot} into {container.name} failed: "
            f"{restored.output.decode(errors='replace').strip()[-1500:]}"
        )
    checkpoint(f"local-stack:{stack.name}:database:restored")
    if masks:
        from pipeline.schema.masking import mask_script

        on_event(f"masking {', '.join(m.column for m in masks)} in {container.name}")
        container.put_archive("/tmp", tar_archive({"mask.sql": mask_script(masks).encode()}))
        masked = container.exec_run(
            ["psql", "-v", "ON_ERROR_STOP=1", "-1", "-q", "-h", "127.0.0.1", "-U", shape.user, "-d", shape.name,
             "-f", "/tmp/mask.sql"],
            user="postgres",
            environment={"PGPASSWORD": _password(client, stack)},
        )  # fmt: skip
        if masked.exit_code != 0:
            raise StackOperationError(
                f"masking the sensitive columns of {container.name} failed: "
                f"{masked.output.decode(errors='replace').strip()[-1500:]}",
                hint="each Sensitive(mask=...) is an SQL expression the column is set to",
            )
    container.exec_run(["sh", "-c", f"rm -f /tmp/seed.dump /tmp/mask.sql && touch {SEEDED}"])


def snapshot(client: Any, stack: StackId, shape: DatabaseShape, name: str, *, on_event: OnEvent) -> str:
    """A pg_dump (custom format) of the stack's database, kept as snapshot `name`."""
    container = find(client, stack)
    if container is None or container.status != "running":
        raise StackOperationError(f"stack {stack.name} has no running database to take a snapshot of")
    path = snapshot_path(stack.pipeline, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    on_event(f"taking snapshot {name} of {container.name} (pg_dump)")
    exec_id = client.api.exec_create(
        container.id,
        ["pg_dump", "-Fc", "-h", "127.0.0.1", "-U", shape.user, "-d", shape.name],
        user="postgres",
        environment={"PGPASSWORD": _password(client, stack)},
        stdout=True,
        stderr=False,
    )["Id"]
    partial = path.with_suffix(".partial")
    with partial.open("wb") as out:
        for chunk in client.api.exec_start(exec_id, stream=True, demux=False):
            out.write(chunk)
    code = client.api.exec_inspect(exec_id).get("ExitCode")
    if code != 0:
        partial.unlink(missing_ok=True)
        raise StackOperationError(f"pg_dump of {container.name} failed (exit {code})")
    os.replace(partial, path)
    return name


# --------------------------------------------------------------------------------------------- read


def endpoint(client: Any, stack: StackId, shape: DatabaseShape) -> DatabaseEndpoint | None:
    """How this machine reaches the stack's database (None: it has none running)."""
    container = find(client, stack)
    if container is None:
        return None
    bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{PORT}/tcp") or []
    port = next((int(b["HostPort"]) for b in bindings if b.get("HostPort")), None)
    if port is None or container.status != "running":
        return None
    return DatabaseEndpoint(
        host="127.0.0.1", port=port, user=shape.user, password=_password(client, stack), name=shape.name
    )


def replica_environment(client: Any, stack: StackId) -> dict[str, str]:
    """libpq's variables for a replica of the stack ({} when the stack has no database)."""
    container = find(client, stack)
    if container is None:
        return {}
    env = dict(item.split("=", 1) for item in container.attrs.get("Config", {}).get("Env") or [] if "=" in item)
    return {
        "PGHOST": container.name,
        "PGPORT": str(PORT),
        "PGUSER": env.get("POSTGRES_USER", ""),
        "PGPASSWORD": _password(client, stack),
        "PGDATABASE": env.get("POSTGRES_DB", ""),
        "PGCONNECT_TIMEOUT": "5",
    }


def _password(client: Any, stack: StackId) -> str:
    import docker.errors

    try:
        return str(client.volumes.get(names(stack).volume).attrs.get("Labels", {}).get(L_PASSWORD, ""))
    except docker.errors.NotFound:
        return ""


# --------------------------------------------------------------------------------------------- delete


def delete(client: Any, stack: StackId, *, on_event: OnEvent) -> None:
    """The data volume and the stack's snapshot (the container goes with the stack's containers)."""
    remove_volumes(client, stack, ROLE_DATABASE, on_event=on_event)
    snapshot_path(stack.pipeline, stack.name).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- image


DB_IMAGE = ServiceImage(
    folder="db",
    files={"Dockerfile": "dockerfile", "entrypoint.sh": "entrypoint"},
    repository=DB_REPOSITORY,
    role=ROLE_DB_IMAGE,
    noun="database image",
    software="PostgreSQL",
    package="postgresql-15",
)


def ensure_image(client: Any, base_image: str, *, on_event: OnEvent) -> str:
    """The database image (PostgreSQL on the base image), built once per machine; returns its tag."""
    return ensure_service_image(client, base_image, DB_IMAGE, on_event=on_event)


__all__ = [
    "delete",
    "endpoint",
    "ensure",
    "ensure_image",
    "find",
    "names",
    "replica_environment",
    "snapshot",
    "snapshot_path",
]
