"""The target-neutral CI plan: what each stage's CI job must do, computed once from the spec.

Every renderer reads this plan, so the three targets agree on the facts (which environment a stage
acts on, which profile and secrets it gets, whether a gate precedes it, which branches it runs on,
what command it runs) and differ only in how their CI system expresses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from pipeline.model import Approval, AwsSettings, Environment, Secret, Stage
from pipeline.render.base import MANIFEST_DIR, RenderContext
from pipeline.spec import PipelineSpec, Trigger

SETUP_MINUTES = 10
"""Added to every CI timeout: checkout, Python set-up and installing the tool."""
RENDER_CHECK_MINUTES = 10
BUILD_ACCESS = "build"
"""Credentials name for aws-profile stages without an environment (Jenkins `aws-build`, TeamCity `AwsBuild`)."""
AWS_CREDENTIAL_VARIABLES = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"})


@dataclass(frozen=True)
class AwsAccess:
    """The aws profile's credentials, bound the target's own way (no values in the files)."""

    environment: str
    settings: AwsSettings


@dataclass(frozen=True)
class StagePlan:
    """One stage as CI sees it."""

    stage: Stage
    index: int
    """Position in the pipeline's deterministic order."""
    needs: tuple[str, ...]
    ancestors: tuple[str, ...]
    """Every stage that runs before this one, in pipeline order."""
    environment: Environment | None
    gate: Approval | None
    secrets: tuple[Secret, ...]
    """The stage's own secrets, then its environment's, each name once."""
    env: tuple[tuple[str, str], ...]
    """Plain environment variables, sorted by name."""
    branches: tuple[str, ...]
    """The stage's own branch filter (empty: every branch)."""
    branch_groups: tuple[tuple[str, ...], ...]
    """Every branch filter on the way to this stage (its own and its ancestors'): all must match.
    For targets that do not skip a job when an upstream job was skipped."""
    run_command: str
    aws: AwsAccess | None

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def kind(self) -> str:
        return self.stage.kind

    @property
    def always(self) -> bool:
        """Runs even when a stage before it failed (teardown)."""
        return type(self.stage).always

    @property
    def attempts(self) -> int:
        return 1 + self.stage.retries

    @property
    def timeout_minutes(self) -> int:
        """The CI job's limit: every attempt's own timeout, plus set-up. The runner enforces the
        stage's timeout per attempt; CI enforces this outer bound."""
        return self.stage.timeout_minutes * self.attempts + SETUP_MINUTES

    @property
    def lock(self) -> str | None:
        """The environment this stage must deploy to alone (persistent environments only)."""
        if self.environment is None or self.environment.ephemeral:
            return None
        return self.environment.name

    @property
    def deploys(self) -> bool:
        """Acts on a persistent environment or waits for a human: a 'deployment' to CI systems."""
        return self.lock is not None or self.gate is not None

    @property
    def description(self) -> str:
        return " ".join(self.stage.description.split())


@dataclass(frozen=True)
class CiPlan:
    spec: PipelineSpec
    context: RenderContext
    stages: tuple[StagePlan, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def trigger(self) -> Trigger:
        return self.spec.trigger

    @property
    def python(self) -> str:
        return self.spec.python

    @property
    def install(self) -> str:
        return self.spec.install

    @cached_property
    def by_name(self) -> dict[str, StagePlan]:
        return {s.name: s for s in self.stages}

    @cached_property
    def dependents(self) -> dict[str, tuple[str, ...]]:
        result: dict[str, list[str]] = {s.name: [] for s in self.stages}
        for plan in self.stages:
            for need in plan.needs:
                result[need].append(plan.name)
        return {k: tuple(v) for k, v in result.items()}

    @property
    def sinks(self) -> tuple[str, ...]:
        """Stages nothing depends on (the ends of the chain)."""
        return tuple(s.name for s in self.stages if not self.dependents[s.name])

    @property
    def gated(self) -> tuple[StagePlan, ...]:
        return tuple(s for s in self.stages if s.gate is not None)

    @property
    def locks(self) -> tuple[str, ...]:
        """Persistent environments some stage deploys to, in declaration order."""
        names = {s.lock for s in self.stages if s.lock}
        return tuple(e.name for e in self.spec.environments if e.name in names)

    def guard_needs(self, plan: StagePlan) -> tuple[str, ...]:
        """What a stage behind an always-run stage must also wait for, so that it is skipped when
        anything before the always-run stage failed: the always-run stage's own needs (recursively)."""
        found: list[str] = []
        pending = [n for n in plan.needs if self.by_name[n].always]
        seen: set[str] = set()
        while pending:
            name = pending.pop(0)
            if name in seen:
                continue
            seen.add(name)
            for need in self.by_name[name].needs:
                if self.by_name[need].always:
                    pending.append(need)
                elif need not in plan.needs and need not in found:
                    found.append(need)
        order = {s.name: s.index for s in self.stages}
        return tuple(sorted(found, key=order.__getitem__))


def build_plan(spec: PipelineSpec, context: RenderContext) -> CiPlan:
    """One pass in dependency order; ancestors and branch filters accumulate from each stage's needs."""
    by_name = {s.name: s for s in spec.stages}
    order = spec.graph.order()
    position = {name: i for i, name in enumerate(order)}
    first_declared: dict[tuple[str, ...], int] = {}
    for name in order:
        first_declared.setdefault(tuple(by_name[name].branches), position[name])
    ancestors_of: dict[str, set[str]] = {}
    groups_of: dict[str, tuple[tuple[str, ...], ...]] = {}
    plans: list[StagePlan] = []
    for index, name in enumerate(order):
        stage = by_name[name]
        ancestors: set[str] = set()
        groups: list[tuple[str, ...]] = []
        for need in sorted(stage.needs, key=position.__getitem__):
            ancestors.add(need)
            ancestors |= ancestors_of[need]
            groups += [g for g in groups_of[need] if g not in groups]
        if stage.branches and stage.branches not in groups:
            groups.append(tuple(stage.branches))
        ancestors_of[name] = ancestors
        groups_of[name] = tuple(sorted(groups, key=first_declared.__getitem__))
        env = spec.environment_of(stage)
        secrets = _merge_secrets(stage.secrets, env.secrets if env else ())
        plans.append(
            StagePlan(
                stage=stage,
                index=index,
                needs=tuple(stage.needs),
                ancestors=tuple(sorted(ancestors, key=position.__getitem__)),
                environment=env,
                gate=spec.approval_of(stage),
                secrets=secrets,
                env=tuple(sorted(stage.env.items())),
                branches=tuple(stage.branches),
                branch_groups=groups_of[name],
                run_command=_run_command(spec, stage, env, context),
                aws=_aws(spec, stage, env, secrets),
            )
        )
    return CiPlan(spec=spec, context=context, stages=tuple(plans))


def _merge_secrets(own: tuple[Secret, ...], inherited: tuple[Secret, ...]) -> tuple[Secret, ...]:
    seen = {s.name for s in own}
    return (*own, *(s for s in inherited if s.name not in seen))


def _run_command(spec: PipelineSpec, stage: Stage, env: Environment | None, context: RenderContext) -> str:
    parts = ["pipeline", "run", "stage", stage.name, "--manifest", MANIFEST_DIR]
    if _uses_profile(stage):
        parts += ["--profile", spec.profile_of(stage)]
    if spec.approval_of(stage) is not None:
        parts.append("--yes")  # the CI gate has already been passed when the job runs
    return " ".join(parts) + context.file_args


def _uses_profile(stage: Stage) -> bool:
    """Kinds that drive Docker or AWS, and any stage acting on an environment (a deploy script)."""
    return type(stage).uses_profile or stage.environment_name() is not None


def _aws(spec: PipelineSpec, stage: Stage, env: Environment | None, secrets: tuple[Secret, ...]) -> AwsAccess | None:
    if not _uses_profile(stage) or spec.profile_of(stage) != "aws":
        return None
    if AWS_CREDENTIAL_VARIABLES & {s.name for s in secrets}:
        return None  # the definition binds AWS credentials itself, as plain secrets
    if env is not None:
        return AwsAccess(environment=env.name, settings=env.aws)
    # A stage without an environment (a bake) builds with the pipeline's build credentials.
    settings = getattr(stage, "aws", None)
    return AwsAccess(
        environment=BUILD_ACCESS, settings=settings if isinstance(settings, AwsSettings) else AwsSettings()
    )


def camel(name: str) -> str:
    """'update-stack' -> 'UpdateStack'; a part starting with a digit keeps a '_' before it ('ab-1' -> 'Ab_1')."""
    out = ""
    for part in name.split("-"):
        if out and part[:1].isdigit():
            out += "_"
        out += part[:1].upper() + part[1:]
    return out
