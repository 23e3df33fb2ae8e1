"""Checks of a TeamCity settings.kts (read by teamcity_model) against the spec and the plan.

Values are compared after Kotlin decoding and TeamCity parameter resolution, i.e. as the build's
process receives them; structure is compared with the plan's jobs (a stage, or a local-profile
rehearsal group); behaviour (branches, failures, refused approvals, manifests) by running the
chain in teamcity_model.Server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.render.base import MANIFEST_DIR
from pipeline.render.plan import GIT_PUSH_CREDENTIALS, CiPlan, StagePlan, camel
from pipeline.render.teamcity import LABEL_PARAMETER
from tests.ci_grammar import spec_facts as facts
from tests.ci_grammar.jenkins_trace import Branch
from tests.ci_grammar.shell import Command, ShellSyntaxError, commands, exported_environment, is_pipeline_command
from tests.ci_grammar.shell_run import Job
from tests.ci_grammar.teamcity_model import BuildType, ChainRun, Server, Settings, StepRun, resolve

COMPOSITE = "COMPOSITE"
TARGET = "teamcity"


@dataclass
class Located:
    """Where a stage's command is: its build type and step, and the command itself."""

    build: BuildType
    step_index: int
    command: Command
    script_commands: list[Command]


def locate(settings: Settings) -> tuple[dict[str, list[Located]], list[Located]]:
    """Stage -> the steps that run `pipeline run stage NAME`; and other `pipeline` commands."""
    stages: dict[str, list[Located]] = {}
    others: list[Located] = []
    for bt in settings.build_types.values():
        for index, step in enumerate(bt.steps):
            script, _ = resolve(step.script, {p.name: p.value for p in bt.params})
            cmds = commands(script)
            for command in cmds:
                if is_pipeline_command(command, "run", "stage") and len(command.argv) > 3:
                    stages.setdefault(command.argv[3], []).append(Located(bt, index, command, cmds))
                elif is_pipeline_command(command):
                    others.append(Located(bt, index, command, cmds))
    return stages, others


def earlier_in_build(place: Located) -> list[tuple[str, ...]]:
    """The simple commands of the build's steps up to and including this one."""
    params = {p.name: p.value for p in place.build.params}
    return [c.argv for s in place.build.steps[: place.step_index + 1] for c in commands(resolve(s.script, params)[0])]


def build_of(settings: Settings, plan: CiPlan, stage: str) -> BuildType | None:
    found, _ = locate(settings)
    places = found.get(stage, [])
    return places[0].build if len(places) == 1 else None


def ancestors_of(settings: Settings, obj: str) -> set[str]:
    seen: set[str] = set()
    pending = [d.target for d in settings.build_types[obj].snapshots]
    while pending:
        target = pending.pop()
        if target not in seen and target in settings.build_types:
            seen.add(target)
            pending += [d.target for d in settings.build_types[target].snapshots]
    return seen


# ----------------------------------------------------------------------------- structure


def check_declared(settings: Settings) -> list[str]:
    problems = []
    declared = set(settings.build_types)
    for obj in settings.registered:
        if obj not in declared:
            problems.append(f"project registers {obj}, which is not declared")
    for obj in sorted(declared - set(settings.registered)):
        problems.append(f"{obj} is declared but not registered in the project")
    ids = [bt.id for bt in settings.build_types.values()]
    if len(set(ids)) != len(ids):
        problems.append(f"build configuration ids repeat: {ids}")
    for bt in settings.build_types.values():
        for dep in bt.dependencies:
            if dep.target not in declared:
                problems.append(f"{bt.obj} depends on undeclared {dep.target}")
    return problems


def check_commands(settings: Settings, plan: CiPlan) -> list[str]:
    """Each stage runs in exactly one script step, as `pipeline run stage NAME` with the plan's flags
    and as the script's last command (its exit status is the step's); in the build of the plan's job
    (the stage, or its rehearsal group, whose steps run in pipeline order); after the definition's
    install command in the same build; every job's build waits for the render check."""
    problems = []
    found, others = locate(settings)
    for name in sorted(set(found) - set(plan.by_name)):
        problems.append(f"a step runs `pipeline run stage {name}`, which the definition does not have")
    checks = [o for o in others if facts.is_drift_check(o.command.argv)]
    if len(checks) != 1:
        problems.append(f"a render check runs in {len(checks)} steps (expected one)")
    else:
        check = checks[0]
        problems += [f"the render check {p}" for p in facts.drift_check_problems(check.command.argv, plan, TARGET)]
        wrong = facts.pinned_install_problem(earlier_in_build(check), plan, drift_check=True)
        if wrong:
            problems.append(f"the render check's build: before it, {wrong}")
    for stage in plan.stages:
        places = found.get(stage.name, [])
        if len(places) != 1:
            problems.append(f"{stage.name}: its command runs in {len(places)} steps (expected one)")
            continue
        place = places[0]
        if place.command.argv != facts.stage_argv(stage):
            problems.append(
                f"{stage.name}: runs {list(place.command.argv)}, the plan says {list(facts.stage_argv(stage))}"
            )
        if place.script_commands[-1] != place.command:
            problems.append(f"{stage.name}: `pipeline run stage` is not the last command of its script")
        if place.build.name != plan.job_of(stage.name):
            problems.append(
                f"{stage.name}: runs in build {place.build.name!r}, the plan's job is {plan.job_of(stage.name)!r}"
            )
        wrong = facts.pinned_install_problem(earlier_in_build(place), plan, drift_check=False)
        if wrong:
            problems.append(f"{stage.name}: in its build before it, {wrong}")
        if checks and checks[0].build.obj not in ancestors_of(settings, place.build.obj):
            problems.append(f"{stage.name}: its build does not wait for the render check")
    for group in plan.groups:
        indexes = [p.step_index for m in group.members for p in found.get(m.name, [])]
        if indexes != sorted(indexes):
            problems.append(f"{group.name}: its stages' steps are not in pipeline order")
    return problems


def stage_environment(place: Located) -> dict[str, str]:
    """The variables `pipeline run stage` receives: the build's `env.` parameters (resolved), then
    what its step's script exports before the command (a build of several stages keeps only
    secrets as parameters; each step exports its own stage's variables)."""
    params = {p.name: p.value for p in place.build.params}
    params.setdefault("teamcity.build.branch", "main")
    env = {
        name.removeprefix("env."): resolve(value, params)[0]
        for name, value in params.items()
        if name.startswith("env.")
    }
    cmds = place.script_commands
    return exported_environment(cmds[: cmds.index(place.command)], env)


def check_values(settings: Settings, plan: CiPlan) -> list[str]:
    """Each stage's variables reach its command byte for byte (as `env.` parameters, resolved, or
    exported by its own step); its secrets are password parameters holding the definition's token
    reference (or empty, to be set on the server), never plain; no variable of a stage outside the
    build or of another step's stage; no parameter reference in a script that nothing defines (the
    build would wait for an agent)."""
    problems = []
    declared = {k for s in plan.stages for k, _ in s.env} | {x.name for s in plan.stages for x in s.secrets}
    found, _ = locate(settings)
    for stage in plan.stages:
        places = found.get(stage.name, [])
        if len(places) != 1:
            continue  # check_commands reports it
        place = places[0]
        try:
            env = stage_environment(place)
        except ShellSyntaxError as e:
            problems.append(f"{stage.name}: its step sets variables in a way the model does not follow: {e}")
            continue
        own = dict(stage.env)
        for name, value in own.items():
            if name not in env:
                problems.append(f"{stage.name}: {name} is not set (the definition sets {value!r})")
            elif env[name] != value:
                problems.append(f"{stage.name}: {name} is {env[name]!r} on TeamCity, the definition says {value!r}")
            param = place.build.param(f"env.{name}")
            if param is not None and param.kind != "param":
                problems.append(f"{stage.name}: {name} is a {param.kind} parameter")
        secrets = {s.name for s in stage.secrets}
        for name in sorted((declared - set(own) - secrets) & set(env)):
            problems.append(f"{stage.name}: receives {name}, a variable of another stage")
        for secret in stage.secrets:
            param = place.build.param(f"env.{secret.name}")
            if param is None:
                problems.append(f"{stage.name}: secret {secret.name} is not a parameter of build {place.build.name!r}")
                continue
            if param.kind != "password":
                problems.append(f"{stage.name}: secret {secret.name} is a {param.kind} parameter, not a password")
            raw = {p.name: p.value for p in place.build.params}
            text, refs = resolve(param.value, raw)
            if text != (secret.teamcity or "") or refs:
                problems.append(
                    f"{stage.name}: secret {secret.name} holds {text!r}, expected {secret.teamcity or ''!r}"
                )
    for bt in settings.build_types.values():
        raw = {p.name: p.value for p in bt.params}
        raw["teamcity.build.branch"] = "main"
        members = [s for s in plan.stages if build_of(settings, plan, s.name) is bt]
        wanted = {k for s in members for k, _ in s.env} | {x.name for s in members for x in s.secrets}
        for param in bt.params:
            name = param.name.removeprefix("env.")
            if param.name.startswith("env.") and name in declared and name not in wanted:
                problems.append(f"build {bt.name!r} sets {name}, a variable of a stage it does not run")
        for step in bt.steps:
            _, refs = resolve(step.script, raw)
            if refs:
                problems.append(f"build {bt.name!r} step {step.name!r} refers to undefined parameters {refs}")
        aws = sorted({f"Aws{camel(s.aws.environment)}" for s in members if s.aws is not None})
        if aws != ([bt.aws_connection] if bt.aws_connection else []):
            problems.append(f"build {bt.name!r} uses AWS connection {bt.aws_connection!r}, its stages need {aws}")
    return problems


def check_locks(settings: Settings, plan: CiPlan) -> list[str]:
    """Builds of stages acting on a persistent environment take a write lock on that environment's
    shared resource, a quota-1 resource declared in the project, one per environment, named after
    the pipeline and the environment; other builds take no environment's lock."""
    problems = []
    resource: dict[str, str] = {}
    for env in plan.locks:
        builds = {build_of(settings, plan, s.name) for s in plan.stages if s.lock == env}
        builds.discard(None)
        common = set.intersection(*(set(b.write_locks) for b in builds if b)) if builds else set()
        if len(common) != 1:
            problems.append(
                f"environment {env}: its builds lock {[b.write_locks for b in builds if b]}: expected one common write lock"
            )
            continue
        resource[env] = common.pop()
        declared = settings.resources.get(resource[env])
        if declared is None:
            problems.append(f"environment {env}: lock {resource[env]!r} is not a shared resource of the project")
        elif declared.get("resourceType") != "quoted(1)":
            problems.append(
                f"environment {env}: resource {resource[env]!r} is {declared.get('resourceType')}, expected quota 1"
            )
        if not facts.names_pipeline_and_environment(resource[env], plan, env):
            problems.append(f"environment {env}: lock {resource[env]!r} does not name the pipeline and the environment")
    if len(set(resource.values())) != len(resource):
        problems.append(f"two environments share a lock: {resource}")
    for bt in settings.build_types.values():
        members = [s for s in plan.stages if build_of(settings, plan, s.name) is bt]
        allowed = {resource[s.lock] for s in members if s.lock in resource}
        for extra in sorted(set(bt.write_locks + bt.read_locks) - allowed):
            problems.append(f"build {bt.name!r} locks {extra!r}, which is not its stages' environment")
    # A build holds its shared resources from start to end: consecutive stages on one environment
    # hold its lock together when they are steps of one build that takes it.
    for span in plan.lock_spans:
        span_env = plan.by_name[span[0]].lock
        builds = {build_of(settings, plan, n) for n in span}
        if len(builds) != 1 or None in builds:
            names = sorted(b.name for b in builds if b is not None)
            problems.append(
                f"{', '.join(span)} act on {span_env} one after the other but run in builds {names}, each taking "
                "its lock: another run may deploy between them"
            )
    return problems


def check_gates(settings: Settings, plan: CiPlan) -> list[str]:
    """A gated stage's build needs an approval by exactly its approvers (users) and groups (one
    member each), within the gate's timeout; no other build does. A gate names who approves
    (TeamCity refuses to render one that does not)."""
    problems = []
    gated_builds = set()
    for stage in plan.gated:
        assert stage.gate is not None
        bt = build_of(settings, plan, stage.name)
        if bt is None:
            continue
        gated_builds.add(bt.obj)
        if bt.approval is None:
            problems.append(f"{stage.name}: build {bt.name!r} has no approval")
            continue
        rules = {r.strip() for r in bt.approval["rules"].splitlines() if r.strip()}
        wanted = {f"user:{u}" for u in stage.gate.approvers} | {f"group:{g}:1" for g in stage.gate.groups}
        if rules != wanted or not rules:
            problems.append(f"{stage.name}: approval rules {sorted(rules)}, expected {sorted(wanted)}")
        if bt.approval["timeout"] != stage.gate.timeout_minutes:
            problems.append(
                f"{stage.name}: approval times out after {bt.approval['timeout']}, the gate says {stage.gate.timeout_minutes}"
            )
    for bt in settings.build_types.values():
        if bt.approval is not None and bt.obj not in gated_builds:
            problems.append(f"build {bt.name!r} asks for an approval no gate of the definition asks for")
    return problems


def agent_with(labels: set[str]) -> dict[str, str]:
    """An agent that carries these labels (the renderer's documented convention: label L is the
    agent parameter `pipeline.label.L`, defined in its buildAgent.properties)."""
    return {f"{LABEL_PARAMETER}.{label}": "true" for label in labels}


def check_agents(settings: Settings, plan: CiPlan) -> list[str]:
    """Each stage's build may run only on agents with every label the plan says it needs, and some
    agent with them (all its stages' labels) can run it; the render check needs the labels every
    job asks for."""
    problems = []
    universe = {label for s in plan.stages for label in s.agent.labels} | set(plan.spec.agents.every)
    for bt in settings.build_types.values():
        universe |= {r.param.removeprefix(f"{LABEL_PARAMETER}.") for r in bt.requirements}
    found, others = locate(settings)
    needs: dict[str, tuple[BuildType, set[str]]] = {}
    for stage in plan.stages:
        places = found.get(stage.name, [])
        if len(places) == 1:
            bt = places[0].build
            needs.setdefault(bt.obj, (bt, set()))[1].update(stage.agent.labels)
            for label in stage.agent.labels:
                if bt.runs_on(agent_with(universe - {label})):
                    problems.append(f"{stage.name}: build {bt.name!r} may run on an agent without label {label!r}")
    for check in others:
        if facts.is_drift_check(check.command.argv):
            needs.setdefault(check.build.obj, (check.build, set()))[1].update(plan.spec.agents.every)
            for label in plan.spec.agents.every:
                if check.build.runs_on(agent_with(universe - {label})):
                    problems.append(f"the render check may run on an agent without label {label!r}")
    for bt, labels in needs.values():
        if not bt.runs_on(agent_with(labels)):
            problems.append(f"build {bt.name!r}: no agent with the labels {sorted(labels)} its stages need may run it")
    return problems


def check_push(settings: Settings, plan: CiPlan) -> list[str]:
    """The build of a stage that commits and pushes loads the uploaded push key (SSH Agent feature);
    no other build does."""
    problems = []
    pushing = {b.obj for s in plan.stages if s.pushes and (b := build_of(settings, plan, s.name)) is not None}
    for bt in settings.build_types.values():
        if bt.obj in pushing and bt.ssh_keys != [GIT_PUSH_CREDENTIALS]:
            problems.append(
                f"build {bt.name!r} pushes, but loads the SSH keys {bt.ssh_keys}, not {GIT_PUSH_CREDENTIALS!r}"
            )
        if bt.obj not in pushing and bt.ssh_keys:
            problems.append(f"build {bt.name!r} pushes nothing, but loads the SSH keys {bt.ssh_keys}")
    return problems


def check_timeouts(settings: Settings, plan: CiPlan) -> list[str]:
    problems = []
    for unit in plan.units:
        name = unit.name
        bt = settings.by_name(name)
        if bt is None:
            problems.append(f"no build named {name!r}")
            continue
        if bt.timeout_minutes != unit.timeout_minutes:
            problems.append(
                f"build {name!r} times out after {bt.timeout_minutes} minutes, the plan says {unit.timeout_minutes}"
            )
    return problems


def check_dependencies(settings: Settings, plan: CiPlan) -> list[str]:
    """Each stage's build has a snapshot and an artifact dependency on the build of every stage it
    needs (outside its own build); builds depend only on builds of earlier stages or the render
    check; the chain's composite depends on the builds of the ends of the DAG."""
    problems = []
    _, others = locate(settings)
    check_builds = {o.build.obj for o in others if facts.is_drift_check(o.command.argv)}
    job_build = {unit.name: settings.by_name(unit.name) for unit in plan.units}
    for stage in plan.stages:
        bt = job_build.get(plan.job_of(stage.name))
        if bt is None:
            continue
        for need in stage.needs:
            other = job_build.get(plan.job_of(need))
            if other is None or other is bt:
                continue
            dep = next((d for d in bt.dependencies if d.target == other.obj), None)
            if dep is None or dep.snapshot is None:
                problems.append(
                    f"{stage.name}: build {bt.name!r} has no snapshot dependency on {other.name!r} ({need})"
                )
            elif not dep.artifact_rules:
                problems.append(f"{stage.name}: build {bt.name!r} fetches no artifacts from {other.name!r} ({need})")
    for unit in plan.units:
        bt = job_build.get(unit.name)
        if bt is None:
            continue
        earlier = {plan.job_of(a) for a in unit.ancestors}
        for dep in bt.snapshots:
            target = settings.build_types.get(dep.target)
            if target is not None and dep.target not in check_builds and target.name not in earlier:
                problems.append(f"build {bt.name!r} depends on {target.name!r}, which is not upstream of it")
    composites = [b for b in settings.build_types.values() if b.type == COMPOSITE]
    if len(composites) != 1:
        problems.append(f"{len(composites)} composite builds (expected one for the chain)")
    else:
        ends = {plan.job_of(s) for s in plan.sinks}
        have = {
            settings.build_types[d.target].name for d in composites[0].snapshots if d.target in settings.build_types
        }
        if not ends <= have:
            problems.append(f"the composite depends on {sorted(have)}, the ends of the chain are {sorted(ends)}")
        jobs = {plan.job_of(s.name) for s in plan.stages}
        for name in sorted(have - jobs):
            problems.append(f"the composite depends on {name!r}, which runs no stage")
    return problems


# ----------------------------------------------------------------------------- behaviour


@dataclass
class Simulation:
    run: ChainRun
    ran: dict[str, StepRun] = field(default_factory=dict)
    checked_before: bool = True


def simulate(
    settings: Settings, plan: CiPlan, branch: str, *, fails: frozenset[str] = frozenset(), refuse: str | None = None
) -> Simulation:
    """A push to `branch`; stages in `fails` fail; the approval of the build of `refuse` is refused.
    `pipeline run stage NAME` leaves NAME.json in the manifest folder (also when it fails)."""
    sim = Simulation(ChainRun(branch))
    checked = False

    def on_command(step: StepRun, argv: list[str], workspace: set[str]) -> bool:
        nonlocal checked
        if facts.is_drift_check(tuple(argv)):
            checked = True
        if argv[:1] and argv[0].rsplit("/", 1)[-1] == "pipeline" and argv[1:3] == ["run", "stage"] and len(argv) > 3:
            sim.ran[argv[3]] = step
            sim.checked_before = sim.checked_before and checked
            workspace.add(facts.manifest_file(argv[3]))
            return argv[3] in fails
        return False

    refused = build_of(settings, plan, refuse) if refuse else None
    sim.run = Server(settings, branch, on_command=on_command, approves=lambda bt: bt is not refused).execute()
    return sim


def composite_status(settings: Settings, run: ChainRun) -> str:
    composite = next(b for b in settings.build_types.values() if b.type == COMPOSITE)
    return run.status.get(composite.obj, "not triggered")


def check_branch(settings: Settings, plan: CiPlan, branch: Branch) -> list[str]:
    """A push to this branch runs exactly the stages the definition runs there, and succeeds."""
    sim = simulate(settings, plan, branch.name)
    expected = facts.expected_runs(plan, branch)
    problems = [f"{branch.name}: {p}" for p in sim.run.problems]
    for name, must in expected.items():
        if must is True and name not in sim.ran:
            problems.append(f"{branch.name}: {name} does not run (the definition runs it)")
        if must is False and name in sim.ran:
            problems.append(f"{branch.name}: {name} runs (the definition skips it)")
    triggered = facts.trigger_runs(plan, branch)
    if triggered is True:
        failed = {k: v for k, v in sim.run.status.items() if v != "success"}
        if failed:
            problems.append(f"{branch.name}: builds end {failed} although nothing failed")
        if not sim.checked_before:
            problems.append(f"{branch.name}: a stage runs before the render check")
    if triggered is False and sim.run.triggered:
        problems.append(
            f"{branch.name}: a push triggers {sim.run.triggered}, the definition does not build this branch"
        )
    return problems


def check_manifests(settings: Settings, plan: CiPlan, branch: Branch) -> list[str]:
    """When a stage runs, its build's checkout holds the manifests of its upstream stages that ran
    (fetched as artifacts from the builds of the same chain, or made earlier in the build); another
    stage's only if an earlier step of the same build made it (the runner reads its ancestors' only)."""
    sim = simulate(settings, plan, branch.name)
    problems = [f"{branch.name}: {p}" for p in sim.run.problems]
    for stage in plan.stages:
        step = sim.ran.get(stage.name)
        if step is None:
            continue
        want = {facts.manifest_file(a) for a in stage.ancestors if a in sim.ran}
        have = set(step.files_before)
        for path in sorted(want - have):
            problems.append(f"{stage.name}: {path} (an upstream stage's manifest) is missing when it runs")
        for path in sorted(have - {facts.manifest_file(a) for a in stage.ancestors}):
            maker = path.removeprefix(f"{MANIFEST_DIR}/").removesuffix(".json")
            if maker not in plan.by_name or plan.job_of(maker) != plan.job_of(stage.name):
                problems.append(f"{stage.name}: {path} is in its checkout, but {maker} is not upstream of it")
    return problems


def check_failure(settings: Settings, plan: CiPlan, failing: str, branch: Branch) -> list[str]:
    sim = simulate(settings, plan, branch.name, fails=frozenset({failing}))
    return _after_stop(settings, plan, sim, failing, f"{failing} fails on {branch.name}")


def check_rejection(settings: Settings, plan: CiPlan, gated: StagePlan, branch: Branch) -> list[str]:
    sim = simulate(settings, plan, branch.name, refuse=gated.name)
    problems = _after_stop(
        settings, plan, sim, gated.name, f"the approval of {gated.name} is refused on {branch.name}", ran_itself=False
    )
    bt = build_of(settings, plan, gated.name)
    if bt is not None and bt.obj not in sim.run.approvals:
        problems.append(f"{gated.name}: no approval is asked on {branch.name}")
    return problems


def _after_stop(
    settings: Settings, plan: CiPlan, sim: Simulation, stopped: str, what: str, ran_itself: bool = True
) -> list[str]:
    problems = []
    if ran_itself and stopped not in sim.ran:
        problems.append(f"{what}: but it never ran")
    if not ran_itself and stopped in sim.ran:
        problems.append(f"{what}: but it runs anyway")
    if composite_status(settings, sim.run) == "success":
        problems.append(f"{what}: the chain still ends successfully")
    for name in facts.descendants(plan, stopped):
        if not plan.by_name[name].always and name in sim.ran:
            problems.append(f"{what}: {name}, downstream of it, still runs")
    for stage in plan.stages:
        refs = facts.references(plan, stage.name)
        if stage.always and any(r in sim.ran for r in refs) and stage.name not in sim.ran:
            problems.append(f"{what}: {stage.name} (always-run) does not run after {refs} ran")
    return problems


def tool_jobs(settings: Settings, plan: CiPlan, branch: Branch, case: str) -> list[Job]:
    """The steps each build of a push to `branch` runs, in order, with the build's `env.`
    parameters (resolved): what shell_run runs for real (TeamCity's script runner: sh without -e)."""
    sim = simulate(settings, plan, branch.name)
    by_build: dict[str, list[StepRun]] = {}
    for step in sim.run.steps:
        by_build.setdefault(step.build, []).append(step)
    jobs = []
    for build, steps in by_build.items():
        env = {k.removeprefix("env."): v for k, v in steps[0].params.items() if k.startswith("env.")}
        env["BUILD_NUMBER"] = "1"
        jobs.append(Job(f"{case}|{branch.name}|{build}", tuple(s.script for s in steps), env, errexit=False))
    return jobs
