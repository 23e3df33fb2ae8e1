"""`pipeline flag list|get|set|history ENV ...`: move feature flags without a deploy.

Heavy libraries (redis, docker, boto3) are imported inside the commands."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from pipeline.cli.app import ENGINES, FileOption, ProfileOption, app, console

if TYPE_CHECKING:
    from pipeline.flags.store import FlagStore
    from pipeline.loader import Loaded
    from pipeline.model import Environment

flag_app = typer.Typer(help="Feature flags: read and move them in an environment's flag store (no deploy).")
app.add_typer(flag_app, name="flag")

EnvArg = Annotated[str, typer.Argument(help="The environment (e.g. production).")]


def _open(file: object, environment: str, profile: str | None) -> tuple[Loaded, Environment, FlagStore]:
    from pathlib import Path

    from pipeline.authoring import did_you_mean
    from pipeline.errors import BadInputError
    from pipeline.flags.locate import flag_endpoint
    from pipeline.flags.store import FlagStore
    from pipeline.loader import load
    from pipeline.model import default_profile

    loaded = load(file if isinstance(file, Path) else None)
    spec = loaded.spec
    try:
        env = spec.environment(environment)
    except KeyError:
        names = [e.name for e in spec.environments]
        raise BadInputError(
            f"pipeline {spec.name} has no environment {environment!r}{did_you_mean(environment, names)}",
            hint=f"environments: {', '.join(names) or 'none'}",
        ) from None
    chosen = profile or default_profile()
    endpoint = flag_endpoint(spec, env, chosen, loaded.root, engines=ENGINES.get())  # type: ignore[arg-type]
    return loaded, env, FlagStore(endpoint)


@flag_app.command("list")
def list_flags(environment: EnvArg, file: FileOption = None, profile: ProfileOption = None) -> None:
    """Every declared flag: what the store serves, the environment's value and the default."""
    from pipeline.cli.flags_view import alert_line, flags_table
    from pipeline.flags.overview import overview

    loaded, env, store = _open(file, environment, profile)
    flags = overview(loaded.spec, env, store)
    console.print(flags_table(flags, f"flags of {env.name}"))
    alert = alert_line(flags)
    if alert is not None:
        console.print(alert)


@flag_app.command("get")
def get_flag(
    environment: EnvArg,
    name: Annotated[str, typer.Argument(help="The flag.")],
    file: FileOption = None,
    profile: ProfileOption = None,
) -> None:
    """One flag: what the master and every replica serve."""
    from pipeline.errors import BadInputError

    loaded, _, store = _open(file, environment, profile)
    if name not in {f.name for f in loaded.spec.flags}:
        raise BadInputError(f"pipeline {loaded.spec.name} declares no flag {name!r}")
    state = store.get(name)
    console.print(f"{name}: {escape(state.describe()) if state is not None else 'not in the store (its default)'}")
    for address, copy in zip(store.endpoint.replicas, store.replica_values(name), strict=True):
        same = "same" if copy == state else "DIFFERS"
        console.print(f"  replica {address}: {escape(copy.describe()) if copy is not None else 'absent'} ({same})")
    if state is not None:
        console.print(f"changed {state.at} by {escape(state.by)}")


@flag_app.command("set")
def set_flag(
    environment: EnvArg,
    name: Annotated[str, typer.Argument(help="The flag.")],
    value: Annotated[str, typer.Argument(help="The new value (of the flag's type: true/false, a number, text).")],
    percent: Annotated[
        float, typer.Option("--percent", help="Give the value to this share of users (by targeting key).")
    ] = 100.0,
    why: Annotated[str, typer.Option("--why", help="Recorded with the change.")] = "",
    file: FileOption = None,
    profile: ProfileOption = None,
) -> None:
    """Change a flag now, on every replica of the environment's store; recorded (who, when, from, to)."""
    from pipeline.errors import BadInputError
    from pipeline.flags.changes import change_flag
    from pipeline.flags.spec import parse_value
    from pipeline.ledger import Ledger

    loaded, env, store = _open(file, environment, profile)
    try:
        flag = loaded.spec.flag(name)
        parsed = parse_value(value, flag)
    except KeyError:
        parsed = value  # change_flag names the declared flags
    except ValueError as exc:
        raise BadInputError(str(exc)) from None
    change = change_flag(loaded.spec, env.name, store, Ledger(loaded.root), name, parsed, percent=percent, why=why)
    before = change.before.describe() if change.before is not None else "absent"
    console.print(
        f"[green]ok[/]: {name} in {env.name}: {escape(before)} -> {escape(change.after.describe())}; "
        f"{change.replicas_acked} replica(s) acknowledged in {change.seconds * 1000:.1f} ms; no deploy"
    )


@flag_app.command("history")
def history(
    environment: EnvArg,
    limit: Annotated[int, typer.Option("--limit", help="How many changes.")] = 20,
    record: Annotated[
        bool, typer.Option("--record", help="Copy the changes this machine's ledger lacks into it.")
    ] = False,
    file: FileOption = None,
    profile: ProfileOption = None,
) -> None:
    """The store's record of changes, newest first (who, when, from, to, why); a change this
    machine's ledger lacks (made by the alert route, seeded at deploy, made elsewhere) is marked."""
    from pipeline.flags.changes import change_key, record_changes, store_only
    from pipeline.ledger import Ledger

    loaded, env, store = _open(file, environment, profile)
    ledger = Ledger(loaded.root)
    entries = store.history(limit)
    missing = store_only(entries, ledger.flag_changes(loaded.spec.name, env.name))
    unrecorded = {change_key(entry) for entry in missing}
    for entry in entries:
        before = entry.get("from") or {}
        after = entry.get("to") or {}
        console.print(
            f"{entry.get('at')} {escape(str(entry.get('by')))} {entry.get('flag')}: "
            f"{json.dumps(before.get('value'))}@{before.get('percent', '-')}% -> "
            f"{json.dumps(after.get('value'))}@{after.get('percent')}%"
            + (f" ({escape(str(entry['why']))})" if entry.get("why") else "")
            + (" (store only: not in this machine's ledger)" if change_key(entry) in unrecorded else "")
        )
    if missing and record:
        added = record_changes(ledger, loaded.spec.name, env.name, reversed(missing), where=store.endpoint.where)
        console.print(f"recorded {added} change(s) from the store in this machine's ledger")
    elif missing:
        console.print(
            f"{len(missing)} change(s) are in the store only; `pipeline flag history {env.name} --record` "
            "copies them into this machine's ledger"
        )


@flag_app.command("alert")
def alert(
    environment: EnvArg,
    clear: Annotated[bool, typer.Option("--clear", help="Lift the alert (flags stay where they are).")] = False,
    file: FileOption = None,
    profile: ProfileOption = None,
) -> None:
    """Call the environment's alert route (as a monitor would): every request to the stable
    version and every flag of a rollout in flight off, at once. The token comes from the
    variable the environment's `alert_secret` names."""
    import os
    import time
    import urllib.error
    import urllib.request

    from pipeline.errors import BadInputError, StageFailedError
    from pipeline.flags.changes import record_changes
    from pipeline.flags.store import actor
    from pipeline.ledger import Ledger
    from pipeline.loader import load
    from pipeline.model import default_profile
    from pipeline.profiles import ProfileEngines

    loaded = load(file)
    spec = loaded.spec
    env = spec.environment(environment)
    if not env.alert_secret or not os.environ.get(env.alert_secret):
        raise BadInputError(
            f"environment {env.name!r} has no alert token to call its alert route with",
            hint="set Environment(alert_secret='NAME') and export NAME=<token> (the balancer was given it at deploy)",
        )
    engines = ENGINES.get() or ProfileEngines()
    stack = env.stack_name(spec.name)
    state = engines.stack_engine(spec, env, profile or default_profile(), loaded.root).describe(stack)
    if not state.url or not state.details.get("alert_route"):
        raise BadInputError(f"{env.name} has no balancer with an alert route (deploy it with the token set)")
    request = urllib.request.Request(
        state.url.rstrip("/") + state.details["alert_route"],
        method="DELETE" if clear else "POST",
        headers={"Authorization": f"Bearer {os.environ[env.alert_secret]}", "X-Alert-By": actor()},
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # the stack's own 127.0.0.1 URL
            data = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise StageFailedError("alert", f"the alert route answered {exc.code}: {exc.read()[:200]!r}") from None
    seconds = time.monotonic() - started
    if clear:
        console.print(f"[green]ok[/]: the alert of {env.name} is lifted")
        return
    # the agent wrote each switch to the store's history; the ledger gets the same entries
    recorded = record_changes(
        Ledger(loaded.root), spec.name, env.name, data.get("changes") or [], where=f"the alert route of {stack}"
    )
    console.print(
        f"[red]alert raised[/] in {env.name}: every request goes to the stable version; flags switched off: "
        f"{', '.join(data.get('flags_off') or []) or 'none in flight'} ({seconds * 1000:.0f} ms)"
        + (f"; {recorded} change(s) recorded in the ledger" if recorded else "")
    )
