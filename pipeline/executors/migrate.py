"""Runs a Migrate: one branch of the environment's Alembic migrations against its stack's database.

Before any run, the migration SQL is linted (MigrationLintError, exit 2, with the file and line).
A contract first reads the stack's fleet from its engine (not the ledger) and refuses, naming
every replica on another image than the release's, with nothing changed. Alembic's version table
is the truth: the stage applies what the database lacks, and nothing when it has it all.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError, SchemaError, StageFailedError
from pipeline.executors._rehearsal import engine, engine_ready, rehearsal_env
from pipeline.executors.base import Executor, Outputs, PlanContext, StageContext
from pipeline.hashing import digest, hash_paths
from pipeline.stages.migrate import Migrate

if TYPE_CHECKING:
    from pipeline.engines.stack import Replica, StackEngine
    from pipeline.model import Database, Environment
    from pipeline.schema.migrations import Migrations


class MigrateExecutor(Executor[Migrate]):
    """Lint, check the fleet (contract), then `alembic upgrade <phase>@head`."""

    @property
    def ephemeral(self) -> bool:  # type: ignore[override]
        """On the test stack the result is intermediate, like the stack itself."""
        return self.spec.stack is not None

    # --- what the stage acts on ---
    def _database(self, ctx: PlanContext | StageContext) -> tuple[Environment, Database]:
        env = rehearsal_env(ctx.pipeline, self.spec)
        database = ctx.pipeline.database_of(env)
        if database is None:  # pragma: no cover - the kind's check guarantees it
            raise StageFailedError(self.spec.name, f"environment {env.name!r} declares no database")
        return env, database

    def _migrations(self, ctx: PlanContext | StageContext) -> Migrations:
        from pipeline.schema.migrations import Migrations

        _, database = self._database(ctx)
        on_event = ctx.log if isinstance(ctx, StageContext) else (lambda text: None)
        return Migrations(ctx.root / database.migrations, stage=self.spec.name, on_event=on_event)

    def _stack(self, ctx: PlanContext | StageContext, outputs: Mapping[str, str] | None = None) -> str | None:
        if self.spec.stack is None:
            env, _ = self._database(ctx)
            return env.stack_name(ctx.pipeline.name)
        if outputs is not None and outputs.get("stack"):
            return outputs["stack"]
        return ctx.upstream.get(self.spec.stack, {}).get("stack")

    # --- plan ---
    def preflight(self, ctx: PlanContext) -> None:
        """The migrations are an Alembic folder whose SQL passes the lint; the template is one the
        engine can run. No database is touched."""
        from pipeline.schema.lint import check

        env, _ = self._database(ctx)
        engine(ctx, env).check_template()
        check(self._migrations(ctx), root=ctx.root)

    def ready(self, ctx: PlanContext) -> None:
        engine_ready(ctx, rehearsal_env(ctx.pipeline, self.spec))

    def inputs(self, ctx: PlanContext) -> Mapping[str, str]:
        # The migrations themselves: a new revision is a new result.
        _, database = self._database(ctx)
        return {"migrations": digest(hash_paths(ctx.root, [database.migrations]))}

    def is_live(self, ctx: PlanContext, outputs: Mapping[str, str]) -> bool:
        """The database is there and lacks nothing of the phase's branch (it may be further on)."""
        stack = self._stack(ctx, outputs)
        if not stack:
            return False
        env, _ = self._database(ctx)
        try:
            endpoint = engine(ctx, env).database(stack)
            if endpoint is None:
                return False
            return not self._migrations(ctx).pending(endpoint.url, self.spec.phase)
        except PipelineError:  # the database cannot be read now: the stage runs (and says why)
            return False

    # --- apply ---
    def run(self, ctx: StageContext) -> Outputs:
        env, _ = self._database(ctx)
        stack = self._stack(ctx)
        if not stack:
            raise StageFailedError(
                self.spec.name,
                f"needs the stack of {self.spec.stack!r}, which is not in the run manifest",
                hint=f"run from the stage that creates it: pipeline run local --from {self.spec.stack}",
            )
        ctx.partial_outputs["stack"] = stack
        stack_engine = engine(ctx, env)
        migrations = self._migrations(ctx)
        endpoint = stack_engine.database(stack)
        if endpoint is None and self.spec.phase == "expand" and self.spec.stack is None:
            ctx.step(f"making the database of {stack} (the stack does not exist yet)")
            endpoint = stack_engine.prepare_database(stack, on_event=ctx.log)
        if endpoint is None:
            raise StageFailedError(
                self.spec.name,
                f"stack {stack} has no database this machine can reach",
                hint="its template declares an AWS::RDS::DBInstance; on aws the stack must exist and its endpoint "
                "must be reachable from here (docs/schema.md)",
            )
        ctx.log(f"database of {stack}: {endpoint.where}")
        pending = migrations.pending(endpoint.url, self.spec.phase)
        if pending and self.spec.phase == "contract":
            self._check_fleet(ctx, stack_engine, stack)
        if pending:
            ctx.step(f"{self.spec.phase}: {len(pending)} revision(s) on {stack}")
            ctx.log(f"{self.spec.phase}: to apply: {', '.join(r.id for r in pending)}")
        started = time.monotonic()
        try:
            result = migrations.upgrade(endpoint.url, self.spec.phase)
        except SchemaError as exc:
            raise StageFailedError(self.spec.name, str(exc), hint=exc.hint) from exc
        seconds = time.monotonic() - started
        before = ", ".join(result.before) or "no revision"
        after = ", ".join(result.after) or "no revision"
        if result.applied:
            ctx.notes.append(
                f"{self.spec.phase} on {stack}: {before} -> {after} ({', '.join(result.applied)}) in {seconds:.2f} s"
            )
        else:
            ctx.notes.append(f"{self.spec.phase} on {stack}: already at {after}: nothing to apply")
        return {
            "stack": stack,
            "phase": self.spec.phase,
            "revision": ",".join(result.after),
            "previous_revision": ",".join(result.before),
            "applied": ",".join(result.applied),
            "seconds": f"{seconds:.2f}",
        }

    def _check_fleet(self, ctx: StageContext, stack_engine: StackEngine, stack: str) -> None:
        """A contract removes what older releases read: refuse unless every server of the stack,
        serving or kept warm, runs the release's image (read from the engine, not the ledger)."""
        image = ctx.output_of(self.spec.image, "image")
        ctx.step(f"checking that every replica of {stack} runs {image}")
        fleet = stack_engine.fleet(stack)
        older = older_replicas(fleet, image)
        if not fleet or older:
            names = ", ".join(f"{r.name} ({r.image}{'' if r.serving else ', kept warm'})" for r in older)
            what = f"{len(older)} of {len(fleet)} replicas run another image: {names}" if fleet else "no replica runs"
            raise StageFailedError(
                self.spec.name,
                f"contract refused on {stack}: {what}; the release that no longer needs the old schema is "
                f"{image}; nothing was changed",
                hint="promote the release everywhere first (a warm blue-green set counts: it can take traffic "
                "again), then run the contract: pipeline run local --only " + self.spec.name,
            )
        ctx.log(f"every replica of {stack} runs {image}: {', '.join(r.name for r in fleet)}")


def older_replicas(fleet: list[Replica], image: str) -> list[Replica]:
    """The servers of a fleet that run another image than `image`."""
    return [r for r in fleet if r.image != image]


__all__ = ["MigrateExecutor", "older_replicas"]
