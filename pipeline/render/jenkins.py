"""Jenkins: one declarative `Jenkinsfile` for a multibranch pipeline job.

Layout: `agent none` at the top, so only stages that run commands hold an executor (`agent any`);
approval gates are stages of their own with `agent none` and an `input`, so nobody's executor waits
for a human. The DAG runs level by level (a level with several stages is a `parallel` block). The
stages a teardown protects are nested in one stage whose `post { always }` runs the teardown: it runs
when any of them failed, and the build still stops, so whatever comes after the teardown is skipped.
Those stages share one agent (a local-profile stack lives on that machine's Docker engine).
Run manifests travel between agents with `stash`/`unstash`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from pipeline.errors import UnsupportedFeatureError
from pipeline.render.base import MANIFEST_DIR, RenderContext, RenderedFile, Support
from pipeline.render.branch_patterns import glob_regex, is_literal
from pipeline.render.plan import (
    GIT_PUSH_CREDENTIALS,
    RENDER_CHECK_MINUTES,
    AgentNeeds,
    CiPlan,
    StagePlan,
    build_plan,
)
from pipeline.render.templating import render_template
from pipeline.spec import PipelineSpec

RENDER_CHECK_STAGE = "check rendered CI files"
CHECKOUT_BRANCH = 'git checkout -B "$BRANCH_NAME"'
"""Before a promote that pushes: put the multibranch job's detached checkout on its branch."""


@dataclass(frozen=True)
class Condition:
    """One `when` condition: any of these branch patterns (or a change request); or, with no
    patterns and `not_change_request`, `not { changeRequest() }`."""

    patterns: tuple[str, ...]
    change_request: bool = False
    not_change_request: bool = False

    @property
    def branches(self) -> list[BranchMatch]:
        """How Jenkins must compare each pattern to mean what the definition means (fnmatch):
        EQUALS for a branch name, REGEXP with the glob's regex otherwise. Jenkins' default (GLOB) is
        Ant's path matching: case-insensitive, and `*` stops at '/'."""
        return [
            BranchMatch(p, "EQUALS") if is_literal(p) else BranchMatch(glob_regex(p), "REGEXP") for p in self.patterns
        ]


@dataclass(frozen=True)
class BranchMatch:
    pattern: str
    comparator: str


@dataclass
class Step:
    kind: str
    """sh, echo, checkout, unstash, stash, or a wrapper: node, timeout, lock, with_env, with_credentials,
    tolerate (its body's failure is logged and ignored: `catchError` that leaves the result SUCCESS)."""
    text: str = ""
    arg: str = ""
    minutes: int = 0
    pairs: list[tuple[str, str]] = field(default_factory=list)
    """with_env: (name, value); with_credentials: (kind, credentials id, variable)."""
    bindings: list[tuple[str, str, str]] = field(default_factory=list)
    body: list[Step] = field(default_factory=list)


@dataclass
class Input:
    message: str
    ok: str
    submitter: str


@dataclass
class JStage:
    name: str
    agent: str | None = None
    """any or none (an `agent { label }` when `label` is set)."""
    label: str = ""
    when: list[Condition] = field(default_factory=list)
    before_input: bool = False
    timeout: int = 0
    lock: str = ""
    extra_locks: list[str] = field(default_factory=list)
    """More resources the same `lock` takes at once (`extra: [[resource: ...]]`)."""
    input: Input | None = None
    environment: list[tuple[str, str, str]] = field(default_factory=list)
    """(name, 'credentials' | 'value', credentials id or value)."""
    steps: list[Step] = field(default_factory=list)
    stages: list[JStage] = field(default_factory=list)
    parallel: list[JStage] = field(default_factory=list)
    post_always: list[Step] = field(default_factory=list)
    comment: str = ""


@dataclass
class _Group:
    """Levels [start, end] that one or more always-run stages (teardowns) protect, or whose stages
    hold one environment's lock together (consecutive stages acting on it), or both."""

    start: int
    end: int
    teardowns: list[StagePlan]
    children: list[_Group] = field(default_factory=list)
    locks: list[str] = field(default_factory=list)
    """Environments whose locks the group's stage takes for every stage inside (lock spans)."""
    span: list[str] = field(default_factory=list)
    """The stages of those spans."""


class JenkinsRenderer:
    name: ClassVar[str] = "jenkins"
    title: ClassVar[str] = "Jenkins (declarative Jenkinsfile)"
    capabilities: ClassVar[dict[str, Support]] = {
        "stages": Support(
            "One `stage` per stage; its steps make the job's virtualenv `.pipeline/ci/venv/PYTHON-VERSION-run` with "
            "exactly the pinned tool (`pip install 'pipeline-as-code[run]==X.Y.Z'`, or `install=`), reused by later "
            "builds in the agent's workspace, then run `pipeline run stage NAME`. Variables: `environment { NAME = "
            "'value' }`; an empty value is exported by the step's shell (`export NAME=''`), since Jenkins drops a "
            "variable whose value is empty."
        ),
        "order": Support("Stages run level by level in dependency order (Jenkins stages are sequential)."),
        "parallel": Support(
            "A level with several stages becomes a `parallel` block (fan-out); the next level waits for all (fan-in)."
        ),
        "render-check": Support(
            "First stage `check rendered CI files` installs the pinned tool without the `[run]` extra and runs "
            "`pipeline render --check` (the definition's targets), or `--target jenkins --check` when it names none."
        ),
        "manifests": Support(
            "Each stage's `post { always }` stashes the manifest folder (also after a failure: its own `STAGE.json` and all it received); a stage unstashes what the stages it needs stashed."
        ),
        "approval": Support(
            "A stage `approve NAME` with `agent none`, `input { message; ok; submitter }` and its own `timeout`: no "
            "executor waits for a human (a gate among the stages a teardown protects makes them take agents of their "
            "own, all with the labels of a local rehearsal's machine, and the teardown a `node` in post); the deploy "
            "stage then runs with `--yes`."
        ),
        "secrets": Support(
            "`environment { NAME = credentials('id') }` per stage (Secret.jenkins, default: name in lower-case with hyphens); teardown: `withCredentials([string(...)])` (secret text)."
        ),
        "aws": Support(
            "`withCredentials([[$class: 'AmazonWebServicesCredentialsBinding', credentialsId: 'aws-ENV']])` (AWS Credentials plugin) around the stage command."
        ),
        "branches": Support(
            "`when { beforeAgent true; branch pattern: REGEX, comparator: 'REGEXP' }` with the glob as a regex (its "
            "meaning in the definition: case-sensitive, `*` also matches '/'; Jenkins' default glob is Ant's, "
            "case-insensitive with `*` stopping at '/'), `comparator: 'EQUALS'` for a branch name; several patterns: "
            "`anyOf`. A stage also carries its ancestors' filters, since Jenkins does not skip stages after a "
            "skipped one.",
            fails="a branch filter on an always-run stage (teardown): put it on the stage that creates the stack",
        ),
        "push": Support(
            "`sh 'git checkout -B \"$BRANCH_NAME\"'` before the stage (a multibranch checkout is a detached HEAD), inside "
            "`withCredentials([gitUsernamePassword(credentialsId: 'git-push')])` (Git plugin: a username and token that "
            "may push to the repository's HTTPS remote)."
        ),
        "agents": Support(
            "`agent { label 'a && b' }` with the labels of what the stage needs (default labels `docker`, `packer`, "
            "`root`, and `pipeline-local` on every local-profile stage: exactly one persistent agent may carry it); "
            "`agent any` when it needs nothing. The stages a teardown protects share one agent with all their labels."
        ),
        "timeouts": Support(
            "Stage `options { timeout(time: N, unit: 'MINUTES') }` with N = timeout x attempts + 10 min set-up; the runner enforces the stage's own timeout per attempt."
        ),
        "retries": Support(
            "`pipeline run stage` retries in-process (1 + retries attempts, same code as on a laptop); no `retry(n)` option, which would multiply attempts.",
            native=False,
        ),
        "concurrency": Support(
            "`options { lock(resource: 'PIPELINE-ENV') }` (Lockable Resources plugin) on every stage that acts on a "
            "persistent environment; consecutive stages acting on one (deploy, then smoke test) are nested in one stage "
            "that takes the lock for all of them, so no other run deploys between them.",
            fails="two environments' locks over the same stages, or such stages overlapping a teardown's without "
            "nesting",
        ),
        "always": Support(
            "The stages a teardown protects are nested in one stage whose `post { always }` runs the teardown; a "
            "failure above it or of the teardown itself fails that stage, so later stages are skipped. Several "
            "teardowns of the same stages nest, one `post` each, so one that fails cannot keep another from running.",
            fails="two teardowns whose protected stages overlap without nesting",
        ),
        "trigger": Support(
            "Multibranch job: each push builds its branch; every stage is guarded by `when { branch ... }` for the "
            "trigger branches (`Trigger(branches=...)`, else `Pipeline(default_branch=...)`). With pull requests on, "
            "the checks (stages that act on no environment, drive neither Docker nor a cloud, wait for nobody and get "
            "no secret, after checks only) also match `changeRequest()`; every other stage never runs for a PR-N "
            "build (`not { changeRequest() }` under a `*` trigger).",
            native=False,
        ),
        "profile": Support(
            "`--profile` in the stage's command (its environment's, else the pipeline's); `--yes` after a gate."
        ),
    }

    def outputs(self, spec: PipelineSpec) -> Sequence[str]:
        return ("Jenkinsfile",)

    def render(self, spec: PipelineSpec, context: RenderContext) -> list[RenderedFile]:
        plan = build_plan(spec, context)
        stages = [self._render_check(plan), *self._items(plan)]
        text = render_template(
            "Jenkinsfile.j2",
            header=plan.header(self.name),
            pipeline=plan.name,
            stages=stages,
        )
        return [RenderedFile("Jenkinsfile", text)]

    # ----------------------------------------------------------------------------- structure
    def _items(self, plan: CiPlan) -> list[JStage]:
        levels = plan.spec.graph.levels()
        level_of = {name: i for i, names in enumerate(levels) for name in names}
        groups = self._groups(plan, levels, level_of)
        in_post = {t.name for g in _walk(groups) for t in g.teardowns}
        return self._build(plan, levels, 0, len(levels) - 1, groups, in_post, outer=None, local=frozenset())

    def _groups(self, plan: CiPlan, levels: list[list[str]], level_of: dict[str, int]) -> list[_Group]:
        by_range: dict[tuple[int, int], _Group] = {}
        for stage in plan.stages:
            if not stage.always or level_of[stage.name] == 0:
                continue
            if stage.branches:
                raise UnsupportedFeatureError(
                    self.name,
                    "a branch filter on an always-run stage",
                    f"stage {stage.name!r}",
                    hint="Jenkins runs it in a post { always } block, which has no `when`: "
                    "put the branch filter on the stage that creates what it cleans up",
                )
            refs = [level_of[r] for r in stage.stage.references().values()]
            start = min(refs) if refs else 0
            end = level_of[stage.name] - 1
            by_range.setdefault((start, end), _Group(start, end, [])).teardowns.append(stage)
        for held in _lock_ranges(plan, level_of, list(by_range)):
            group = by_range.setdefault((held.start, held.end), _Group(held.start, held.end, []))
            group.locks, group.span = held.locks, held.span
        ranges = sorted(by_range, key=lambda r: (r[0], -r[1]))
        roots: list[_Group] = []
        stack: list[_Group] = []
        for key in ranges:
            group = by_range[key]
            while stack and stack[-1].end < group.start:
                stack.pop()
            if stack:
                parent = stack[-1]
                if group.end > parent.end:
                    raise UnsupportedFeatureError(
                        self.name,
                        "teardowns (or an environment's consecutive stages) whose stages overlap without nesting",
                        f"stages {_group_label(parent)} and {_group_label(group)}",
                        hint="make one teardown run after the other's stack is gone, or make their stacks independent",
                    )
                parent.children.append(group)
            else:
                roots.append(group)
            stack.append(group)
        return roots

    def _build(
        self,
        plan: CiPlan,
        levels: list[list[str]],
        lo: int,
        hi: int,
        groups: list[_Group],
        in_post: set[str],
        outer: _Group | None,
        local: frozenset[str],
        forced: AgentNeeds | None = None,
    ) -> list[JStage]:
        items: list[JStage] = []
        index = lo
        pending = sorted(groups, key=lambda g: g.start)
        while index <= hi:
            if pending and pending[0].start == index:
                group = pending.pop(0)
                if outer is None:
                    members = {n for g in _walk([group]) for n in _members(levels, g)}
                    if not group.teardowns:  # only a lock: the stages keep their own agents
                        items.append(self._group(plan, levels, group, in_post, None, frozenset(), forced))
                    elif any(plan.by_name[m].gate is not None for m in members):
                        # An input inside a stage with an agent holds that executor while it waits: the
                        # stages get agents of their own and the teardown a node in post. A local test
                        # stack is containers on one machine: then every one of them asks for all the
                        # labels the group needs (the local profile's label names that one machine).
                        ordered = sorted(members, key=lambda n: plan.by_name[n].index)
                        union = AgentNeeds.union([plan.by_name[m].agent for m in ordered])
                        shared = union if union.persistent else forced
                        items.append(self._group(plan, levels, group, in_post, None, frozenset(), shared))
                    else:
                        items.append(self._group(plan, levels, group, in_post, group, frozenset(members)))
                else:
                    items.append(self._group(plan, levels, group, in_post, outer, local))
                index = group.end + 1
                continue
            names = [n for n in levels[index] if n not in in_post]
            stages = [plan.by_name[n] for n in names]
            index += 1
            if not stages:
                continue
            if len(stages) == 1 or outer is not None:
                # Inside a group that holds one agent the stages share its workspace and its manifest
                # folder: they run one after the other, in pipeline order (as the group's steps do on
                # the targets that make it one job), never reading a sibling's half-written manifest.
                for stage in stages:
                    items += self._stage_with_gate(plan, stage, outer, local, forced)
            else:
                items.append(
                    JStage(
                        name=_parallel_name(names),
                        parallel=[self._branch(plan, s, outer, local, forced) for s in stages],
                    )
                )
        return items

    def _group(
        self,
        plan: CiPlan,
        levels: list[list[str]],
        group: _Group,
        in_post: set[str],
        outer: _Group | None,
        local: frozenset[str],
        forced: AgentNeeds | None = None,
    ) -> JStage:
        """The stages a teardown protects, nested, with the teardown in post { always }. The group
        holds one agent for all of them (`outer is group`), unless a gate is inside (`outer is None`):
        then each stage has its own (with `forced`'s labels too) and the teardown runs in a `node` of
        its own in post."""
        children = self._build(plan, levels, group.start, group.end, group.children, in_post, outer, local, forced)
        members = [n for i in range(group.start, group.end + 1) for n in levels[i] if n not in in_post]
        first = members[0] if members else group.teardowns[0].name
        members += [t.name for t in group.teardowns]
        whens = [self._when(plan, plan.by_name[m]) for m in members]
        shared = [c for c in whens[0] if all(c in w for w in whens[1:])]
        agent, label = (None, "")
        if outer is group:  # one agent for every stage inside: what each of them needs
            inside = sorted(local, key=lambda n: plan.by_name[n].index)  # nested groups' teardowns too
            agent, label = _agent(AgentNeeds.union([plan.by_name[m].agent for m in inside]))
        comments = []
        if group.locks:
            comments.append(
                f"one lock on {', '.join(group.locks)} for {', '.join(group.span)}: no other run deploys between them"
            )
        # Each teardown has a post { always } of its own: one that fails (an error thrown in post fails the
        # stage, so what comes after it is skipped) cannot keep another from running. Several teardowns of
        # the same stages nest: the first in pipeline order runs innermost, i.e. first.
        teardowns: list[StagePlan | None] = list(group.teardowns) or [None]
        stage: JStage | None = None
        for depth, teardown in enumerate(teardowns):
            post = self._teardown_post(plan, teardown, outer, local, forced) if teardown is not None else []
            done = [t.name for t in group.teardowns[: depth + 1]] or members[-1:]
            notes = [f"{teardown.name} runs in post {{ always }}: also when a stage above fails"] if teardown else []
            outermost = depth == len(teardowns) - 1
            stage = JStage(
                name=f"{first} to {', '.join(done)}",
                agent=agent if outermost else None,
                label=label if outermost else "",
                when=shared if outermost else [],
                lock=(f"{plan.name}-{group.locks[0]}" if group.locks else "") if outermost else "",
                extra_locks=[f"{plan.name}-{lock}" for lock in group.locks[1:]] if outermost else [],
                stages=children if stage is None else [stage],
                post_always=post,
                comment="; ".join(notes + (comments if outermost else [])),
            )
        assert stage is not None
        return stage

    def _teardown_post(
        self,
        plan: CiPlan,
        teardown: StagePlan,
        outer: _Group | None,
        local: frozenset[str],
        forced: AgentNeeds | None,
    ) -> list[Step]:
        """A teardown's post { always } steps; in a `node` of its own (which, unlike a stage's agent,
        does not check out) when the stages it protects have no agent in common (a gate among them)."""
        post = self._teardown_steps(plan, teardown, local)
        if outer is None:
            needs = AgentNeeds.union([teardown.agent] + ([forced] if forced else []))
            post = [Step("node", text=" && ".join(needs.labels), body=[Step("checkout"), *post])]
        return post

    def _branch(
        self,
        plan: CiPlan,
        stage: StagePlan,
        outer: _Group | None,
        local: frozenset[str],
        forced: AgentNeeds | None = None,
    ) -> JStage:
        parts = self._stage_with_gate(plan, stage, outer, local, forced)
        if len(parts) == 1:
            return parts[0]
        return JStage(name=f"{stage.name} (gated)", stages=parts)

    # ----------------------------------------------------------------------------- one stage
    def _stage_with_gate(
        self,
        plan: CiPlan,
        stage: StagePlan,
        outer: _Group | None,
        local: frozenset[str],
        forced: AgentNeeds | None = None,
    ) -> list[JStage]:
        run = self._stage(plan, stage, outer, local, forced)
        if stage.gate is None:
            return [run]
        gate = stage.gate
        submitter = ",".join((*gate.approvers, *gate.groups))
        approve = JStage(
            name=f"approve {stage.name}",
            agent="none" if outer is None else None,
            when=run.when,
            before_input=bool(run.when),
            timeout=gate.timeout_minutes,
            input=Input(message=gate.message, ok="Approve", submitter=submitter),
            steps=[Step("echo", text=f"Approved: {stage.name} may run.")],
        )
        return [approve, run]

    def _stage(
        self,
        plan: CiPlan,
        stage: StagePlan,
        outer: _Group | None,
        local: frozenset[str],
        forced: AgentNeeds | None = None,
    ) -> JStage:
        environment = [(s.name, "credentials", s.jenkins_id) for s in stage.secrets]
        environment += [(k, "value", v) for k, v in stage.env if v]
        run: list[Step] = [self._install(plan), self._run(plan, stage)]
        bindings = [("aws", _aws_id(stage), "")] if stage.aws is not None else []
        if stage.pushes:
            # A multibranch checkout is a detached HEAD: the promote commit goes on the branch built.
            run.insert(0, Step("sh", text=CHECKOUT_BRANCH))
            bindings.append(("git", GIT_PUSH_CREDENTIALS, ""))
        if bindings:
            run = [Step("with_credentials", bindings=bindings, body=run)]
        needs = AgentNeeds.union([stage.agent, forced]) if forced is not None else stage.agent
        agent, label = _agent(needs) if outer is None else (None, "")
        return JStage(
            name=stage.name,
            agent=agent,
            label=label,
            when=self._when(plan, stage),
            timeout=stage.timeout_minutes,
            lock=_lock_name(plan, stage),
            environment=environment,
            steps=[*_unstash(stage, local), *run],
            post_always=[_stash(stage)],
            comment=stage.description,
        )

    def _teardown_steps(self, plan: CiPlan, stage: StagePlan, local: frozenset[str]) -> list[Step]:
        # No catchError: a teardown that fails must fail its stage, so that what comes after it is skipped.
        body: list[Step] = [self._install(plan), self._run(plan, stage)]
        body = [Step("timeout", minutes=stage.timeout_minutes, body=body)]
        bindings = [("string", s.jenkins_id, s.name) for s in stage.secrets]
        if stage.aws is not None:
            bindings.append(("aws", _aws_id(stage), ""))
        if bindings:
            body = [Step("with_credentials", bindings=bindings, body=body)]
        if any(v for _, v in stage.env):
            body = [Step("with_env", pairs=[(k, v) for k, v in stage.env if v], body=body)]
        lock = _lock_name(plan, stage)
        if lock:
            body = [Step("lock", text=lock, body=body)]
        # A stage it needs may not have run (it failed, or was skipped after a failure): its stash is
        # then missing, and the teardown must still run (it reads what the stages that ran left).
        unstash = [Step("tolerate", body=[step]) for step in _unstash(stage, local)]
        return [
            Step("echo", text=f"{stage.name}: runs whether the stages above succeeded or not"),
            *unstash,
            *body,
            _stash(stage),
        ]

    def _run(self, plan: CiPlan, stage: StagePlan) -> Step:
        """`pipeline run stage` in the job's virtualenv. Jenkins drops a variable whose value is
        empty (`environment`/`withEnv` go through hudson.EnvVars.override, which removes it), so
        empty values are exported by the shell itself."""
        empty = " ".join(f"{name}=''" for name, value in stage.env if not value)
        exports = f"export {empty} && " if empty else ""
        return Step("sh", text=f"{plan.activate()} && {exports}{stage.run_command}")

    def _render_check(self, plan: CiPlan) -> JStage:
        agent, label = _agent(AgentNeeds(labels=plan.spec.agents.every))
        return JStage(
            name=RENDER_CHECK_STAGE,
            agent=agent,
            label=label,
            when=self._trigger_conditions(plan, None),
            timeout=RENDER_CHECK_MINUTES,
            steps=[
                self._install(plan, run_extra=False),
                Step("sh", text=f"{plan.activate(run_extra=False)} && {plan.render_command(self.name, check=True)}"),
            ],
            comment="the committed CI files must match a fresh render of the definition",
        )

    # ----------------------------------------------------------------------------- pieces
    def _install(self, plan: CiPlan, *, run_extra: bool = True) -> Step:
        """The job's virtualenv, reused from build to build in the agent's workspace (keyed by the
        Python and tool versions), with exactly the pinned tool in it."""
        return Step("sh", text=plan.setup_script(plan.python_command, run_extra=run_extra))

    def _trigger_conditions(self, plan: CiPlan, stage: StagePlan | None) -> list[Condition]:
        """The trigger's branches, and pull requests (change requests) for the checks only: a stage
        that is not a check never runs for one (`branch` does not match a PR-N build; with a `*`
        trigger the stage says `not { changeRequest() }`). `stage` None: the drift check."""
        trigger = plan.trigger
        branches = plan.trigger_branches
        prs = trigger.pull_requests and (stage is None or stage.on_pull_requests)
        if "*" in branches:
            if trigger.pull_requests and not prs:
                return [Condition((), not_change_request=True)]
            return []
        return [Condition(branches, prs)]

    def _when(self, plan: CiPlan, stage: StagePlan) -> list[Condition]:
        conditions = self._trigger_conditions(plan, stage)
        for group in stage.branch_groups:
            condition = Condition(group)
            if condition not in conditions:
                conditions.append(condition)
        return conditions


def _agent(needs: AgentNeeds) -> tuple[str | None, str]:
    """`agent any`, or `agent { label 'a && b' }` for an agent with every label the job needs."""
    if needs.labels:
        return None, " && ".join(needs.labels)
    return "any", ""


def _unstash(stage: StagePlan, local: frozenset[str]) -> list[Step]:
    """The manifests of the stages this one needs. Each stash holds every manifest its stage had,
    so they bring the whole upstream; those made on this agent (same protected group) are here."""
    return [Step("unstash", text=_stash_name(n)) for n in stage.needs if n not in local]


def _walk(groups: list[_Group]) -> list[_Group]:
    out: list[_Group] = []
    for group in groups:
        out.append(group)
        out += _walk(group.children)
    return out


def _members(levels: list[list[str]], group: _Group) -> set[str]:
    names = {n for i in range(group.start, group.end + 1) for n in levels[i]}
    return names | {t.name for t in group.teardowns}


def _stash_name(stage: str) -> str:
    return f"manifest-{stage}"


def _stash(stage: StagePlan) -> Step:
    return Step("stash", text=_stash_name(stage.name), arg=f"{MANIFEST_DIR}/*.json")


def _aws_id(stage: StagePlan) -> str:
    assert stage.aws is not None
    return f"aws-{stage.aws.environment}"


def _lock_name(plan: CiPlan, stage: StagePlan) -> str:
    """The stage's own lock, unless a group around it holds that environment's lock already (the
    Lockable Resources plugin would wait for itself)."""
    if not stage.lock:
        return ""
    levels = plan.spec.graph.levels()
    level_of = {name: i for i, names in enumerate(levels) for name in names}
    for held in _lock_ranges(plan, level_of, _teardown_ranges(plan, level_of)):
        if stage.lock in held.locks and held.start <= level_of[stage.name] <= held.end:
            return ""
    return f"{plan.name}-{stage.lock}"


@dataclass
class _LockRange:
    start: int
    end: int
    locks: list[str]
    span: list[str]


def _teardown_ranges(plan: CiPlan, level_of: dict[str, int]) -> list[tuple[int, int]]:
    """The level ranges teardown groups cover (as `_groups` makes them)."""
    ranges = []
    for stage in plan.stages:
        if stage.always and level_of[stage.name] > 0:
            refs = [level_of[r] for r in stage.stage.references().values()]
            ranges.append((min(refs) if refs else 0, level_of[stage.name] - 1))
    return ranges


def _lock_ranges(plan: CiPlan, level_of: dict[str, int], fixed: Sequence[tuple[int, int]]) -> list[_LockRange]:
    """The level ranges of the locked parent stages: one per lock span, grown until they nest with
    each other and with the teardown groups (`fixed`). Jenkins nests stages by level, so a span
    covers every stage of its levels; ranges that overlap otherwise merge into one stage taking
    several locks, and a range that cuts a teardown group grows to contain it: a lock is held
    longer, never shorter."""

    def partial(a: tuple[int, int], b: tuple[int, int]) -> bool:
        meet = a[0] <= b[1] and b[0] <= a[1]
        inside = (a[0] >= b[0] and a[1] <= b[1]) or (b[0] >= a[0] and b[1] <= a[1])
        return meet and (not inside or a == b)

    ranges = []
    for span in plan.lock_spans:
        lock = plan.by_name[span[0]].lock or ""
        levels = [level_of[n] for n in span]
        ranges.append(_LockRange(min(levels), max(levels), [lock], list(span)))
    changed = True
    while changed:
        changed = False
        for a in ranges:
            other = next((b for b in ranges if b is not a and partial((a.start, a.end), (b.start, b.end))), None)
            if other is not None:
                a.start, a.end = min(a.start, other.start), max(a.end, other.end)
                a.locks += [lock for lock in other.locks if lock not in a.locks]
                a.span += other.span
                ranges.remove(other)
                changed = True
                break
            cut = next((r for r in fixed if r != (a.start, a.end) and partial((a.start, a.end), r)), None)
            if cut is not None:
                a.start, a.end = min(a.start, cut[0]), max(a.end, cut[1])
                changed = True
                break
    return sorted(ranges, key=lambda r: (r.start, -r.end))


def _group_label(group: _Group) -> str:
    names = [t.name for t in group.teardowns] or list(group.span)
    return ", ".join(repr(n) for n in names)


def _parallel_name(names: list[str]) -> str:
    shown = ", ".join(names[:3])
    more = f" +{len(names) - 3} more" if len(names) > 3 else ""
    return f"parallel: {shown}{more}"
