"""What the spec and the target-neutral plan (pipeline.render.plan) say each CI job must do.

This is the oracle of the Jenkins and TeamCity checks: nothing here reads a rendered file, so the
checks hold whatever text the renderers produce, as long as CI does what the definition says.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass

from pipeline.render.base import MANIFEST_DIR, RenderContext
from pipeline.render.plan import CiPlan, StagePlan, build_plan
from pipeline.spec import PipelineSpec, branch_matches
from tests.ci_grammar.jenkins_trace import Branch
from tests.ci_grammar.shell import commands

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


def check_argv(plan: CiPlan) -> tuple[str, ...]:
    return tuple(shlex.split(plan.context.check_command))


def install_commands(plan: CiPlan) -> list[tuple[str, ...]]:
    """The simple commands of the definition's `install` (what CI must run before the tool)."""
    return [c.argv for c in commands(plan.install)]


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
    patterns = [*spec.trigger.branches, *(p for s in spec.stages for p in s.branches)]
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
        return None if branch_matches(trigger.branches, branch.name) else False
    return branch_matches(trigger.branches, branch.name)


def expected_runs(plan: CiPlan, branch: Branch) -> dict[str, bool | None]:
    """Per stage: True (must run), False (must not), None (either is right) on this branch when
    nothing fails, as `pipeline run` decides: a stage runs when CI builds the branch, its own filter
    matches and every stage before it ran (a stage skipped by its filter blocks what follows it,
    also behind a teardown); an always-run stage (teardown) must run when a stage it cleans up
    after ran (when none did it may run and has nothing to do)."""
    base = trigger_runs(plan, branch)
    runs: dict[str, bool | None] = {}
    for stage in plan.stages:
        if base is False:
            runs[stage.name] = False
            continue
        if branch.change_request:
            own: bool | None = True if not stage.stage.branches else None
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
