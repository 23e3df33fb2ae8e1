"""The contract between the runner and a stage kind's executor.

An executor is plan-then-apply and idempotent: `inputs` names what its result depends on (files,
observed real-world state), `is_live` says whether recorded outputs still exist in the real world,
and `run` converges the world to the stage's spec and returns its outputs. Heavy libraries (docker,
boto3, testinfra) are imported inside the methods, never at module import.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from pipeline.errors import Interrupted
from pipeline.model import Profile, Stage
from pipeline.profiles import ProfileEngines

if TYPE_CHECKING:
    from pipeline.ledger import Ledger
    from pipeline.profiles.base import Engines
    from pipeline.spec import PipelineSpec

S = TypeVar("S", bound=Stage)

Outputs = dict[str, str]


@dataclass
class StageContext:
    """Everything a running stage may read, plus the channels it reports through."""

    pipeline: PipelineSpec
    stage: Stage
    root: Path
    """Folder of the definition file; relative paths in the spec resolve against it."""
    run_id: str
    run_dir: Path
    profile: Profile
    upstream: Mapping[str, Mapping[str, str]]
    """Outputs of every stage this one (transitively) needs, by stage name."""
    ledger: Ledger
    log: Callable[[str], None] = lambda line: None
    """Append a line to the stage's log (and the live view's last line)."""
    step: Callable[[str], None] = lambda text: None
    """Set the short 'current step' text of the live view."""
    secrets: Mapping[str, str] = field(default_factory=dict)
    deadline: float | None = None
    """time.monotonic() value after which the stage must stop."""
    cancel: threading.Event = field(default_factory=threading.Event)
    keep: bool = False
    """Keep ephemeral resources (--keep)."""
    options: Mapping[str, str] = field(default_factory=dict)
    engines: Engines = field(default_factory=ProfileEngines)
    """Where the stage gets its engines (the profiles'; tests inject fakes through the Runner)."""
    partial_outputs: dict[str, str] = field(default_factory=dict)
    """What a stage has created so far; kept in the manifest if it fails, so teardown can find it."""
    notes: list[str] = field(default_factory=list)
    """Facts for the run report (e.g. which checks were emulated)."""

    @property
    def stage_dir(self) -> Path:
        path = self.run_dir / "stages" / self.stage.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path(self, relative: str) -> Path:
        return self.root / relative

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise Interrupted("interrupted")

    def output_of(self, stage_name: str, key: str) -> str:
        from pipeline.errors import StageFailedError

        producer = type(self.pipeline.stage(stage_name))
        if key not in producer.outputs.model_fields:
            raise UndeclaredOutputError(
                f"stage {self.stage.name!r} asks for output {key!r} of {stage_name!r}, but its kind "
                f"({producer.model_fields['kind'].default}) declares only: {', '.join(producer.outputs.names())}"
            )
        try:
            return self.upstream[stage_name][key]
        except KeyError:
            raise StageFailedError(
                self.stage.name,
                f"needs output {key!r} of stage {stage_name!r}, which is not in the run manifest",
                hint=f"run {stage_name!r} first (or pass the manifest that holds it with --manifest)",
            ) from None


class UndeclaredOutputError(Exception):
    """An executor wrote, or asked for, an output its stage kind does not declare: a bug in the
    executor (the runner reports it as an internal error), never the user's."""


def check_outputs(stage: Stage, outputs: Mapping[str, str]) -> dict[str, str]:
    """The outputs an executor returned, checked against what its kind declares (`Stage.outputs`):
    every name declared, every required one present, every value a string."""
    declared = type(stage).outputs.model_fields
    unknown = sorted(set(outputs) - set(declared))
    missing = sorted(n for n, f in declared.items() if f.is_required() and n not in outputs)
    wrong = sorted(k for k, v in outputs.items() if not isinstance(v, str))
    if unknown or missing or wrong:
        problems = [
            *([f"undeclared {', '.join(unknown)}"] if unknown else []),
            *([f"missing {', '.join(missing)}"] if missing else []),
            *([f"not a string: {', '.join(wrong)}"] if wrong else []),
        ]
        raise UndeclaredOutputError(
            f"the executor of {stage.kind} stage {stage.name!r} returned outputs its kind does not declare "
            f"({'; '.join(problems)}); declared: {', '.join(declared) or 'none'}"
        )
    return dict(outputs)


@dataclass
class PlanContext:
    """What an executor may look at while computing its idempotency key (no side effects)."""

    pipeline: PipelineSpec
    stage: Stage
    root: Path
    profile: Profile
    upstream: Mapping[str, Mapping[str, str]]
    ledger: Ledger
    engines: Engines = field(default_factory=ProfileEngines)


class Executor(ABC, Generic[S]):
    """Runs one stage kind. One instance per stage per run."""

    reads_all_upstream: ClassVar[bool] = False
    """The key covers every upstream output, not only the stages the spec references (Shell)."""

    ephemeral: ClassVar[bool] = False
    """Outputs are intermediate (a test stack): the stage is up to date without them existing
    any more, as long as every stage after it is up to date too."""

    def __init__(self, spec: S) -> None:
        self.spec = spec

    def inputs(self, ctx: PlanContext) -> Mapping[str, str]:
        """Extra key material beyond the spec, the stage's files and upstream outputs.

        Observed state belongs here (e.g. the image production runs now), so that a change in
        the real world invalidates a recorded result."""
        return {}

    def is_live(self, ctx: PlanContext, outputs: Mapping[str, str]) -> bool:
        """Whether recorded outputs still exist in the real world (an image, a stack)."""
        return True

    def preflight(self, ctx: PlanContext) -> None:
        """Check what can be checked with no side effect (templates, parameters), before any stage
        of the run starts; raise a BadInputError subclass (exit 2) for bad input."""

    def ready(self, ctx: PlanContext) -> None:
        """Check, before the run starts, what a run needs and `validate` does not: tools and
        services that must answer (the Docker engine, an AWS endpoint, credentials, a clean git
        tree). Raise a PipelineError naming what is missing and the fix."""

    @abstractmethod
    def run(self, ctx: StageContext) -> Outputs:
        """Converge the world to the spec; return the stage's outputs."""

    def interrupted(self, ctx: StageContext) -> None:
        """Called when the run is interrupted while this stage runs: release what it created."""
