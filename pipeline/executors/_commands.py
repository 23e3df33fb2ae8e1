"""Running a stage's shell commands: shared by CommitTest and Shell."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence

from pipeline.engines.process import stream
from pipeline.errors import CommandFailedError, StageFailedError
from pipeline.executors.base import StageContext


def upstream_env(upstream: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """Upstream outputs as PIPELINE_<STAGE>_<KEY> variables (e.g. PIPELINE_BAKE_IMAGE)."""
    env = {}
    for stage, outputs in sorted(upstream.items()):
        for key, value in sorted(outputs.items()):
            env[f"PIPELINE_{stage}_{key}".upper().replace("-", "_")] = value
    return env


def run_commands(
    ctx: StageContext,
    commands: Sequence[str],
    *,
    workdir: str,
    extra_env: Mapping[str, str] | None = None,
    junit: str | None = None,
) -> dict[str, str]:
    """Run each command with `sh -c` in `workdir`; stop at the first failure.

    A JUnit XML file the commands write (`junit`) is kept in the run folder, pass or fail."""
    cwd = ctx.path(workdir)
    env = {"PIPELINE_RUN_ID": ctx.run_id, "PIPELINE_STAGE": ctx.stage.name, **ctx.stage.env}
    env.update(extra_env or {})
    env.update(ctx.secrets)
    outputs: dict[str, str] = {}
    try:
        for index, command in enumerate(commands, start=1):
            ctx.step(f"[{index}/{len(commands)}] {command}")
            ctx.log(f"$ {command}")
            stream(
                ["/bin/sh", "-c", command],
                cwd=cwd,
                env=env,
                on_line=ctx.log,
                deadline=ctx.deadline,
                cancel=ctx.cancel,
            )
    except CommandFailedError as exc:
        missing = exc.returncode == 127  # the shell's "command not found"
        raise StageFailedError(
            ctx.stage.name,
            f"`{command}` exited with status {exc.returncode}"
            + (" (a program it runs is not installed)" if missing else ""),
            hint=("install the missing program (see the output above), then " if missing else "")
            + f"reproduce with: cd {cwd} && {command}",
            log_tail=exc.tail,
        ) from exc
    finally:
        if junit:
            report = ctx.path(junit)
            if report.is_file():
                kept = ctx.stage_dir / "junit.xml"
                shutil.copyfile(report, kept)
                outputs["junit"] = str(kept.relative_to(ctx.run_dir))
    return outputs
