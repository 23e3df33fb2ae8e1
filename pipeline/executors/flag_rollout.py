"""Runs a FlagRollout: the flag goes to each step's share of users, each step judged per variant
through the balancer; a breach (or an alert) puts it back to 0 % at once and fails the stage."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.engines.deploy_report import VersionStats
from pipeline.engines.http_check import judge
from pipeline.errors import BadInputError, StageFailedError
from pipeline.executors.base import Executor, Outputs, PlanContext, StageContext
from pipeline.stages.flag_rollout import FlagRollout

if TYPE_CHECKING:
    from pipeline.engines.docker_stack.engine import DockerStackEngine
    from pipeline.engines.docker_stack.variant_watch import VariantWatch
    from pipeline.flags.store import FlagStore

POLL = 0.25
BASELINE_MAX = 10.0
EXTEND_MIN = 10.0


class Breach(Exception):
    def __init__(self, step: int, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason


class FlagRolloutExecutor(Executor[FlagRollout]):
    """See pipeline/stages/flag_rollout.py. Local profile only (the kind's `cannot_run_on` says why):
    judged through the stack's nginx."""

    def _engine(self, ctx: PlanContext | StageContext) -> DockerStackEngine:
        from pipeline.engines.docker_stack.engine import DockerStackEngine

        env = ctx.pipeline.environment(self.spec.environment)
        engine = ctx.engines.stack_engine(ctx.pipeline, env, ctx.profile, ctx.root)
        if not isinstance(engine, DockerStackEngine):
            raise BadInputError(
                f"{self.spec.name}: a FlagRollout judges the variants through the local balancer's log; "
                f"the {ctx.profile} profile cannot yet",
                hint="run it on the local profile; on aws move the flag with `pipeline flag set` (docs/flags.md)",
            )
        return engine

    def preflight(self, ctx: PlanContext) -> None:
        env = ctx.pipeline.environment(self.spec.environment)
        if ctx.pipeline.template_of(env) is None:
            raise BadInputError(f"{self.spec.name}: environment {env.name!r} has no template, so no flag store")
        engine = self._engine(ctx)
        if engine.topology().flag_store is None:
            raise BadInputError(
                f"{self.spec.name}: the template of {env.name} declares no flag store "
                "(an AWS::ElastiCache::ReplicationGroup)",
                hint="add one (docs/flags.md shows the resource); without a store every flag is its default",
            )

    def _store(self, ctx: PlanContext | StageContext) -> FlagStore:
        from pipeline.flags.locate import flag_endpoint
        from pipeline.flags.store import FlagStore

        env = ctx.pipeline.environment(self.spec.environment)
        return FlagStore(flag_endpoint(ctx.pipeline, env, ctx.profile, ctx.root, engines=ctx.engines))

    def is_live(self, ctx: PlanContext, outputs: Mapping[str, str]) -> bool:
        """Up to date while the store still serves what the rollout left (nobody moved it since)."""
        from pipeline.errors import PipelineError

        try:
            state = self._store(ctx).get(self.spec.flag)
        except PipelineError:
            return False
        return (
            state is not None
            and state.value == self.spec.value
            and outputs.get("percent") == f"{state.percent:g}"
            and not outputs.get("rolled_back")
        )

    def run(self, ctx: StageContext) -> Outputs:
        from pipeline.engines.docker_stack.variant_watch import VariantWatch

        spec = self.spec
        env = ctx.pipeline.environment(spec.environment)
        stack = env.stack_name(ctx.pipeline.name)
        store = self._store(ctx)
        outputs: dict[str, str] = {"flag": spec.flag, "value": json.dumps(spec.value), "percent": ""}
        done: list[str] = []
        windows: list[tuple[float, float]] = []
        with VariantWatch(self._engine(ctx), stack, spec.flag, on_event=ctx.log) as watch:
            watch.start_probe(spec.path, spec.health.requests_per_second)
            store.begin_rollout(spec.flag)
            try:
                baseline = self._baseline(watch)
                ctx.log(f"baseline (variant off): {baseline.describe()}")
                for step in spec.steps:
                    ctx.check_cancelled()
                    self._change(ctx, store, step, f"rollout step {step}%")
                    ctx.step(f"{spec.flag} on for {step}% of users: observing")
                    begin = time.time()
                    try:
                        passed = self._window(ctx, watch, store, step, begin, baseline)
                    except Breach as breach:
                        windows.append((begin, time.time()))
                        done.append(f"{step}%: breach")
                        return self._switch_off(ctx, store, watch, breach, begin, outputs, done, windows)
                    windows.append((begin, time.time()))
                    done.append(f"{step}%: passed")
                    ctx.log(f"{step}%: healthy ({passed})")
            finally:
                store.end_rollout(spec.flag)
            watch.read()
            outputs.update(self._numbers(watch, windows), percent=f"{spec.steps[-1]:g}", steps="; ".join(done))
        ctx.notes.append(
            f"{spec.flag} rolled out to {spec.steps[-1]}% of {env.name}'s users in {len(spec.steps)} steps "
            f"(no deploy); on: {outputs['on_failed']} of {outputs['on_requests']} failed, p99 {outputs['on_p99_ms']} ms"
        )
        return outputs

    def _change(self, ctx: StageContext, store: FlagStore, percent: float, why: str) -> float:
        from pipeline.flags.changes import change_flag

        change = change_flag(
            ctx.pipeline, self.spec.environment, store, ctx.ledger, self.spec.flag, self.spec.value,
            percent=percent, why=f"{self.spec.name}: {why}",
        )  # fmt: skip
        ctx.log(
            f"{self.spec.flag} -> {change.after.describe()} ({change.replicas_acked} replicas in {change.seconds * 1000:.1f} ms)"
        )
        return change.seconds

    def _baseline(self, watch: VariantWatch) -> VersionStats:
        health = self.spec.health
        begin = time.time()
        deadline = time.monotonic() + BASELINE_MAX
        while time.monotonic() < deadline:
            time.sleep(POLL)
            watch.read()
            if watch.stats(begin, on=False).requests >= health.min_requests:
                break
        return watch.stats(begin, on=False)

    def _window(
        self, ctx: StageContext, watch: VariantWatch, store: FlagStore, step: int, begin: float, baseline: VersionStats
    ) -> str:
        health = self.spec.health
        end = begin + self.spec.observe_seconds
        give_up = end + max(EXTEND_MIN, self.spec.observe_seconds)
        while True:
            time.sleep(POLL)
            ctx.check_cancelled()
            watch.read()
            if store.alert() is not None:
                raise Breach(step, "an alert was raised (the alert route or `pipeline flag alert`)")
            now = time.time()
            on = watch.stats(begin, on=True)
            off = watch.stats(begin, on=False)
            old = off if off.requests >= health.min_requests else baseline
            verdict = judge(on, old, health, final=now >= end, exhausted=now >= give_up)
            if verdict.state == "pass":
                return verdict.numbers
            if verdict.state == "breach":
                raise Breach(step, verdict.reason)

    def _switch_off(
        self,
        ctx: StageContext,
        store: FlagStore,
        watch: VariantWatch,
        breach: Breach,
        begin: float,
        outputs: dict[str, str],
        done: list[str],
        windows: list[tuple[float, float]],
    ) -> Outputs:
        detected = time.time()
        ctx.log(f"health breach at {breach.step}%: {breach.reason}; switching {self.spec.flag} off")
        started = time.monotonic()
        self._change(ctx, store, 0, f"breach at {breach.step}%: {breach.reason}")
        restore = time.monotonic() - started
        watch.read()
        numbers = self._numbers(watch, windows)
        outputs.update(
            numbers,
            percent="0",
            steps="; ".join(done),
            rolled_back="true",
            breach=breach.reason,
            time_to_detect=f"{detected - begin:.2f}",
            time_to_restore=f"{restore:.3f}",
        )
        ctx.partial_outputs.update(outputs)
        message = (
            f"{self.spec.flag} broke the health thresholds at {breach.step}% of users: {breach.reason}; "
            f"switched off for everyone in {restore * 1000:.0f} ms (every replica of the store acknowledged), "
            f"detected {detected - begin:.1f} s into the step; variant on: {numbers['on_failed']} of "
            f"{numbers['on_requests']} requests failed; variant off: {numbers['off_failed']} of {numbers['off_requests']}"
        )
        ctx.notes.append(message)
        raise StageFailedError(self.spec.name, message, hint="fix the new code path, then roll the flag out again")

    def _numbers(self, watch: VariantWatch, windows: list[tuple[float, float]]) -> dict[str, str]:
        out: dict[str, Any] = {}
        for name, on in (("on", True), ("off", False)):
            stats = watch.stats_between(windows, on=on)
            out[f"{name}_requests"] = str(stats.requests)
            out[f"{name}_failed"] = str(stats.errors)
            out[f"{name}_p99_ms"] = f"{stats.p99_ms:.1f}"
        return out
