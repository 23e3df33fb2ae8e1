"""Runs a Promote: the baked image goes to the environment, verified, rolled back automatically on failure."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pipeline.errors import HealthBreachError, PipelineError, StackOperationError, StageFailedError
from pipeline.executors._rehearsal import (
    check_strategy,
    check_template,
    deploy_outputs,
    engine,
    engine_ready,
    events,
    history,
    note_checks,
    note_deploy,
    record_release,
)
from pipeline.executors.base import Executor, Outputs, PlanContext, StageContext
from pipeline.model import Environment
from pipeline.rollback import restore_check
from pipeline.stages.promote import Promote

if TYPE_CHECKING:
    from pipeline.engines.commit_info import CommitInfo
    from pipeline.engines.stack import StackEngine, StackState


class PromoteExecutor(Executor[Promote]):
    """Update the environment's stack to the baked image (creating it if absent) and verify; on a
    failed verification go back to the previous image, verify that, and fail the stage.
    Every outcome is recorded in the ledger's release history of the environment.

    On the aws profile the image is first committed into the environment's template (the
    `ImageId` Default, `pipeline.engines.git_promote`) and pushed; a failure afterwards goes back
    to the previous image and reverts that commit with a new commit. Whether git can take the
    commit (a branch, a clean tree, nothing foreign to push) is checked by `ready`, before any
    stage of the run starts, and again (by `record_image`) before the stack changes."""

    def _env(self, ctx: PlanContext | StageContext) -> Environment:
        return ctx.pipeline.environment(self.spec.environment)

    def _commits(self, ctx: PlanContext | StageContext, env: Environment) -> bool:
        return ctx.profile == "aws" and self.spec.commit and env.template is not None

    def preflight(self, ctx: PlanContext) -> None:
        check_template(ctx, self._env(ctx))
        check_strategy(ctx, self._env(ctx), self.spec.strategy, self.spec.health)

    def ready(self, ctx: PlanContext) -> None:
        """Before a run (not `validate`, where a work-in-progress tree is normal): on the aws profile
        git can take the promote commit (a branch, a clean tree, nothing foreign to push;
        GitStateError, exit 2) and the CloudFormation endpoint answers with working credentials.
        Nothing has changed yet when either is refused."""
        env = self._env(ctx)
        if self._commits(ctx, env) and env.template is not None:
            from pipeline.engines.git_promote import check_can_record

            check_can_record(
                ctx.root, ctx.root / env.template, env.image_parameter, pipeline=ctx.pipeline.name, push=self.spec.push
            )
        engine_ready(ctx, env)

    def is_live(self, ctx: PlanContext, outputs: Mapping[str, str]) -> bool:
        image = outputs.get("image")
        if not image:
            return False
        env = self._env(ctx)
        state = engine(ctx, env).describe(env.stack_name(ctx.pipeline.name))
        if state.exists and state.image == image and self._template_names(ctx, env, image):
            return True
        # Rolled back on purpose since (`pipeline rollback`): a re-run must not put it back by
        # itself. A new bake (another image) or --force promotes again.
        return history(ctx, env).withdrawn(image)

    def _template_names(self, ctx: PlanContext, env: Environment, image: str) -> bool:
        """aws: the committed template says `image` runs (git is part of the real world there)."""
        if not self._commits(ctx, env) or env.template is None:
            return True
        from pipeline.engines.git_promote import read_default

        try:
            text = (ctx.root / env.template).read_text(encoding="utf-8")
            return read_default(text, env.image_parameter, source=env.template) == image
        except (OSError, PipelineError):
            return False

    def run(self, ctx: StageContext) -> Outputs:
        env = self._env(ctx)
        stack = env.stack_name(ctx.pipeline.name)
        image = ctx.output_of(self.spec.image, "image")
        stack_engine = engine(ctx, env)
        before = stack_engine.describe(stack)
        previous = before.image if before.exists else None
        if before.exists and previous is None:
            previous = history(ctx, env).live()
        ctx.partial_outputs.update(image=image, previous_image=previous or "")
        if before.exists:
            ctx.log(f"{env.name} ({stack}) runs {previous or 'an unknown image'}; promoting {image}")
        else:
            ctx.log(f"{env.name} has no stack ({stack}): it is created from {env.template} with {image}")
            ctx.notes.append(f"{env.name} had no stack: created {stack} from {env.template}")
        parameters = stack_engine.carried_parameters(before, env.image_parameter)
        commit = self._record_in_template(ctx, env, stack_engine, stack, image, parameters)
        strategy = self.spec.strategy
        state = self._deploy(ctx, env, stack_engine, image, previous, parameters, commit)
        numbers = deploy_outputs(state.report, strategy)
        ctx.partial_outputs.update(numbers)
        note_deploy(ctx, state.report, f"{strategy.kind} update of {env.name}")
        ctx.step(f"verifying {env.name}")
        report = stack_engine.verify(state, self.spec.verify, on_event=ctx.log)
        note_checks(ctx, report, f"{env.name} ({image})")
        if report.ok:
            ctx.log(f"verified {env.name}: {report.detail}")
            if history(ctx, env).live() != image:
                self._record(ctx, env, image, "live")
            ctx.notes.append(f"{env.name} runs {image} at {state.url}")
            return {
                "image": image,
                "previous_image": previous or "",
                "commit": commit.sha if commit is not None else "",
                "url": state.url or "",
                **numbers,
            }
        self._record(ctx, env, image, "failed")
        try:
            message, hint = self._restore(ctx, env, stack_engine, state, image, previous, report.detail)
        finally:
            # Production first (time to restore), then the record in git; also when restoring failed.
            undone = self._undo_template(ctx, commit, f"{image} failed verification in {env.name}")
        raise StageFailedError(self.spec.name, message + undone, hint=hint)

    def _restore(
        self,
        ctx: StageContext,
        env: Environment,
        stack_engine: StackEngine,
        state: StackState,
        image: str,
        failed: str | None,
        detail: str,
    ) -> tuple[str, str]:
        """Automatic rollback after a failed verification: (message, hint) of the failed stage."""
        stack = state.name
        why = f"{image} failed verification in {env.name}: {detail}"
        if failed is None or failed == image:
            ctx.log(f"{why}; {env.name} ran nothing before, so the new stack is removed")
            stack_engine.delete(stack, on_event=events(ctx))
            return (
                f"{why}; there was no earlier image to go back to, so the new {env.name} stack was removed",
                "fix the release and run again",
            )
        ctx.log(f"{why}; rolling back to {failed}")
        ctx.step(f"rolling {stack} back to {failed}")
        started = time.monotonic()
        try:
            back = stack_engine.deploy(
                stack,
                failed,
                parameters=stack_engine.carried_parameters(state, env.image_parameter),
                on_event=events(ctx),
            )
            check = self.spec.rollback_verify or restore_check(ctx.pipeline, env)
            report = stack_engine.verify(back, check, on_event=ctx.log)
        except PipelineError as exc:
            return (
                f"{why}; the automatic rollback to {failed} failed too: {exc}",
                f"production needs attention: pipeline rollback {env.name} --to IMAGE",
            )
        seconds = time.monotonic() - started
        note_checks(ctx, report, f"{env.name} after the rollback to {failed}")
        if not report.ok:
            return (
                f"{why}; rolled back to {failed}, which does not verify either: {report.detail}",
                f"production needs attention: pipeline rollback {env.name} --to IMAGE",
            )
        self._record(ctx, env, failed, "live")
        return (
            f"{why}; rolled back automatically to {failed} in {seconds:.1f} s, which verifies ({report.detail})",
            f"{env.name} is back on {failed}; fix the release and run again",
        )

    def _deploy(
        self,
        ctx: StageContext,
        env: Environment,
        stack_engine: StackEngine,
        image: str,
        previous: str | None,
        parameters: Mapping[str, str] | None,
        commit: CommitInfo | None,
    ) -> StackState:
        """Update the stack with the stage's strategy; on failure (the engine went back by itself)
        record it, revert the promote commit and fail the stage."""
        stack = env.stack_name(ctx.pipeline.name)
        strategy = self.spec.strategy
        ctx.step(f"updating {stack} to {image} ({strategy.kind})")
        try:
            state = stack_engine.deploy(
                stack,
                image,
                parameters=parameters,
                on_event=events(ctx),
                strategy=strategy,
                health=self.spec.health,
            )
        except HealthBreachError as exc:  # the engine has rolled back already: check, then fail
            self._record(ctx, env, image, "failed")
            ctx.partial_outputs.update(deploy_outputs(exc.report, strategy))
            note_deploy(ctx, exc.report, f"{strategy.kind} update of {env.name}")
            try:
                message, hint = self._after_breach(ctx, env, stack_engine, stack, image, previous, exc)
            finally:
                undone = self._undo_template(ctx, commit, f"{image} broke the health thresholds in {env.name}")
            raise StageFailedError(self.spec.name, message + undone, hint=hint) from exc
        except StackOperationError as exc:  # e.g. new replicas never healthy (the engine went back)
            self._record(ctx, env, image, "failed")
            undone = self._undo_template(ctx, commit, f"the update of {stack} failed")
            raise StageFailedError(
                self.spec.name, f"the update of {env.name} to {image} failed: {exc}{undone}", hint=exc.hint
            ) from exc
        except PipelineError as exc:
            undone = self._undo_template(ctx, commit, f"the update of {stack} could not run")
            if undone:
                raise StageFailedError(self.spec.name, f"{exc}{undone}", hint=exc.hint) from exc
            raise
        return state

    def _after_breach(
        self,
        ctx: StageContext,
        env: Environment,
        stack_engine: StackEngine,
        stack: str,
        image: str,
        previous: str | None,
        breach: HealthBreachError,
    ) -> tuple[str, str]:
        """The engine rolled back after a health breach: verify the previous image now serves.
        Returns (message, hint) of the failed stage."""
        back = previous or (breach.report.previous_image if breach.report is not None else None) or "the old image"
        why = f"{image} broke the health thresholds in {env.name}: {breach}"
        ctx.step(f"verifying {env.name} on {back}")
        try:
            state = stack_engine.describe(stack)
            report = stack_engine.verify(
                state, self.spec.rollback_verify or restore_check(ctx.pipeline, env), on_event=ctx.log
            )
        except PipelineError as exc:
            return (
                f"{why}; checking {back} afterwards failed: {exc}",
                f"production needs attention: pipeline rollback {env.name} --to IMAGE",
            )
        note_checks(ctx, report, f"{env.name} after the rollback to {back}")
        if not report.ok:
            return (
                f"{why}; {back} does not verify either: {report.detail}",
                f"production needs attention: pipeline rollback {env.name} --to IMAGE",
            )
        if state.image is not None and state.image != image:
            self._record(ctx, env, state.image, "live")
        return (
            f"{why}; {back} verifies ({report.detail})",
            f"{env.name} is back on {back}; fix the release and run again",
        )

    def _record(self, ctx: StageContext, env: Environment, image: str, status: str) -> None:
        record_release(ctx, env, image, status)

    # --- the template in git (aws profile) ---------------------------------------------------------
    def _record_in_template(
        self,
        ctx: StageContext,
        env: Environment,
        stack_engine: StackEngine,
        stack: str,
        image: str,
        parameters: Mapping[str, str] | None,
    ) -> CommitInfo | None:
        """aws profile: commit `image` as the Default of the template's image parameter, so the
        template alone says what runs (pipeline.engines.git_promote); None when it already does.
        The local profile's production lives on this machine only: nothing is committed."""
        if not self._commits(ctx, env) or env.template is None:
            return None
        from pipeline.engines.git_promote import record_image

        # Bad input (a template or parameter CloudFormation rejects, an AMI that does not exist) is
        # found before the commit, so it never needs a revert. (The deploy checks it again.)
        ctx.step(f"checking the template and {image}")
        stack_engine.check_deploy(stack, image, parameters=parameters, on_event=events(ctx))

        ctx.step(f"recording {image} in {env.template}")
        info = record_image(
            ctx.root,
            ctx.path(env.template),
            env.image_parameter,
            image,
            pipeline=ctx.pipeline.name,
            run_id=ctx.run_id,
            environment=env.name,
            author=None,
            default_author=self.spec.author,
            push=self.spec.push,
            on_event=ctx.log,
        )
        if info is None:
            ctx.notes.append(f"{env.template} already names {image}: no commit")
        else:
            ctx.partial_outputs["commit"] = info.sha
            where = f", pushed to {info.pushed_to}" if info.pushed_to else " (not pushed: no remote)"
            ctx.notes.append(f"recorded {image} in {env.template}: commit {info.sha[:12]} on {info.branch}{where}")
        return info

    def _undo_template(self, ctx: StageContext, commit: CommitInfo | None, reason: str) -> str:
        """Revert the promote commit with a new commit (and push it). Returns '' when done or when
        there was nothing to revert, else what went wrong, to add to the stage's message."""
        if commit is None:
            return ""
        from pipeline.engines.git_promote import revert

        ctx.step(f"reverting {commit.sha[:12]}")
        try:
            info = revert(
                ctx.root,
                commit,
                pipeline=ctx.pipeline.name,
                run_id=ctx.run_id,
                reason=reason,
                default_author=self.spec.author,
                push=self.spec.push,
                on_event=ctx.log,
            )
        except PipelineError as exc:
            ctx.log(f"could not revert {commit.sha[:12]}: {exc}")
            return f"; reverting the promote commit {commit.sha[:12]} failed too ({exc}): git revert {commit.sha}"
        if info is not None:
            ctx.partial_outputs["revert"] = info.sha
            where = f", pushed to {info.pushed_to}" if info.pushed_to else ""
            ctx.notes.append(f"reverted the promote commit {commit.sha[:12]} with {info.sha[:12]}{where}")
            return f"; the promote commit {commit.sha[:12]} was reverted by {info.sha[:12]}"
        return ""
