"""The target-neutral CI plan: what each stage's CI job must do, computed once from the spec.

Every renderer reads this plan, so the three targets agree on the facts (which environment a stage
acts on, which profile and secrets it gets, whether a gate precedes it, which branches it runs on,
what command it runs) and differ only in how their CI system expresses them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from pipeline.errors import UnsupportedFeatureError
from pipeline.graph import Graph
from pipeline.model import DEFAULT_BASE_IMAGE, Approval, AwsSettings, Environment, Secret, Stage
from pipeline.render.base import MANIFEST_DIR, RenderContext
from pipeline.spec import PipelineSpec, Trigger

SETUP_MINUTES = 10
"""Added to every CI timeout: checkout, Python set-up and installing the tool."""
STEP_SLACK_MINUTES = 5
"""Added to a stage's limit when it is one step of a rehearsal job: the runner's start-up and report
around its attempts (the job's SETUP_MINUTES covers checkout and install once)."""
REHEARSAL_PREFIX = "rehearsal-"
"""A rehearsal job is named `rehearsal-<test stack>` on every target that groups stages."""
LOCK_PREFIX = "lock-"
"""A job of consecutive stages on one persistent environment is named `lock-<environment>`."""
RENDER_CHECK_MINUTES = 10
PACKAGE = "pipeline-as-code"
"""The distribution CI installs."""
VENV_ROOT = ".pipeline/ci/venv"
"""Where jobs keep their virtualenvs, one per Python and tool version (inside the ledger folder,
which input hashing skips and `.pipeline/.gitignore` hides)."""
INSTALLED_MARKER = ".pipeline-installed"
VENV_MARKER = f'"$(cat "$venv/{INSTALLED_MARKER}" 2>/dev/null)"'
"""The path a venv at `$venv` records it was made at (empty when it has no marker)."""
BUILD_ACCESS = "build"
"""Credentials name for aws-profile stages without an environment (Jenkins `aws-build`, TeamCity `AwsBuild`)."""
GIT_PUSH_CREDENTIALS = "git-push"
"""What a pushing job's credentials are called on the server: the Jenkins credentials id (username and
token, bound with `gitUsernamePassword`) and the TeamCity uploaded SSH key (loaded by `sshAgent`)."""
AWS_CREDENTIAL_VARIABLES = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"})


@dataclass(frozen=True)
class AwsAccess:
    """The aws profile's credentials, bound the target's own way (no values in the files)."""

    environment: str
    settings: AwsSettings


@dataclass(frozen=True)
class AgentNeeds:
    """What a job needs from its CI agent, and the labels that choose such an agent.

    `labels` are the stage's own `agent=` when set (`override`), else the pipeline's `AgentLabels`
    for each need, in a fixed order: every, local, docker, packer, root."""

    docker: bool = False
    """Drives a Docker engine (the local profile's stack and image stages; a bake's image checks)."""
    packer: bool = False
    root: bool = False
    """May build its base image with debootstrap, which needs root: a bake whose base image no
    registry has and none is derived from (a `pipeline-*` name other than the default), on an
    agent that is not the local profile's persistent machine."""
    persistent: bool = False
    """The local profile: images and containers live on one Docker engine, so the job must run on
    the one persistent machine that holds them (never a fresh hosted VM)."""
    labels: tuple[str, ...] = ()
    override: bool = False
    base_image: str | None = None
    """With `root`: the base image debootstrap builds (`pipeline image base --tag NAME`)."""

    @staticmethod
    def union(needs: Sequence[AgentNeeds]) -> AgentNeeds:
        """One job running several stages (a group) needs what each of them needs."""
        labels = tuple(dict.fromkeys(label for n in needs for label in n.labels))
        images = [n.base_image for n in needs if n.base_image]
        return AgentNeeds(
            docker=any(n.docker for n in needs),
            packer=any(n.packer for n in needs),
            root=any(n.root for n in needs),
            persistent=any(n.persistent for n in needs),
            labels=labels,
            override=any(n.override for n in needs),
            base_image=images[0] if images else None,
        )


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
    """The stage's own secrets, then its environment's (`Environment.bound_secrets`: its alert token too), each name once."""
    env: tuple[tuple[str, str], ...]
    """Plain environment variables, sorted by name."""
    branches: tuple[str, ...]
    """The stage's own branch filter (empty: every branch)."""
    branch_groups: tuple[tuple[str, ...], ...]
    """Every branch filter on the way to this stage (its own and its ancestors'): all must match.
    For targets that do not skip a job when an upstream job was skipped."""
    run_command: str
    aws: AwsAccess | None
    pushes: bool = False
    """Commits into the repository and pushes (an aws-profile Promote recording its image in the
    template): the job needs a branch checked out and credentials that may push."""
    agent: AgentNeeds = field(default_factory=AgentNeeds)
    """What the job's agent must offer, and the labels that select such an agent."""
    on_pull_requests: bool = False
    """Runs for a pull request (when the trigger has them): a check (it neither acts on an environment,
    drives Docker or a cloud, nor receives secrets) after checks only. Nothing deploys from one."""

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
    def step_minutes(self) -> int:
        """The limit of this stage as one step of a rehearsal job: every attempt, plus slack."""
        return self.stage.timeout_minutes * self.attempts + STEP_SLACK_MINUTES

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


BranchGroups = tuple[tuple[str, ...], ...]
"""Branch filters that must all match (each one: any of its patterns)."""


@dataclass(frozen=True)
class StageGroup:
    """Stages that must run as one CI job: a rehearsal on the local profile, or consecutive stages
    acting on one persistent environment.

    A test stack on the local profile is containers on the agent's Docker engine, so the stack, every
    stage on a path from it to its teardown, and the teardown run as steps of one job, in pipeline
    order. Stages that act on one persistent environment one after the other (deploy, then smoke
    test) hold its lock together, so no other run deploys between them; a lock is per job on targets
    whose jobs each take their own (GitHub's concurrency groups, TeamCity's shared resources), so
    those stages are one job too. Groups that overlap (or would need each other) merge. Targets whose
    jobs each get a fresh agent (GitHub Actions, TeamCity) render a group as one job; Jenkins runs a
    teardown's protected stages on one agent and nests a lock's stages in one locked stage."""

    name: str
    """The job's name: `rehearsal-<test stack>` (the first stack in pipeline order), else `lock-<env>`,
    with `-2`, `-3`... only if a stage outside the group already has that name. Stable while the
    definition is."""
    stacks: tuple[str, ...]
    """The local test stacks the group's teardowns delete, in pipeline order (empty: a lock group)."""
    members: tuple[StagePlan, ...]
    """In pipeline order: the order the steps run in."""
    run_groups: tuple[BranchGroups, ...]
    """For each member, the branch filters its step runs under: its own `branch_groups`, except a
    teardown's, which are its stack's (it must run wherever the stack was created)."""
    needs: tuple[str, ...]
    """Stages outside the group that members need, in pipeline order."""
    ancestors: tuple[str, ...]
    """Stages outside the group that run before it, in pipeline order."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    @property
    def agent(self) -> AgentNeeds:
        """One job for all members: an agent that offers what each of them needs."""
        return AgentNeeds.union([m.agent for m in self.members])

    @property
    def teardowns(self) -> tuple[StagePlan, ...]:
        return tuple(m for m in self.members if m.always)

    @property
    def shared_groups(self) -> BranchGroups:
        """The branch filters every member's step runs under (the job's own condition)."""
        first, *rest = self.run_groups
        return tuple(g for g in first if all(g in other for other in rest))

    def branch_groups(self, member: str) -> BranchGroups:
        return self.run_groups[self.names.index(member)]

    @property
    def timeout_minutes(self) -> int:
        """The job's limit: each step's own limit, plus set-up once."""
        return SETUP_MINUTES + sum(m.step_minutes for m in self.members)

    @property
    def rehearsal(self) -> bool:
        return bool(self.stacks)

    @property
    def locks(self) -> tuple[str, ...]:
        """The persistent environments the group's stages act on, in order (its job holds their locks)."""
        return tuple(dict.fromkeys(m.lock for m in self.members if m.lock))

    @property
    def gate(self) -> StagePlan | None:
        """The member whose gate holds the whole job (the first member; check_group refuses others)."""
        return self.members[0] if self.members[0].gate is not None else None

    @property
    def on_pull_requests(self) -> bool:
        return all(m.on_pull_requests for m in self.members)

    @property
    def description(self) -> str:
        listed = ", ".join(f"{m.name} (always)" if m.always else m.name for m in self.members)
        if self.rehearsal:
            return f"{listed}: in order on one agent, whose Docker engine holds the local test stack"
        return f"{listed}: in order in one job holding {', '.join(self.locks)}, so no other run deploys between them"


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
    def python_command(self) -> str:
        """The interpreter on an agent that has several: `python3.11` for python='3.11.4'."""
        return "python" + ".".join(self.spec.python.split(".")[:2])

    @property
    def version(self) -> str:
        return self.context.version

    @property
    def trigger_branches(self) -> tuple[str, ...]:
        return self.spec.trigger_branches

    # --- the tool on CI: pinned, installed once per agent workspace and version -------------------
    def install_command(self, *, run_extra: bool = True) -> str:
        """The definition's `install=`, else exactly the rendering version (the drift check needs no
        `[run]` extra: it only renders)."""
        if self.spec.install:
            return self.spec.install
        extra = f"[{','.join(self.extras)}]" if run_extra else ""
        return f"pip install '{PACKAGE}{extra}=={shell_word(self.version)}'"

    @property
    def extras(self) -> tuple[str, ...]:
        """`run`, and the extras the pipeline's stage kinds declare (a Migrate stage needs `schema`)."""
        return ("run", *sorted({extra for stage in self.spec.stages for extra in type(stage).extras} - {"run"}))

    def venv(self, *, run_extra: bool = True) -> str:
        """The job's own virtualenv, under the workspace's `.pipeline/` (never hashed, never committed),
        keyed by Python and tool version, so an agent reuses it from build to build until either changes."""
        if self.spec.install:
            digest = hashlib.sha256(f"{self.python}\n{self.spec.install}".encode()).hexdigest()[:10]
            key = f"{self.python}-custom-{digest}"
        else:
            key = f"{self.python}-{self.version}" + (f"-{'-'.join(self.extras)}" if run_extra else "")
        return f"{VENV_ROOT}/{key}"

    def setup_script(self, python: str, *, run_extra: bool = True) -> str:
        """Shell that makes the job's virtualenv ready (POSIX sh, `set -e`). A pinned install is made
        once per venv (a marker file records that it finished); an `install=` of the definition's
        own runs every time, in the reused venv (it may install from the work tree)."""
        venv = self.venv(run_extra=run_extra)
        install = self.install_command(run_extra=run_extra)
        if self.spec.install:
            return "\n".join(
                [
                    "set -e",
                    f"venv={venv}",
                    f'[ -x "$venv/bin/python" ] || {python} -m venv "$venv"',
                    '. "$venv/bin/activate"',
                    install,
                ]
            )
        return "\n".join(
            [
                "set -e",
                f"venv={venv}",
                f'if [ ! -f "$venv/{INSTALLED_MARKER}" ]; then',
                '    rm -rf "$venv"',
                f'    {python} -m venv "$venv"',
                '    . "$venv/bin/activate"',
                f"    {install}",
                f'    touch "$venv/{INSTALLED_MARKER}"',
                "fi",
            ]
        )

    def made_once(self, path: str, python: str, *, run_extra: bool = True, runs: bool = False) -> list[str]:
        """Shell lines that make a pinned install's venv at `$venv` unless it is already made there:
        its marker records the path it was made at (`path`, as the shell expands it), so a venv a
        cache restored into another folder, whose scripts name the old one, is made again; `runs`:
        also when its interpreter no longer runs (a base Python the runner image dropped)."""
        check = f'[ {VENV_MARKER} != "{path}" ]'
        if runs:
            check += ' || ! "$venv/bin/python" -c "" 2>/dev/null'
        return [
            f"if {check}; then",
            '    rm -rf "$venv"',
            f'    {python} -m venv "$venv"',
            '    . "$venv/bin/activate"',
            f"    {self.install_command(run_extra=run_extra)}",
            f'    echo "{path}" > "$venv/{INSTALLED_MARKER}"',
            "fi",
        ]

    @staticmethod
    def venv_made(path: str) -> str:
        """A shell test, the converse of `made_once(..., runs=True)`'s: true when the venv at `$venv`
        was made at `path` and its interpreter runs, so nothing needs restoring or installing."""
        return f'[ {VENV_MARKER} = "{path}" ] && "$venv/bin/python" -c "" 2>/dev/null'

    def activate(self, *, run_extra: bool = True) -> str:
        return f". {self.venv(run_extra=run_extra)}/bin/activate"

    # --- the drift check and the header every file starts with -----------------------------------
    def render_command(self, target: str, *, check: bool = False) -> str:
        """`pipeline render`, for the definition's targets when it names them, else for this file's
        own target (a team that renders one target commits only its files)."""
        parts = ["pipeline", "render"]
        if not self.spec.targets:
            parts += ["--target", target]
        if check:
            parts.append("--check")
        return " ".join(parts) + self.context.file_args

    def header(self, target: str) -> list[str]:
        """The lines every generated file starts with (without comment markers)."""
        return [
            f"Generated by pipeline {self.version} (`pipeline render`) from {self.context.definition}. "
            "Do not edit: changes are overwritten.",
            f"Regenerate with: {self.render_command(target)}",
            f"CI fails when this file drifts from the definition: {self.render_command(target, check=True)}",
            "CI installs pipeline with the definition's `install=` command"
            if self.spec.install
            else f"CI installs: {self.install_command()} (render with a newer pipeline to upgrade CI)",
        ]

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

    @cached_property
    def lock_spans(self) -> tuple[tuple[str, ...], ...]:
        """Consecutive stages acting on one persistent environment (each needs another of them
        directly), in pipeline order: they must hold the environment's lock together, so that no
        other run deploys between (say) a deploy and its smoke test. A gated stage starts a span of
        its own (its gate then holds the whole span's job). A kind that is always a job of its own
        (`own_job`: a FlagRollout) is in no span, and no span reaches across one. Spans of two or more only."""
        spans: list[tuple[str, ...]] = []
        ancestors = {s.name: set(s.ancestors) for s in self.stages}
        for env in self.locks:
            members = [s for s in self.stages if s.lock == env and not type(s.stage).own_job]
            names = {s.name for s in members}
            # Not consecutive: a gate starts a new span (nobody holds an environment while waiting for a
            # human), and nothing acting on another environment may run between the two.
            edges = [
                (s.name, need)
                for s in members
                for need in s.needs
                if need in names and s.gate is None and not self._other_lock_between(need, s.name, env, ancestors)
            ]
            for span in _components([s.name for s in members], edges):
                inside = {n for a in span for b in span for n in ancestors[b] if a in ancestors[n]}
                if len(span) > 1 and not any(
                    self.by_name[n].lock not in (None, env) or type(self.by_name[n].stage).own_job for n in inside
                ):
                    spans.append(span)
        position = {s.name: s.index for s in self.stages}
        return tuple(sorted(spans, key=lambda span: position[span[0]]))

    def _other_lock_between(self, first: str, last: str, env: str, ancestors: Mapping[str, set[str]]) -> bool:
        """Whether a stage acting on another persistent environment runs after `first` and before `last`."""
        return any(first in ancestors[n] and self.by_name[n].lock not in (None, env) for n in ancestors[last] - {first})

    @cached_property
    def groups(self) -> tuple[StageGroup, ...]:
        """Local-profile rehearsals and lock spans: each one job on targets that give every job a fresh
        agent and take a lock per job."""
        return _rehearsal_groups(self)

    @cached_property
    def group_of(self) -> dict[str, StageGroup]:
        return {m.name: g for g in self.groups for m in g.members}

    def job_of(self, stage: str) -> str:
        """The job (or build) a stage runs in: its group's, else its own."""
        group = self.group_of.get(stage)
        return group.name if group is not None else stage

    def jobs_of(self, stages: Sequence[str]) -> tuple[str, ...]:
        """The jobs these stages run in, each once, in the order given."""
        return tuple(dict.fromkeys(self.job_of(s) for s in stages))

    @property
    def units(self) -> tuple[StagePlan | StageGroup, ...]:
        """What becomes one job, in pipeline order: stages outside groups, each group at its first member."""
        out: list[StagePlan | StageGroup] = []
        for stage in self.stages:
            group = self.group_of.get(stage.name)
            if group is None:
                out.append(stage)
            elif group.members[0] is stage:
                out.append(group)
        return tuple(out)

    def guard_needs(self, plan: StagePlan) -> tuple[str, ...]:
        """What a stage behind an always-run stage must also wait for, so that it is skipped when
        anything before the always-run stage failed: the always-run stage's own needs (recursively)."""
        found = [n for n in self.behind_always(plan.needs) if n not in plan.needs]
        order = {s.name: s.index for s in self.stages}
        return tuple(sorted(found, key=order.__getitem__))

    def behind_always(self, names: Sequence[str]) -> list[str]:
        """What the always-run stages among `names` depend on, through other always-run stages (the
        first stage that is not always-run on each path), in the order found."""
        found: list[str] = []
        pending = [n for n in names if self.by_name[n].always]
        seen: set[str] = set()
        while pending:
            name = pending.pop(0)
            if name in seen:
                continue
            seen.add(name)
            for need in self.by_name[name].needs:
                if self.by_name[need].always:
                    pending.append(need)
                elif need not in found:
                    found.append(need)
        return found


def build_plan(spec: PipelineSpec, context: RenderContext) -> CiPlan:
    """One pass in dependency order; ancestors and branch filters accumulate from each stage's needs.
    A stage whose kind cannot be carried out on the profile CI would run it with is refused first
    (ProfileCannotError, exit 2): its job could never succeed."""
    spec.check_profiles()
    by_name = {s.name: s for s in spec.stages}
    order = spec.graph.order()
    position = {name: i for i, name in enumerate(order)}
    first_declared: dict[tuple[str, ...], int] = {}
    for name in order:
        first_declared.setdefault(tuple(by_name[name].branches), position[name])
    ancestors_of: dict[str, set[str]] = {}
    groups_of: dict[str, tuple[tuple[str, ...], ...]] = {}
    checks: dict[str, bool] = {}
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
        secrets = _merge_secrets(stage.secrets, env.bound_secrets if env else ())
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
                pushes=_pushes(spec, stage, env),
                agent=agent_needs(spec, stage),
                on_pull_requests=_is_check(spec, stage, secrets) and all(checks[n] for n in stage.needs),
            )
        )
        checks[name] = plans[-1].on_pull_requests
    return CiPlan(spec=spec, context=context, stages=tuple(plans))


def _is_check(spec: PipelineSpec, stage: Stage, secrets: tuple[Secret, ...]) -> bool:
    """A stage a pull request may run: it acts on no environment, drives neither Docker nor a cloud,
    waits for nobody and receives no secret (a pull request's code must not reach any of those)."""
    return not _uses_profile(stage) and spec.approval_of(stage) is None and not secrets


def agent_needs(spec: PipelineSpec, stage: Stage) -> AgentNeeds:
    """What `stage`'s CI job needs from its agent (target-neutral; each renderer expresses it)."""
    profile = spec.profile_of(stage)
    drives_docker = type(stage).uses_profile and profile == "local"
    packer = type(stage).runs_packer
    docker = drives_docker or stage.checks_in_docker()
    persistent = drives_docker
    base_image = None
    if docker and not persistent:
        name = stage.docker_base_image()
        base_image = name if name and only_debootstrap_makes(name) else None
    labels = spec.agents
    if stage.agent is not None:
        chosen, override = stage.agent, True
    else:
        wanted = [
            labels.every,
            labels.local if persistent else (),
            labels.docker if docker else (),
            labels.packer if packer else (),
            labels.root if base_image else (),
        ]
        chosen, override = tuple(dict.fromkeys(label for group in wanted for label in group)), False
    return AgentNeeds(
        docker=docker,
        packer=packer,
        root=base_image is not None,
        persistent=persistent,
        labels=chosen,
        override=override,
        base_image=base_image,
    )


def only_debootstrap_makes(image: str) -> bool:
    """Whether an agent can make `image` only with debootstrap, as root: a `pipeline-*` name no
    registry has, other than the default, which an agent that reaches a registry derives from
    the registry's Debian image (pipeline.engines.base_image); every other name is pulled."""
    if image == DEFAULT_BASE_IMAGE or "/" in image or ":" not in image:
        return False
    return image.split(":", maxsplit=1)[0].startswith("pipeline-")


def check_group(group: StageGroup, target: str) -> None:
    """What no target can express inside a job of several stages (raises UnsupportedFeatureError)."""
    for member in group.members:
        if member.gate is not None and (group.rehearsal or member is not group.members[0]):
            what = "a local-profile rehearsal" if group.rehearsal else "the stages holding one environment's lock"
            raise UnsupportedFeatureError(
                target,
                f"an approval gate inside {what}",
                f"stage {member.name!r} in job {group.name!r}",
                hint="the stages run as one job (a rehearsal's test stack is containers on one agent; a lock is "
                "held by one job), and a gate holds a whole job before it starts: gate the first of them, or a "
                "stage after them"
                + (", or put the test stack's environment on the aws profile" if group.rehearsal else ""),
            )
        if group.rehearsal and member.always and member.branches:
            raise UnsupportedFeatureError(
                target,
                "a branch filter on the teardown of a local-profile rehearsal",
                f"stage {member.name!r} in job {group.name!r}",
                hint="the teardown must run wherever its stack was created: put the branch filter on the test stack",
            )


def _rehearsal_groups(plan: CiPlan) -> tuple[StageGroup, ...]:
    """Each teardown of a local test stack protects the stages on a path from the stack to it. The
    sets are closed (a stage between two members is a member), overlapping sets merged, and sets
    that would need each other once each is one job merged, until each can be a job of its own."""
    position = {s.name: s.index for s in plan.stages}
    ancestors = {s.name: frozenset(s.ancestors) for s in plan.stages}
    descendants: dict[str, set[str]] = {s.name: set() for s in plan.stages}
    for stage in plan.stages:
        for ancestor in stage.ancestors:
            descendants[ancestor].add(stage.name)
    stacks_of: dict[str, tuple[str, ...]] = {}
    sets: list[frozenset[str]] = []
    for stage in plan.stages:
        refs = stage.stage.references().values() if stage.always else ()
        stacks = sorted(
            {r for r in refs if plan.spec.profile_of(plan.by_name[r].stage) == "local"}, key=position.__getitem__
        )
        if stacks:
            stacks_of[stage.name] = tuple(stacks)
            between = set().union(*(descendants[s] for s in stacks)) & ancestors[stage.name]
            sets.append(frozenset({stage.name, *stacks, *between}))
    sets += [frozenset(span) for span in plan.lock_spans]
    while True:
        sets = _close_and_merge(sets, ancestors, descendants)
        cycle = _cycle_between(plan, sets)
        if not cycle:
            break
        assert len(cycle) > 1, "a closed set has every stage between its members: it cannot need itself"
        sets = [m for i, m in enumerate(sets) if i not in cycle] + [frozenset().union(*(sets[i] for i in cycle))]
    sets.sort(key=lambda m: min(position[n] for n in m))
    taken = {s.name for s in plan.stages if not any(s.name in m for m in sets)}
    groups: list[StageGroup] = []
    for members in sets:
        group = _group(plan, members, stacks_of, ancestors, taken)
        taken.add(group.name)
        groups.append(group)
    return tuple(groups)


def _close_and_merge(
    sets: list[frozenset[str]], ancestors: Mapping[str, frozenset[str]], descendants: Mapping[str, set[str]]
) -> list[frozenset[str]]:
    """Each set with every stage between two of its members, and sets that share a stage as one."""
    pending = list(sets)
    done: list[frozenset[str]] = []
    while pending:
        current = pending.pop(0)
        below = set().union(*(descendants[m] for m in current))
        above = set().union(*(ancestors[m] for m in current))
        grown = current | (below & above)
        overlapping = [o for o in done if o & grown]
        if grown == current and not overlapping:
            done.append(current)
            continue
        done = [o for o in done if o not in overlapping]
        pending.append(grown.union(*overlapping))
    return done


def _group(
    plan: CiPlan,
    members: frozenset[str],
    stacks_of: Mapping[str, tuple[str, ...]],
    ancestors: Mapping[str, frozenset[str]],
    taken: set[str],
) -> StageGroup:
    position = {s.name: s.index for s in plan.stages}
    ordered = tuple(s for s in plan.stages if s.name in members)
    stacks = sorted({st for m in ordered for st in stacks_of.get(m.name, ())}, key=position.__getitem__)
    base = f"{REHEARSAL_PREFIX}{stacks[0]}" if stacks else f"{LOCK_PREFIX}{next(m.lock for m in ordered if m.lock)}"
    name, suffix = base, 1
    while name in taken:
        suffix += 1
        name = f"{base}-{suffix}"
    run_groups: list[BranchGroups] = []
    for member in ordered:
        found: list[tuple[str, ...]] = []
        for source in stacks_of.get(member.name, (member.name,)):
            found += [g for g in plan.by_name[source].branch_groups if g not in found]
        run_groups.append(tuple(found))
    outside = set().union(*(ancestors[m] for m in members)) - members
    needs = {n for m in ordered for n in m.needs if n not in members}
    return StageGroup(
        name=name,
        stacks=tuple(stacks),
        members=ordered,
        run_groups=tuple(run_groups),
        needs=tuple(sorted(needs, key=position.__getitem__)),
        ancestors=tuple(sorted(outside, key=position.__getitem__)),
    )


def _cycle_between(plan: CiPlan, sets: list[frozenset[str]]) -> set[int]:
    """Indexes of the sets on a cycle once each set is one job (empty: none)."""
    unit = {m: f"#{i}" for i, members in enumerate(sets) for m in members}
    needs: dict[str, list[str]] = {}
    for stage in plan.stages:
        mine = unit.get(stage.name, stage.name)
        edges = needs.setdefault(mine, [])
        for need in stage.needs:
            theirs = unit.get(need, need)
            if theirs != mine and theirs not in edges:
                edges.append(theirs)
    cycle = Graph(needs).find_cycle()
    return {int(u[1:]) for u in cycle or () if u.startswith("#")}


def _components(names: Sequence[str], edges: Sequence[tuple[str, str]]) -> list[tuple[str, ...]]:
    """The connected parts of a graph (edges in either direction), each in the order of `names`."""
    parent = {n: n for n in names}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    for a, b in edges:
        parent[root(a)] = root(b)
    parts: dict[str, list[str]] = {}
    for name in names:
        parts.setdefault(root(name), []).append(name)
    return [tuple(part) for part in parts.values()]


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


def _pushes(spec: PipelineSpec, stage: Stage, env: Environment | None) -> bool:
    """A stage that commits the promoted image into its environment's template and pushes: on the
    aws profile, when its kind says so (`Stage.commits_and_pushes`)."""
    return (
        env is not None and env.template is not None and spec.profile_of(stage) == "aws" and stage.commits_and_pushes()
    )


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
    return AwsAccess(environment=BUILD_ACCESS, settings=stage.build_aws_settings() or AwsSettings())


def shell_word(text: str) -> str:
    """A version as it may appear inside single quotes (a version has no quote; refuse one that does)."""
    if "'" in text or not text:
        raise ValueError(f"not a version: {text!r}")
    return text


def camel(name: str) -> str:
    """'update-stack' -> 'UpdateStack'; a part starting with a digit keeps a '_' before it ('ab-1' -> 'Ab_1')."""
    out = ""
    for part in name.split("-"):
        if out and part[:1].isdigit():
            out += "_"
        out += part[:1].upper() + part[1:]
    return out
