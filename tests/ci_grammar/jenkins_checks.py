"""Checks of a recorded Jenkinsfile (a stand-in trace run through jenkins_model) against the spec.

Each check returns a list of problems (empty: the Jenkinsfile does what the definition says). They
compare what Jenkins would do and hand over (the strings each `sh` receives, the variables and
credentials bound around it, the locks, timeouts, inputs, stashes) with spec_facts, never with
expected text, so they keep holding when the renderer changes how it says things.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.render.base import MANIFEST_DIR
from pipeline.render.plan import CiPlan, StagePlan
from tests.ci_grammar import spec_facts as facts
from tests.ci_grammar.jenkins_model import Event, Interpreter, Run, Workspace, always, never
from tests.ci_grammar.jenkins_trace import Branch, Trace
from tests.ci_grammar.shell import Command, ShellSyntaxError, commands, is_pipeline_command

CREDENTIAL_MARKER = "@@credentials:"
AWS_BINDING = "AmazonWebServicesCredentialsBinding"
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


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
    after the definition's install command ran in the same workspace; no other stage runs; the
    render check runs before every stage."""
    sim = build.sim
    where = build.branch.name
    problems = [f"{where}: {p}" for p in sim.run.problems]
    if sim.run.result != "SUCCESS":
        problems.append(f"{where}: the build ends {sim.run.result} although nothing failed")
    for name in sorted(sim.ran() - set(plan.by_name)):
        problems.append(f"{where}: a script runs `pipeline run stage {name}`, which the definition does not have")
    installs = facts.install_commands(plan)
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
        earlier = [
            c.argv
            for e in sim.run.of("sh")
            if e.index <= event.index and e.scope.workspace is event.scope.workspace
            for c in script_commands(e)
        ]
        for install in installs:
            if install not in earlier:
                problems.append(
                    f"{stage.name}: the install command {list(install)} does not run before it on its agent"
                )
    checks = [(e, c) for e, c in sim.other_pipeline_commands if c.argv == facts.check_argv(plan)]
    if len(checks) != 1:
        problems.append(
            f"{where}: the render check `{plan.context.check_command}` runs {len(checks)} times (expected once)"
        )
    elif any(e.index < checks[0][0].index for runs in sim.stage_commands.values() for e, _ in runs):
        problems.append(f"{where}: a stage runs before the render check")
    return problems


def check_environment(build: Build, plan: CiPlan) -> list[str]:
    """Each stage's variables reach its command byte for byte; no other stage's variables and no
    secret as a plain variable."""
    problems = []
    declared = {k for s in plan.stages for k, _ in s.env}
    for stage in build.must_run(plan):
        event, _ = build.sim.command(stage.name)
        own = dict(stage.env)
        for name, value in own.items():
            if name not in event.env:
                problems.append(f"{stage.name}: {name} is not set (the definition sets {value!r})")
            elif event.env[name] != value:
                problems.append(f"{stage.name}: {name} is {event.env[name]!r}, the definition says {value!r}")
        for name in sorted((declared - set(own)) & set(event.env)):
            problems.append(f"{stage.name}: receives {name}, a variable of another stage")
        for secret in stage.secrets:
            if secret.name in event.env and secret.name not in {b.variable for b in event.scope.bindings}:
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
        for variable, cid in expected.items():
            binding = bound.get(variable)
            if binding is None:
                problems.append(f"{stage.name}: {variable} is not bound (credentials {cid!r})")
            elif binding.credentials_id != cid:
                problems.append(f"{stage.name}: {variable} is bound to {binding.credentials_id!r}, expected {cid!r}")
            elif variable in AWS_VARIABLES and stage.aws is not None and binding.kind != AWS_BINDING:
                problems.append(f"{stage.name}: {variable} is bound by {binding.kind}, expected {AWS_BINDING}")
        for variable in sorted(set(bound) - set(expected)):
            problems.append(
                f"{stage.name}: receives credentials {bound[variable].credentials_id!r} as {variable}, which it does not declare"
            )
    return problems


def gate_inputs(sim: Simulation, stage: StagePlan) -> list[Event]:
    """The inputs asked before the stage's command, not in a concurrent branch, with its message."""
    assert stage.gate is not None
    if stage.name not in sim.stage_commands:
        return [e for e in sim.run.of("input") if e.args.get("message") == stage.gate.message]
    event, _ = sim.command(stage.name)
    return [
        e
        for e in sim.run.of("input")
        if e.index < event.index and not e.concurrent_with(event) and e.args.get("message") == stage.gate.message
    ]


def submitters(value: object) -> set[str]:
    return {p.strip() for p in str(value or "").split(",") if p.strip()}


def check_gates(build: Build, plan: CiPlan) -> list[str]:
    """Each gated stage's command comes after an input with the gate's message, submitters and
    timeout, asked while no executor is held."""
    problems = []
    sim = build.sim
    for stage in build.must_run(plan):
        if stage.gate is None:
            continue
        inputs = gate_inputs(sim, stage)
        if not inputs:
            problems.append(f"{stage.name}: no input {stage.gate.message!r} is asked before it runs")
            continue
        for event in inputs:
            wanted = {*stage.gate.approvers, *stage.gate.groups}
            if submitters(event.args.get("submitter")) != wanted:
                problems.append(
                    f"{stage.name}: the input's submitters are {event.args.get('submitter')!r}, expected {sorted(wanted)}"
                )
            if event.scope.workspace is not None:
                problems.append(
                    f"{stage.name}: its input is asked while an executor is held (agent {event.scope.workspace.agent})"
                )
            if event.timeout != stage.gate.timeout_minutes:
                problems.append(
                    f"{stage.name}: the input waits {event.timeout} minutes, the gate says {stage.gate.timeout_minutes}"
                )
    for event in sim.run.of("input"):
        if not any(s.gate and s.gate.message == event.args.get("message") for s in plan.gated):
            problems.append(f"an input {event.args.get('message')!r} that no gate of the definition asks for")
    return problems


def check_locks(build: Build, plan: CiPlan) -> list[str]:
    """Every stage acting on a persistent environment holds that environment's lock resource, the
    same one for all of them and no other environment's; the resource names the pipeline and the
    environment (Lockable Resources are shared by every job on the server)."""
    problems = []
    held = {s.name: build.sim.command(s.name)[0].scope.locks for s in build.must_run(plan)}
    resource: dict[str, str] = {}
    for env in plan.locks:
        users = [s.name for s in plan.stages if s.lock == env and s.name in held]
        if not users:
            continue
        common = set.intersection(*(set(held[u]) for u in users)) if users else set()
        if len(common) != 1:
            problems.append(
                f"environment {env}: its stages {users} hold {[held[u] for u in users]}: expected one common lock"
            )
            continue
        resource[env] = common.pop()
        if not facts.names_pipeline_and_environment(resource[env], plan, env):
            problems.append(f"environment {env}: lock {resource[env]!r} does not name the pipeline and the environment")
    if len(set(resource.values())) != len(resource):
        problems.append(f"two environments share a lock: {resource}")
    for stage in plan.stages:
        if stage.name not in held:
            continue
        allowed = {resource[stage.lock]} if stage.lock in resource else set()
        for extra in sorted(set(held[stage.name]) - allowed):
            problems.append(f"{stage.name}: holds lock {extra!r}, which is not its environment's")
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
    """When a stage runs, its workspace holds the manifests of exactly its upstream stages (brought by
    unstash, or made on the same agent): every unstash has a stash of upstream work."""
    sim = build.sim
    problems = [f"{build.branch.name}: {p}" for p in sim.run.problems if "stash" in p]
    for stage in build.must_run(plan):
        event, _ = sim.command(stage.name)
        have = sim.files_before[event.index]
        want = {facts.manifest_file(a) for a in stage.ancestors if a in sim.ran()}
        for path in sorted(want - have):
            problems.append(f"{stage.name}: {path} (an upstream stage's manifest) is missing when it runs")
        for path in sorted(have - want):
            problems.append(f"{stage.name}: {path} is in its workspace, but that stage is not upstream of it")
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
    for gated in plan.gated:
        if gated.name not in ran and gate_inputs(sim, gated):
            problems.append(f"{branch.name}: the approval of {gated.name} is asked, but {gated.name} does not run")
    checked = any(c.argv == facts.check_argv(plan) for _, c in sim.other_pipeline_commands)
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
    always-run stages still clean up, and the build does not succeed."""
    assert gated.gate is not None
    message = gated.gate.message
    sim = simulate(trace, branch.name, approves=lambda e: e.args.get("message") != message)
    problems = _after_stop(
        sim, plan, gated.name, f"the approval of {gated.name} is refused on {branch.name}", ran_itself=False
    )
    if not [e for e in sim.run.of("input") if e.failed]:
        problems.append(f"{gated.name}: no input with its message was asked on {branch.name}")
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
