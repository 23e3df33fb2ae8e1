"""The named volumes a stack keeps its data in (the database's `<stack>-db-data`, the flag store
master's `<stack>-flags-data`): made once and labelled like the stack, refused when a volume of
that name belongs to something else, and removed only with the stack, found by its labels (so a
volume of the same name that another pipeline owns is never touched)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from pipeline.engines.docker_stack.labels import L_ROLE, StackId
from pipeline.engines.stack import OnEvent
from pipeline.errors import StackOperationError


def owned_volume(
    client: Any,
    stack: StackId,
    role: str,
    name: str,
    *,
    what: str,
    on_event: OnEvent,
    extra_labels: Mapping[str, str] | None = None,
) -> Any:
    """The volume `name` of `stack` for `role` (`what` it holds, for messages): found, or made the
    first time with the stack's labels and `extra_labels`."""
    import docker.errors

    owner = stack.labels(role)
    try:
        volume = client.volumes.get(name)
    except docker.errors.NotFound:
        on_event(f"creating volume {name} ({what})")
        return client.volumes.create(name=name, labels={**owner, **(extra_labels or {})})
    labels = volume.attrs.get("Labels") or {}
    if any(labels.get(k) != v for k, v in owner.items()):
        raise StackOperationError(
            f"the volume {name} exists but is not {what} of stack {stack.name} "
            f"of pipeline {stack.pipeline} (its labels: {labels})",
            hint=f"if it is not needed, remove it (docker volume rm {name}); otherwise rename the stack",
        )
    return volume


def remove_volumes(client: Any, stack: StackId, role: str, *, on_event: OnEvent) -> None:
    """Every volume of `stack` for `role` (when the stack is deleted)."""
    import docker.errors

    selector = {"label": [*stack.filters()["label"], f"{L_ROLE}={role}"]}
    for volume in client.volumes.list(filters=selector):
        on_event(f"removing volume {volume.name}")
        with contextlib.suppress(docker.errors.NotFound):
            volume.remove(force=True)


__all__ = ["owned_volume", "remove_volumes"]
