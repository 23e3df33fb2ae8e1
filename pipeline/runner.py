"""Run stages: plan (keys, up-to-date checks, preflight), then apply in DAG order, recording each.

The runner is library code: it reports through a `Reporter` and never prints. `run_local` runs
the whole chain (or a selection) on this machine; `run_stage` runs one stage as CI calls it,
reading upstream outputs from a manifest.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.errors import (
    BadInputError,
    Interrupted,
    NotImplementedStageError,
    PipelineError,
    StageFailedError,
)
from pipeline.executors.base import Executor, PlanContext, StageContext, check_outputs
from pipeline.executors.registry import executor_for
from pipeline.faults import checkpoint
from pipeline.hashing import hash_paths, stage_key
from pipeline.ledger import Ledger, Lock, Manifest, StageRecord, StageResult, new_run_id, now_iso
from pipeline.loader import Loaded
from pipeline.model import Approval, Profile, Stage, default_profile
from pipeline.secrets import Masker, resolve
from pipeline.spec import PipelineSpec, branch_matches

# Spec fields that do not change what a stage produces, so they stay out of its key.
_KEY_EXCLUDED = {"description", "needs", "timeout_minutes", "retries", "branches", "approval"}
BUILD_LOCK = "build"

OK_STATUSES = ("succeeded", "up-to-date")


class Reporter(Protocol):
    """Where the runner reports progress (the CLI's live view, a plain log, or a test)."""

    def run_started(self, run_id: str, stages: list[str], run_dir: Path) -> None: ...
    def stage_started(self, stage: str, attempt: int) -> None: ...
    def stage_step(self, stage: str, text: str) -> None: ...
    def stage_line(self, stage: str, line: str) -> None: ...
    def stage_finished(self, stage: str, result: StageResult, log_tail: str) -> None: ...
    def notice(self, text: str) -> None: ...
    def run_finished(self, summary: RunSummary) -> None: ...


class NullReporter:
    def run_started(self, run_id: str, stages: list[str], run_dir: Path) -> None:
        pass

    def stage_started(self, stage: str, attempt: int) -> None:
        pass

    def stage_step(self, stage: str, text: str) -> None:
        pass

    def stage_line(self, stage: str, line: str) -> None:
        pass

    def stage_finished(self, stage: str, result: StageResult, log_tail: str) -> None:
        pass

    def notice(self, text: str) -> None:
        pass

    def run_finished(self, summary: RunSummary) -> None:
        pass


@dataclass
class RunOptions:
    profile: Profile | None = None
    only: str | None = None
    from_stage: str | None = None
    force: bool = False
    keep: bool = False
    yes: bool = False
    interactive: bool = False
    """A human can answer approval prompts (a TTY)."""
    manifest: Path | None = None
    """run stage: where upstream outputs come from and where this stage's result goes."""


@dataclass
class RunSummary:
    pipeline: str
    run_id: str
    run_dir: Path
    profile: str
    results: dict[str, StageResult] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def failed(self) -> list[str]:
        return [n for n, r in self.results.items() if r.status in ("failed", "interrupted")]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return Interrupted.exit_code
        return 1 if self.failed else 0


Approver = Callable[[Stage, Approval], bool]
ExecutorFactory = Callable[[Stage], Executor[Any]]


class Runner:
    def __init__(
        self,
        loaded: Loaded,
        *,
        ledger: Ledger | None = None,
        reporter: Reporter | None = None,
        approver: Approver | None = None,
        executors: ExecutorFactory = executor_for,
    ) -> None:
        """`executors` makes the executor of a stage (default: its kind's, from the registry);
        tests give fakes for kinds that need Docker or AWS."""
        self.loaded = loaded
        self.spec: PipelineSpec = loaded.spec
        self.root = loaded.root
        self.ledger = ledger or Ledger(self.root)
        self.reporter: Reporter = reporter or NullReporter()
        self.approver = approver
        self.make_executor = executors
        self._executors: dict[str, Executor[Any]] = {}

    # ------------------------------------------------------------------ entry points
    def run_local(self, options: RunOptions) -> RunSummary:
        profile: Profile = options.profile or default_profile()
        order = [s.name for s in self.spec.ordered()]
        selected = self._select(order, options)
        with self._masking(selected):
            self._preflight(selected, profile)
            carried = self._carried_outputs(order, selected, profile)
        run_id = new_run_id()
        manifest = Manifest(self.spec.name, run_id, profile)
        for name, outputs in carried.items():
            manifest.stages[name] = StageResult(
                status="up-to-date", outputs=outputs, message="carried from an earlier run"
            )
        return self._execute(order, selected, manifest, self.ledger.manifest_path(run_id), profile, options)

    def run_stage(self, name: str, options: RunOptions) -> RunSummary:
        stage = self.spec.stage(name)  # UnknownStageError for a bad name
        profile: Profile = options.profile or default_profile()
        with self._masking([name]):
            self._preflight([name], profile)
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
            names = set()
            for name in selected:
                stage = self.spec.stage(name)
                env = self.spec.environment_of(stage)
                names |= {s.name for s in (*stage.secrets, *(env.secrets if env else ()))}
            masker = Masker(os.environ[n] for n in sorted(names) if os.environ.get(n))
            exc.message = masker(exc.message)
            exc.args = (exc.message, *exc.args[1:])
            exc.hint = masker(exc.hint) if exc.hint else exc.hint
            raise

    # ------------------------------------------------------------------ planning
    def _select(self, order: list[str], options: RunOptions) -> list[str]:
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
        if stage.name not in self._executors:
            self._executors[stage.name] = self.make_executor(stage)
        return self._executors[stage.name]

    def runs_on(self, stage: Stage, profile: Profile) -> bool:
        """Whether the stage's kind has an executor for `profile`."""
        try:
            return profile in type(self.executor(stage)).profiles
        except NotImplementedStageError:
            return False

    def check_templates(self, profile: Profile) -> list[str]:
        """Run every stage's side-effect-free checks (Packer and CloudFormation templates) for
        `pipeline validate`; returns the stages checked. Kinds without an executor for the
        profile have nothing to check yet."""
        checked = []
        for stage in self.spec.ordered():
            if not self.runs_on(stage, profile):
                continue
            executor = self.executor(stage)
            if type(executor).preflight is not Executor.preflight:
                executor.preflight(self._plan_context(stage, profile, {}))
                checked.append(stage.name)
        return checked

    def _preflight(self, selected: list[str], profile: Profile) -> None:
        """Everything that can be known before a side effect: executors exist for this profile."""
        missing = []
        for name in selected:
            stage = self.spec.stage(name)
            if not self.runs_on(stage, profile):
                missing.append(f"{name} ({stage.kind})")
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
            # Templates and parameters are checked before any stage starts (exit 2 if bad).
            executor = self.executor(stage)
            ctx = self._plan_context(stage, profile, {})
            executor.preflight(ctx)
            # What the run needs and `validate` does not: tools and services that answer (the
            # Docker engine, an AWS endpoint and credentials). Optional: `ready(ctx)`.
            executor.ready(ctx)

    def _carried_outputs(self, order: list[str], selected: list[str], profile: str) -> dict[str, dict[str, str]]:
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

    def _plan_context(self, stage: Stage, profile: Profile, upstream: Mapping[str, Mapping[str, str]]) -> PlanContext:
        return PlanContext(self.spec, stage, self.root, profile, upstream, self.ledger)

    def key(self, stage: Stage, profile: Profile, upstream: Mapping[str, Mapping[str, str]]) -> str:
        executor = self.executor(stage)
        ctx = self._plan_context(stage, profile, upstream)
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

    def _is_current(
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
        if executor.is_live(self._plan_context(stage, profile, outputs_so_far), record.outputs):
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
            if executor.is_live(self._plan_context(consumer, profile, assumed), record.outputs):
                continue
            if not (executor.ephemeral and self._consumers_current(name, profile, record.outputs, selected, assumed)):
                return False
        return True

    # ------------------------------------------------------------------ applying
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
        run = _Run(self, manifest, manifest_path, profile, options, selected, single)
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
                run.recover(dead_run, holder, envs)
            try:
                run.loop(order)
            finally:
                run.summary.results = {n: manifest.stages[n] for n in selected}
                run.event(None, "run-finished", exit_code=run.summary.exit_code)
                self.reporter.run_finished(run.summary)
        return run.summary

    def _gate(self, stage: Stage, approval: Approval, options: RunOptions) -> None:
        from pipeline.errors import ApprovalRequiredError

        if options.yes:
            self.reporter.notice(f"{stage.name}: approval gate answered by --yes")
            return
        if not options.interactive or self.approver is None:
            raise ApprovalRequiredError(
                f"stage {stage.name!r} waits for approval ({approval.message!r}) and there is no terminal to ask",
                hint="re-run with --yes to approve, or run in a terminal to be asked",
            )
        if not self.approver(stage, approval):
            raise StageFailedError(stage.name, "approval declined", hint="re-run when you want to deploy")


class _Run:
    """The state of one run while it executes: manifest, where it is saved, what is blocked."""

    def __init__(
        self,
        runner: Runner,
        manifest: Manifest,
        manifest_path: Path,
        profile: Profile,
        options: RunOptions,
        selected: list[str],
        single: bool,
    ) -> None:
        self.runner = runner
        self.spec = runner.spec
        self.ledger = runner.ledger
        self.reporter = runner.reporter
        self.manifest = manifest
        self.manifest_path = manifest_path
        self.profile = profile
        self.options = options
        self.selected = selected
        self.single = single
        self.run_dir = self.ledger.run_dir(manifest.run_id)
        self.summary = RunSummary(self.spec.name, manifest.run_id, self.run_dir, profile)

    def loop(self, order: list[str]) -> None:
        blocked: set[str] = set()
        branch = None if self.single else current_branch(self.runner.root)
        for name in order:
            if name not in self.selected:
                continue
            stage = self.spec.stage(name)
            always = type(stage).always
            # Any failed ancestor blocks a stage, even behind an always-run teardown that succeeded.
            ancestors = self.spec.graph.ancestors(name)
            failed_needs = [d for d in order if d in ancestors and d in blocked]
            reason = None
            if self.summary.interrupted and not always:
                reason = "not run: interrupted"
            elif failed_needs and not always:
                reason = f"not run: {failed_needs[0]} did not succeed"
            elif not self.single and not branch_matches(stage.branches, branch):
                reason = f"branch filter {', '.join(stage.branches)} does not match {branch or 'a detached HEAD'}"
            upstream = self.upstream(stage)
            if reason is None and always and not any(upstream.get(r) for r in stage.references().values()):
                self.finish(name, "skipped", "nothing to do: nothing was created")
                continue
            if reason is not None:
                self.finish(name, "skipped", reason)
                blocked.add(name)
                continue
            try:
                status = self.run_one(stage, upstream)
            except KeyboardInterrupt:
                self.summary.interrupted = True
                status = "interrupted"
            if status not in OK_STATUSES:
                blocked.add(name)

    def upstream(self, stage: Stage) -> dict[str, dict[str, str]]:
        """Outputs of every ancestor; an always-stage also sees what failed stages left behind."""
        ancestors = self.spec.graph.ancestors(stage.name)
        always = type(stage).always
        return {
            name: dict(result.outputs)
            for name, result in self.manifest.stages.items()
            if name in ancestors and (result.status in OK_STATUSES or (always and result.outputs))
        }

    def run_one(self, stage: Stage, upstream: dict[str, dict[str, str]]) -> str:
        name = stage.name
        result = self.manifest.stages[name]
        result.started_at = now_iso()
        masker = Masker()
        try:
            result.key = self.runner.key(stage, self.profile, upstream)
            if not self.options.force:
                record = self.runner._is_current(
                    stage, self.profile, result.key, self.options, self.selected, self.manifest.outputs()
                )
                if record is not None:
                    result.outputs = dict(record.outputs)
                    self.finish(name, "up-to-date", f"up to date (from run {record.run_id})")
                    return "up-to-date"
            env = self.spec.environment_of(stage)
            secrets = resolve([*stage.secrets, *(env.secrets if env else ())])
            masker.add(secrets.values())
            approval = self.spec.approval_of(stage)
            if approval is not None:
                self.runner._gate(stage, approval, self.options)
        except PipelineError as exc:
            self.fail(name, masker(str(exc)), exc.hint, "")
            return "failed"

        log_path = self.run_dir / "stages" / name / "output.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as log_file:

            def log(line: str) -> None:
                clean = masker(line)
                log_file.write(clean + "\n")
                log_file.flush()
                self.reporter.stage_line(name, clean)

            return self._attempts(stage, upstream, secrets, masker, log, log_path)

    def _attempts(
        self,
        stage: Stage,
        upstream: dict[str, dict[str, str]],
        secrets: dict[str, str],
        masker: Masker,
        log: Callable[[str], None],
        log_path: Path,
    ) -> str:
        name = stage.name
        result = self.manifest.stages[name]
        executor = self.runner.executor(stage)
        attempts = 1 + stage.retries
        for attempt in range(1, attempts + 1):
            result.attempts = attempt
            result.status = "running"
            self.save(name)
            self.event(name, "stage-started", attempt=attempt, key=result.key)
            self.reporter.stage_started(name, attempt)
            ctx = StageContext(
                pipeline=self.spec,
                stage=stage,
                root=self.runner.root,
                run_id=self.manifest.run_id,
                run_dir=self.run_dir,
                profile=self.profile,
                upstream=upstream,
                ledger=self.ledger,
                log=log,
                step=lambda text: self.reporter.stage_step(name, masker(text)),
                secrets=secrets,
                deadline=time.monotonic() + stage.timeout_minutes * 60,
                keep=self.options.keep,
                options={"force": "1"} if self.options.force else {},
            )
            checkpoint(f"stage:{name}:before")
            try:
                outputs = check_outputs(stage, executor.run(ctx))
            except KeyboardInterrupt:
                log("interrupted: cleaning up")
                _cleanup_after_interrupt(executor, ctx, log)
                result.outputs = dict(ctx.partial_outputs)
                self.finish(name, "interrupted", "interrupted (Ctrl-C)")
                raise
            except BadInputError as exc:
                self.fail(name, masker(str(exc)), exc.hint, "", ctx)
                return "failed"
            except PipelineError as exc:
                tail = masker(getattr(exc, "log_tail", "") or getattr(exc, "tail", ""))
                log(masker(f"error: {exc}"))
                if attempt < attempts:
                    self.reporter.notice(f"{name}: attempt {attempt} of {attempts} failed; retrying")
                    self.event(name, "stage-retry", attempt=attempt, message=masker(str(exc)))
                    continue
                self.fail(name, masker(str(exc)), exc.hint, tail, ctx)
                return "failed"
            except Exception as exc:  # a bug in an executor: keep the traceback, still run the teardown
                trace = masker(traceback.format_exc())
                for line in trace.splitlines():
                    log(line)
                message = masker(f"internal error: {type(exc).__name__}: {exc}")
                self.fail(name, message, f"this is a bug in pipeline; the traceback is in {log_path}", trace, ctx)
                return "failed"
            result.outputs = {k: masker(str(v)) for k, v in outputs.items()}
            result.message = "; ".join(masker(n) for n in ctx.notes)
            self.finish(name, "succeeded", result.message)
            record = StageRecord(
                key=result.key, outputs=result.outputs, run_id=self.manifest.run_id, finished_at=now_iso()
            )
            self.ledger.save_stage_record(self.spec.name, self.profile, name, record)
            checkpoint(f"stage:{name}:after")
            return "succeeded"
        return "failed"  # pragma: no cover - the loop always returns

    # --- a run that died ---
    def recover(self, run_id: str, holder: Mapping[str, Any], envs: set[str]) -> None:
        """Finish the records of a run that died holding our locks (SIGKILL, a lost machine): its
        running stage becomes `interrupted`, its pending ones `skipped`; then its always-run stages
        (teardown) that never ran on the environments we now hold run on its behalf, so what it
        left (a test stack) is gone before this run creates its own."""
        path = Path(str(holder["manifest"])) if holder.get("manifest") else self.ledger.manifest_path(run_id)
        try:
            dead = Manifest.load(path)
        except PipelineError as exc:
            self.reporter.notice(
                f"run {run_id} died; its manifest cannot be read ({exc}): its records stay as they are"
            )
            return
        if dead is None or dead.pipeline != self.spec.name or dead.run_id != run_id:
            return
        before = {name: result.status for name, result in dead.stages.items()}
        pid = holder.get("pid", "?")
        for result in dead.stages.values():
            if result.status == "running":
                result.status = "interrupted"
                result.message = f"the run died here (pid {pid}); run {self.manifest.run_id} took over its lock"
                result.finished_at = result.finished_at or now_iso()
            elif result.status == "pending":
                result.status = "skipped"
                result.message = "not run: the run died before this stage"
        changed = [n for n, status in before.items() if dead.stages[n].status != status]
        _save_stages(dead, path, changed)
        self.event(None, "run-died", dead_run=run_id, pid=pid, stages=changed)
        if changed:
            self.reporter.notice(f"run {run_id} died (pid {pid}); its unfinished stages are marked so")
        for stage in self.spec.ordered():
            name = stage.name
            if not type(stage).always or before.get(name) not in ("pending", "running"):
                continue
            env = self.spec.environment_of(stage)
            if (env.name if env else BUILD_LOCK) not in envs:
                continue
            started = [
                ref
                for ref in stage.references().values()
                if before.get(ref) not in (None, "pending", "skipped")
                or (ref in dead.stages and dead.stages[ref].outputs)
            ]
            if started:
                self._finish_for(dead, path, stage, run_id)

    def _finish_for(self, dead: Manifest, path: Path, stage: Stage, run_id: str) -> None:
        """Run an always-run stage of a dead run with that run's outputs, recording it there."""
        name = stage.name
        profile: Profile = "aws" if dead.profile == "aws" else "local"
        ancestors = self.spec.graph.ancestors(name)
        upstream = {n: dict(r.outputs) for n, r in dead.stages.items() if n in ancestors and r.outputs}
        run_dir = self.ledger.run_dir(run_id)
        log_path = run_dir / "stages" / name / "output.log"
        masker = Masker()
        self.reporter.notice(f"finishing run {run_id}: {name} never ran there")
        result = dead.stages[name]
        try:
            env = self.spec.environment_of(stage)
            secrets = resolve([*stage.secrets, *(env.secrets if env else ())])
            masker.add(secrets.values())
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("a") as log_file:

                def log(line: str) -> None:
                    log_file.write(masker(line) + "\n")
                    log_file.flush()

                log(f"run {self.manifest.run_id} runs this stage: run {run_id} died before it")
                ctx = StageContext(
                    pipeline=self.spec,
                    stage=stage,
                    root=self.runner.root,
                    run_id=run_id,
                    run_dir=run_dir,
                    profile=profile,
                    upstream=upstream,
                    ledger=self.ledger,
                    log=log,
                    step=lambda text: None,
                    secrets=secrets,
                    deadline=time.monotonic() + stage.timeout_minutes * 60,
                )
                outputs = check_outputs(stage, self.runner.make_executor(stage).run(ctx))
        except PipelineError as exc:
            self.reporter.notice(f"{name} of run {run_id} failed ({masker(str(exc))}); this run's {name} tries again")
            self.event(name, "recovery-failed", dead_run=run_id, message=masker(str(exc)))
            return
        except Exception as exc:  # a bug in an executor: this run's own teardown still runs
            self.reporter.notice(f"{name} of run {run_id} failed: internal error: {type(exc).__name__}: {exc}")
            return
        result.status = "succeeded"
        result.outputs = {k: masker(str(v)) for k, v in outputs.items()}
        result.message = f"run by run {self.manifest.run_id} after this run died"
        result.finished_at = now_iso()
        _save_stages(dead, path, [name])
        key = self.runner.key(stage, profile, upstream)
        record = StageRecord(key=key, outputs=result.outputs, run_id=run_id, finished_at=now_iso())
        self.ledger.save_stage_record(self.spec.name, profile, name, record)
        self.event(name, "recovered", dead_run=run_id, outputs=result.outputs)

    # --- recording ---
    def fail(self, name: str, message: str, hint: str | None, tail: str, ctx: StageContext | None = None) -> None:
        result = self.manifest.stages[name]
        if ctx is not None:
            result.outputs = dict(ctx.partial_outputs)
        self.finish(name, "failed", message if not hint else f"{message}\nhint: {hint}", tail)

    def finish(self, name: str, status: str, message: str, tail: str = "") -> None:
        result = self.manifest.stages[name]
        result.status = status
        result.message = message
        result.started_at = result.started_at or now_iso()
        result.finished_at = now_iso()
        self.save(name)
        self.event(name, f"stage-{status}", message=message, outputs=result.outputs)
        self.reporter.stage_finished(name, result, tail)

    def save(self, stage: str | None) -> None:
        if self.manifest_path.suffix == ".json":
            self.manifest.save(self.manifest_path)
        elif stage is not None:
            self.manifest.save(self.manifest_path, stage=stage)

    def event(self, stage: str | None, event: str, **detail: Any) -> None:
        self.ledger.append_event(
            {"pipeline": self.spec.name, "run_id": self.manifest.run_id, "stage": stage, "event": event, **detail}
        )


def _save_stages(manifest: Manifest, path: Path, stages: list[str]) -> None:
    """Save a manifest file, or the given stages' files of a manifest folder."""
    if path.suffix == ".json":
        if stages:
            manifest.save(path)
        return
    for name in stages:
        manifest.save(path, stage=name)


def _cleanup_after_interrupt(executor: Executor[Any], ctx: StageContext, log: Callable[[str], None]) -> None:
    try:
        executor.interrupted(ctx)
    except KeyboardInterrupt:
        log("second interrupt: cleanup abandoned")
    except Exception as exc:  # best effort: the teardown stage still runs after this
        log(f"cleanup after interrupt failed: {exc}")


def current_branch(root: Path) -> str | None:
    """The checked-out branch (CI variables first, then git); None on a detached HEAD."""
    for var in ("PIPELINE_BRANCH", "GITHUB_REF_NAME", "BRANCH_NAME"):
        if os.environ.get(var):
            return os.environ[var]
    from pipeline.engines.process import run_quiet

    try:
        proc = run_quiet(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=root, timeout=10)
    except (OSError, TimeoutError):
        return None
    name = proc.stdout.strip()
    if proc.returncode != 0 or not name or name == "HEAD":
        return None
    return name
