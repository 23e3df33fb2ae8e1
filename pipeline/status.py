"""What runs where and what ran lately, from the ledger and (when an engine can say) the real world.

Each durable environment is described by its stack engine (image, URL, state); when the engine
cannot be reached (no Docker engine, no AWS credentials) the ledger's last live release is shown
instead, and the report says so. Test stacks that still exist (kept with --keep, or left by a run
that was killed) are listed too, so nothing runs unnoticed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.errors import BadInputError, PipelineError
from pipeline.ledger import Ledger, Manifest
from pipeline.loader import Loaded
from pipeline.model import Environment, Profile, default_profile
from pipeline.profiles import ProfileEngines

if TYPE_CHECKING:
    from pipeline.engines.stack import StackEngine
    from pipeline.flags.overview import FlagsOverview
    from pipeline.profiles.base import Engines


@dataclass(frozen=True)
class EnvironmentStatus:
    name: str
    profile: str
    stack: str
    image: str | None
    """The image running now (observed), else the one recorded as live (None: nothing deployed yet)."""
    url: str | None
    known_good: tuple[str, ...] = ()
    observed: bool = False
    """True when image/url were read from the real world, not only from the ledger."""
    note: str = ""
    state: str = ""
    """The engine's word for the stack: 'ready', 'updating', 'failed', 'absent' ('' when not observed)."""
    ledger_image: str | None = None
    """What the release history records as live, when it differs from what runs."""
    history: str = "ledger"
    """Where the release history was read: 'ledger' (this machine) or the environment's durable
    store (the template's git history, the Docker engine's release tags)."""
    last_release: str = ""
    """The newest release the history knows: image, status, run and time."""
    schema: str = ""
    """The database's schema revision (Alembic's version table), when the environment has one."""
    flags: FlagsOverview | None = None
    """What its flag store serves for each declared flag (None: no flags, or the store was not read)."""
    flags_note: str = ""
    """Why the flags were not read, when the definition declares some."""


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    profile: str
    stages: dict[str, str] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        statuses = set(self.stages.values())
        if statuses & {"failed", "interrupted"}:
            return "failed"
        if statuses & {"running", "pending"}:
            return "incomplete"
        return "ok"


@dataclass(frozen=True)
class StatusReport:
    pipeline: str
    environments: list[EnvironmentStatus]
    runs: list[RunStatus]
    test_stacks: list[EnvironmentStatus] = field(default_factory=list)
    """Ephemeral stacks that exist now (kept with --keep, or left behind)."""


def collect(
    loaded: Loaded,
    environment: str | None = None,
    *,
    last_runs: int = 5,
    profile: Profile | None = None,
    engines: Engines | None = None,
) -> StatusReport:
    """The status of every durable environment (or one), observed where possible; the last runs.

    `profile` overrides each environment's own profile (e.g. the local copy of an aws environment);
    `engines` gives the engines to observe with (default: the profiles')."""
    spec = loaded.spec
    provider = engines or ProfileEngines()
    ledger = Ledger(loaded.root)
    envs = [e for e in spec.environments if not e.ephemeral and (environment is None or e.name == environment)]
    if environment is not None and not envs:
        names = ", ".join(e.name for e in spec.environments if not e.ephemeral) or "(none)"
        raise BadInputError(f"no environment named {environment!r}", hint=f"environments: {names}")
    cache: dict[str, StackEngine | str] = {}
    result = [
        _with_flags(
            loaded, env, _environment(loaded, ledger, env, profile or default_profile(), provider, cache), provider
        )
        for env in envs
    ]
    tests = [] if environment is not None else _test_stacks(loaded, profile, provider, cache)
    runs = []
    for run_id in reversed(ledger.runs()):
        manifest = Manifest.load(ledger.manifest_path(run_id))
        if manifest is None or manifest.pipeline != spec.name:
            continue
        runs.append(RunStatus(run_id, manifest.profile, {n: r.status for n, r in manifest.stages.items()}))
        if len(runs) >= last_runs:
            break
    return StatusReport(spec.name, result, runs, tests)


def _engine(
    loaded: Loaded, env: Environment, profile: Profile, engines: Engines, cache: dict[str, StackEngine | str]
) -> StackEngine | str:
    """The environment's engine, or why there is none (cached per environment)."""
    key = f"{env.name}/{profile}"
    if key not in cache:
        try:
            cache[key] = engines.stack_engine(loaded.spec, env, profile, loaded.root)
        except PipelineError as exc:
            cache[key] = str(exc)
        except ImportError as exc:  # an engine (or its library) that is not installed
            cache[key] = f"the {profile} engine is not available ({exc})"
    return cache[key]


def _environment(
    loaded: Loaded,
    ledger: Ledger,
    env: Environment,
    profile: Profile,
    engines: Engines,
    cache: dict[str, StackEngine | str],
) -> EnvironmentStatus:
    spec = loaded.spec
    stack = env.stack_name(spec.name)
    try:
        store = engines.release_store(spec, env, profile, loaded.root)
    except (PipelineError, ImportError):
        store = None
    releases = ledger.history(spec.name, env.name, store)
    recorded = releases.live()
    newest = releases.releases[-1] if releases.releases else None
    says = "the ledger" if releases.source == "ledger" else f"the {releases.source}"
    base = EnvironmentStatus(
        name=env.name,
        profile=profile,
        stack=stack,
        image=recorded,
        url=None,
        known_good=tuple(releases.candidates()),
        history=releases.source,
        last_release=f"{newest.image} {newest.status} (run {newest.run_id}, {newest.at})" if newest else "",
    )
    engine = _engine(loaded, env, profile, engines, cache)
    if isinstance(engine, str):
        return _unobserved(base, engine)
    try:
        state = engine.describe(stack)
    except PipelineError as exc:
        return _unobserved(base, str(exc))
    if not state.exists:
        note = f"no stack now; {says} says {recorded} was live" if recorded else ""
        return _replace(base, image=None, observed=True, state="absent", note=note, ledger_image=recorded)
    schema = _schema(loaded, env, engine, stack)
    note = ""
    if state.image is None and schema and state.details.get("replicas", "0") == "0":
        note = "only the database exists (a first release's expand ran; promote creates the rest)"
    elif state.image is None:
        images = state.details.get("images", "")
        note = f"replicas run different images ({images})" if images else "no replica serves"
    elif recorded is not None and recorded != state.image:
        note = f"{says} says {recorded} is live"
    return _replace(
        base,
        image=state.image,
        url=state.url,
        observed=True,
        state=state.status,
        note=note,
        ledger_image=recorded if recorded != state.image else None,
        schema=schema,
    )


def _schema(loaded: Loaded, env: Environment, engine: StackEngine, stack: str) -> str:
    """The revision of the stack's database ('' when the environment declares none)."""
    if loaded.spec.database_of(env) is None:
        return ""
    try:
        endpoint = engine.database(stack)
    except PipelineError as exc:
        return f"(unreadable: {exc})"
    if endpoint is None:
        return "(no database)"
    from pipeline.schema.revision import read_revision

    return read_revision(endpoint.url)


FLAG_STORE_TIMEOUT = 2.0
"""Seconds `status` waits for a flag store (an aws store answers only inside its VPC)."""


def _with_flags(loaded: Loaded, env: Environment, status: EnvironmentStatus, engines: Engines) -> EnvironmentStatus:
    """The environment's flags as its store serves them, when the definition declares any and a
    stack exists to hold the store (or PIPELINE_FLAGS_URL names one)."""
    from pipeline.flags.locate import URL_ENV, flag_endpoint

    if not loaded.spec.flags or (status.state == "absent" and not os.environ.get(URL_ENV)):
        return status
    from pipeline.flags.overview import overview
    from pipeline.flags.store import FlagStore

    try:
        endpoint = flag_endpoint(loaded.spec, env, status.profile, loaded.root, engines=engines)  # type: ignore[arg-type]
        flags = overview(loaded.spec, env, FlagStore(endpoint, timeout=FLAG_STORE_TIMEOUT, retry=False))
    except PipelineError as exc:
        return _replace(status, flags_note=f"flags not read: {exc.args[0] if exc.args else exc}")
    except ImportError as exc:  # the flags extra (redis) is not installed
        return _replace(status, flags_note=f"flags not read: {exc} (pip install 'pipeline-as-code[run]')")
    return _replace(status, flags=flags)


def _unobserved(base: EnvironmentStatus, why: str) -> EnvironmentStatus:
    first = why.strip().splitlines()[0] if why.strip() else "unknown reason"
    return _replace(base, observed=False, note=f"engine unreachable ({first}): showing the ledger")


def _replace(base: EnvironmentStatus, **changes: object) -> EnvironmentStatus:
    from dataclasses import replace

    return replace(base, **changes)  # type: ignore[arg-type]


def _test_stacks(
    loaded: Loaded, profile: Profile | None, engines: Engines, cache: dict[str, StackEngine | str]
) -> list[EnvironmentStatus]:
    """Test stacks that exist now. A stack's run id is its name's suffix; its run says why it is there."""
    spec = loaded.spec
    ledger = Ledger(loaded.root)
    found = []
    for env in spec.environments:
        if not env.ephemeral or spec.template_of(env) is None:
            continue
        use = profile or default_profile()
        engine = _engine(loaded, env, use, engines, cache)
        if isinstance(engine, str):
            continue
        prefix = env.stack_name(spec.name) + "-"
        try:
            names = [n for n in engine.stacks() if n.startswith(prefix)]
        except PipelineError:
            continue
        for name in names:
            try:
                state = engine.describe(name)
            except PipelineError:
                continue
            run_id = name[len(prefix) :]
            found.append(
                EnvironmentStatus(
                    name=env.name,
                    profile=use,
                    stack=name,
                    image=state.image,
                    url=state.url,
                    observed=True,
                    state=state.status,
                    note=_why_left(ledger, run_id),
                )
            )
    return found


def _why_left(ledger: Ledger, run_id: str) -> str:
    try:
        manifest = ledger.manifest(run_id)
    except PipelineError:
        manifest = None
    if manifest is None:
        return f"run {run_id} is unknown to this ledger"
    for result in manifest.stages.values():
        if result.outputs.get("kept"):
            return f"kept by run {run_id} (--keep)"
    if any(r.status in ("running", "pending") for r in manifest.stages.values()):
        return f"run {run_id} is running, or was killed before its teardown"
    return f"left by run {run_id}"
