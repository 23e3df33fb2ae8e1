"""What every stage gets when it runs, made in one place: its secrets (resolved and masked), its log
file, and its StageContext. Both a normal run and the recovery of a dead run's teardown use it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from pipeline.executors.base import StageContext
from pipeline.ledger import Ledger
from pipeline.model import Profile, Secret, Stage
from pipeline.profiles.base import Engines
from pipeline.secrets import Masker, resolve
from pipeline.spec import PipelineSpec


def stage_secrets(spec: PipelineSpec, stage: Stage) -> list[Secret]:
    """The stage's own secrets, then its environment's, each name once."""
    env = spec.environment_of(stage)
    found: dict[str, Secret] = {}
    for secret in (*stage.secrets, *(env.secrets if env else ())):
        found.setdefault(secret.name, secret)
    return list(found.values())


def resolve_secrets(spec: PipelineSpec, stage: Stage) -> dict[str, str]:
    """{name: value} of the stage's secrets, from the environment (MissingSecretError if unset)."""
    return resolve(stage_secrets(spec, stage))


def masker_for(spec: PipelineSpec, stages: Iterable[str]) -> Masker:
    """A masker of the secret values the given stages would receive that are set now (for errors
    raised before the stages run)."""
    names = sorted({s.name for name in stages for s in stage_secrets(spec, spec.stage(name))})
    return Masker(os.environ[n] for n in names if os.environ.get(n))


@contextmanager
def stage_log(path: Path, masker: Masker, echo: Callable[[str], None] | None = None) -> Iterator[Callable[[str], None]]:
    """Append masked lines to the stage's log file (and echo them to the reporter)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as log_file:

        def log(line: str) -> None:
            clean = masker(line)
            log_file.write(clean + "\n")
            log_file.flush()
            if echo is not None:
                echo(clean)

        yield log


def stage_context(
    *,
    spec: PipelineSpec,
    stage: Stage,
    root: Path,
    run_id: str,
    run_dir: Path,
    profile: Profile,
    upstream: Mapping[str, Mapping[str, str]],
    ledger: Ledger,
    engines: Engines,
    log: Callable[[str], None],
    secrets: Mapping[str, str],
    step: Callable[[str], None] = lambda text: None,
    keep: bool = False,
    options: Mapping[str, str] | None = None,
) -> StageContext:
    """The context of one attempt of a stage; its deadline starts now."""
    return StageContext(
        pipeline=spec,
        stage=stage,
        root=root,
        run_id=run_id,
        run_dir=run_dir,
        profile=profile,
        upstream=upstream,
        ledger=ledger,
        log=log,
        step=step,
        secrets=secrets,
        deadline=time.monotonic() + stage.timeout_minutes * 60,
        keep=keep,
        options=dict(options or {}),
        engines=engines,
    )
