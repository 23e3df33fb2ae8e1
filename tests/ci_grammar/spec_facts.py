"""What the spec and the target-neutral plan (pipeline.render.plan) say each CI job must do.

This is the oracle of the Jenkins and TeamCity checks: nothing here reads a rendered file, so the
checks hold whatever text the renderers produce, as long as CI does what the definition says.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass

from pipeline.render.base import DEFAULT_DEFINITION, MANIFEST_DIR, RenderContext
from pipeline.render.plan import PACKAGE, CiPlan, StagePlan, build_plan
from pipeline.render.registry import resolve_targets
from pipeline.spec import PipelineSpec, branch_matches
from tests.ci_grammar.jenkins_trace import Branch
from tests.ci_grammar.shell import commands
from tests.ci_grammar.shell_run import JobRun

CHANGE_REQUEST = Branch("PR-7", change_request=True)
UNMATCHED = "zz-unmatched/feature"


@dataclass(frozen=True)
class Subject:
    """A rendered CI file and the definition it must implement."""

    label: str
    spec: PipelineSpec
    context: RenderContext

    @property
    def plan(self) -> CiPlan:
        return build_plan(self.spec, self.context)


def plan_of(spec: PipelineSpec, context: RenderContext | None = None) -> CiPlan:
    return build_plan(spec, context or RenderContext())


def stage_argv(stage: StagePlan) -> tuple[str, ...]:
    """`pipeline run stage NAME --manifest DIR [--profile P] [--yes] [-f FILE]`, as argv."""
    return tuple(shlex.split(stage.run_command))


# ----------------------------------------------------------------------------- the drift check


def is_drift_check(argv: tuple[str, ...]) -> bool:
    """`pipeline render ... --check` (the tool by any path)."""
    return bool(argv) and argv[0].rsplit("/", 1)[-1] == "pipeline" and argv[1:2] == ("render",) and "--check" in argv


def drift_check_problems(argv: tuple[str, ...], plan: CiPlan, target: str) -> list[str]:
    """What is wrong with a drift check's command: it must check exactly the files the team commits,
    i.e. the definition's targets (`Pipeline(targets=...)`), else only this file's own target (a team
    that renders one target commits only its files), and read the definition CI checks out.
    The command's targets are resolved as the CLI resolves them (registry.resolve_targets)."""
    options: dict[str, str] = {}
    flags: set[str] = set()
    rest = list(argv[2:])
    while rest:
        word = rest.pop(0)
        if word in ("--target", "-t", "--file", "-f", "--out", "-o"):
            if not rest:
                return [f"{list(argv)}: {word} has no value"]
            options[{"-t": "--target", "-f": "--file", "-o": "--out"}.get(word, word)] = rest.pop(0)
        elif word.startswith("--target="):
            options["--target"] = word.split("=", 1)[1]
        elif word.startswith("-"):
            flags.add(word)
        else:
            return [f"{list(argv)}: unexpected argument {word!r}"]
    problems = []
    if flags != {"--check"}:
        problems.append(f"{list(argv)}: flags {sorted(flags)}, expected only --check")
    if "--out" in options:
        problems.append(f"{list(argv)}: checks files under {options['--out']!r}, not the checkout")
    checked = resolve_targets(options.get("--target"), plan.spec.targets)
    wanted = list(plan.spec.targets) or [target]
    if sorted(checked) != sorted(wanted):
        problems.append(
            f"{list(argv)}: checks the files of {sorted(checked)}, the team commits those of {sorted(wanted)}"
            + ("" if plan.spec.targets else " (the definition names no targets: only this file's own)")
        )
    definition = options.get("--file", DEFAULT_DEFINITION)
    if definition != plan.context.definition:
        problems.append(f"{list(argv)}: reads {definition!r}, the definition is {plan.context.definition!r}")
    return problems


# ----------------------------------------------------------------------------- installing the tool

REQUIREMENT = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[(?P<extras>[^\]]*)\])?(?P<spec>.*)")


@dataclass(frozen=True)
class Requirement:
    name: str
    extras: frozenset[str]
    spec: str

    def __str__(self) -> str:
        extras = f"[{','.join(sorted(self.extras))}]" if self.extras else ""
        return f"{self.name}{extras}{self.spec}"

    @staticmethod
    def parse(text: str) -> Requirement | None:
        found = REQUIREMENT.fullmatch(text.strip())
        if found is None:
            return None
        extras = frozenset(e.strip() for e in (found["extras"] or "").split(",") if e.strip())
        return Requirement(found["name"].lower().replace("_", "-"), extras, found["spec"].replace(" ", ""))


def pip_requirements(argv: tuple[str, ...]) -> list[Requirement] | None:
    """The requirements a `pip install` (or `python -m pip install`) command names; None for other commands."""
    words = list(argv)
    if len(words) > 2 and words[0].rsplit("/", 1)[-1].startswith("python") and words[1:3] == ["-m", "pip"]:
        words = words[2:]
    if len(words) < 2 or words[0].rsplit("/", 1)[-1] not in ("pip", "pip3") or words[1] != "install":
        return None
    found = []
    for word in words[2:]:
        if word.startswith("-"):
            continue
        requirement = Requirement.parse(word)
        if requirement is not None:
            found.append(requirement)
    return found


def install_commands(plan: CiPlan) -> list[tuple[str, ...]]:
    """The simple commands of the definition's own `install=` (what CI must run before the tool),
    or [] when it has none (then the tool is pinned: see pinned_install)."""
    return [c.argv for c in commands(plan.spec.install)] if plan.spec.install else []


def stage_extras(spec: PipelineSpec) -> frozenset[str]:
    """The extras a stage's install must bring: `run`, and what each stage kind of the definition
    declares its executor needs on CI (`Stage.extras`)."""
    return frozenset({"run"}).union(*(type(stage).extras for stage in spec.stages))


def pinned_install_problem(argv_seen: list[tuple[str, ...]], plan: CiPlan, *, drift_check: bool) -> str | None:
    """Without `install=`, CI must install exactly the version that rendered the file (like a lock
    file): `pipeline-as-code[run]==VERSION` for a stage, with the extras its pipeline's stage kinds
    declare (a Migrate stage: `[run,schema]`); the drift check only renders, so
    `pipeline-as-code==VERSION` without extras. With `install=`, its commands."""
    if plan.spec.install:
        missing = [list(c) for c in install_commands(plan) if c not in argv_seen]
        return f"the definition's install command(s) {missing} do not run" if missing else None
    wanted = frozenset() if drift_check else stage_extras(plan.spec)
    found = [r for argv in argv_seen for r in pip_requirements(argv) or [] if r.name == PACKAGE]
    if not found:
        return f"{PACKAGE} is never installed"
    pinned = [r for r in found if r.spec == f"=={plan.context.version}" and r.extras == wanted]
    if not pinned:
        extra = f"[{','.join(sorted(wanted))}]" if wanted else ""
        return (
            f"installs {[str(r) for r in found]}, "
            f"expected exactly {PACKAGE}{extra}=={plan.context.version} (the version that rendered the file)"
        )
    return None


def normalised(text: str) -> str:
    """Lower case letters and digits only: 'hello-web' ~ 'HelloWeb' (CI resource naming styles)."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def names_pipeline_and_environment(resource: str, plan: CiPlan, environment: str) -> bool:
    """A lock resource is shared by every job of a CI server: it must say whose environment it is."""
    return normalised(plan.name) in normalised(resource) and normalised(environment) in normalised(resource)


def manifest_file(stage: str) -> str:
    return f"{MANIFEST_DIR}/{stage}.json"


def descendants(plan: CiPlan, name: str) -> list[str]:
    return [s.name for s in plan.stages if name in s.ancestors]


def references(plan: CiPlan, name: str) -> list[str]:
    return list(plan.by_name[name].stage.references().values())


# ----------------------------------------------------------------------------- branches


def example_branch(pattern: str) -> str | None:
    """A branch name the glob matches (fnmatch semantics, as the spec's branch_matches)."""
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out += "x1"
        elif c == "?":
            out += "q"
        elif c == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            if body.startswith(("!", "^")):
                out += next(ch for ch in "zyxwv0123" if not re.fullmatch(f"[{re.escape(body[1:])}]", ch))
            else:
                out += body[0]
            i = end
        else:
            out += c
        i += 1
    return out if fnmatch.fnmatchcase(out, pattern) else None


def sample_branches(spec: PipelineSpec) -> list[Branch]:
    """A branch for every pattern in the definition (trigger and stage filters), one that matches
    none of them, and a change request. The first is a trigger branch."""
    patterns = [*spec.trigger_branches, *(p for s in spec.stages for p in s.branches)]
    names: list[str] = []
    for pattern in patterns:
        name = example_branch(pattern)
        if name and name not in names:
            names.append(name)
    if UNMATCHED not in names:
        names.append(UNMATCHED)
    return [*(Branch(n) for n in names), CHANGE_REQUEST]


def trigger_runs(plan: CiPlan, branch: Branch) -> bool | None:
    """Whether CI builds this at all: True, False, or None (the definition does not say)."""
    trigger = plan.trigger
    if branch.change_request:
        if trigger.pull_requests:
            return True
        return None if branch_matches(plan.trigger_branches, branch.name) else False
    return branch_matches(plan.trigger_branches, branch.name)


def expected_runs(plan: CiPlan, branch: Branch) -> dict[str, bool | None]:
    """Per stage: True (must run), False (must not), None (either is right) on this branch when
    nothing fails, as `pipeline run` decides: a stage runs when CI builds the branch, its own filter
    matches and every stage before it ran (a stage skipped by its filter blocks what follows it,
    also behind a teardown); an always-run stage (teardown) must run when a stage it cleans up
    after ran (when none did it may run and has nothing to do). A pull request (when the trigger
    asks for them) runs the plan's checks only: nothing that deploys, drives Docker or a cloud,
    waits for a human or receives a secret."""
    base = trigger_runs(plan, branch)
    runs: dict[str, bool | None] = {}
    for stage in plan.stages:
        if base is False:
            runs[stage.name] = False
            continue
        if branch.change_request:
            own: bool | None = True if not stage.stage.branches else None
            if plan.trigger.pull_requests and not stage.on_pull_requests:
                own = False
        else:
            own = branch_matches(stage.stage.branches, branch.name)
        if stage.always:
            refs = [runs[r] for r in references(plan, stage.name)]
            if own is False:
                value: bool | None = False
            elif any(r is True for r in refs):
                value = own if own is not None else None
            else:
                value = None
        else:
            needs = [runs[a] for a in stage.ancestors if not plan.by_name[a].always]
            if own is False or any(n is False for n in needs):
                value = False
            elif own is True and all(n is True for n in needs):
                value = True
            else:
                value = None
        runs[stage.name] = None if base is None and value is not False else value
    return runs


def branch_running(plan: CiPlan, branches: list[Branch], stage: str) -> Branch | None:
    """The first sample branch on which the stage must run."""
    for branch in branches:
        if expected_runs(plan, branch).get(stage) is True:
            return branch
    return None


def installed_tool_problems(runs: list[JobRun], plan: CiPlan, where: str) -> list[str]:
    """What a job's scripts, run for real (shell_run) in a fresh workspace and then again in the same
    one (a later build on that agent), show about the tool: every script succeeds; every `pipeline`
    that runs belongs to a venv into which exactly the rendering version was installed (for a stage
    with `[run]` and the extras its stage kinds declare, for the drift check without extras); the
    second build reuses the venv and installs nothing. (For definitions without `install=`.)"""
    problems = []
    version = plan.context.version
    extras = ["run", *sorted(stage_extras(plan.spec) - {"run"})]
    for attempt, run in enumerate(runs):
        label = f"{where} (build {attempt + 1} on this agent)"
        if any(run.statuses):
            problems.append(f"{label}: a script exits {run.statuses}")
        for call in run.invocations:
            drift = is_drift_check(call.argv)
            wanted = (f"{PACKAGE}=={version}",) if drift else (f"{PACKAGE}[{','.join(extras)}]=={version}",)
            if call.requirements != wanted:
                problems.append(
                    f"{label}: `{' '.join(call.argv[:4])}` runs the pipeline of a venv with {list(call.requirements)}, "
                    f"expected exactly {list(wanted)}"
                )
        if attempt > 0 and run.pip_installs:
            problems.append(f"{label}: installs again instead of reusing its venv: {run.pip_installs}")
    return problems
