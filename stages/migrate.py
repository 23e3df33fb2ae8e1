"""Migrate: bring an environment's database schema forward with Alembic, one branch at a time.

Expand/contract (docs/schema.md): the `expand` branch only adds (tables, nullable columns,
backfills), so the release before keeps working on it; the `contract` branch drops and renames,
so it may run only once no replica of an older release runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Literal

from pipeline.errors import Problem
from pipeline.model import Name, Stage, StageOutputs
from pipeline.stages.promote import Promote
from pipeline.stages.simulated_rollback import SimulatedRollback
from pipeline.stages.update_stack import UpdateStack

if TYPE_CHECKING:
    from pipeline.model import Definition

Phase = Literal["expand", "contract"]
"""A Migrate stage's branch of the migrations: 'expand' (only adds) or 'contract' (drops and renames)."""
PHASES: tuple[Phase, ...] = ("expand", "contract")


class MigrateOutputs(StageOutputs):
    """What a migration writes: the stack, the branch, and the database's revisions before and after."""

    stack: str
    """The stack whose database was migrated."""
    phase: str
    """The branch it ran: `expand` or `contract`."""
    revision: str
    """The database's revisions after the stage (Alembic's version table), comma-separated."""
    previous_revision: str = ""
    """Its revisions before (empty: a database without a version table)."""
    applied: str = ""
    """The revisions this stage applied, in order (empty: it was already there)."""
    seconds: str = ""
    """How long the migration took."""


class Migrate(Stage):
    """Run one branch of the environment's Alembic migrations against its database.

    `phase="expand"` runs before the new release reaches the stack (the test stack's update, or
    promote); `phase="contract"` after the whole fleet runs the new release: the stage reads the
    stack's replicas and refuses, naming those on another image, with nothing changed. The
    migration SQL is linted before anything runs (an expand that drops or renames, or an
    operation that locks a table, is bad input: exit 2 with the file and line).

    No approval gate of its own: an expand is backward compatible by construction (and was
    rehearsed on the test stack), and a contract runs after the promote that was approved.

    Examples:
        Migrate(name="expand-test", stack=test_stack, phase="expand", image=bake)
        Migrate(name="contract", environment="production", phase="contract", image=bake)
    """

    kind: Literal["migrate"] = "migrate"
    phase: Phase
    """`expand` runs before the new release reaches the stack; `contract` once every replica runs it."""
    environment: Name | None = None
    """The persistent environment whose database to migrate (or `stack` for the test stack)."""
    stack: Name | None = None
    """The TestStack stage whose (per-run) stack to migrate; its environment follows."""
    image: Name
    """The Bake stage of the release: a contract runs only while every replica runs its image."""

    executor: ClassVar[str] = "pipeline.executors.migrate:MigrateExecutor"
    extras: ClassVar[tuple[str, ...]] = ("schema",)
    outputs: ClassVar[type[StageOutputs]] = MigrateOutputs
    uses_profile: ClassVar[bool] = True
    refers_to: ClassVar[Mapping[str, tuple[str, ...]]] = {"stack": ("test-stack",), "image": ("bake",)}
    follows_environment_of: ClassVar[str | None] = "stack"

    def references(self) -> Mapping[str, str]:
        return {field: value for field in self.refers_to if (value := getattr(self, field)) is not None}

    def environment_name(self) -> str | None:
        return self.environment

    def check(self, spec: Definition, where: str) -> list[Problem]:
        """Exactly one of `environment` and `stack`; the environment (or the one the test stack
        copies) declares a database; a persistent environment is named directly; and the stage
        runs where its phase belongs among the stages that deploy its stack (`order_problems`)."""
        problems = self._target_problems(spec, where)
        return problems or self.order_problems(spec, where)

    def order_problems(self, spec: Definition, where: str) -> list[Problem]:
        """Expand/contract only work in one order, which the DAG (not the declaration) must hold.

        On the stack this stage migrates, an expand runs before the stage that deploys the new
        release there (the test stack's UpdateStack, the environment's Promote): that release may
        need the added shape. A contract runs after it: it drops what the previous release needs.
        On a test stack both run before the SimulatedRollback, so the rehearsal runs the previous
        image on the migrated schema (what production would run after an automatic rollback).
        """
        deployers = [s.name for s in spec.stages if self._deploys_my_stack(s)]
        rollbacks = [
            s.name for s in spec.stages if isinstance(s, SimulatedRollback) and self.stack and s.stack == self.stack
        ]
        mine = f"the stack of {self.stack!r}" if self.stack is not None else repr(self.environment)
        same = [
            s
            for s in spec.stages
            if isinstance(s, Migrate) and (s.stack, s.environment) == (self.stack, self.environment)
        ]
        expands = [s.name for s in same if s.phase == "expand"]
        contracts = [s.name for s in same if s.phase == "contract"]
        order = " >> ".join("/".join(group) for group in (expands, deployers, contracts, rollbacks) if group)
        graph = spec.graph
        before = graph.ancestors(self.name)
        problems: list[Problem] = []

        def wrong(message: str, fix: str) -> None:
            problems.append(
                Problem(f"{message}; the right order is {order} (write {fix})", f"{where}.needs", stage=self.name)
            )

        for deployer in deployers:
            if self.phase == "expand" and self.name not in graph.ancestors(deployer):
                wrong(
                    f"the expand must run before {deployer!r}, which deploys the new release to {mine}: "
                    "that release may need the added shape",
                    f"{self.name} >> {deployer}",
                )
            if self.phase == "contract" and deployer not in before:
                wrong(
                    f"the contract must run after {deployer!r}, which deploys the new release to {mine}: "
                    "it drops what the previous release needs, so it runs once the whole fleet runs the new one",
                    f"{deployer} >> {self.name}",
                )
        for rollback in rollbacks:
            if self.name not in graph.ancestors(rollback):
                wrong(
                    f"the {self.phase} must run before {rollback!r}, the rehearsed rollback: it runs the previous "
                    "image on the migrated schema, as production would after an automatic rollback",
                    f"{self.name} >> {rollback}",
                )
        return problems

    def _deploys_my_stack(self, stage: Stage) -> bool:
        if self.stack is not None:
            return isinstance(stage, UpdateStack) and stage.stack == self.stack
        return isinstance(stage, Promote) and stage.environment == self.environment

    def _target_problems(self, spec: Definition, where: str) -> list[Problem]:
        problems: list[Problem] = []
        if (self.environment is None) == (self.stack is None):
            problems.append(
                Problem(
                    "name either environment= (a persistent environment) or stack= (the TestStack stage whose "
                    "stack to migrate), not both or neither",
                    where,
                    stage=self.name,
                )
            )
            return problems
        envs = {e.name: e for e in spec.environments}
        env = envs.get(self.environment) if self.environment is not None else None
        if self.stack is not None:
            producer = next((s for s in spec.stages if s.name == self.stack), None)
            name = producer.environment_name() if producer is not None else None
            env = envs.get(name) if name is not None else None
        if env is None:
            return problems  # an unknown environment or stage is reported by the spec's own checks
        if env.ephemeral and self.environment is not None:
            problems.append(
                Problem(
                    f"environment {env.name!r} is ephemeral: its stack exists per run, so name the TestStack "
                    "stage instead (stack=...)",
                    f"{where}.environment",
                    stage=self.name,
                )
            )
        if spec.database_of(env) is None:
            problems.append(
                Problem(
                    f"environment {env.name!r} declares no database: set Environment(name={env.name!r}, "
                    "database=Database(migrations='migrations')) and an AWS::RDS::DBInstance in its template",
                    f"{where}.environment" if self.environment is not None else f"{where}.stack",
                    stage=self.name,
                )
            )
        return problems
