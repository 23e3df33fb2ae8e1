"""A settings.kts as TeamCity sees it: its build configurations with decoded values, and what the
server does with them when a push triggers the chain.

Read (kotlin_dsl decodes every literal): `version`; `project { description; buildType(X);
features { sharedResource { id; name; resourceType } } }`; `object X : BuildType({ ... })` with id,
name, description, type, enablePersonalBuilds, maxRunningBuilds, artifactRules, publishArtifacts,
params (param, password, text), vcs, steps (script: name, scriptContent, executionMode,
conditions, workingDir), triggers (vcs: branchFilter), dependencies (dependency(X) { snapshot {
...}; artifacts { artifactRules } }, snapshot(X) { ... }, artifacts(X) { ... }), features
(approval, sharedResources with readLock/writeLock, provideAwsCredentials, sshAgent (the uploaded
key it loads), buildCache, perfmon, swabra), requirements (exists, equals, matches... on agent
parameters), failureConditions (executionTimeoutMin). Anything else is an error, so a render that
starts using something new fails until this model learns it.

Run (`Server`): TeamCity parameter references in values (`%name%`, `%%` for a percent sign; a
reference to a parameter that is not defined is left as is and, in TeamCity, makes the build wait
for an agent that defines it); the VCS trigger's branch filter (`+:`/`-:` rules, `*` any
characters, the last matching rule decides); the build chain in snapshot-dependency order; a
dependency that failed (or failed to start) or was canceled applies the dependent's
onDependencyFailure / onDependencyCancel (FAIL_TO_START and CANCEL keep it from running,
ADD_PROBLEM runs it and fails it, IGNORE runs it); artifact dependencies fetch the published
artifacts of the dependency build of the same chain (`?:` optional rules; a required rule that
matches nothing fails the build); steps in order with their execution mode (RUN_ON_SUCCESS/DEFAULT:
only while the build has not failed, RUN_ON_FAILURE: only once it has, ALWAYS: always) and their
conditions (`matches`, `equals`... on parameters, teamcity.build.branch being the branch); a step's
exit status is its script's (sh without -e: the last command run, `&&`/`||` as sh); artifacts are
published also when the build failed (TeamCity's default). An approval that is refused cancels the
build. Agents: a build may run on an agent whose parameters (buildAgent.properties) satisfy every
requirement (`BuildType.runs_on`). NOT modelled: which agent the queue picks, queue order and time,
reuse of builds, personal builds, the Pull Requests feature, the checkout mode (the agent-side
checkout, on a branch, is assumed), what the SSH agent's key may push to.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from typing import Any

from tests.ci_grammar.antglob import match_path
from tests.ci_grammar.kotlin_dsl import KAssign, KCall, KImport, KNumber, KObject, KRef, KString, read
from tests.ci_grammar.shell import commands

FAILURE_ACTIONS = ("IGNORE", "ADD_PROBLEM", "FAIL_TO_START", "CANCEL")
KNOWN_FEATURES = ("approval", "sharedResources", "provideAwsCredentials", "sshAgent", "buildCache", "perfmon", "swabra")


class SettingsError(AssertionError):
    pass


@dataclass
class Param:
    kind: str
    name: str
    value: str
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Condition:
    op: str
    param: str
    value: str

    def holds(self, params: dict[str, str]) -> bool:
        actual = params.get(self.param)
        if self.op == "matches":
            return actual is not None and re.fullmatch(self.value, actual) is not None
        if self.op == "doesNotMatch":
            return actual is None or re.fullmatch(self.value, actual) is None
        if self.op == "equals":
            return actual == self.value
        if self.op == "doesNotEqual":
            return actual != self.value
        if self.op == "exists":
            return actual is not None
        if self.op == "doesNotExist":
            return actual is None
        if self.op == "startsWith":
            return actual is not None and actual.startswith(self.value)
        if self.op == "contains":
            return actual is not None and self.value in actual
        raise SettingsError(f"step condition {self.op!r} is not modelled")


@dataclass
class Step:
    name: str
    script: str
    mode: str = "RUN_ON_SUCCESS"
    conditions: list[Condition] = field(default_factory=list)
    working_dir: str = ""


@dataclass
class Dependency:
    target: str
    snapshot: dict[str, str] | None = None
    artifact_rules: list[str] = field(default_factory=list)


@dataclass(eq=False)
class BuildType:
    obj: str
    id: str = ""
    name: str = ""
    description: str = ""
    type: str = "REGULAR"
    artifact_rules: str = ""
    publish_artifacts: str = "NORMALLY"
    params: list[Param] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    branch_filters: list[str] = field(default_factory=list)
    """One per VCS trigger."""
    dependencies: list[Dependency] = field(default_factory=list)
    approval: dict[str, Any] | None = None
    write_locks: list[str] = field(default_factory=list)
    read_locks: list[str] = field(default_factory=list)
    aws_connection: str = ""
    timeout_minutes: int | None = None
    max_running_builds: int | None = None
    vcs_roots: list[str] = field(default_factory=list)
    requirements: list[Condition] = field(default_factory=list)
    """On the agent's parameters: every one must hold for an agent to run the build."""
    ssh_keys: list[str] = field(default_factory=list)
    """Uploaded SSH keys the SSH Agent feature loads for the build."""

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def runs_on(self, agent: dict[str, str]) -> bool:
        """Whether an agent with these parameters may run the build."""
        return all(r.holds(agent) for r in self.requirements)

    @property
    def snapshots(self) -> list[Dependency]:
        return [d for d in self.dependencies if d.snapshot is not None]


@dataclass
class Settings:
    version: str
    description: str
    registered: list[str]
    resources: dict[str, dict[str, str]]
    """Shared resource id -> name, type."""
    build_types: dict[str, BuildType]

    def by_name(self, name: str) -> BuildType | None:
        return next((b for b in self.build_types.values() if b.name == name), None)


# ----------------------------------------------------------------------------- reading


def read_settings(source: bytes) -> Settings:
    statements = read(source)
    version = ""
    description = ""
    registered: list[str] = []
    resources: dict[str, dict[str, str]] = {}
    build_types: dict[str, BuildType] = {}
    for st in statements:
        if isinstance(st, KImport):
            continue
        if isinstance(st, KAssign) and st.target == "version":
            version = _string(st.value, "version")
        elif isinstance(st, KCall) and st.name == "project":
            for item in st.body or []:
                if isinstance(item, KAssign) and item.target == "description":
                    description = _string(item.value, "project.description")
                elif isinstance(item, KCall) and item.name == "buildType":
                    registered.append(_ref(item.args[0], "buildType"))
                elif isinstance(item, KCall) and item.name == "features":
                    for feature in item.body or []:
                        if not isinstance(feature, KCall) or feature.name != "sharedResource":
                            raise SettingsError(f"project feature {feature!r} is not modelled")
                        values = _assignments(feature.body or [], "sharedResource")
                        resources[values["id"]] = values
                elif isinstance(item, KAssign) and item.target == "name":
                    continue
                else:
                    raise SettingsError(f"project: {item!r} is not modelled")
        elif isinstance(st, KObject):
            if st.supertype != "BuildType":
                raise SettingsError(f"object {st.name} : {st.supertype} is not modelled")
            build_types[st.name] = _build_type(st)
        else:
            raise SettingsError(f"top level: {st!r} is not modelled")
    return Settings(version, description, registered, resources, build_types)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, KString):
        raise SettingsError(f"{where}: expected a string, got {value!r}")
    return value.value


def _ref(value: Any, where: str) -> str:
    if not isinstance(value, KRef):
        raise SettingsError(f"{where}: expected a name, got {value!r}")
    return value.name


def _assignments(body: list[Any], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in body:
        if not isinstance(item, KAssign):
            raise SettingsError(f"{where}: {item!r} is not modelled")
        value = item.value
        if isinstance(value, KString):
            out[item.target] = value.value
        elif isinstance(value, KRef):
            out[item.target] = value.name.rsplit(".", 1)[-1]
        elif isinstance(value, KNumber):
            out[item.target] = str(value.value)
        elif isinstance(value, KCall):
            out[item.target] = f"{value.name}({', '.join(str(getattr(a, 'value', a)) for a in value.args)})"
        else:
            raise SettingsError(f"{where}.{item.target}: {value!r}")
    return out


def _build_type(obj: KObject) -> BuildType:
    bt = BuildType(obj.name)
    for item in obj.body:
        where = f"{obj.name}"
        if isinstance(item, KCall) and item.name == "id":
            bt.id = _string(item.args[0], f"{where}.id")
        elif isinstance(item, KAssign):
            _build_type_field(bt, item)
        elif isinstance(item, KCall) and item.name == "params":
            bt.params = [_param(p, where) for p in item.body or []]
        elif isinstance(item, KCall) and item.name == "vcs":
            bt.vcs_roots = [
                _ref(r.args[0], f"{where}.vcs") if r.args else "" for r in item.body or [] if isinstance(r, KCall)
            ]
        elif isinstance(item, KCall) and item.name == "steps":
            bt.steps = [_step(s, where) for s in item.body or []]
        elif isinstance(item, KCall) and item.name == "triggers":
            for trigger in item.body or []:
                if not isinstance(trigger, KCall) or trigger.name != "vcs":
                    raise SettingsError(f"{where}: trigger {trigger!r} is not modelled")
                values = _assignments(trigger.body or [], f"{where}.vcs")
                bt.branch_filters.append(values.get("branchFilter", "+:<default>"))
        elif isinstance(item, KCall) and item.name == "dependencies":
            bt.dependencies = _dependencies(item.body or [], where)
        elif isinstance(item, KCall) and item.name == "features":
            _features(bt, item.body or [], where)
        elif isinstance(item, KCall) and item.name == "failureConditions":
            values = _assignments(item.body or [], f"{where}.failureConditions")
            for key, value in values.items():
                if key != "executionTimeoutMin":
                    raise SettingsError(f"{where}: failure condition {key} is not modelled")
                bt.timeout_minutes = int(value)
        elif isinstance(item, KCall) and item.name == "requirements":
            for requirement in item.body or []:
                if not isinstance(requirement, KCall) or not requirement.args:
                    raise SettingsError(f"{where}: requirement {requirement!r} is not modelled")
                args = [_string(a, "requirement") for a in requirement.args]
                bt.requirements.append(Condition(requirement.name, args[0], args[1] if len(args) > 1 else ""))
        else:
            raise SettingsError(f"{where}: {item!r} is not modelled")
    return bt


def _build_type_field(bt: BuildType, item: KAssign) -> None:
    value = item.value
    if item.target == "name":
        bt.name = _string(value, "name")
    elif item.target == "description":
        bt.description = _string(value, "description")
    elif item.target == "type":
        bt.type = _ref(value, "type").rsplit(".", 1)[-1]
    elif item.target == "artifactRules":
        bt.artifact_rules = _string(value, "artifactRules")
    elif item.target == "publishArtifacts":
        bt.publish_artifacts = _ref(value, "publishArtifacts").rsplit(".", 1)[-1]
    elif item.target == "maxRunningBuilds":
        bt.max_running_builds = int(value.value) if isinstance(value, KNumber) else None
    elif item.target in ("enablePersonalBuilds", "buildNumberPattern", "allowExternalStatus"):
        return
    else:
        raise SettingsError(f"{bt.obj}: {item.target} = ... is not modelled")


def _param(call: Any, where: str) -> Param:
    if not isinstance(call, KCall) or call.name not in ("param", "password", "text"):
        raise SettingsError(f"{where}.params: {call!r} is not modelled")
    name = _string(call.args[0], f"{where}.params")
    value = _string(call.args[1], f"{where}.params.{name}")
    extra = {
        k: _string(v, f"{where}.params.{name}.{k}") if isinstance(v, KString) else str(v)
        for k, v in call.kwargs.items()
    }
    return Param(call.name, name, value, extra)


def _step(call: Any, where: str) -> Step:
    if not isinstance(call, KCall) or call.name != "script":
        raise SettingsError(f"{where}.steps: {call!r} is not modelled (only script steps)")
    step = Step(name="", script="")
    content = None
    for item in call.body or []:
        if isinstance(item, KAssign):
            if item.target == "name":
                step.name = _string(item.value, "step name")
            elif item.target == "scriptContent":
                content = _string(item.value, f"{where} step {step.name!r} scriptContent")
            elif item.target == "executionMode":
                step.mode = _ref(item.value, "executionMode").rsplit(".", 1)[-1]
            elif item.target == "workingDir":
                step.working_dir = _string(item.value, "workingDir")
            elif item.target == "id":
                continue
            else:
                raise SettingsError(f"{where} step {step.name!r}: {item.target} is not modelled")
        elif isinstance(item, KCall) and item.name == "conditions":
            for cond in item.body or []:
                if not isinstance(cond, KCall):
                    raise SettingsError(f"{where} step {step.name!r}: condition {cond!r}")
                args = [_string(a, "condition") for a in cond.args]
                step.conditions.append(Condition(cond.name, args[0], args[1] if len(args) > 1 else ""))
        else:
            raise SettingsError(f"{where} step {step.name!r}: {item!r} is not modelled")
    if content is None:
        raise SettingsError(f"{where} step {step.name!r} has no scriptContent")
    step.script = content
    return step


def _dependencies(body: list[Any], where: str) -> list[Dependency]:
    out: dict[str, Dependency] = {}
    for call in body:
        if not isinstance(call, KCall) or call.name not in ("dependency", "snapshot", "artifacts"):
            raise SettingsError(f"{where}.dependencies: {call!r} is not modelled")
        target = _ref(call.args[0], f"{where}.dependencies")
        dep = out.setdefault(target, Dependency(target))
        if call.name == "snapshot":
            dep.snapshot = _snapshot(call.body or [], where)
        elif call.name == "artifacts":
            dep.artifact_rules.append(_assignments(call.body or [], f"{where}.artifacts").get("artifactRules", ""))
        else:
            for part in call.body or []:
                if isinstance(part, KCall) and part.name == "snapshot":
                    dep.snapshot = _snapshot(part.body or [], where)
                elif isinstance(part, KCall) and part.name == "artifacts":
                    dep.artifact_rules.append(
                        _assignments(part.body or [], f"{where}.artifacts").get("artifactRules", "")
                    )
                else:
                    raise SettingsError(f"{where}.dependency({target}): {part!r} is not modelled")
    return list(out.values())


def _snapshot(body: list[Any], where: str) -> dict[str, str]:
    values = {"onDependencyFailure": "FAIL_TO_START", "onDependencyCancel": "CANCEL", "reuseBuilds": "SUCCESSFUL"}
    values.update(_assignments(body, f"{where}.snapshot"))
    for key in ("onDependencyFailure", "onDependencyCancel"):
        if values[key] not in FAILURE_ACTIONS:
            raise SettingsError(f"{where}: {key} = {values[key]} is not a FailureAction")
    return values


def _features(bt: BuildType, body: list[Any], where: str) -> None:
    for feature in body:
        if not isinstance(feature, KCall) or feature.name not in KNOWN_FEATURES:
            raise SettingsError(f"{where}: feature {feature!r} is not modelled")
        if feature.name == "approval":
            values = _assignments(feature.body or [], f"{where}.approval")
            bt.approval = {"rules": values.get("approvalRules", ""), "timeout": int(values.get("timeout", "0"))}
        elif feature.name == "sharedResources":
            for lock in feature.body or []:
                if not isinstance(lock, KCall) or lock.name not in ("writeLock", "readLock", "lockSpecificValue"):
                    raise SettingsError(f"{where}: shared resource lock {lock!r}")
                name = _string(lock.args[0], "lock")
                (bt.write_locks if lock.name != "readLock" else bt.read_locks).append(name)
        elif feature.name == "sshAgent":
            values = _assignments(feature.body or [], f"{where}.sshAgent")
            unknown = set(values) - {"teamcitySshKey", "passphrase"}
            if unknown:
                raise SettingsError(f"{where}: sshAgent {sorted(unknown)} is not modelled")
            bt.ssh_keys.append(values.get("teamcitySshKey", ""))
        elif feature.name == "provideAwsCredentials":
            bt.aws_connection = _assignments(feature.body or [], f"{where}.provideAwsCredentials").get(
                "awsConnectionId", ""
            )


# ----------------------------------------------------------------------------- parameters


def resolve(value: str, params: dict[str, str], depth: int = 0) -> tuple[str, list[str]]:
    """A value as TeamCity passes it on: `%%` is a percent sign, `%name%` the parameter's (resolved)
    value; a reference to an undefined parameter stays as written. Returns (text, unresolved)."""
    if depth > 10:
        raise SettingsError(f"parameter references nest too deep: {value!r}")
    out: list[str] = []
    unresolved: list[str] = []
    i = 0
    while i < len(value):
        if value.startswith("%%", i):
            out.append("%")
            i += 2
            continue
        if value[i] == "%":
            end = value.find("%", i + 1)
            if end < 0:
                out.append("%")
                i += 1
                continue
            name = value[i + 1 : end]
            if name in params:
                text, more = resolve(params[name], params, depth + 1)
                out.append(text)
                unresolved += more
            else:
                out.append(value[i : end + 1])
                unresolved.append(name)
            i = end + 1
            continue
        out.append(value[i])
        i += 1
    return "".join(out), unresolved


def branch_filter_matches(rules: str, branch: str) -> bool:
    """`+:pattern` / `-:pattern` lines, `*` any characters; the last matching rule decides."""
    verdict = False
    for raw in rules.splitlines():
        line = raw.strip()
        if not line:
            continue
        sign, _, pattern = line.partition(":")
        if sign not in ("+", "-") or not pattern:
            raise SettingsError(f"branch filter rule {line!r}")
        regex = "".join(".*" if c == "*" else re.escape(c) for c in pattern)
        if re.fullmatch(regex, branch):
            verdict = sign == "+"
    return verdict


# ----------------------------------------------------------------------------- artifact rules


@dataclass(frozen=True)
class ArtifactRule:
    include: bool
    optional: bool
    source: str
    target: str


def parse_rules(text: str) -> list[ArtifactRule]:
    rules = []
    for raw in re.split(r"[\n,]", text):
        line = raw.strip()
        if not line:
            continue
        include, optional = True, False
        if line.startswith("?:"):
            optional, line = True, line[2:]
        elif line.startswith("+:"):
            line = line[2:]
        elif line.startswith("-:"):
            include, line = False, line[2:]
        source, _, target = line.partition("=>")
        rules.append(ArtifactRule(include, optional, source.strip(), target.strip().strip("/")))
    return rules


def apply_rules(rules: list[ArtifactRule], files: set[str]) -> tuple[dict[str, str], list[ArtifactRule]]:
    """Copy files by rules: a match of `dir/*.json => target` goes to `target/<what the wildcard
    part matched>`. Returns (destination -> source, required rules that matched nothing)."""
    copied: dict[str, str] = {}
    empty: list[ArtifactRule] = []
    for rule in rules:
        matched = sorted(f for f in files if match_path(rule.source, f))
        if not rule.include:
            for f in matched:
                for dest in [d for d, s in copied.items() if s == f]:
                    del copied[dest]
            continue
        if not matched and not rule.optional:
            empty.append(rule)
        fixed = _fixed_prefix(rule.source)
        for f in matched:
            rest = f[len(fixed) + 1 :] if fixed and f.startswith(fixed + "/") else f
            copied["/".join(p for p in (rule.target, rest) if p)] = f
    return copied, empty


def _fixed_prefix(pattern: str) -> str:
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1]:
        if any(c in part for c in "*?"):
            break
        fixed.append(part)
    return "/".join(fixed)


# ----------------------------------------------------------------------------- running a chain


@dataclass
class StepRun:
    build: str
    step: Step
    params: dict[str, str]
    """Every parameter of the build, resolved (env.X, teamcity.build.branch...)."""
    script: str
    """scriptContent with parameter references resolved."""
    unresolved: list[str]
    files_before: frozenset[str]
    failed: bool = False


@dataclass
class ChainRun:
    branch: str
    triggered: list[str] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)
    """Build type -> success / failed / failed to start / canceled / not in chain."""
    steps: list[StepRun] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    approvals: list[str] = field(default_factory=list)


CommandEffect = Callable[[StepRun, list[str], set[str]], bool]
"""Called for each simple command a step runs: (step, argv, workspace files) -> whether it fails."""


class Server:
    """Runs the chain a push to `branch` triggers: every build type whose VCS trigger's branch
    filter matches, with all its snapshot dependencies."""

    def __init__(
        self,
        settings: Settings,
        branch: str,
        *,
        on_command: CommandEffect,
        approves: Callable[[BuildType], bool] = lambda bt: True,
    ) -> None:
        self.settings = settings
        self.branch = branch
        self.on_command = on_command
        self.approves = approves
        self.run = ChainRun(branch)
        self.published: dict[str, set[str]] = {}

    def execute(self) -> ChainRun:
        bts = self.settings.build_types
        roots = [b.obj for b in bts.values() if any(branch_filter_matches(f, self.branch) for f in b.branch_filters)]
        chain: set[str] = set()
        pending = list(roots)
        while pending:
            obj = pending.pop()
            if obj in chain:
                continue
            if obj not in bts:
                raise SettingsError(f"dependency on undeclared build type {obj}")
            chain.add(obj)
            pending += [d.target for d in bts[obj].snapshots]
        self.run.triggered = sorted(roots)
        graph = {obj: {d.target for d in bts[obj].snapshots} for obj in chain}
        for obj in TopologicalSorter(graph).static_order():
            self._build(bts[obj])
        return self.run

    def _build(self, bt: BuildType) -> None:
        action = "RUN"
        for dep in bt.snapshots:
            assert dep.snapshot is not None
            state = self.run.status[dep.target]
            if state in ("failed", "failed to start"):
                wanted = dep.snapshot["onDependencyFailure"]
            elif state == "canceled":
                wanted = dep.snapshot["onDependencyCancel"]
            else:
                continue
            if action == "RUN" or FAILURE_ACTIONS.index(wanted) > FAILURE_ACTIONS.index(action):
                action = wanted
        if action == "CANCEL":
            self.run.status[bt.obj] = "canceled"
            return
        if action == "FAIL_TO_START":
            self.run.status[bt.obj] = "failed to start"
            return
        if bt.approval is not None:
            self.run.approvals.append(bt.obj)
            if not self.approves(bt):
                self.run.status[bt.obj] = "canceled"
                return
        failed = action == "ADD_PROBLEM"
        workspace: set[str] = set()
        for dep in bt.dependencies:
            if not dep.artifact_rules:
                continue
            source = self.published.get(dep.target, set())
            for rules in dep.artifact_rules:
                copied, empty = apply_rules(parse_rules(rules), source)
                workspace |= set(copied)
                for rule in empty:
                    self.run.problems.append(f"{bt.obj}: artifact rule {rule.source!r} of {dep.target} matched nothing")
                    failed = True
        params = self._params(bt)
        for step in bt.steps:
            if step.mode in ("RUN_ON_SUCCESS", "DEFAULT"):
                runs = not failed
            elif step.mode == "RUN_ON_FAILURE":
                runs = failed
            elif step.mode == "ALWAYS":
                runs = True
            else:
                raise SettingsError(f"execution mode {step.mode!r}")
            if not runs or not all(c.holds(params) for c in step.conditions):
                continue
            script, unresolved = resolve(step.script, params)
            run = StepRun(bt.obj, step, params, script, unresolved, frozenset(workspace))
            self.run.steps.append(run)
            if self._script(run, workspace):
                run.failed = True
                failed = True
        self.run.status[bt.obj] = "failed" if failed else "success"
        if bt.publish_artifacts != "SUCCESSFUL" or not failed:
            copied, _ = apply_rules(parse_rules(bt.artifact_rules), workspace)
            self.published[bt.obj] = set(copied)

    def _params(self, bt: BuildType) -> dict[str, str]:
        raw = {p.name: p.value for p in bt.params}
        raw["teamcity.build.branch"] = self.branch
        raw["teamcity.build.id"] = "1"
        return {name: resolve(value, raw)[0] for name, value in raw.items()}

    def _script(self, run: StepRun, workspace: set[str]) -> bool:
        """Runs the script's commands as sh without -e; returns whether its exit status is non-zero."""
        status = 0
        for command in commands(run.script):
            if command.before == "&&" and status != 0:
                continue
            if command.before == "||" and status == 0:
                continue
            status = 1 if self.on_command(run, list(command.argv), workspace) else 0
        return status != 0
