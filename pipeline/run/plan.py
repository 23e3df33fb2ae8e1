"""Planning a run, before any side effect: which stages, their executors, their keys, which are up
to date, and every check that can be made first (preflight: templates, parameters; ready: the
tools and services the run needs)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import BadInputError, NotImplementedStageError
from pipeline.executors.base import Executor, PlanContext
from pipeline.hashing import hash_paths, stage_key
from pipeline.ledger import Ledger, StageRecord
from pipeline.model import Profile, Stage
from pipeline.profiles.base import Engines
from pipeline.run.report import RunOptions
from pipeline.spec import PipelineSpec

# Spec fields that do not change what a stage produces, so they stay out of its key.
_KEY_EXCLUDED = {"description", "needs", "timeout_minutes", "retries", "branches", "approval"}

ExecutorFactory = Callable[[Stage], Executor[Any]]


class Planner:
    """Everything a run decides before it changes anything; also what `pipeline validate` checks."""

    def __init__(
        self, spec: PipelineSpec, root: Path, ledger: Ledger, executors: ExecutorFactory, engines: Engines
    ) -> None:
        self.spec = spec
        self.root = root
        self.ledger = ledger
        self.make_executor = executors
        self.engines = engines
        self._executors: dict[str, Executor[Any]] = {}

    # --- which stages, by what ---
    def select(self, order: list[str], options: RunOptions) -> list[str]:
        if options.only and options.from_stage:
            raise BadInputError("--only and --from cannot be combined", hint="use one of them")
        if options.only:
            self.spec.stage(options.only)
            return [options.only]
        if options.from_stage:
            self.spec.stage(options.from_stage)
            later = self.spec.graph.descendants(options.from_stage)
            return [n for n in order if n == options.from_stage or n in later]
        return list(order)

    def executor(self, stage: Stage) -> Executor[Any]:
        """The stage's executor, one per stage per run."""
        if stage.name not in self._executors:
            self._executors[stage.name] = self.make_executor(stage)
        return self._executors[stage.name]

    def runs_on(self, stage: Stage, profile: Profile) -> bool:
        """Whether the stage's kind has an executor that can carry it out on `profile`."""
        if profile in type(stage).cannot_run_on:
            return False
        try:
            self.executor(stage)
        except NotImplementedStageError:
            return False
        return True

    def context(self, stage: Stage, profile: Profile, upstream: Mapping[str, Mapping[str, str]]) -> PlanContext:
        return PlanContext(self.spec, stage, self.root, profile, upstream, self.ledger, self.engines)

    # --- checks before anything changes ---
    def check_templates(self, profile: Profile) -> list[str]:
        """Run every stage's side-effect-free checks (Packer and CloudFormation templates) for
        `pipeline validate`; returns the stages checked. Kinds without an executor for the
        profile have nothing to check yet; a kind the profile cannot carry out is refused first
        (ProfileCannotError, exit 2), before any check that needs a tool."""
        self.spec.check_profiles(profile)
        checked = []
        for stage in self.spec.ordered():
            if not self.runs_on(stage, profile):
                continue
            executor = self.executor(stage)
            if type(executor).preflight is not Executor.preflight:
                executor.preflight(self.context(stage, profile, {}))
                checked.append(stage.name)
        return checked

    def preflight(self, selected: list[str], profile: Profile) -> None:
        """Everything that can be known before a side effect: executors exist for this profile,
        the ledger reads, templates and parameters are sound (exit 2 if not), and what the run
        needs and `validate` does not answers (the Docker engine, an AWS endpoint, credentials)."""
        self.spec.check_profiles(profile, selected)
        missing = [
            f"{n} ({self.spec.stage(n).kind})" for n in selected if not self.runs_on(self.spec.stage(n), profile)
        ]
        if missing:
            raise NotImplementedStageError(
                f"no {profile}-profile executor yet for: {', '.join(missing)}",
                hint="these stage kinds can be validated and rendered for CI, but not run on this profile yet; "
                "run the others with --only, or see the README's stage table",
            )
        for name in selected:
            stage = self.spec.stage(name)
            # A corrupt ledger record is reported now, before anything has changed.
            self.ledger.stage_record(self.spec.name, profile, name)
            env = self.spec.environment_of(stage)
            if env is not None:
                self.ledger.releases(self.spec.name, env.name)
            executor = self.executor(stage)
            ctx = self.context(stage, profile, {})
            executor.preflight(ctx)
            executor.ready(ctx)

    def carried_outputs(self, order: list[str], selected: list[str], profile: str) -> dict[str, dict[str, str]]:
        """Outputs of stages outside the selection that selected stages need (from the ledger)."""
        wanted = set()
        for name in selected:
            wanted |= self.spec.graph.ancestors(name)
        wanted -= set(selected)
        carried = {}
        for name in order:
            if name not in wanted:
                continue
            record = self.ledger.stage_record(self.spec.name, profile, name)
            if record is None:
                users = [s for s in selected if name in self.spec.stage(s).references().values()]
                if users:
                    raise BadInputError(
                        f"stage {users[0]!r} needs the outputs of {name!r}, which has not run on this machine "
                        f"with the {profile} profile",
                        hint=f"run without --only/--from first, or include {name!r}",
                    )
                continue
            carried[name] = record.outputs
        return carried

    # --- keys and up-to-date checks ---
    def key(self, stage: Stage, profile: Profile, upstream: Mapping[str, Mapping[str, str]]) -> str:
        """The stage's idempotency key: its spec, its files, the upstream outputs it reads and the
        real-world state its executor observes."""
        executor = self.executor(stage)
        ctx = self.context(stage, profile, upstream)
        reads = (
            sorted(self.spec.graph.ancestors(stage.name))
            if executor.reads_all_upstream
            else sorted(set(stage.references().values()))
        )
        spec_data = stage.model_dump(mode="json", exclude=_KEY_EXCLUDED)
        spec_data["secrets"] = sorted(s["name"] for s in spec_data.get("secrets", []))
        env = self.spec.environment_of(stage)
        if env is not None:
            spec_data["environment"] = env.model_dump(mode="json", exclude={"approval"})
        return stage_key(
            spec_data,
            hash_paths(self.root, stage.files()),
            {name: dict(upstream.get(name, {})) for name in reads},
            dict(executor.inputs(ctx)),
        )

    def current_record(
        self,
        stage: Stage,
        profile: Profile,
        key: str,
        options: RunOptions,
        selected: list[str],
        outputs_so_far: Mapping[str, Mapping[str, str]],
    ) -> StageRecord | None:
        """The recorded result if the stage is up to date, else None."""
        record = self.ledger.stage_record(self.spec.name, profile, stage.name)
        if record is None or record.key != key:
            return None
        executor = self.executor(stage)
        if executor.is_live(self.context(stage, profile, outputs_so_far), record.outputs):
            return record
        explicitly_asked = options.only == stage.name
        if (
            executor.ephemeral
            and not explicitly_asked
            and self._consumers_current(stage.name, profile, record.outputs, selected, outputs_so_far)
        ):
            return record
        return None

    def _reads(self, consumer: Stage, producer: str) -> bool:
        if self.executor(consumer).reads_all_upstream:
            return producer in self.spec.graph.ancestors(consumer.name)
        return producer in consumer.references().values()

    def _consumers_current(
        self,
        producer: str,
        profile: Profile,
        outputs: Mapping[str, str],
        selected: list[str],
        assumed: Mapping[str, Mapping[str, str]],
    ) -> bool:
        """Like make's intermediate files: a result that no longer exists (a deleted test stack)
        still counts while every stage that reads it is current with it."""
        assumed = {**{k: dict(v) for k, v in assumed.items()}, producer: dict(outputs)}
        for name in selected:
            consumer = self.spec.stage(name)
            if name == producer or not self._reads(consumer, producer):
                continue
            record = self.ledger.stage_record(self.spec.name, profile, name)
            if record is None or record.key != self.key(consumer, profile, assumed):
                return False
            executor = self.executor(consumer)
            if executor.is_live(self.context(consumer, profile, assumed), record.outputs):
                continue
            if not (executor.ephemeral and self._consumers_current(name, profile, record.outputs, selected, assumed)):
                return False
        return True
