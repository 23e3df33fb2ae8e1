"""What Jenkins does at run time with a recorded Declarative pipeline: a small interpreter.

It follows pipeline-model-definition's ModelInterpreter (the CPS code Jenkins runs for every
Declarative build) step by step:

- stages run in order; once a stage has thrown, every later stage is skipped "due to earlier
  failure(s)" (a failure swallowed by `catchError` does NOT count: execution continues, only the
  build result becomes worse);
- per stage: `when` with beforeOptions -> `options` wrappers (timeout, lock, retry...) -> `when` with
  beforeInput -> `input` -> (parallel: `when`, credentials, environment, branches) or (`when` with
  beforeAgent -> `agent` -> `when` -> credentials from `environment` -> plain `environment` ->
  nested `stages` or `steps`) ; a stage with nested stages runs its `post` after them (also when
  one failed); a stage with steps runs its `post` after them;
- post conditions in Jenkins' order (always, changed, fixed, regression, aborted, success,
  unsuccessful, unstable, failure, notBuilt, cleanup), each judged on the combined result (build
  result so far, warnings `catchError` left in the stage, the error at hand); an error in a post
  block becomes the stage's error;
- `agent none` keeps whatever executor is already held (it does not release it); any other agent
  allocates an executor with a fresh workspace; a stage without `agent` runs where its parent runs;
  the scripted `node` step (also inside a post condition) allocates one too, for its body; a
  Declarative agent checks the sources out into its workspace (unless `skipDefaultCheckout`), a
  `node` step's workspace has them only after `checkout scm`;
- environment: what a multibranch build provides (BRANCH_NAME, and CHANGE_ID for a change request),
  then `withEnv`/`environment` values override the inherited ones, an EMPTY value REMOVES the
  variable (hudson.EnvVars.override); `withCredentials`/`credentials()` bind variables
  (gitUsernamePassword: GIT_USERNAME and GIT_PASSWORD);
- `lock` (option or step, Lockable Resources) takes its `resource` and every `extra` resource at
  once and holds them for its body: each acquisition has an id, so checks can tell one hold of a
  resource across several stages from several holds;
- `stash` keeps the workspace files that match its Ant patterns (fails on none unless allowEmpty);
  `unstash` of an unknown stash fails, and a stash made in a concurrent parallel branch counts as
  unknown (it may or may not exist yet);
- `catchError(buildResult, stageResult, catchInterruptions)`, `retry(n)`, `timeout`, `lock`,
  `dir`, `script`, scripted `parallel` as their steps do (Job Cacher's `cache` runs its body: what it
  restores is not modelled); `input` (directive or step) is approved or
  rejected by the caller (rejected: FlowInterruptedException, result ABORTED); an `sh` fails when the
  caller says so (`fails`).

NOT modelled: time (timeouts never expire; their values are recorded), previous builds (changed,
fixed and regression never fire: the model assumes the previous build ended alike), tools,
restarts, what `checkout` fetches (only that the workspace has the sources), test results making a build UNSTABLE, real parallelism (branches run one after
another, tagged so that checks can tell concurrent events apart; with failFast the branches after a
failed one do not run).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from tests.ci_grammar.antglob import match_any
from tests.ci_grammar.jenkins_trace import EnvEntry, ModelError, Option, Pipeline, Stage, Step, Trace

RESULTS = ("SUCCESS", "UNSTABLE", "FAILURE", "NOT_BUILT", "ABORTED")
POST_ORDER = (
    "always",
    "changed",
    "fixed",
    "regression",
    "aborted",
    "success",
    "unsuccessful",
    "unstable",
    "failure",
    "notBuilt",
    "cleanup",
)
WRAPPER_OPTIONS = frozenset({"timeout", "retry", "lock", "timestamps", "ansiColor"})
PROPERTY_OPTIONS = frozenset(
    {
        "preserveStashes",
        "skipDefaultCheckout",
        "disableConcurrentBuilds",
        "buildDiscarder",
        "quietPeriod",
        "skipStagesAfterUnstable",
        "parallelsAlwaysFailFast",
        "checkoutToSubdirectory",
        "newContainerPerStage",
        "durabilityHint",
        "disableResume",
        "overrideIndexTriggers",
        "rateLimitBuilds",
    }
)
NEEDS_NODE = frozenset({"sh", "stash", "unstash", "archiveArtifacts", "junit", "deleteDir", "cleanWs", "checkout"})
GIT_USERNAME_PASSWORD = ("GIT_USERNAME", "GIT_PASSWORD")
"""What the Git plugin's gitUsernamePassword binding binds (and GIT_ASKPASS, a script git reads them through)."""
MINUTES = {"NANOSECONDS": 1 / 60e9, "MICROSECONDS": 1 / 60e6, "MILLISECONDS": 1 / 60e3, "SECONDS": 1 / 60}
MINUTES |= {"MINUTES": 1, "HOURS": 60, "DAYS": 1440}


def worse(a: str, b: str) -> str:
    return a if RESULTS.index(a) >= RESULTS.index(b) else b


class JenkinsError(Exception):
    result = "FAILURE"


class StepFailed(JenkinsError):
    """An AbortException or any other failure of a step."""


class Interrupted(JenkinsError):
    """FlowInterruptedException: a rejected input, an abort."""

    result = "ABORTED"


@dataclass(frozen=True)
class Binding:
    variable: str
    credentials_id: str
    kind: str
    """string, usernamePassword, file, AmazonWebServicesCredentialsBinding, credentials() ..."""


@dataclass
class Workspace:
    """An executor's workspace: the files the model tracks (what `sh` effects and unstash put there)."""

    id: int
    agent: dict[str, Any]
    files: set[str] = field(default_factory=set)
    sources: bool = False
    """The repository is checked out here (Declarative's implicit checkout, or `checkout scm`)."""


@dataclass(frozen=True)
class Scope:
    """Everything in effect at a point of the build."""

    stages: tuple[str, ...] = ()
    workspace: Workspace | None = None
    overrides: tuple[tuple[str, str], ...] = ()
    """withEnv / environment pairs, outermost first (applied in order over the global env)."""
    bindings: tuple[Binding, ...] = ()
    locks: tuple[str, ...] = ()
    holds: tuple[tuple[str, int], ...] = ()
    """(resource, acquisition id) for every lock held here: one `lock` takes all its resources at once."""
    timeouts: tuple[float, ...] = ()
    """Minutes, outermost first."""
    retries: tuple[int, ...] = ()
    catch_errors: int = 0
    post: str | None = None
    """The post condition being run, if any."""
    concurrency: tuple[tuple[int, int], ...] = ()
    """(parallel block id, branch index) for every parallel branch this runs in."""
    dir: str = ""


@dataclass
class Event:
    kind: str
    args: dict[str, Any]
    scope: Scope
    env: dict[str, str]
    """The plain environment variables in effect (bindings excluded)."""
    index: int
    failed: bool = False
    sources: bool = False
    """Whether the workspace had the checked-out sources when this happened."""

    @property
    def stage(self) -> str:
        return self.scope.stages[-1] if self.scope.stages else ""

    @property
    def timeout(self) -> float | None:
        return min(self.scope.timeouts) if self.scope.timeouts else None

    def concurrent_with(self, other: Event | Scope) -> bool:
        return concurrent(
            self.scope.concurrency, other.concurrency if isinstance(other, Scope) else other.scope.concurrency
        )


def concurrent(a: Iterable[tuple[int, int]], b: Iterable[tuple[int, int]]) -> bool:
    mine = dict(a)
    return any(block in mine and mine[block] != branch for block, branch in b)


@dataclass
class Run:
    branch: str
    events: list[Event] = field(default_factory=list)
    result: str = "SUCCESS"
    stages: dict[str, str] = field(default_factory=dict)
    """Jenkins stage name -> ran / skipped (when) / skipped (failure) / failed."""
    problems: list[str] = field(default_factory=list)
    """What Jenkins would report as an error that is not a command's own failure (no node
    context, unknown stash, empty stash...)."""
    caught: list[str] = field(default_factory=list)
    """Such errors that a `catchError` around them caught (logged; the build goes on)."""

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


ShEffect = Callable[[Event, Workspace], None]


def never(_: Event) -> bool:
    return False


def always(_: Event) -> bool:
    return True


class Interpreter:
    """Runs one build of a trace: `branch` selects the `when` results; `fails(event)` says which
    `sh` steps fail; `approves(event)` which inputs are approved; `on_sh(event, workspace)` may add
    the files a command makes to the workspace (e.g. a run manifest)."""

    def __init__(
        self,
        trace: Trace,
        branch: str,
        *,
        fails: Callable[[Event], bool] = never,
        approves: Callable[[Event], bool] = always,
        on_sh: ShEffect | None = None,
    ) -> None:
        if trace.pipeline is None:
            raise ModelError(f"{trace.path}: no pipeline was recorded: {trace.errors}")
        if branch not in {b.name for b in trace.branches}:
            raise ModelError(f"branch {branch!r} was not evaluated by the stand-in")
        self.pipeline: Pipeline = trace.pipeline
        self.branch = branch
        self.fails = fails
        self.approves = approves
        self.on_sh = on_sh
        self.run = Run(branch)
        change = next(b for b in trace.branches if b.name == branch).change_request
        self.global_env: dict[str, str] = {"BRANCH_NAME": branch, **({"CHANGE_ID": "7"} if change else {})}
        """What the multibranch job provides (BRANCH_NAME is the branch, or PR-N for a change request)."""
        self.stashes: dict[str, tuple[frozenset[str], tuple[tuple[int, int], ...]]] = {}
        self.warnings: dict[str, str] = {}
        self._ids = itertools.count(1)

    # ----------------------------------------------------------------------------- the build
    def execute(self) -> Run:
        root = self.pipeline
        first_error: JenkinsError | None = None
        post_run = False
        scope = Scope()

        def body(s: Scope) -> None:
            nonlocal first_error, post_run
            first_error = self._sequential(root.stages, s, None, parent=None, skipped=False)
            try:
                post_run = True
                self._post_build(s, first_error)
            except JenkinsError as e:
                first_error = first_error or e
            if first_error is not None:
                raise first_error

        try:
            self._in_agent(
                root.agent,
                scope,
                lambda s: self._with_environment(
                    root.environment, s, lambda s2: self._wrappers(root.options, s2, body)
                ),
            )
        except JenkinsError as e:
            first_error = first_error or e
        finally:
            if not post_run:
                try:
                    self._post_build(scope, first_error)
                except JenkinsError as e:
                    first_error = first_error or e
        if first_error is not None:
            self.run.result = worse(self.run.result, first_error.result)
        return self.run

    def _post_build(self, scope: Scope, error: JenkinsError | None) -> None:
        error = self._post(self.pipeline.post, scope, error, stage=None)
        if error is not None:
            raise error

    def _sequential(
        self, stages: list[Stage], scope: Scope, first_error: JenkinsError | None, parent: Stage | None, skipped: bool
    ) -> JenkinsError | None:
        try:
            for stage in stages:
                try:
                    self._stage(stage, scope, first_error, skipped)
                except JenkinsError as e:
                    first_error = first_error or e
        finally:
            if not skipped and parent is not None:
                first_error = self._post(parent.post, scope, first_error, stage=parent.name)
        return first_error

    def _stage(self, stage: Stage, outer: Scope, first_error: JenkinsError | None, skipped: bool) -> None:
        scope = replace(outer, stages=(*outer.stages, stage.name))
        if skipped or first_error is not None:
            self._skip(stage, "skipped (failure)" if first_error is not None else "skipped (parent)")
            if first_error is not None:
                raise first_error
            return
        when = _WhenState(stage, self.branch)
        self.run.stages[stage.name] = "ran"
        error: JenkinsError | None = None
        try:
            if when.check(stage.when.before_options if stage.when else False):
                self._wrappers(stage.options, scope, lambda s: self._after_options(stage, s, when))
            if not when.passed:
                self._skip(stage, "skipped (when)")
        except JenkinsError as e:
            error = e
            self.run.stages[stage.name] = "failed"
        finally:
            if stage.parallel is not None and self.run.stages[stage.name] != "skipped (when)":
                error = self._post(stage.post, scope, error, stage=stage.name)
        if error is not None:
            raise error

    def _after_options(self, stage: Stage, scope: Scope, when: _WhenState) -> None:
        if not when.check(stage.when.before_input if stage.when else False):
            return
        self._input(stage, scope, lambda s: self._after_input(stage, s, when))

    def _after_input(self, stage: Stage, scope: Scope, when: _WhenState) -> None:
        if stage.parallel is not None:
            if when.check(True):
                self._with_environment(stage.environment, scope, lambda s: self._parallel(stage, s))
            return
        if not when.check(stage.when.before_agent if stage.when else False):
            return

        def in_agent(s: Scope) -> None:
            if not when.check(True):
                return
            self._with_environment(stage.environment, s, lambda s2: self._body(stage, s2))

        self._in_agent(stage.agent, scope, in_agent)

    def _body(self, stage: Stage, scope: Scope) -> None:
        if stage.stages is not None:
            nested = self._sequential(stage.stages, scope, None, parent=stage, skipped=False)
            if nested is not None:
                raise nested
            return
        error: JenkinsError | None = None
        try:
            self._steps(stage.steps or [], scope)
        except JenkinsError as e:
            error = e
        finally:
            error = self._post(stage.post, scope, error, stage=stage.name)
        if error is not None:
            raise error

    def _skip(self, stage: Stage, how: str) -> None:
        self.run.stages[stage.name] = how
        for child in stage.walk()[1:]:
            self.run.stages.setdefault(child.name, "skipped (parent)")

    def _parallel(self, stage: Stage, scope: Scope) -> None:
        block = next(self._ids)
        fail_fast = stage.fail_fast or any(o.name == "parallelsAlwaysFailFast" for o in self.pipeline.options)
        errors: list[JenkinsError] = []
        for index, branch in enumerate(stage.parallel or []):
            if errors and fail_fast:
                self._skip(branch, "aborted (failFast)")
                continue
            inner = replace(scope, concurrency=(*scope.concurrency, (block, index)))
            try:
                self._stage(branch, inner, None, skipped=False)
            except JenkinsError as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def _input(self, stage: Stage, scope: Scope, body: Callable[[Scope], None]) -> None:
        if stage.input is None:
            body(scope)
            return
        event = self._event("input", dict(stage.input), scope)
        if not self.approves(event):
            event.failed = True
            raise Interrupted(f"input of stage {stage.name!r} rejected")
        params = stage.input.get("parameters") or {}
        if params or stage.input.get("submitterParameter"):
            raise ModelError(f"stage {stage.name!r}: input parameters are not modelled")
        body(scope)

    # ----------------------------------------------------------------------------- context
    def _in_agent(self, agent: dict[str, Any] | None, scope: Scope, body: Callable[[Scope], None]) -> None:
        if agent is None or agent["kind"] == "none":
            body(scope)
            return
        if agent["kind"] in ("docker", "dockerfile") and agent.get("reuseNode") and scope.workspace is not None:
            body(scope)
            return
        skip = any(o.name == "skipDefaultCheckout" for o in self.pipeline.options + self._stage_options(scope))
        workspace = Workspace(next(self._ids), agent, sources=not skip)
        body(replace(scope, workspace=workspace, dir=""))

    def _stage_options(self, scope: Scope) -> list[Option]:
        stage = next((s for s in self.pipeline.walk() if scope.stages and s.name == scope.stages[-1]), None)
        return stage.options if stage is not None else []

    def _with_environment(self, entries: list[EnvEntry], scope: Scope, body: Callable[[Scope], None]) -> None:
        bindings = tuple(Binding(e.name, e.credentials, "credentials()") for e in entries if e.credentials is not None)
        plain = tuple((e.name, e.value or "") for e in entries if e.credentials is None)
        body(replace(scope, bindings=scope.bindings + bindings, overrides=scope.overrides + plain))

    def _wrappers(self, options: list[Option], scope: Scope, body: Callable[[Scope], None]) -> None:
        wrappers = []
        for option in options:
            if option.name in WRAPPER_OPTIONS:
                wrappers.append(option)
            elif option.name not in PROPERTY_OPTIONS:
                raise ModelError(f"option {option.name!r} is not modelled")

        def nest(i: int, s: Scope) -> None:
            if i == len(wrappers):
                body(s)
                return
            option = wrappers[i]
            self._wrapper(option.name, option.args, s, lambda s2: nest(i + 1, s2))

        nest(0, scope)

    def _wrapper(self, name: str, args: dict[str, Any], scope: Scope, body: Callable[[Scope], None]) -> None:
        if name == "timeout":
            unit = str(args.get("unit") or "MINUTES").upper()
            if unit not in MINUTES:
                raise ModelError(f"timeout unit {unit!r}")
            body(replace(scope, timeouts=(*scope.timeouts, float(args["time"]) * MINUTES[unit])))
        elif name == "lock":
            resource = args.get("resource")
            label = args.get("label")
            if not resource and not label:
                raise ModelError("lock without resource or label")
            taken = [str(resource) if resource else f"label:{label}"]
            for extra in args.get("extra") or []:
                if not isinstance(extra, dict) or not (extra.get("resource") or extra.get("label")):
                    raise ModelError(f"lock extra {extra!r} is not modelled")
                taken.append(str(extra["resource"]) if extra.get("resource") else f"label:{extra['label']}")
            unknown = set(args) - {"resource", "label", "extra", "quantity", "inversePrecedence", "skipIfLocked"}
            if unknown or args.get("skipIfLocked"):
                raise ModelError(f"lock arguments {sorted(unknown) or 'skipIfLocked'} are not modelled")
            hold = next(self._ids)
            body(
                replace(
                    scope,
                    locks=(*scope.locks, *taken),
                    holds=(*scope.holds, *((resource_, hold) for resource_ in taken)),
                )
            )
        elif name == "retry":
            count = int(args["count"])
            inner = replace(scope, retries=(*scope.retries, count))
            for attempt in range(1, count + 1):
                try:
                    body(inner)
                    return
                except StepFailed:
                    if attempt == count:
                        raise
        elif name in ("timestamps", "ansiColor"):
            body(scope)
        else:
            raise ModelError(f"wrapper {name!r} is not modelled")

    def env_of(self, scope: Scope) -> dict[str, str]:
        """hudson.EnvVars semantics: an override with an empty value removes the variable."""
        env = dict(self.global_env)
        for name, value in scope.overrides:
            if not value:
                env.pop(name, None)
            elif "+" in name[1:]:
                real = name.split("+", 1)[0]
                env[real] = value + (":" + env[real] if real in env else "")
            else:
                env[name] = value
        return env

    def _event(self, kind: str, args: dict[str, Any], scope: Scope) -> Event:
        event = Event(kind, args, scope, self.env_of(scope), len(self.run.events))
        event.sources = scope.workspace.sources if scope.workspace is not None else False
        self.run.events.append(event)
        return event

    # ----------------------------------------------------------------------------- post
    def _post(
        self, post: dict[str, list[Step]], scope: Scope, error: JenkinsError | None, stage: str | None
    ) -> JenkinsError | None:
        unknown = set(post) - set(POST_ORDER)
        if unknown:
            raise ModelError(f"post conditions {sorted(unknown)}")
        for condition in POST_ORDER:
            if condition not in post or not self._satisfied(condition, error, stage):
                continue
            try:
                self._steps(post[condition], replace(scope, post=condition))
            except JenkinsError as e:
                if stage is not None:
                    self.run.stages[stage] = "failed"
                error = error or e
        return error

    def _satisfied(self, condition: str, error: JenkinsError | None, stage: str | None) -> bool:
        combined = self.run.result
        if stage is not None and stage in self.warnings:
            combined = worse(combined, self.warnings[stage])
        if error is not None:
            combined = worse(combined, error.result)
        return {
            "always": True,
            "cleanup": True,
            "changed": False,
            "fixed": False,
            "regression": False,
            "success": combined == "SUCCESS",
            "unsuccessful": combined != "SUCCESS",
            "unstable": combined == "UNSTABLE",
            "failure": combined == "FAILURE",
            "aborted": combined == "ABORTED",
            "notBuilt": combined == "NOT_BUILT",
        }[condition]

    # ----------------------------------------------------------------------------- steps
    def _steps(self, steps: list[Step], scope: Scope) -> None:
        for step in steps:
            self._step(step, scope)

    def _step(self, step: Step, scope: Scope) -> None:
        name = step.step
        args = step.args
        if name in NEEDS_NODE and scope.workspace is None:
            event = self._event(name, dict(args), scope)
            event.failed = True
            self.run.problems.append(
                f"stage {event.stage!r}: `{name}` needs an agent, but none is allocated ('agent none'): "
                "Jenkins fails the stage with 'Required context class hudson.FilePath is missing'"
            )
            raise StepFailed(f"{name} without a node")
        if name == "sh":
            event = self._event("sh", dict(args), scope)
            assert scope.workspace is not None
            if self.on_sh is not None:
                self.on_sh(event, scope.workspace)
            if self.fails(event):
                event.failed = True
                if not args.get("returnStatus"):
                    raise StepFailed(f"sh failed: {args['script']!r}")
        elif name == "stash":
            self._stash(args, scope)
        elif name == "unstash":
            self._unstash(args, scope)
        elif name == "error":
            self._event("error", dict(args), scope).failed = True
            raise StepFailed(str(args.get("message")))
        elif name == "input":
            event = self._event("input", dict(args), scope)
            if not self.approves(event):
                event.failed = True
                raise Interrupted("input rejected")
        elif name == "setEnv":
            if args["value"] is None:
                self.global_env.pop(args["name"], None)
            else:
                self.global_env[args["name"]] = args["value"]
        elif name in (
            "echo",
            "archiveArtifacts",
            "junit",
            "sleep",
            "milestone",
            "deleteDir",
            "cleanWs",
            "writeFile",
            "readFile",
            "fileExists",
        ):
            self._event(name, dict(args), scope)
        elif name == "checkout":
            self._event(name, dict(args), scope)
            assert scope.workspace is not None
            scope.workspace.sources = True
        elif name in ("timeout", "lock", "retry"):
            self._wrapper(name, args, scope, lambda s: self._steps(step.body or [], s))
        elif name == "catchError":
            self._catch_error(step, scope)
        elif name == "withCredentials":
            bindings = tuple(b for raw in args["bindings"] for b in _bindings(raw))
            self._steps(step.body or [], replace(scope, bindings=scope.bindings + bindings))
        elif name == "withEnv":
            pairs = []
            for pair in args["overrides"]:
                if "=" not in pair:
                    raise StepFailed(f"withEnv: {pair!r} has no '='")
                key, value = pair.split("=", 1)
                pairs.append((key, value))
            self._steps(step.body or [], replace(scope, overrides=scope.overrides + tuple(pairs)))
        elif name == "dir":
            path = args["path"]
            joined = path if path.startswith("/") else "/".join(p for p in (scope.dir, path) if p)
            self._steps(step.body or [], replace(scope, dir=joined))
        elif name in ("script", "cache"):
            self._steps(step.body or [], scope)
        elif name == "node":
            label = args.get("label")
            agent = {"kind": "label", "label": label} if label else {"kind": "any"}
            workspace = Workspace(next(self._ids), {**agent, "step": "node"})
            self._steps(step.body or [], replace(scope, workspace=workspace, dir=""))
        elif name == "parallel":
            self._scripted_parallel(step, scope)
        else:
            raise ModelError(f"step {name!r} is not modelled")

    def _catch_error(self, step: Step, scope: Scope) -> None:
        """catchError: the body's failure is logged, the build and stage results become (at worst)
        buildResult/stageResult, and the build goes on; an error it caught is no longer a problem."""
        args = step.args
        reported = len(self.run.problems)
        try:
            self._steps(step.body or [], replace(scope, catch_errors=scope.catch_errors + 1))
        except JenkinsError as error:
            if isinstance(error, Interrupted) and not args.get("catchInterruptions", True):
                raise
            self.run.caught += self.run.problems[reported:]
            del self.run.problems[reported:]
            if isinstance(error, Interrupted):
                self.run.result = worse(self.run.result, "ABORTED")
                self._warn(scope, "ABORTED")
            else:
                self.run.result = worse(self.run.result, str(args.get("buildResult") or "FAILURE"))
                self._warn(scope, str(args.get("stageResult") or "SUCCESS"))

    def _warn(self, scope: Scope, result: str) -> None:
        if result != "SUCCESS" and scope.stages:
            stage = scope.stages[-1]
            self.warnings[stage] = worse(self.warnings.get(stage, "SUCCESS"), result)

    def _scripted_parallel(self, step: Step, scope: Scope) -> None:
        block = next(self._ids)
        errors: list[JenkinsError] = []
        for index, (_, steps) in enumerate((step.branches or {}).items()):
            if errors and step.args.get("failFast"):
                continue
            try:
                self._steps(steps, replace(scope, concurrency=(*scope.concurrency, (block, index))))
            except JenkinsError as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def _stash(self, args: dict[str, Any], scope: Scope) -> None:
        event = self._event("stash", dict(args), scope)
        assert scope.workspace is not None
        base = f"{scope.dir}/" if scope.dir else ""
        files = set()
        for path in scope.workspace.files:
            if not path.startswith(base):
                continue
            rel = path[len(base) :]
            if match_any(args.get("includes") or "", rel) and not (
                args.get("excludes") and match_any(args["excludes"], rel)
            ):
                files.add(path)
        if not files and not args.get("allowEmpty"):
            event.failed = True
            self.run.problems.append(f"stage {event.stage!r}: stash {args['name']!r} includes no files")
            raise StepFailed("empty stash")
        event.args["files"] = sorted(files)
        self.stashes[args["name"]] = (frozenset(files), scope.concurrency)

    def _unstash(self, args: dict[str, Any], scope: Scope) -> None:
        event = self._event("unstash", dict(args), scope)
        assert scope.workspace is not None
        stored = self.stashes.get(args["name"])
        if stored is None or concurrent(stored[1], scope.concurrency):
            event.failed = True
            why = "is made in a concurrent parallel branch" if stored else "was never stashed before it"
            self.run.problems.append(f"stage {event.stage!r}: unstash {args['name']!r}: the stash {why}")
            raise StepFailed("no such saved stash")
        event.args["files"] = sorted(stored[0])
        scope.workspace.files |= stored[0]


class _WhenState:
    """ModelInterpreter's WhenEvaluator: conditions are evaluated once, at the earliest point their
    flags ask for (beforeOptions, beforeInput, beforeAgent, else after the agent)."""

    def __init__(self, stage: Stage, branch: str) -> None:
        self.when = stage.when
        self.branch = branch
        self.passed = stage.when is None

    def check(self, now: bool) -> bool:
        if self.passed or not now:
            return True
        assert self.when is not None
        self.passed = self.when.passes(self.branch)
        return self.passed


def _bindings(raw: dict[str, Any]) -> list[Binding]:
    kind = str(raw.get("binding") or raw.get("$class") or "")
    cid = str(raw.get("credentialsId"))
    variables = [
        raw.get(key)
        for key in (
            "variable",
            "usernameVariable",
            "passwordVariable",
            "keyFileVariable",
            "passphraseVariable",
            "keystoreVariable",
            "aliasVariable",
            "accessKeyVariable",
            "secretKeyVariable",
        )
    ]
    if kind == "gitUsernamePassword":
        variables = list(GIT_USERNAME_PASSWORD)
    found = [Binding(str(v), cid, kind) for v in variables if v]
    if not found:
        raise ModelError(f"credentials binding {raw!r} binds no variable")
    return found
