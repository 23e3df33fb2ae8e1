"""What runs where and what ran lately, from the ledger and (when an engine can say) the real world."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.errors import BadInputError
from pipeline.loader import Loaded
from pipeline.state import Ledger, Manifest


@dataclass(frozen=True)
class EnvironmentStatus:
    name: str
    profile: str
    stack: str
    image: str | None
    """The image recorded as live in this environment (None: nothing deployed yet)."""
    url: str | None
    known_good: tuple[str, ...] = ()
    observed: bool = False
    """True when image/url were read from the real world, not only from the ledger."""
    note: str = ""


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


def collect(loaded: Loaded, environment: str | None = None, *, last_runs: int = 5) -> StatusReport:
    spec = loaded.spec
    ledger = Ledger(loaded.root)
    envs = [e for e in spec.environments if not e.ephemeral and (environment is None or e.name == environment)]
    if environment is not None and not envs:
        names = ", ".join(e.name for e in spec.environments if not e.ephemeral) or "(none)"
        raise BadInputError(f"no environment named {environment!r}", hint=f"environments: {names}")
    result = []
    for env in envs:
        releases = ledger.releases(spec.name, env.name)
        live = next((r for r in reversed(releases) if r.status == "live"), None)
        result.append(
            EnvironmentStatus(
                name=env.name,
                profile=env.profile,
                stack=env.stack_name(spec.name),
                image=live.image if live else None,
                url=None,
                known_good=tuple(ledger.known_good(spec.name, env.name)),
            )
        )
    runs = []
    for run_id in reversed(ledger.runs()):
        manifest = Manifest.load(ledger.manifest_path(run_id))
        if manifest is None or manifest.pipeline != spec.name:
            continue
        runs.append(RunStatus(run_id, manifest.profile, {n: r.status for n, r in manifest.stages.items()}))
        if len(runs) >= last_runs:
            break
    return StatusReport(spec.name, result, runs)
