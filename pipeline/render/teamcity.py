"""TeamCity: versioned settings in Kotlin DSL, `.teamcity/settings.kts` plus its `pom.xml`.

One build configuration per stage, chained by snapshot dependencies (same sources for the whole
chain) with artifact dependencies carrying the run manifest; a composite build configuration
named after the pipeline depends on the ends of the chain and holds the VCS trigger, so one push
queues one chain. Deployments (persistent environments, approval gates) are `Type.DEPLOYMENT`
build configurations with the Build Approval feature and a shared-resource lock per environment.
A teardown starts even when its dependencies failed (`FailureAction.IGNORE`); the stages after it
also depend on what the teardown depended on, so they still fail to start.

A build may run on any agent, so a rehearsal on the local profile (a test stack is containers on
the agent's Docker engine) is one build configuration, `Rehearsal<TestStack>` (name
`rehearsal-<test stack>`): one script step per stage in pipeline order, the teardown's step
`executionMode = BuildStep.ExecutionMode.ALWAYS`, the stages' parameters together, one artifact
publication of the manifest folder. Later stages depend on that build. On the aws profile the
stack lives in AWS and each stage keeps its own build configuration.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from pipeline.errors import UnsupportedFeatureError
from pipeline.render.base import MANIFEST_DIR, RenderContext, RenderedFile, Support
from pipeline.render.branch_patterns import branch_regex
from pipeline.render.plan import (
    GIT_PUSH_CREDENTIALS,
    RENDER_CHECK_MINUTES,
    AgentNeeds,
    CiPlan,
    StageGroup,
    StagePlan,
    build_plan,
    camel,
    check_group,
)
from pipeline.render.templating import render_template
from pipeline.spec import PipelineSpec

DSL_VERSION = "2024.03"
"""TeamCity server version the settings target (unversioned DSL packages exist since 2022.04)."""
ARTIFACT_FOLDER = "manifest"
BRANCH_PARAMETER = "teamcity.build.branch"
ALL_USERS_GROUP = "ALL_USERS_GROUP"
LABEL_PARAMETER = "pipeline.label"
"""Agent labels as agent parameters: `pipeline.label.docker=true` in buildAgent.properties."""
RESERVED_OBJECTS = frozenset(
    {
        "Project",
        "BuildType",
        "Template",
        "VcsRoot",
        "DslContext",
        "FailureAction",
        "ReuseBuilds",
        "BuildStep",
        "BuildTypeSettings",
        "ParameterDisplay",
        "AbsoluteId",
        "RelativeId",
        "Type",
    }
)
_NAME_LIMIT = 80


@dataclass
class Param:
    kind: str
    """param or password."""
    name: str
    value: str
    label: str = ""
    description: str = ""


@dataclass
class Step:
    name: str
    script: str
    always: bool = False
    branch_regexes: list[str] = field(default_factory=list)


@dataclass
class Dependency:
    obj: str
    on_failure: str
    on_cancel: str
    artifact_rules: str = ""


@dataclass
class Approval:
    rules: str
    timeout: int


@dataclass
class BuildType:
    obj: str
    name: str
    description: str = ""
    type: str = ""
    """'' (regular), DEPLOYMENT or COMPOSITE."""
    artifact_rules: str = ""
    params: list[Param] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    trigger_branch_filter: str = ""
    dependencies: list[Dependency] = field(default_factory=list)
    snapshots: list[Dependency] = field(default_factory=list)
    """Snapshot-only dependencies (guards behind an always-run stage)."""
    approval: Approval | None = None
    locks: list[str] = field(default_factory=list)
    aws_connection: str = ""
    ssh_key: str = ""
    """An uploaded SSH key the build loads into an SSH agent (a promote that pushes its commit)."""
    timeout: int = 0
    requirements: list[str] = field(default_factory=list)
    """Agent parameters the build's agent must have: `pipeline.label.<label>` per label it needs."""


@dataclass
class SharedResource:
    id: str
    name: str


class TeamCityRenderer:
    name: ClassVar[str] = "teamcity"
    title: ClassVar[str] = "TeamCity (Kotlin DSL versioned settings)"
    capabilities: ClassVar[dict[str, Support]] = {
        "stages": Support(
            "One build configuration per stage (`object X : BuildType`), two script steps: the build's virtualenv "
            "`.pipeline/ci/venv/PYTHON-VERSION-run` with exactly the pinned tool (`pip install "
            "'pipeline-as-code[run]==X.Y.Z'`, or `install=`), reused by later builds in the agent's checkout "
            "directory; then `pipeline run stage NAME`. "
            "A rehearsal on the local profile (a test stack, the stages on the way to its teardown, the teardown) "
            "is one build configuration `RehearsalSTACK` (name `rehearsal-STACK`) with one script step per stage "
            "in order: each build may get another agent, and the stack is containers on the agent that made it."
        ),
        "order": Support(
            "Snapshot dependencies (`reuseBuilds = ReuseBuilds.NO`) form one build chain on the same sources (stages "
            "after a rehearsal depend on its build); a composite build configuration named after the pipeline ends the "
            "chain (also depending on what a teardown at the end depended on, so a failure before it fails the chain)."
        ),
        "parallel": Support(
            "Build configurations whose dependencies are done run at the same time on free agents (fan-out); a stage with several dependencies waits for all (fan-in)."
        ),
        "render-check": Support(
            "Build configuration `RenderCheck` installs the pinned tool without the `[run]` extra and runs `pipeline "
            "render --check` (the definition's targets), or `--target teamcity --check` when it names none; every first "
            "stage depends on it."
        ),
        "manifests": Support(
            "Each build publishes `.pipeline/ci/manifest` (`artifactRules`, also on failure); artifact dependencies on "
            "its dependencies fetch it (optional `?:` rules for a teardown, and from a build whose every stage has a "
            "branch filter: on another branch it rightly publishes nothing)."
        ),
        "approval": Support(
            "`type = BuildTypeSettings.Type.DEPLOYMENT` with `features { approval { approvalRules; timeout } }`: "
            "`user:NAME` per approver and `group:KEY:1` per group of the definition; the command runs with `--yes`.",
            fails="a gate with no approvers (TeamCity's rules must name who approves; `groups=('ALL_USERS_GROUP',)` "
            "says any user may), or a gate on a stage inside a local-profile rehearsal (the approval holds a whole "
            "build)",
        ),
        "secrets": Support(
            '`password("env.NAME", "credentialsJSON:...")` when Secret.teamcity is set, else an empty password parameter to fill in on the server; never a value. '
            "A build of several stages (a rehearsal, or an environment's consecutive stages) has the secrets of all "
            "of them as parameters; each of its steps unsets the other stages' secrets and exports its own plain "
            "variables.",
            fails="two stages of one such build giving one secret different references",
        ),
        "aws": Support(
            '`features { provideAwsCredentials { awsConnectionId = "AwsENV" } }`: an AWS Connection with that ID, made on the server, supplies credentials.',
            fails="two AWS connections inside one build of several stages",
        ),
        "branches": Support(
            "Step `conditions { matches(\"teamcity.build.branch\", REGEX) }` for the stage's and its ancestors' filters: on other branches the build does nothing (and shows green). "
            "In a rehearsal build each stage's step has its own; the teardown's step has its stack's.",
            fails="a branch filter on the teardown of a local-profile rehearsal: put it on the test stack",
        ),
        "push": Support(
            "The agent-side checkout is on a tracking branch already; `features { sshAgent { teamcitySshKey = "
            '"git-push" } }` (SSH Agent build feature) loads an uploaded SSH key that may push (the VCS root\'s URL '
            "must be an SSH one, its host in the agent's known_hosts)."
        ),
        "agents": Support(
            '`requirements { exists("pipeline.label.NAME") }` per label the build needs (an agent carries label NAME '
            "by defining `pipeline.label.NAME` in its buildAgent.properties; default labels `docker`, `packer`, "
            "`root`, and `pipeline-local` on every local-profile build: exactly one agent may carry it)."
        ),
        "timeouts": Support(
            "`failureConditions { executionTimeoutMin = N }` with N = timeout x attempts + 10 min set-up (a "
            "rehearsal build: the sum of its stages' timeout x attempts + 5, plus 10); the runner enforces the "
            "stage's own timeout per attempt."
        ),
        "retries": Support(
            "`pipeline run stage` retries in-process (1 + retries attempts, same code as on a laptop); no Retry Build trigger, which would re-run a whole chain build.",
            native=False,
        ),
        "concurrency": Support(
            "A project `sharedResource` (quota 1) per persistent environment, taken with `sharedResources { "
            "writeLock(...) }`, plus `maxRunningBuilds = 1` on deployment configurations. Consecutive stages acting "
            "on one environment (deploy, then smoke test) are one build configuration `LockENV` (name `lock-ENV`, a "
            "script step per stage) that holds the lock for all of them, so no other run deploys between them."
        ),
        "always": Support(
            "A teardown's snapshot dependencies use `onDependencyFailure`/`onDependencyCancel = FailureAction.IGNORE` and its steps `executionMode = BuildStep.ExecutionMode.ALWAYS`; stages after it also depend on what it depended on, so they fail to start after a failure. "
            "In a rehearsal build the teardown's step runs ALWAYS (also after a failed step or a stop) and the "
            "build still fails, so later builds fail to start."
        ),
        "trigger": Support(
            '`triggers { vcs { branchFilter = "+:main" } }` on the composite build configuration (the trigger '
            "branches, else `Pipeline(default_branch=...)`): a push queues the whole chain.",
            fails="pull-request triggers (TeamCity needs the Pull Requests build feature for your VCS host, configured "
            "on the server)",
        ),
        "profile": Support(
            "`--profile` in the stage's command (its environment's, else the pipeline's); `--yes` after a gate."
        ),
    }

    def outputs(self, spec: PipelineSpec) -> Sequence[str]:
        return (".teamcity/settings.kts", ".teamcity/pom.xml")

    def render(self, spec: PipelineSpec, context: RenderContext) -> list[RenderedFile]:
        plan = build_plan(spec, context)
        if plan.trigger.pull_requests:
            raise UnsupportedFeatureError(
                self.name,
                "pull-request triggers",
                "Trigger(pull_requests=True)",
                hint="TeamCity builds pull requests through the Pull Requests build feature, which needs "
                "your VCS host's credentials on the server: add it there, or set pull_requests=False",
            )
        objects = _object_names(plan)
        locks = {env: _resource_name(plan.name, env) for env in plan.locks}
        build_types = [self._render_check(plan, objects)]
        for unit in plan.units:
            if isinstance(unit, StageGroup):
                build_types.append(self._group(plan, unit, objects, locks))
            else:
                build_types.append(self._stage(plan, unit, objects, locks))
        build_types.append(self._composite(plan, objects))
        imports = ["jetbrains.buildServer.configs.kotlin.*"]
        if plan.gated:
            imports.append("jetbrains.buildServer.configs.kotlin.buildFeatures.approval")
        if any(s.aws for s in plan.stages):
            imports.append("jetbrains.buildServer.configs.kotlin.buildFeatures.provideAwsCredentials")
        if any(s.pushes for s in plan.stages):
            imports.append("jetbrains.buildServer.configs.kotlin.buildFeatures.sshAgent")
        imports += [
            "jetbrains.buildServer.configs.kotlin.buildSteps.script",
            "jetbrains.buildServer.configs.kotlin.triggers.vcs",
        ]
        settings = render_template(
            "settings.kts.j2",
            header=plan.header(self.name),
            imports=imports,
            version=DSL_VERSION,
            description=f"Pipeline {plan.name}: one build configuration per stage"
            + (" (a local-profile rehearsal: one for all its stages)" if plan.groups else "")
            + f", generated from {context.definition}",
            build_types=build_types,
            resources=[SharedResource(id=name, name=name) for name in locks.values()],
        )
        pom = render_template(
            "pom.xml.j2",
            header=plan.header(self.name),
            artifact=plan.name,
            dsl_version=DSL_VERSION,
        )
        return [RenderedFile(".teamcity/settings.kts", settings), RenderedFile(".teamcity/pom.xml", pom)]

    # ----------------------------------------------------------------------------- build types
    def _render_check(self, plan: CiPlan, objects: dict[str, str]) -> BuildType:
        return BuildType(
            obj=objects[""],
            name="check rendered CI files",
            description="the committed CI files must match a fresh render of the definition",
            steps=[
                _install_step(plan, run_extra=False),
                Step(
                    "Check rendered CI files",
                    f"{plan.activate(run_extra=False)}\n{plan.render_command(self.name, check=True)}",
                ),
            ],
            timeout=RENDER_CHECK_MINUTES,
            requirements=_requirements(AgentNeeds(labels=plan.spec.agents.every)),
        )

    def _stage(self, plan: CiPlan, stage: StagePlan, objects: dict[str, str], locks: dict[str, str]) -> BuildType:
        regexes = [branch_regex(group) for group in stage.branch_groups]
        steps = [_install_step(plan), Step(f"Run stage {stage.name}", f"{plan.activate()}\n{stage.run_command}")]
        for step in steps:
            step.always = stage.always
            step.branch_regexes = regexes
        params = _params(stage)
        if stage.always:
            rules = f"?:{ARTIFACT_FOLDER}/*.json => {MANIFEST_DIR}"
            dependencies = [Dependency(objects[a], "IGNORE", "IGNORE", rules) for a in plan.jobs_of(stage.ancestors)]
            snapshots: list[Dependency] = []
        else:
            dependencies = _needs(plan, stage.needs, objects)
            snapshots = _guards(plan, [stage], dependencies, objects)
        approval = _approval(stage)
        return BuildType(
            obj=objects[stage.name],
            name=stage.name,
            description=stage.description,
            type="DEPLOYMENT" if stage.deploys else "",
            artifact_rules=f"+:{MANIFEST_DIR}/*.json => {ARTIFACT_FOLDER}",
            params=params,
            steps=steps,
            dependencies=dependencies,
            snapshots=snapshots,
            approval=approval,
            locks=[locks[stage.lock]] if stage.lock else [],
            aws_connection=f"Aws{camel(stage.aws.environment)}" if stage.aws else "",
            ssh_key=GIT_PUSH_CREDENTIALS if stage.pushes else "",
            timeout=stage.timeout_minutes,
            requirements=_requirements(stage.agent),
        )

    def _composite(self, plan: CiPlan, objects: dict[str, str]) -> BuildType:
        return BuildType(
            obj=objects["*"],
            name=plan.name,
            description="the whole pipeline: a push to a trigger branch queues every stage of the chain",
            type="COMPOSITE",
            trigger_branch_filter="\n".join(f"+:{b}" for b in plan.trigger_branches),
            # a teardown at the end of the chain succeeds after a failure before it, so the composite
            # also depends on what the teardowns depended on, to end failed (or canceled) then
            dependencies=[
                Dependency(objects[s], "ADD_PROBLEM", "ADD_PROBLEM")
                for s in plan.jobs_of([*plan.sinks, *plan.behind_always(plan.sinks)])
            ],
        )

    def _group(self, plan: CiPlan, group: StageGroup, objects: dict[str, str], locks: dict[str, str]) -> BuildType:
        """Stages that must be one build: a local-profile rehearsal (its stages share the agent whose
        Docker engine holds the test stack), or consecutive stages holding one environment's lock (a
        shared resource is taken per build). One script step per stage in order; a teardown's step
        runs ALWAYS; the first stage's gate is the build's approval."""
        check_group(group, self.name)
        steps = [_install_step(plan)]
        steps[0].branch_regexes = [branch_regex(g) for g in group.shared_groups]
        secrets = list(dict.fromkeys(s.name for m in group.members for s in m.secrets))
        for member in group.members:
            # Each step sets its own plain variables (the build's parameters are shared by all steps),
            # and unsets the secrets of the other stages: a stage's process gets only its own.
            own = {s.name for s in member.secrets}
            others = [name for name in secrets if name not in own]
            exports = f"unset {' '.join(others)}\n" if others else ""
            exports += "".join(f"export {name}={shlex.quote(value)}\n" for name, value in member.env)
            steps.append(
                Step(
                    f"Run stage {member.name}",
                    f"{plan.activate()}\n{exports}{member.run_command}",
                    always=member.always,
                    branch_regexes=[branch_regex(g) for g in group.branch_groups(member.name)],
                )
            )
        params: dict[str, tuple[Param, str]] = {}
        for member in group.members:
            for param in _params(member, plain=False):
                seen = params.setdefault(param.name, (param, member.name))
                if (seen[0].kind, seen[0].value) != (param.kind, param.value):
                    raise UnsupportedFeatureError(
                        self.name,
                        f"two values of {param.name} inside one build of several stages",
                        f"stages {seen[1]!r} and {member.name!r} in build {objects[group.name]}",
                        hint="the stages are steps of one build, whose parameters they share: give the "
                        "secret one TeamCity reference, or different names",
                    )
        connections = list(dict.fromkeys(f"Aws{camel(m.aws.environment)}" for m in group.members if m.aws))
        if len(connections) > 1:
            raise UnsupportedFeatureError(
                self.name,
                "two AWS connections inside one build of several stages",
                f"build {objects[group.name]} ({', '.join(connections)})",
                hint="a build takes its AWS credentials from one connection: use one AWS environment per rehearsal",
            )
        dependencies = _needs(plan, group.needs, objects)
        return BuildType(
            obj=objects[group.name],
            name=group.name,
            description=group.description,
            type="DEPLOYMENT" if any(m.deploys for m in group.members) else "",
            artifact_rules=f"+:{MANIFEST_DIR}/*.json => {ARTIFACT_FOLDER}",
            params=[param for param, _ in params.values()],
            steps=steps,
            dependencies=dependencies,
            snapshots=_guards(plan, group.members, dependencies, objects, own=group.name),
            approval=_approval(group.gate) if group.gate is not None else None,
            locks=[locks[lock] for lock in group.locks],
            aws_connection=connections[0] if connections else "",
            ssh_key=GIT_PUSH_CREDENTIALS if any(m.pushes for m in group.members) else "",
            timeout=group.timeout_minutes,
            requirements=_requirements(group.agent),
        )


def _requirements(needs: AgentNeeds) -> list[str]:
    """TeamCity chooses agents by their parameters, not labels: an agent carries label L by defining
    `pipeline.label.L` (in its buildAgent.properties), and the build requires it to exist."""
    return [f"{LABEL_PARAMETER}.{label}" for label in needs.labels]


def _approval(stage: StagePlan) -> Approval | None:
    """The Build Approval feature's rules, from the definition's approvers only: TeamCity's rules must
    name someone, and an unnamed default (any user) would be a gate nobody chose."""
    gate = stage.gate
    if gate is None:
        return None
    lines = [f"user:{u}" for u in gate.approvers] + [f"group:{g}:1" for g in gate.groups]
    if not lines:
        raise UnsupportedFeatureError(
            TeamCityRenderer.name,
            "an approval gate with no approvers",
            f"stage {stage.name!r}",
            hint="name who may approve: Approval(approvers=('user',), groups=('GROUP_KEY',)) (TeamCity user names "
            f"and group keys; groups=({ALL_USERS_GROUP!r},) lets every user with 'Run build' permission approve)",
        )
    return Approval("\n".join(lines), gate.timeout_minutes)


def _params(stage: StagePlan, *, plain: bool = True) -> list[Param]:
    """The stage's secrets as password parameters (references, never values), then (with `plain`) its
    plain variables."""
    params = [
        Param(
            "password",
            f"env.{s.name}",
            s.teamcity or "",
            label=s.name,
            description="secure value (credentialsJSON token) set in the definition"
            if s.teamcity
            else "secret: set this password parameter on the TeamCity server",
        )
        for s in stage.secrets
    ]
    return params + ([Param("param", f"env.{k}", v) for k, v in stage.env] if plain else [])


def _needs(plan: CiPlan, needs: Sequence[str], objects: dict[str, str]) -> list[Dependency]:
    """Snapshot and manifest artifact dependencies on the builds these stages run in; first stages
    wait for the render check. TeamCity fails a build whose required artifact rule matches nothing:
    the rule is optional (`?:`) where the upstream build may rightly publish nothing, i.e. every
    stage step in it has a branch condition (on another branch it succeeds doing nothing, and so do
    the builds after it, whose steps carry the same conditions)."""
    jobs = plan.jobs_of(needs) or ("",)
    return [
        Dependency(objects[n], "FAIL_TO_START", "CANCEL", _fetch_rule(optional=_may_skip(plan, n)) if n else "")
        for n in jobs
    ]


def _fetch_rule(*, optional: bool) -> str:
    return ("?:" if optional else "") + f"{ARTIFACT_FOLDER}/*.json => {MANIFEST_DIR}"


def _may_skip(plan: CiPlan, job: str) -> bool:
    """Whether every stage step of this build may be skipped by its branch condition."""
    group = next((g for g in plan.groups if g.name == job), None)
    if group is not None:
        return all(group.branch_groups(m.name) for m in group.members)
    return bool(plan.by_name[job].branch_groups)


def _guards(
    plan: CiPlan,
    stages: Sequence[StagePlan],
    dependencies: list[Dependency],
    objects: dict[str, str],
    own: str = "",
) -> list[Dependency]:
    """Snapshot-only dependencies behind a teardown: what it depended on, so that a failure there
    still keeps these builds from starting."""
    have = {d.obj for d in dependencies}
    names = [n for s in stages for n in plan.guard_needs(s)]
    return [
        Dependency(objects[job], "FAIL_TO_START", "CANCEL")
        for job in plan.jobs_of(names)
        if job != own and objects[job] not in have
    ]


def _install_step(plan: CiPlan, *, run_extra: bool = True) -> Step:
    """The build's virtualenv, reused in the agent's checkout directory (keyed by the Python and tool
    versions), with exactly the pinned tool in it."""
    return Step("Install pipeline", plan.setup_script(plan.python_command, run_extra=run_extra))


def _object_names(plan: CiPlan) -> dict[str, str]:
    """Kotlin object names (and build configuration IDs): '' is the render check, '*' the composite.

    IDs must stay stable (TeamCity keys build history on them), so they derive from names only;
    clashes (case-insensitive, as TeamCity compares IDs) get a 'Stage' suffix."""
    taken = {n.lower() for n in RESERVED_OBJECTS}
    names: dict[str, str] = {}

    def claim(key: str, wanted: str) -> None:
        candidate, n = wanted, 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{wanted}Stage" if n == 2 else f"{wanted}Stage{n - 1}"
        taken.add(candidate.lower())
        names[key] = candidate

    claim("", "RenderCheck")
    claim("*", camel(plan.name) + "Pipeline")
    for unit in plan.units:
        claim(unit.name, camel(unit.name))
    return names


def _resource_name(pipeline: str, environment: str) -> str:
    """Shared resource names: letters, digits and '_', starting with a letter, at most 80 characters."""
    name = f"{camel(pipeline)}_{camel(environment)}"
    if len(name) > _NAME_LIMIT:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: _NAME_LIMIT - 9]}_{digest}"
    return name
