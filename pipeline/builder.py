"""The authoring layer: `with Pipeline("web") as p: test >> bake` produces a frozen PipelineSpec.

Stages created inside the `with` block register themselves (with the file and line that created
them, so errors point at the user's code); `>>` records edges. Leaving the block builds and
validates the spec.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from pydantic import ValidationError

from pipeline.authoring import (
    Location,
    active_pipeline,
    building,
    caller_location,
    display_path,
    location_of,
    problems_from_validation,
)
from pipeline.errors import DefinitionError, Problem
from pipeline.flags.spec import Flag
from pipeline.model import AgentLabels, Environment, Profile, Stage, deferred_problems
from pipeline.spec import PipelineSpec, Trigger

_collector: ContextVar[list[Pipeline] | None] = ContextVar("pipeline_collector", default=None)


class Pipeline:
    """Builder for a PipelineSpec.

    Example:
        with Pipeline("hello-web", environments=[Environment(name="production")]) as p:
            test = CommitTest(name="commit-test", commands=["pytest -q"])
            bake = Bake(name="bake", template="images/web.pkr.hcl")
            test >> bake
        spec = p.spec
    """

    def __init__(
        self,
        name: str,
        *,
        environments: Sequence[Environment] = (),
        flags: Sequence[Flag] = (),
        trigger: Trigger | None = None,
        profile: Profile | None = None,
        python: str | None = None,
        install: str | None = None,
        targets: Sequence[str] | str | None = None,
        default_branch: str | None = None,
        agents: AgentLabels | None = None,
    ) -> None:
        self.name = name
        self.environments = tuple(environments)
        self.flags = tuple(flags)
        self.trigger = trigger
        self.profile = profile
        self.python = python
        self.install = install
        self.targets = targets
        self.default_branch = default_branch
        self.agents = agents
        self.location = caller_location()
        self._stages: list[Stage] = []
        self._extra_needs: dict[int, list[str]] = {}
        self.locations: dict[str, Location] = {}
        self.edge_locations: dict[tuple[str, str], Location] = {}
        """Where each `a >> b` was written: {(a, b): (file, line)}."""
        self._spec: PipelineSpec | None = None
        collected = _collector.get()
        if collected is not None:
            collected.append(self)

    # --- context manager ---
    def __enter__(self) -> Pipeline:
        self._token = active_pipeline.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        active_pipeline.reset(self._token)
        if exc_type is None:
            self._spec = self.build()

    # --- authoring ---
    def add(self, *stages: Stage) -> Pipeline:
        """Add stages created outside a `with` block."""
        for stage in stages:
            self._register(stage, caller_location())
        return self

    def depend(self, targets: Stage | Iterable[Stage], *, on: Stage | Iterable[Stage]) -> None:
        """Record that every stage in `targets` needs every stage in `on`."""
        where = caller_location()
        for dep in _as_list(on):
            self._register(dep, where)
            for target in _as_list(targets):
                self._register(target, where)
                needs = self._extra_needs.setdefault(id(target), [])
                if dep.name not in needs:
                    needs.append(dep.name)
                if where:
                    self.edge_locations.setdefault((dep.name, target.name), where)

    def _register(self, stage: Stage, where: Location | None) -> None:
        if not any(s is stage for s in self._stages):
            self._stages.append(stage)
            if where:
                # The latest stage of a name wins: for a duplicate, that is the line to fix.
                self.locations[stage.name] = where

    # --- result ---
    @property
    def spec(self) -> PipelineSpec:
        """The validated PipelineSpec: built when the `with` block ends (or now, when stages were added with
        `add` outside one)."""
        if self._spec is None:
            self._spec = self.build()
        return self._spec

    def build(self) -> PipelineSpec:
        """Merge `>>` edges and references into each stage's needs, then validate the whole tree.

        While a definition is loaded, objects built with bad fields have recorded their problems
        (pipeline.model.collecting_problems): those are reported first, all of them at once."""
        deferred = deferred_problems()
        if deferred:
            raise DefinitionError(sorted(deferred, key=_by_line), source=self._source())
        stages = []
        for stage in self._stages:
            extra = self._extra_needs.get(id(stage), [])
            refs = [r for r in stage.references().values() if r != stage.name]
            needs = tuple(dict.fromkeys([*stage.needs, *extra, *refs]))
            stages.append(stage if needs == stage.needs else stage.model_copy(update={"needs": needs}))
        fields: dict[str, Any] = {
            "name": self.name,
            "stages": tuple(stages),
            "environments": self.environments,
            "flags": self.flags,
        }
        for key in ("trigger", "profile", "python", "install", "targets", "default_branch", "agents"):
            if getattr(self, key) is not None:
                fields[key] = getattr(self, key)
        try:
            with building():
                return PipelineSpec(**fields)
        except DefinitionError as exc:
            raise DefinitionError(self.locate(exc.problems), source=self._source()) from None
        except ValidationError as exc:
            raise DefinitionError(self.locate(problems_from_validation(exc)), source=self._source()) from None

    def locate(self, problems: Iterable[Problem]) -> list[Problem]:
        """Point each problem at the line that created its stage (or the Pipeline(...) call); a
        cycle at the line that closes it (the last one written of its `>>` or needs= edges)."""
        located = []
        for problem in problems:
            edges = [
                self.edge_locations.get((a, b)) or self.locations.get(b)
                for a, b in zip(problem.cycle, problem.cycle[1:], strict=False)
            ]
            known = [e for e in edges if e is not None]
            if known and problem.file is None:
                where = max(known, key=lambda e: e[1])
                located.append(Problem(problem.message, problem.path, display_path(where[0]), where[1], problem.stage))
            else:
                located.append(problem)
        return locate(self._at_objects(located), self.locations, self.location)

    def _at_objects(self, problems: list[Problem]) -> list[Problem]:
        """A problem about an environment or a flag (path `environments[i] ...`, `flags[...]`) points
        at the line that created that object, when it was made while the definition loaded."""
        import re

        out = []
        for problem in problems:
            where: Location | None = None
            env = re.match(r"^environments\[(\d+)\]", problem.path)
            if env and int(env.group(1)) < len(self.environments):
                where = location_of(self.environments[int(env.group(1))])
            elif problem.path.startswith("flags") and problem.file is None:
                name = re.search(r"'([^']+)'", problem.message)
                flag = next((f for f in reversed(self.flags) if name and f.name == name.group(1)), None)
                where = location_of(flag) if flag is not None else None
            if where is not None and problem.file is None and problem.stage is None:
                out.append(Problem(problem.message, problem.path, display_path(where[0]), where[1]))
            else:
                out.append(problem)
        return out

    def _source(self) -> str | None:
        return display_path(self.location[0]) if self.location else None


def _by_line(problem: Problem) -> tuple[str, int]:
    return (problem.file or "", problem.line or 0)


def locate(problems: Iterable[Problem], locations: Mapping[str, Location], fallback: Location | None) -> list[Problem]:
    """Give each problem without a file the location of its stage, else `fallback`."""
    located = []
    for problem in problems:
        where = locations.get(problem.stage or "") or fallback
        if where and problem.file is None:
            located.append(Problem(problem.message, problem.path, display_path(where[0]), where[1], problem.stage))
        else:
            located.append(problem)
    return located


def _as_list(value: Stage | Iterable[Stage]) -> list[Stage]:
    if isinstance(value, Stage):
        return [value]
    items = list(value)
    for item in items:
        if not isinstance(item, Stage):
            raise TypeError(f"`>>` works between stages (or lists of stages), not {type(item).__name__}")
    return items


@contextmanager
def collect_pipelines() -> Iterator[list[Pipeline]]:
    """Collect every Pipeline created while the block runs (the loader uses this)."""
    found: list[Pipeline] = []
    token = _collector.set(found)
    try:
        yield found
    finally:
        _collector.reset(token)
