"""What the stack stages share: engines per environment, the rehearsal's stack and starting image,
verification that fails the stage, and cleanup when a run is interrupted.

Executors talk to the `StackEngine` protocol only (from the context's engines), so the local (Docker) and the
aws (CloudFormation) engines serve the same stages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

from pipeline.errors import StageFailedError
from pipeline.executors.base import Executor, PlanContext, StageContext
from pipeline.model import Environment, Stage, Verify

if TYPE_CHECKING:
    from pipeline.engines.deploy_report import DeployReport
    from pipeline.engines.stack import OnEvent, StackEngine, StackState, VerifyReport
    from pipeline.ledger import ReleaseHistory, ReleaseStore
    from pipeline.spec import PipelineSpec
    from pipeline.strategy import Health, Strategy

S = TypeVar("S", bound=Stage)


def engine(ctx: PlanContext | StageContext, env: Environment) -> StackEngine:
    """The environment's engine on the run's profile. The aws engine reads credentials, region and
    AWS_ENDPOINT_URL from the process environment, overridden by the stage's `env` and, while the
    stage runs, its (and its environment's) secrets."""
    return ctx.engines.stack_engine(ctx.pipeline, env, ctx.profile, ctx.root, environ=stage_environ(ctx))


def stage_environ(ctx: PlanContext | StageContext) -> dict[str, str]:
    """The process environment, then the stage's plain `env`, then its resolved secrets."""
    secrets = ctx.secrets if isinstance(ctx, StageContext) else {}
    return {**os.environ, **ctx.stage.env, **secrets}


def check_template(ctx: PlanContext, env: Environment) -> None:
    """Preflight: the environment's template is one its engine can run (no side effect)."""
    engine(ctx, env).check_template()


def check_strategy(ctx: PlanContext, env: Environment, strategy: Strategy, health: Health) -> None:
    """Preflight: the environment's engine on this profile carries out `strategy` (BadInputError,
    exit 2, before anything changes, if not)."""
    engine(ctx, env).check_strategy(strategy, health)


def deploy_outputs(report: DeployReport | None, strategy: Strategy) -> dict[str, str]:
    """The deployment's key numbers as stage outputs: `strategy`, `failed_requests` (answers the
    balancer failed while the stack changed; empty when the engine cannot see them), `p99_ms`
    (during the change), and for a cutover `downtime_seconds`; after a breach `rolled_back`,
    `time_to_detect` and `time_to_restore`."""
    if report is None:
        return {"strategy": strategy.kind, "failed_requests": "", "p99_ms": ""}
    outputs = {
        "strategy": report.strategy,
        "failed_requests": "" if report.failed_requests is None else str(report.failed_requests),
        "p99_ms": "" if report.p99_ms is None else f"{report.p99_ms:.1f}",
    }
    if report.downtime_seconds is not None:
        outputs["downtime_seconds"] = f"{report.downtime_seconds:.2f}"
    if report.rolled_back:
        outputs["rolled_back"] = "true"
        if report.time_to_detect is not None:
            outputs["time_to_detect"] = f"{report.time_to_detect:.2f}"
        if report.time_to_restore is not None:
            outputs["time_to_restore"] = f"{report.time_to_restore:.2f}"
    return outputs


def note_deploy(ctx: StageContext, report: DeployReport | None, what: str) -> None:
    """The deployment's report in one line of the run report (nothing when the engine gave none)."""
    if report is not None and report.strategy not in ("none", "create"):
        ctx.notes.append(f"{what}: {report.summary()}")


def engine_ready(ctx: PlanContext, env: Environment) -> None:
    """Before a run: the environment's engine answers (local: the Docker engine is reachable; aws:
    the CloudFormation endpoint and the credentials work). A missing key, a stopped emulator or a
    stopped Docker engine stops the run before the bake spends minutes (ToolMissingError naming the
    fix, or StackOperationError for refused credentials), even for `--only test-stack`."""
    engine(ctx, env).ready(env.stack_name(ctx.pipeline.name))


def events(ctx: StageContext) -> OnEvent:
    """Engine progress goes to the stage's log (the live view shows its last line)."""

    def on_event(text: str) -> None:
        ctx.log(text)

    return on_event


def rehearsal_env(spec: PipelineSpec, stage: Stage) -> Environment:
    env = spec.environment_of(stage)
    if env is None:  # pragma: no cover - validation guarantees it
        raise StageFailedError(stage.name, "acts on no environment")
    return env


def copied_environment(spec: PipelineSpec, stack_stage: str, env: Environment) -> Environment:
    """The environment whose stack the test stack of `stack_stage` copies (a TestStack's `like`;
    `env` itself otherwise): whose image parameter an update of the test stack carries over."""
    return spec.environment(getattr(spec.stage(stack_stage), "like", env.name))


def rehearsal_stack(spec: PipelineSpec, env: Environment, run_id: str) -> str:
    """A stack name unique per run: `<pipeline>-<environment>-<run id>`."""
    return f"{env.stack_name(spec.name)}-{run_id}".lower()


def release_store(ctx: PlanContext | StageContext, env: Environment) -> ReleaseStore | None:
    """Where `env`'s release history lives beyond this machine's ledger, on the run's profile."""
    return ctx.engines.release_store(ctx.pipeline, env, ctx.profile, ctx.root)


def history(ctx: PlanContext | StageContext, env: Environment) -> ReleaseHistory:
    """`env`'s releases: from its durable store when it answers, else from the ledger."""
    return ctx.ledger.history(ctx.pipeline.name, env.name, release_store(ctx, env))


def record_release(ctx: StageContext, env: Environment, image: str, status: str) -> None:
    """Record a release of `env` in the ledger and in its durable store."""
    ctx.ledger.record_release(ctx.pipeline.name, env.name, image, ctx.run_id, status, store=release_store(ctx, env))


def baseline(
    releases: ReleaseHistory, like: Environment, production: StackState, new_image: str | None
) -> tuple[str | None, str]:
    """The image a rehearsal starts from, and why: what `like` runs now.

    When `like` already runs the new image (it was promoted), the rehearsal still covers the step
    that release made: from the known-good image before it. None: nothing to start from (first
    release), so the rehearsal starts from the new image."""
    source = "the ledger" if releases.source == "ledger" else f"the {releases.source}"
    current = production.image if production.exists else None
    if production.exists and current is None:
        current = releases.live()
        if current is not None and current != new_image:
            return current, f"{like.name} is between images; {source} says {current} is live"
    if current is not None and current != new_image:
        return current, f"{like.name} runs {current}"
    if current is not None:
        earlier = next((i for i in releases.candidates() if i != new_image), None)
        if earlier is not None:
            return earlier, f"{like.name} already runs the new image; rehearsing from {earlier}, the release before it"
        return None, f"{like.name} already runs the new image and {source} knows no earlier one"
    return None, f"{like.name} has no stack yet"


def check_or_fail(
    ctx: StageContext, stack_engine: StackEngine, state: StackState, check: Verify, what: str
) -> VerifyReport:
    """Verify through the balancer; a failure fails the stage, naming the first bad answer."""
    ctx.step(f"verifying {what}")
    report = stack_engine.verify(state, check, on_event=ctx.log)
    note_checks(ctx, report, what)
    if not report.ok:
        raise StageFailedError(
            ctx.stage.name,
            f"{what} failed verification: {report.detail}",
            hint=f"see the stack at {state.url}" if state.url else None,
        )
    ctx.log(f"verified {what}: {report.detail}")
    return report


def note_checks(ctx: StageContext, report: VerifyReport, what: str) -> None:
    """Say in the run report which checks were emulated (an emulator's control plane) and which
    were real. Nothing is added when every check was real (the local profile, real AWS)."""
    if not report.emulated:
        return
    real = f"; real: {', '.join(report.real)}" if report.real else "; nothing was checked for real"
    ctx.notes.append(f"checks of {what}: emulated: {', '.join(report.emulated)}{real}")


def require_stack(ctx: StageContext, stack_engine: StackEngine, stack: str, producer: str) -> StackState:
    state = stack_engine.describe(stack)
    if not state.exists:
        raise StageFailedError(
            ctx.stage.name,
            f"the test stack {stack} does not exist (any more)",
            hint=f"re-run from the stage that creates it: pipeline run local --from {producer}",
        )
    return state


def stack_is(ctx: PlanContext, env: Environment, outputs: Mapping[str, str], image_key: str = "image") -> bool:
    """Whether the stack in `outputs` exists and runs the image recorded under `image_key`."""
    stack = outputs.get("stack")
    if not stack:
        return False
    state = engine(ctx, env).describe(stack)
    return state.exists and (image_key not in outputs or state.image == outputs[image_key])


class RehearsalExecutor(Executor[S]):
    """A stage acting on the ephemeral test stack: its result is intermediate (the stack is torn
    down at the end of every run), and an interrupt removes the stack unless --keep says not to."""

    ephemeral = True

    def preflight(self, ctx: PlanContext) -> None:
        check_template(ctx, rehearsal_env(ctx.pipeline, self.spec))

    def ready(self, ctx: PlanContext) -> None:
        engine_ready(ctx, rehearsal_env(ctx.pipeline, self.spec))

    def stack_name(self, ctx: StageContext) -> str | None:
        """The test stack this stage acts on (from its own partial outputs or its producer's)."""
        if ctx.partial_outputs.get("stack"):
            return ctx.partial_outputs["stack"]
        for ref in ctx.stage.references().values():
            stack = ctx.upstream.get(ref, {}).get("stack")
            if stack:
                return stack
        return None

    def interrupted(self, ctx: StageContext) -> None:
        stack = self.stack_name(ctx)
        if stack is None or ctx.keep:
            return
        ctx.log(f"interrupted: removing the test stack {stack}")
        engine(ctx, rehearsal_env(ctx.pipeline, ctx.stage)).delete(stack, on_event=ctx.log)


__all__ = [
    "RehearsalExecutor",
    "baseline",
    "check_or_fail",
    "check_strategy",
    "check_template",
    "deploy_outputs",
    "engine",
    "engine_ready",
    "events",
    "note_checks",
    "note_deploy",
    "rehearsal_env",
    "rehearsal_stack",
    "require_stack",
    "stack_is",
    "stage_environ",
]
