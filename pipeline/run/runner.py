"""The runner: plan, then apply in DAG order, recording each stage. A thin facade over
`plan` (keys, up-to-date checks, preflight), `apply` (one run in progress) and `recover` (runs
that died holding our locks).

Library code: it reports through a `Reporter` and never prints. `run_local` runs the whole chain
(or a selection) on this machine; `run_stage` runs one stage as CI calls it, reading upstream
outputs from a manifest. Engines and executors are injected (defaults: the profiles' engines and
each kind's registered executor), so tests need no patching.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from pipeline import interrupts
from pipeline.errors import BadInputError, PipelineError
from pipeline.executors.registry import executor_for
from pipeline.ledger import Ledger, Lock, Manifest, StageResult, new_run_id
from pipeline.loader import Loaded
from pipeline.model import Profile, default_profile
from pipeline.profiles import ProfileEngines
from pipeline.profiles.base import Engines
from pipeline.run.apply import Approver, RunInProgress
from pipeline.run.plan import ExecutorFactory, Planner
from pipeline.run.recover import BUILD_LOCK, recover
from pipeline.run.report import NullReporter, Reporter, RunOptions, RunSummary
from pipeline.run.stage_io import masker_for
from pipeline.spec import PipelineSpec


class Runner:
    def __init__(
        self,
        loaded: Loaded,
        *,
        ledger: Ledger | None = None,
        reporter: Reporter | None = None,
        approver: Approver | None = None,
        executors: ExecutorFactory = executor_for,
        engines: Engines | None = None,
    ) -> None:
        """`executors` makes the executor of a stage (default: its kind's, from the registry);
        `engines` hands out stack engines (default: the profiles'). Tests inject fakes."""
        self.loaded = loaded
        self.spec: PipelineSpec = loaded.spec
        self.root = loaded.root
        self.ledger = ledger or Ledger(self.root)
        self.reporter: Reporter = reporter or NullReporter()
        self.approver = approver
        self.engines: Engines = engines or ProfileEngines()
        self.planner = Planner(self.spec, self.root, self.ledger, executors, self.engines)

    # --- entry points ---
    def run_local(self, options: RunOptions) -> RunSummary:
        interrupts.reset()  # a signal from here on stops this run
        profile: Profile = options.profile or default_profile()
        order = [s.name for s in self.spec.ordered()]
        selected = self.planner.select(order, options)
        with self._masking(selected):
            self.planner.preflight(selected, profile)
            carried = self.planner.carried_outputs(order, selected, profile)
        run_id = new_run_id()
        manifest = Manifest(self.spec.name, run_id, profile)
        for name, outputs in carried.items():
            manifest.stages[name] = StageResult(
                status="up-to-date", outputs=outputs, message="carried from an earlier run"
            )
        return self._execute(order, selected, manifest, self.ledger.manifest_path(run_id), profile, options)

    def run_stage(self, name: str, options: RunOptions) -> RunSummary:
        interrupts.reset()  # a signal from here on stops this run
        stage = self.spec.stage(name)  # UnknownStageError for a bad name
        profile: Profile = options.profile or default_profile()
        with self._masking([name]):
            self.planner.preflight([name], profile)
        manifest_path = options.manifest or self._default_manifest_path()
        manifest = Manifest.load(manifest_path) if manifest_path.exists() else None
        if manifest is not None and manifest.pipeline != self.spec.name:
            raise BadInputError(
                f"manifest {manifest_path} belongs to pipeline {manifest.pipeline!r}, not {self.spec.name!r}",
                hint="pass this pipeline's manifest with --manifest",
            )
        if manifest is None:
            run_id = os.environ.get("PIPELINE_RUN_ID") or new_run_id()
            manifest = Manifest(self.spec.name, run_id, profile)
        manifest.profile = profile
        # Upstream outputs the manifest lacks may come from this machine's ledger (laptop use).
        for ancestor in self.spec.graph.ancestors(name):
            if ancestor not in manifest.stages:
                record = self.ledger.stage_record(self.spec.name, profile, ancestor)
                if record is not None:
                    manifest.stages[ancestor] = StageResult(status="up-to-date", outputs=record.outputs)
        missing = [
            ref for ref in stage.references().values() if ref not in manifest.outputs() and not type(stage).always
        ]
        if missing:
            raise BadInputError(
                f"stage {name!r} needs the outputs of {', '.join(repr(m) for m in missing)}, "
                f"which {manifest_path} does not hold",
                hint="run those stages first, or pass the manifest they wrote with --manifest",
            )
        order = [s.name for s in self.spec.ordered()]
        return self._execute(order, [name], manifest, manifest_path, profile, options, single=True)

    def check_templates(self, profile: Profile) -> list[str]:
        """`pipeline validate`: every stage's side-effect-free checks; returns the stages checked."""
        return self.planner.check_templates(profile)

    # --- steps ---
    def _default_manifest_path(self) -> Path:
        env = os.environ.get("PIPELINE_MANIFEST")
        if env:
            return Path(env)
        runs = self.ledger.runs()
        if runs:
            return self.ledger.manifest_path(runs[-1])
        return self.ledger.manifest_path(new_run_id())

    @contextmanager
    def _masking(self, selected: list[str]) -> Iterator[None]:
        """Errors raised before the run starts (a tool's output in a template error, say) have the
        values of the selected stages' secrets masked, like everything the run writes later."""
        try:
            yield
        except PipelineError as exc:
            masker = masker_for(self.spec, selected)
            exc.message = masker(exc.message)
            exc.args = (exc.message, *exc.args[1:])
            exc.hint = masker(exc.hint) if exc.hint else exc.hint
            raise

    def _locks(self, selected: list[str], run_id: str, manifest_path: Path) -> dict[str, Lock]:
        """{environment (or `build`): its lock} for the environments the selected stages act on."""
        names = set()
        for name in selected:
            env = self.spec.environment_of(self.spec.stage(name))
            names.add(env.name if env else BUILD_LOCK)
        purpose = f"pipeline run, stages {', '.join(selected)}"
        return {
            n: self.ledger.lock(self.spec.name, n, purpose=purpose, run_id=run_id, manifest=manifest_path)
            for n in sorted(names)
        }

    def _execute(
        self,
        order: list[str],
        selected: list[str],
        manifest: Manifest,
        manifest_path: Path,
        profile: Profile,
        options: RunOptions,
        *,
        single: bool = False,
    ) -> RunSummary:
        self.ledger.ensure()
        run = RunInProgress(
            spec=self.spec,
            root=self.root,
            planner=self.planner,
            ledger=self.ledger,
            engines=self.engines,
            reporter=self.reporter,
            approver=self.approver,
            manifest=manifest,
            manifest_path=manifest_path,
            profile=profile,
            options=options,
            selected=selected,
            single=single,
        )
        with ExitStack() as stack:
            dead: dict[str, tuple[dict[str, Any], set[str]]] = {}
            for env_name, lock in self._locks(selected, manifest.run_id, manifest_path).items():
                stack.enter_context(lock)
                if lock.took_over:
                    pid = lock.took_over.get("pid")
                    self.reporter.notice(f"took over {lock.path.stem}: its holder (pid {pid}) is no longer running")
                    run.event(None, "lock-taken-over", holder=lock.took_over)
                    dead_run = str(lock.took_over.get("run_id") or "")
                    if dead_run and dead_run != manifest.run_id:
                        dead.setdefault(dead_run, (lock.took_over, set()))[1].add(env_name)
            for name in selected:
                manifest.stages.setdefault(name, StageResult())
            run.save(None)
            run.event(None, "run-started", stages=selected, profile=profile)
            self.reporter.run_started(manifest.run_id, selected, run.summary.run_dir)
            for dead_run, (holder, envs) in dead.items():
                recover(run, dead_run, holder, envs)
            try:
                run.loop(order)
            finally:
                run.summary.results = {n: manifest.stages[n] for n in selected}
                run.event(None, "run-finished", exit_code=run.summary.exit_code)
                self.reporter.run_finished(run.summary)
        return run.summary
