"""What an environment's flag store serves for each declared flag, beside what the definition says:
the rows `pipeline flag list ENV` prints and `pipeline status` shows under each environment."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.flags.store import FlagStore
    from pipeline.model import Environment
    from pipeline.spec import PipelineSpec


@dataclass(frozen=True)
class FlagRow:
    name: str
    type_name: str
    serving: str
    """What the store serves ("true for 10% (else false)"), or the default when the store lacks it."""
    definition: str
    """The environment's value in the definition (JSON), else the flag's default."""
    in_store: bool
    rollout: bool
    """A rollout of this flag is in flight (what an alert switches off)."""
    changed: str = ""
    by: str = ""


@dataclass(frozen=True)
class FlagsOverview:
    where: str
    """Which store answered (e.g. "the flag store of shop-production (local)")."""
    rows: tuple[FlagRow, ...]
    alert: dict[str, Any] | None
    """Set while an alert holds every rollout off: when and by whom."""


def overview(spec: PipelineSpec, env: Environment, store: FlagStore) -> FlagsOverview:
    """Every flag the definition declares, as `store` serves it now (FlagStoreError when it cannot
    be read)."""
    states = store.all()
    rollouts = set(store.rollouts())
    rows = []
    for flag in spec.flags:
        state = states.get(flag.name)
        rows.append(
            FlagRow(
                name=flag.name,
                type_name=flag.type_name,
                serving=state.describe() if state is not None else json.dumps(flag.default),
                definition=json.dumps(env.flags.get(flag.name, flag.default)),
                in_store=state is not None,
                rollout=flag.name in rollouts,
                changed=state.at if state is not None else "",
                by=state.by if state is not None else "",
            )
        )
    return FlagsOverview(store.endpoint.where, tuple(rows), store.alert())


__all__ = ["FlagRow", "FlagsOverview", "overview"]
