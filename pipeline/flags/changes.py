"""A flag change as the pipeline makes it: on the store (where the environment lives) and in this
machine's ledger, so a laptop and CI agree on what changed, who changed it and when."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pipeline.authoring import did_you_mean
from pipeline.errors import BadInputError
from pipeline.flags.spec import same_type
from pipeline.flags.state import FlagState
from pipeline.flags.store import FlagChange, FlagStore

if TYPE_CHECKING:
    from pipeline.ledger import Ledger
    from pipeline.spec import PipelineSpec


def change_flag(
    spec: PipelineSpec,
    environment: str,
    store: FlagStore,
    ledger: Ledger,
    name: str,
    value: Any,
    *,
    percent: float = 100.0,
    why: str = "",
    by: str | None = None,
) -> FlagChange:
    """Give `value` to `percent` % of the users (the others keep the flag's base: its current one,
    else the environment's value, else the default); recorded in the store and the ledger."""
    try:
        flag = spec.flag(name)
    except KeyError:
        names = [f.name for f in spec.flags]
        raise BadInputError(
            f"pipeline {spec.name} declares no flag {name!r}{did_you_mean(name, names)}",
            hint=f"declared flags: {', '.join(names) or 'none'} (Pipeline(flags=[Flag(...)]))",
        ) from None
    if not same_type(value, flag.default):
        raise BadInputError(f"flag {name!r} is a {flag.type_name}; {value!r} is not")
    if not 0 <= percent <= 100:
        raise BadInputError(f"--percent must be 0..100, not {percent:g}")
    env = spec.environment(environment)
    current = store.get(name)
    if current is not None and current.base is not None:
        base = current.base
    elif current is not None and current.percent >= 100 and percent < 100:
        base = current.value  # a rollout starts from what everyone had
    else:
        base = env.flags.get(name, flag.default)
    change = store.set(name, FlagState(value, percent, base), why=why, by=by)
    ledger.record_flag_change(spec.name, environment, {**change.to_json(), "where": store.endpoint.where})
    return change


def change_key(entry: Mapping[str, Any]) -> tuple[str, str]:
    """What names one change in the store's history and in a ledger alike: its flag and its time
    (both written once, by whoever made the change)."""
    return str(entry.get("flag")), str(entry.get("at"))


def store_only(history: Iterable[Mapping[str, Any]], recorded: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The store's history entries this ledger lacks (made by the alert route inside the balancer,
    seeded at deploy, or made from another machine), in the history's order."""
    known = {change_key(entry) for entry in recorded}
    return [dict(entry) for entry in history if change_key(entry) not in known]


def record_changes(
    ledger: Ledger, pipeline: str, environment: str, entries: Iterable[Mapping[str, Any]], *, where: str
) -> int:
    """Record changes made elsewhere (their store history entries: who, when, from, to, why) in
    the ledger, each once; returns how many were new to it."""
    known = {change_key(entry) for entry in ledger.flag_changes(pipeline, environment)}
    added = 0
    for entry in entries:
        if change_key(entry) in known:
            continue
        ledger.record_flag_change(pipeline, environment, {**entry, "where": where})
        known.add(change_key(entry))
        added += 1
    return added


__all__ = ["change_flag", "change_key", "record_changes", "store_only"]
