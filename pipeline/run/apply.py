"""Applying a plan: the stages of one run in DAG order, each recorded as it goes (manifest, events,
ledger); a failure skips what depends on it while always-run stages (teardown) still run."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import interrupts
from pipeline.errors import ApprovalRequiredError, BadInputError, Interrupted, PipelineError, StageFailedError
from pipeline.executors.base import Executor, StageContext, check_outputs
from pipeline.faults import checkpoint
from pipeline.ledger import Ledger, Manifest, StageRecord, now_iso
from pipeline.model import Approval, Profile, Stage
from pipeline.profiles.base import Engines
from pipeline.run.plan import Planner
from pipeline.run.report import OK_STATUSES, Reporter, RunOptions, RunSummary
from pipeline.run.stage_io import resolve_secrets, stage_context, stage_log
from pipeline.secrets import Masker
from pipeline.spec import PipelineSpec, branch_matches

Approver = Callable[[Stage, Approval], bool]


class RunInProgress:
    """The state of one run while it executes: its manifest, where it is saved, what is blocked."""

    def __init__(
        self,
        *,
        spec: PipelineSpec,
        root: Path,
        planner: Planner,
        ledger: Ledger,
        engines: Engines,
        reporter: Reporter,
        approver: Approver | None,
        manifest: Manifest,
        manifest_path: Path,
        profile: Profile,
        options: RunOptions,
        selected: list[str],
        single: bool,
    ) -> None:
        self.spec = spec
        self.root = root
        self.planner = planner
        self.ledger = ledger
        self.engines = engines
        self.reporter = reporter
        self.approver = approver
        self.manifest = manifest
        self.manifest_path = manifest_path
        self.profile = profile
        self.options = options
        self.selected = selected
        self.single = single
        self.run_dir = ledger.run_dir(manifest.run_id)
        self.summary = RunSummary(spec.name, manifest.run_id, self.run_dir, profile)

    def loop(self, order: list[str]) -> None:
        """Every selected stage in order. A signal, whenever it arrives (in a stage, between two,
        while a record is written), stops every stage that has not started; always-run stages
        (teardown) still run, unless a second signal abandons them too."""
        blocked: set[str] = set()
        branch = None if self.single else current_branch(self.root)
        for name in order:
            if name not in self.selected:
                continue
            try:
                if self._step(name, order, blocked, branch) not in OK_STATUSES:
                    blocked.add(name)
            except KeyboardInterrupt:
                self._interrupted_at(name)
                blocked.add(name)

    def _step(self, name: str, order: list[str], blocked: set[str], branch: str | None) -> str:
        stage = self.spec.stage(name)
        always = type(stage).always
        if interrupts.requested() is not None:
            self.summary.interrupted = True
        # Any failed ancestor blocks a stage, even behind an always-run teardown that succeeded.
        ancestors = self.spec.graph.ancestors(name)
        failed_needs = [d for d in order if d in ancestors and d in blocked]
        reason = None
        if self.summary.interrupted and (not always or interrupts.count() > 1):
            reason = "not run: interrupted" if not always else "not run: interrupted twice (cleanup abandoned)"
        elif failed_needs and not always:
            reason = f"not run: {failed_needs[0]} did not succeed"
        elif not self.single and not branch_matches(stage.branches, branch):
            reason = f"branch filter {', '.join(stage.branches)} does not match {branch or 'a detached HEAD'}"
        upstream = self.upstream(stage)
        if reason is None and always and not any(upstream.get(r) for r in stage.references().values()):
            self.finish(name, "skipped", "nothing to do: nothing was created")
            return "skipped"
        if reason is not None:
            self.finish(name, "skipped", reason)
            return "skipped"
        status = self.run_one(stage, upstream)
        if interrupts.requested() is not None:
            # Received while the stage ran but swallowed there (a finalizer ate the KeyboardInterrupt):
            # the stage finished, nothing after it starts.
            self.summary.interrupted = True
        return status

    def _interrupted_at(self, name: str) -> None:
        """A KeyboardInterrupt reached the loop: the stage it hit is recorded as interrupted (if it
        had started) or skipped, and the run is interrupted from here on."""
        self.summary.interrupted = True
        result = self.manifest.stages[name]
        if result.status == "running":
            self.finish(name, "interrupted", "interrupted")
        elif result.status == "pending":
            self.finish(name, "skipped", "not run: interrupted")

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
            result.key = self.planner.key(stage, self.profile, upstream)
            if not self.options.force:
                record = self.planner.current_record(
                    stage, self.profile, result.key, self.options, self.selected, self.manifest.outputs()
                )
                if record is not None:
                    result.outputs = dict(record.outputs)
                    self.finish(name, "up-to-date", f"up to date (from run {record.run_id})")
                    return "up-to-date"
            secrets = resolve_secrets(self.spec, stage)
            masker.add(secrets.values())
            approval = self.spec.approval_of(stage)
            if approval is not None:
                self._gate(stage, approval)
        except PipelineError as exc:
            self.fail(name, masker(str(exc)), exc.hint, "")
            return "failed"
        log_path = self.run_dir / "stages" / name / "output.log"
        with stage_log(log_path, masker, lambda line: self.reporter.stage_line(name, line)) as log:
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
        executor = self.planner.executor(stage)
        attempts = 1 + stage.retries
        for attempt in range(1, attempts + 1):
            result.attempts = attempt
            result.status = "running"
            self.save(name)
            self.event(name, "stage-started", attempt=attempt, key=result.key)
            self.reporter.stage_started(name, attempt)
            ctx = stage_context(
                spec=self.spec,
                stage=stage,
                root=self.root,
                run_id=self.manifest.run_id,
                run_dir=self.run_dir,
                profile=self.profile,
                upstream=upstream,
                ledger=self.ledger,
                engines=self.engines,
                log=log,
                step=lambda text: self.reporter.stage_step(name, masker(text)),
                secrets=secrets,
                keep=self.options.keep,
                options={"force": "1"} if self.options.force else {},
            )
            checkpoint(f"stage:{name}:before")
            try:
                outputs = self._run_watched(executor, ctx)
            except (KeyboardInterrupt, Interrupted):
                interrupts.record_if_none()
                log(f"interrupted ({interrupts.name()}): cleaning up")
                cleanup_after_interrupt(executor, ctx, log)
                result.outputs = dict(ctx.partial_outputs)
                self.finish(name, "interrupted", f"interrupted ({interrupts.name()})")
                raise KeyboardInterrupt from None
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

    @staticmethod
    def _run_watched(executor: Executor[Any], ctx: StageContext) -> dict[str, str]:
        """Run the executor with its cancel event set by any signal that arrives meanwhile (child
        processes are stopped, waits end), and check what it returns."""
        interrupts.watch(ctx.cancel)
        try:
            return check_outputs(ctx.stage, executor.run(ctx))
        finally:
            interrupts.unwatch(ctx.cancel)

    def _gate(self, stage: Stage, approval: Approval) -> None:
        if self.options.yes:
            self.reporter.notice(f"{stage.name}: approval gate answered by --yes")
            return
        if not self.options.interactive or self.approver is None:
            raise ApprovalRequiredError(
                f"stage {stage.name!r} waits for approval ({approval.message!r}) and there is no terminal to ask",
                hint="re-run with --yes to approve, or run in a terminal to be asked",
            )
        if not self.approver(stage, approval):
            raise StageFailedError(stage.name, "approval declined", hint="re-run when you want to deploy")

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


def save_stages(manifest: Manifest, path: Path, stages: list[str]) -> None:
    """Save a manifest file, or the given stages' files of a manifest folder."""
    if path.suffix == ".json":
        if stages:
            manifest.save(path)
        return
    for name in stages:
        manifest.save(path, stage=name)


def cleanup_after_interrupt(executor: Executor[Any], ctx: StageContext, log: Callable[[str], None]) -> None:
    ctx.cancel.clear()  # the cleanup itself must be able to run child processes
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
