"""Recovering a run that died (SIGKILL, a lost machine) while it held our locks: its unfinished
stages are marked so, and its always-run stages (teardown) that never ran run on its behalf, so
what it left (a test stack) is gone before this run creates its own."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.executors.base import check_outputs
from pipeline.ledger import Manifest, StageRecord, now_iso
from pipeline.model import Profile, Stage
from pipeline.run.apply import RunInProgress, save_stages
from pipeline.run.stage_io import resolve_secrets, stage_context, stage_log
from pipeline.secrets import Masker

BUILD_LOCK = "build"
"""The lock of stages that act on no environment."""


def recover(run: RunInProgress, run_id: str, holder: Mapping[str, Any], envs: set[str]) -> None:
    """Finish the records of run `run_id`, which died holding the locks of `envs` that `run` took
    over; then run its pending always-run stages on those environments."""
    ledger, spec = run.ledger, run.spec
    path = Path(str(holder["manifest"])) if holder.get("manifest") else ledger.manifest_path(run_id)
    try:
        dead = Manifest.load(path)
    except PipelineError as exc:
        run.reporter.notice(f"run {run_id} died; its manifest cannot be read ({exc}): its records stay as they are")
        return
    if dead is None or dead.pipeline != spec.name or dead.run_id != run_id:
        return
    before = {name: result.status for name, result in dead.stages.items()}
    pid = holder.get("pid", "?")
    for result in dead.stages.values():
        if result.status == "running":
            result.status = "interrupted"
            result.message = f"the run died here (pid {pid}); run {run.manifest.run_id} took over its lock"
            result.finished_at = result.finished_at or now_iso()
        elif result.status == "pending":
            result.status = "skipped"
            result.message = "not run: the run died before this stage"
    changed = [n for n, status in before.items() if dead.stages[n].status != status]
    save_stages(dead, path, changed)
    run.event(None, "run-died", dead_run=run_id, pid=pid, stages=changed)
    if changed:
        run.reporter.notice(f"run {run_id} died (pid {pid}); its unfinished stages are marked so")
    for stage in spec.ordered():
        if not type(stage).always or before.get(stage.name) not in ("pending", "running"):
            continue
        env = spec.environment_of(stage)
        if (env.name if env else BUILD_LOCK) not in envs:
            continue
        started = [
            ref
            for ref in stage.references().values()
            if before.get(ref) not in (None, "pending", "skipped") or (ref in dead.stages and dead.stages[ref].outputs)
        ]
        if started:
            _finish_for(run, dead, path, stage, run_id)


def _finish_for(run: RunInProgress, dead: Manifest, path: Path, stage: Stage, run_id: str) -> None:
    """Run an always-run stage of a dead run with that run's outputs, recording it there."""
    spec, ledger = run.spec, run.ledger
    name = stage.name
    profile: Profile = "aws" if dead.profile == "aws" else "local"
    ancestors = spec.graph.ancestors(name)
    upstream = {n: dict(r.outputs) for n, r in dead.stages.items() if n in ancestors and r.outputs}
    run_dir = ledger.run_dir(run_id)
    masker = Masker()
    run.reporter.notice(f"finishing run {run_id}: {name} never ran there")
    result = dead.stages[name]
    try:
        secrets = resolve_secrets(spec, stage)
        masker.add(secrets.values())
        with stage_log(run_dir / "stages" / name / "output.log", masker) as log:
            log(f"run {run.manifest.run_id} runs this stage: run {run_id} died before it")
            ctx = stage_context(
                spec=spec,
                stage=stage,
                root=run.root,
                run_id=run_id,
                run_dir=run_dir,
                profile=profile,
                upstream=upstream,
                ledger=ledger,
                engines=run.engines,
                log=log,
                secrets=secrets,
            )
            outputs = check_outputs(stage, run.planner.make_executor(stage).run(ctx))
    except PipelineError as exc:
        run.reporter.notice(f"{name} of run {run_id} failed ({masker(str(exc))}); this run's {name} tries again")
        run.event(name, "recovery-failed", dead_run=run_id, message=masker(str(exc)))
        return
    except Exception as exc:  # a bug in an executor: this run's own teardown still runs
        run.reporter.notice(f"{name} of run {run_id} failed: internal error: {type(exc).__name__}: {exc}")
        return
    result.status = "succeeded"
    result.outputs = {k: masker(str(v)) for k, v in outputs.items()}
    result.message = f"run by run {run.manifest.run_id} after this run died"
    result.finished_at = now_iso()
    save_stages(dead, path, [name])
    key = run.planner.key(stage, profile, upstream)
    record = StageRecord(key=key, outputs=result.outputs, run_id=run_id, finished_at=now_iso())
    ledger.save_stage_record(spec.name, profile, name, record)
    run.event(name, "recovered", dead_run=run_id, outputs=result.outputs)
