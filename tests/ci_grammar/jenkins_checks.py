"""Checks of a recorded Jenkinsfile (a stand-in trace run through jenkins_model) against the spec.

Each check returns a list of problems (empty: the Jenkinsfile does what the definition says). They
compare what Jenkins would do and hand over (the strings each `sh` receives, the variables and
credentials bound around it, the locks, timeouts, inputs, stashes) with spec_facts, never with
expected text, so they keep holding when the renderer changes how it says things.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter

from pipeline.render.base import MANIFEST_DIR
from pipeline.render.plan import GIT_PUSH_CREDENTIALS, CiPlan, StagePlan
from tests.ci_grammar import spec_facts as facts
from tests.ci_grammar.jenkins_model import (
    GIT_USERNAME_PASSWORD,
    Event,
    Interpreter,
    Run,
    Workspace,
    always,
    never,
)
from tests.ci_grammar.jenkins_trace import Branch, ModelError, Trace
from tests.ci_grammar.shell import (
    Command,
    ShellSyntaxError,
    commands,
    expand,
    exported_environment,
    is_pipeline_command,
)
from tests.ci_grammar.shell_run import Job

CREDENTIAL_MARKER = "@@credentials:"
AWS_BINDING = "AmazonWebServicesCredentialsBinding"
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
GIT_BINDING = "gitUsernamePassword"
"""The Git plugin's binding: git reads GIT_USERNAME/GIT_PASSWORD through GIT_ASKPASS when it pushes over HTTPS."""
TARGET = "jenkins"


@dataclass
class Simulation:
    """One build of the Jenkinsfile and what it did, in the spec's terms."""

    run: Run
    stage_commands: dict[str, list[tuple[Event, Command]]] = field(default_factory=dict)
    """Spec stage -> the `sh` events that ran `pipeline run stage NAME` (and the command)."""
    other_pipeline_commands: list[tuple[Event, Command]] = field(default_factory=list)
    files_before: dict[int, frozenset[str]] = field(default_factory=dict)
    """Event index -> the workspace's files when that command ran."""

    def ran(self) -> set[str]:
        return set(self.stage_commands)

    def command(self, stage: str) -> tuple[Event, Command]:
        return self.stage_commands[stage][0]


def script_commands(event: Event) -> list[Command]:
    try:
        return commands(str(event.args.get("script") or ""))
    except ShellSyntaxError as e:
        raise AssertionError(f"sh script is not valid sh ({e}): {event.args.get('script')!r}") from e


def simulate(
    trace: Trace,
    branch: str,
    *,
    fails: Callable[[Event], bool] = never,
    approves: Callable[[Event], bool] = always,
) -> Simulation:
    """Run the build; every `pipeline run stage NAME` command leaves NAME.json in the manifest folder
    of its workspace (also when it fails, as the runner does)."""
    sim = Simulation(Run(branch))

    def on_sh(event: Event, workspace: Workspace) -> None:
        for command in script_commands(event):
            if is_pipeline_command(command, "run", "stage") and len(command.argv) > 3:
                sim.stage_commands.setdefault(command.argv[3], []).append((event, command))
                sim.files_before[event.index] = frozenset(workspace.files)
                workspace.files.add(facts.manifest_file(command.argv[3]))
            elif is_pipeline_command(command):
                sim.other_pipeline_commands.append((event, command))

    sim.run = Interpreter(trace, branch, fails=fails, approves=approves, on_sh=on_sh).execute()
    return sim


def fails_stage(stage: str) -> Callable[[Event], bool]:
    def fails(event: Event) -> bool:
        return event.kind == "sh" and any(is_pipeline_command(c, "run", "stage", stage) for c in script_commands(event))

    return fails


@dataclass
class Build:
    """A build of one branch with nothing failing, and which stages the definition runs there."""

    branch: Branch
    sim: Simulation
    expected: dict[str, bool | None]

    def must_run(self, plan: CiPlan) -> list[StagePlan]:
        return [s for s in plan.stages if self.expected[s.name] is True and s.name in self.sim.stage_commands]


def builds(trace: Trace, plan: CiPlan, branches: list[Branch]) -> list[Build]:
    """A build of every sample branch CI builds (a push to a trigger branch, or a change request
    when the trigger asks for them)."""
    return [
        Build(b, simulate(trace, b.name), facts.expected_runs(plan, b))
        for b in branches
        if facts.trigger_runs(plan, b) is True
    ]


def unchecked(plan: CiPlan, branches: list[Branch]) -> list[str]:
    """Stages that must run on none of the sample branches (their values cannot be checked)."""
    return [s.name for s in plan.stages if facts.branch_running(plan, branches, s.name) is None]


# ----------------------------------------------------------------------------- the checks


def check_recorded(trace: Trace) -> list[str]:
    problems = [f"stand-in: {e}" for e in trace.errors]
    if trace.pipeline is None:
        problems.append("no pipeline was recorded")
    return problems


def check_commands(build: Build, plan: CiPlan) -> list[str]:
    """Every stage the definition runs on this branch runs exactly once, as `pipeline run stage NAME`
    with the plan's flags, as the last command of its script (so its exit status is the step's),
    after the pinned tool (or the definition's install command) was installed in the same workspace;
    no other stage runs; one render check runs before every stage and checks exactly the targets the
    team commits."""
    sim = build.sim
    where = build.branch.name
    problems = [f"{where}: {p}" for p in sim.run.problems]
    if sim.run.result != "SUCCESS":
        problems.append(f"{where}: the build ends {sim.run.result} although nothing failed")
    for name in sorted(sim.ran() - set(plan.by_name)):
        problems.append(f"{where}: a script runs `pipeline run stage {name}`, which the definition does not have")
    for stage in plan.stages:
        found = sim.stage_commands.get(stage.name, [])
        must = build.expected[stage.name]
        if must is False and found:
            problems.append(f"{where}: {stage.name} runs, the definition skips it here")
        if must is not True:
            continue
        if len(found) != 1:
            problems.append(f"{where}: {stage.name}: its command runs {len(found)} times (expected once)")
            continue
        event, command = found[0]
        if command.argv != facts.stage_argv(stage):
            problems.append(f"{stage.name}: runs {list(command.argv)}, the plan says {list(facts.stage_argv(stage))}")
        if script_commands(event)[-1] != command:
            problems.append(
                f"{stage.name}: `pipeline run stage` is not the last command of its script {event.args['script']!r}"
            )
        if event.scope.workspace is None:
            problems.append(f"{stage.name}: its command runs without an agent")
            continue
        if not event.sources:
            problems.append(f"{stage.name}: its command runs in a workspace without the checked-out sources")
        wrong = facts.pinned_install_problem(earlier_in_workspace(sim, event), plan, drift_check=False)
        if wrong:
            problems.append(f"{stage.name}: on its agent before it, {wrong}")
    checks = [(e, c) for e, c in sim.other_pipeline_commands if facts.is_drift_check(c.argv)]
    if len(checks) != 1:
        problems.append(f"{where}: a render check runs {len(checks)} times (expected once)")
    else:
        event, command = checks[0]
        problems += [f"{where}: the render check {p}" for p in facts.drift_check_problems(command.argv, plan, TARGET)]
        wrong = facts.pinned_install_problem(earlier_in_workspace(sim, event), plan, drift_check=True)
        if wrong:
            problems.append(f"{where}: on the render check's agent before it, {wrong}")
        if any(e.index < event.index for runs in sim.stage_commands.values() for e, _ in runs):
            problems.append(f"{where}: a stage runs before the render check")
    return problems


def earlier_in_workspace(sim: Simulation, event: Event) -> list[tuple[str, ...]]:
    """The simple commands of every script run on this event's agent (workspace) up to it."""
    return [
        c.argv
        for e in sim.run.of("sh")
        if e.index <= event.index and e.scope.workspace is event.scope.workspace
        for c in script_commands(e)
    ]


def command_environment(event: Event, command: Command) -> dict[str, str]:
    """The plain variables the command receives: what Jenkins gives the `sh` step, then what the
    script itself exports before the command."""
    cmds = script_commands(event)
    return exported_environment(cmds[: cmds.index(command)], event.env)


def check_environment(build: Build, plan: CiPlan) -> list[str]:
    """Each stage's variables reach its command byte for byte (an empty value too); no other
    stage's variables and no secret as a plain variable."""
    problems = []
    declared = {k for s in plan.stages for k, _ in s.env}
    for stage in build.must_run(plan):
        event, command = build.sim.command(stage.name)
        try:
            env = command_environment(event, command)
        except ShellSyntaxError as e:
            problems.append(f"{stage.name}: its script sets variables in a way the model does not follow: {e}")
            continue
        own = dict(stage.env)
        for name, value in own.items():
            if name not in env:
                problems.append(f"{stage.name}: {name} is not set (the definition sets {value!r})")
            elif env[name] != value:
                problems.append(f"{stage.name}: {name} is {env[name]!r}, the definition says {value!r}")
        for name in sorted((declared - set(own)) & set(env)):
            problems.append(f"{stage.name}: receives {name}, a variable of another stage")
        for secret in stage.secrets:
            if secret.name in env and secret.name not in {b.variable for b in event.scope.bindings}:
                problems.append(f"{stage.name}: secret {secret.name} is a plain variable")
    return problems


def check_secrets(build: Build, plan: CiPlan) -> list[str]:
    """Each stage's secrets, and only those, are bound from Jenkins credentials with the right ids;
    aws-profile stages get an AWS credentials binding; no secret is interpolated by Groovy."""
    problems = []
    for event in build.sim.run.of("sh"):
        if CREDENTIAL_MARKER in str(event.args.get("script")):
            problems.append(f"a script interpolates a credential in Groovy: {event.args['script']!r}")
    for stage in build.must_run(plan):
        event, _ = build.sim.command(stage.name)
        bound = {b.variable: b for b in event.scope.bindings}
        expected = {s.name: s.jenkins_id for s in stage.secrets}
        if stage.aws is not None:
            for variable in AWS_VARIABLES:
                if variable not in expected:
                    expected[variable] = f"aws-{stage.aws.environment}"
        if stage.pushes:  # the push credentials, and only for the stage that pushes
            for variable in GIT_USERNAME_PASSWORD:
                expected[variable] = GIT_PUSH_CREDENTIALS
        for variable, cid in expected.items():
            binding = bound.get(variable)
            if binding is None:
                problems.append(f"{stage.name}: {variable} is not bound (credentials {cid!r})")
            elif binding.credentials_id != cid:
                problems.append(f"{stage.name}: {variable} is bound to {binding.credentials_id!r}, expected {cid!r}")
            elif variable in AWS_VARIABLES and stage.aws is not None and binding.kind != AWS_BINDING:
                problems.append(f"{stage.name}: {variable} is bound by {binding.kind}, expected {AWS_BINDING}")
            elif variable in GIT_USERNAME_PASSWORD and stage.pushes and binding.kind != GIT_BINDING:
                problems.append(f"{stage.name}: {variable} is bound by {binding.kind}, expected {GIT_BINDING}")
        for variable in sorted(set(bound) - set(expected)):
            problems.append(
                f"{stage.name}: receives credentials {bound[variable].credentials_id!r} as {variable}, which it does not declare"
            )
    return problems


def gate_input(sim: Simulation, stage: StagePlan) -> Event | None:
    """The input that gates the stage: the last one with the gate's message asked before its
    command, not in a concurrent branch (two gates may well share a message)."""
    assert stage.gate is not None
    if stage.name not in sim.stage_commands:
        return None
    event, _ = sim.command(stage.name)
    asked = [
        e
        for e in sim.run.of("input")
        if e.index < event.index and not e.concurrent_with(event) and e.args.get("message") == stage.gate.message
    ]
    return asked[-1] if asked else None


def submitters(value: object) -> set[str]:
    return {p.strip() for p in str(value or "").split(",") if p.strip()}


def check_gates(build: Build, plan: CiPlan) -> list[str]:
    """Each gated stage's command comes after an input with the gate's message, submitters and
    timeout; no input is ever asked while an executor is held; no input that no gate asks for."""
    problems = []
    sim = build.sim
    for stage in build.must_run(plan):
        if stage.gate is None:
            continue
        event = gate_input(sim, stage)
        if event is None:
            problems.append(f"{stage.name}: no input {stage.gate.message!r} is asked before it runs")
            continue
        wanted = {*stage.gate.approvers, *stage.gate.groups}
        if submitters(event.args.get("submitter")) != wanted:
            problems.append(
                f"{stage.name}: the input's submitters are {event.args.get('submitter')!r}, expected {sorted(wanted)}"
            )
        if event.timeout != stage.gate.timeout_minutes:
            problems.append(
                f"{stage.name}: the input waits {event.timeout} minutes, the gate says {stage.gate.timeout_minutes}"
            )
    for event in sim.run.of("input"):
        if event.scope.workspace is not None:
            problems.append(
                f"the input {event.args.get('message')!r} is asked while an executor is held "
                f"(agent {event.scope.workspace.agent})"
            )
        if not any(s.gate and s.gate.message == event.args.get("message") for s in plan.gated):
            problems.append(f"an input {event.args.get('message')!r} that no gate of the definition asks for")
    return problems


def check_locks(build: Build, plan: CiPlan) -> list[str]:
    """Every stage acting on a persistent environment holds that environment's lock resource, the
    same one for all of them; the resource names the pipeline and the environment (Lockable
    Resources are shared by every job on the server). Consecutive stages on one environment (the
    plan's lock spans) run under ONE hold of it, so no other run deploys between them. A command
    never runs under two separate acquisitions (nested locks of two runs taken in opposite orders
    deadlock), and a lock is held only on behalf of a stage of its environment under the same hold."""
    problems = []
    commands_of = {s.name: build.sim.command(s.name)[0] for s in build.must_run(plan)}
    held = {name: event.scope.locks for name, event in commands_of.items()}
    resource: dict[str, str] = {}
    for env in plan.locks:
        users = [s.name for s in plan.stages if s.lock == env and s.name in held]
        if not users:
            continue
        common = set.intersection(*(set(held[u]) for u in users))
        own = [r for r in common if facts.names_pipeline_and_environment(r, plan, env)]
        if len(own) != 1:
            problems.append(
                f"environment {env}: its stages {users} hold {[held[u] for u in users]}: expected one common lock "
                "naming the pipeline and the environment"
            )
            continue
        resource[env] = own[0]
    if len(set(resource.values())) != len(resource):
        problems.append(f"two environments share a lock: {resource}")
    owner = {r: env for env, r in resource.items()}
    order: dict[str, set[str]] = {}
    for event in commands_of.values():
        acquisitions: list[tuple[int, list[str]]] = []
        for taken, hold in event.scope.holds:
            if not acquisitions or acquisitions[-1][0] != hold:
                acquisitions.append((hold, []))
            acquisitions[-1][1].append(taken)
        for (_, outer), (_, inner) in itertools.combinations(acquisitions, 2):
            for a in outer:
                order.setdefault(a, set()).update(inner)
    cycle = _cycle(order)
    if cycle:
        problems.append(
            f"locks are nested in opposite orders ({' -> '.join(cycle)}): two runs can wait for each other forever"
        )
    for name, event in commands_of.items():
        for taken, hold in event.scope.holds:
            holder = owner.get(taken)
            on_behalf = [
                other
                for other, e in commands_of.items()
                if plan.by_name[other].lock == holder and (taken, hold) in e.scope.holds
            ]
            if holder is None or not on_behalf:
                problems.append(f"{name}: holds lock {taken!r}, for no stage of its environment under that hold")
    for span in plan.lock_spans:
        span_env = plan.by_name[span[0]].lock
        ran = [n for n in span if n in commands_of]
        if span_env not in resource or len(ran) < 2:
            continue
        holds = [{h for r, h in commands_of[n].scope.holds if r == resource[span_env]} for n in ran]
        if not set.intersection(*holds):
            problems.append(
                f"{', '.join(ran)} act on {span_env} one after the other but take its lock separately: "
                "another run may deploy between them"
            )
    return problems


def _cycle(edges: dict[str, set[str]]) -> list[str]:
    """A cycle in the 'taken before' order of lock resources, or []."""
    try:
        TopologicalSorter({k: set(v) for k, v in edges.items()}).prepare()
    except CycleError as e:
        return [str(n) for n in e.args[1]]
    return []


def agent_labels(agent: dict[str, object]) -> set[str]:
    """The labels an agent must have: `agent any` none, `label 'a && b'` (or `node('a && b')`) a and b."""
    kind = agent.get("kind")
    if kind == "any":
        return set()
    if kind == "label":
        expression = str(agent.get("label") or "")
        parts = [p.strip() for p in expression.split("&&")] if expression.strip() else []
        if any(not p or any(c in p for c in "|!()") or " " in p for p in parts):
            raise ModelError(f"label expression {expression!r} is not modelled (only 'a && b')")
        return set(parts)
    raise ModelError(f"agent {agent} is not modelled")


def check_agents(build: Build, plan: CiPlan) -> list[str]:
    """Each stage's command runs on an agent with every label the plan says the stage needs (Docker,
    Packer, root, the local profile's one persistent machine, the pipeline's own labels), and the
    render check on one with the labels every job asks for."""
    problems = []
    for stage in build.must_run(plan):
        event, _ = build.sim.command(stage.name)
        if event.scope.workspace is None:
            continue
        missing = set(stage.agent.labels) - agent_labels(event.scope.workspace.agent)
        if missing:
            problems.append(
                f"{stage.name}: runs on agent {event.scope.workspace.agent}, without the labels {sorted(missing)} it needs"
            )
    for event, command in build.sim.other_pipeline_commands:
        if facts.is_drift_check(command.argv) and event.scope.workspace is not None:
            missing = set(plan.spec.agents.every) - agent_labels(event.scope.workspace.agent)
            if missing:
                problems.append(f"the render check runs without the labels {sorted(missing)} every job asks for")
    return problems


def check_push(build: Build, plan: CiPlan) -> list[str]:
    """A stage that commits and pushes (the aws-profile promote recording its image) runs on the
    branch being built, checked out as a branch in its workspace before it (a multibranch checkout
    is a detached HEAD); its push credentials are checked by check_secrets."""
    problems = []
    for stage in build.must_run(plan):
        if not stage.pushes:
            continue
        event, command = build.sim.command(stage.name)
        branch: str | None = None
        for e in build.sim.run.of("sh"):
            if e.index > event.index or e.scope.workspace is not event.scope.workspace:
                continue
            cmds = script_commands(e)
            for c in cmds[: cmds.index(command)] if e is event else cmds:
                words = list(c.argv)
                if words[:2] == ["git", "checkout"] or words[:2] == ["git", "switch"]:
                    flag = next((w for w in words[2:] if w in ("-B", "-b", "-C", "-c")), None)
                    if flag is None:
                        branch = None  # any other checkout leaves the branch (a commit, a path, --detach)
                        continue
                    raw = c.raw[words.index(flag) + 1]
                    try:
                        branch = expand(raw, exported_environment(cmds[: cmds.index(c)], e.env))
                    except ShellSyntaxError as err:
                        problems.append(
                            f"{stage.name}: the branch it checks out is {raw!r}, which the model cannot expand: {err}"
                        )
        if branch != build.branch.name:
            problems.append(
                f"{stage.name}: commits and pushes, but its workspace is on "
                + (f"branch {branch!r}" if branch else "a detached HEAD")
                + f", not on {build.branch.name!r}"
            )
    return problems


def check_timeouts(build: Build, plan: CiPlan) -> list[str]:
    """The innermost limit around each command is the plan's (every attempt plus set-up), and no
    `retry` multiplies the attempts the runner already makes."""
    problems = []
    for stage in build.must_run(plan):
        event, _ = build.sim.command(stage.name)
        if event.timeout != stage.timeout_minutes:
            problems.append(
                f"{stage.name}: runs under a {event.timeout}-minute limit, the plan says {stage.timeout_minutes}"
            )
        if event.scope.retries:
            problems.append(f"{stage.name}: runs inside retry {event.scope.retries}: attempts would multiply")
    return problems


def check_manifests(build: Build, plan: CiPlan) -> list[str]:
    """When a stage runs, its workspace holds the manifests of all its upstream stages (brought by
    unstash, or made on the same agent): every unstash has a stash of upstream work. Another
    stage's manifest may be there only if that stage finished before on the same agent (the runner
    reads its ancestors' records only), never one a concurrent stage is writing."""
    sim = build.sim
    problems = [f"{build.branch.name}: {p}" for p in sim.run.problems if "stash" in p]
    for stage in build.must_run(plan):
        event, _ = sim.command(stage.name)
        have = sim.files_before[event.index]
        want = {facts.manifest_file(a) for a in stage.ancestors if a in sim.ran()}
        for path in sorted(want - have):
            problems.append(f"{stage.name}: {path} (an upstream stage's manifest) is missing when it runs")
        for path in sorted(have - want):
            maker = path.removeprefix(f"{MANIFEST_DIR}/").removesuffix(".json")
            made = [e for e, _ in sim.stage_commands.get(maker, [])]
            if not made or any(e.concurrent_with(event) for e in made):
                problems.append(
                    f"{stage.name}: {path} is in its workspace, but {maker} is not upstream of it"
                    + (" and runs concurrently in the same workspace" if made else "")
                )
    for event in sim.run.of("stash") + sim.run.of("unstash"):
        for path in event.args.get("files", []):
            if not path.startswith(f"{MANIFEST_DIR}/"):
                problems.append(f"{event.kind} {event.args.get('name')!r} carries {path}")
    return problems


def check_branch(trace: Trace, plan: CiPlan, branch: Branch) -> list[str]:
    """On this branch (nothing failing) exactly the stages the definition says run, the build
    succeeds, and no approval is asked for a stage that then does not run."""
    sim = simulate(trace, branch.name)
    expected = facts.expected_runs(plan, branch)
    problems = [f"{branch.name}: {p}" for p in sim.run.problems]
    if sim.run.result != "SUCCESS":
        problems.append(f"{branch.name}: the build ends {sim.run.result}")
    ran = sim.ran()
    for name, must in expected.items():
        if must is True and name not in ran:
            problems.append(f"{branch.name}: {name} does not run (the definition runs it)")
        if must is False and name in ran:
            problems.append(f"{branch.name}: {name} runs (the definition skips it)")
    messages = {g.gate.message for g in plan.gated if g.gate is not None and g.name in ran}
    for gated in plan.gated:
        assert gated.gate is not None
        asked = any(e.args.get("message") == gated.gate.message for e in sim.run.of("input"))
        if gated.name not in ran and gated.gate.message not in messages and asked:
            problems.append(f"{branch.name}: the approval of {gated.name} is asked, but {gated.name} does not run")
    checked = any(facts.is_drift_check(c.argv) for _, c in sim.other_pipeline_commands)
    builds = facts.trigger_runs(plan, branch)
    if builds is True and not checked:
        problems.append(f"{branch.name}: the render check does not run")
    if builds is False and (checked or ran):
        problems.append(f"{branch.name}: CI runs commands on a branch the trigger does not build")
    return problems


def check_failure(trace: Trace, plan: CiPlan, failing: str, branch: Branch) -> list[str]:
    """When a stage's command fails: nothing downstream of it runs (always-run stages aside), every
    always-run stage whose stack was created runs, and the build fails."""
    sim = simulate(trace, branch.name, fails=fails_stage(failing))
    return _after_stop(sim, plan, failing, f"{failing} fails on {branch.name}")


def check_rejection(trace: Trace, plan: CiPlan, gated: StagePlan, branch: Branch) -> list[str]:
    """When the approval of a gated stage is refused: it and what is downstream of it do not run,
    always-run stages still clean up, and the build does not succeed. The input refused is the one
    that gates it in a build where everything is approved (the n-th input asked: the build is the
    same up to it)."""
    approved = simulate(trace, branch.name)
    event = gate_input(approved, gated)
    if event is None:
        return [f"{gated.name}: no input gates it on {branch.name}"]
    ordinal = approved.run.of("input").index(event)
    asked = itertools.count()

    def approves(e: Event) -> bool:
        return next(asked) != ordinal

    sim = simulate(trace, branch.name, approves=approves)
    problems = _after_stop(
        sim, plan, gated.name, f"the approval of {gated.name} is refused on {branch.name}", ran_itself=False
    )
    if not [e for e in sim.run.of("input") if e.failed]:
        problems.append(f"{gated.name}: its input was not asked on {branch.name}")
    return problems


def _after_stop(sim: Simulation, plan: CiPlan, stopped: str, what: str, ran_itself: bool = True) -> list[str]:
    problems = []
    ran = sim.ran()
    if ran_itself and stopped not in ran:
        problems.append(f"{what}: but it never ran")
    if not ran_itself and stopped in ran:
        problems.append(f"{what}: but it runs anyway")
    if sim.run.result == "SUCCESS":
        problems.append(f"{what}: the build still ends SUCCESS")
    for name in facts.descendants(plan, stopped):
        stage = plan.by_name[name]
        if not stage.always and name in ran:
            problems.append(f"{what}: {name}, downstream of it, still runs")
    for stage in plan.stages:
        if stage.always and any(r in ran for r in facts.references(plan, stage.name)) and stage.name not in ran:
            problems.append(
                f"{what}: {stage.name} (always-run) does not run after {facts.references(plan, stage.name)} ran"
            )
    return problems


def tool_jobs(build: Build, case: str) -> list[Job]:
    """The scripts each agent workspace of this build ran, in order, with the variables of the last
    of them (credentials as placeholders): what shell_run runs for real."""
    by_workspace: dict[int, list[Event]] = {}
    for event in build.sim.run.of("sh"):
        if event.scope.workspace is not None:
            by_workspace.setdefault(event.scope.workspace.id, []).append(event)
    jobs = []
    for workspace, events in by_workspace.items():
        env = {**events[-1].env, **{b.variable: f"<{b.credentials_id}>" for b in events[-1].scope.bindings}}
        scripts = tuple(str(e.args.get("script") or "") for e in events)
        jobs.append(Job(f"{case}|{build.branch.name}|{workspace}", scripts, env, errexit=True))
    return jobs
