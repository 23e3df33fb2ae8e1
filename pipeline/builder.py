"""The authoring layer: `with Pipeline("web") as p: test >> bake` produces a frozen PipelineSpec.

Stages created inside the `with` block register themselves (with the file and line that created
them, so errors point at the user's code); `>>` records edges. Leaving the block builds and
validates the spec.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import ValidationError

from pipeline.errors import DefinitionError, Problem
from pipeline.flags.spec import Flag
from pipeline.model import AgentLabels, Environment, Profile, Stage, deferred_problems
from pipeline.spec import PipelineSpec, Trigger

_active: ContextVar[Pipeline | None] = ContextVar("active_pipeline", default=None)
_collector: ContextVar[list[Pipeline] | None] = ContextVar("pipeline_collector", default=None)

_PACKAGE_DIR = Path(__file__).resolve().parent
_FRAMEWORK_DIRS = tuple(
    str(path) + os.sep
    for path in (
        *(Path(mod.__file__).resolve().parent for mod in (sys.modules["pydantic"],) if mod.__file__),
        _PACKAGE_DIR,
        _PACKAGE_DIR.parent / "stages",
    )
)
_USER_DIRS = (str(_PACKAGE_DIR / "_bundled") + os.sep,)  # examples shipped in the wheel are user code


def _is_framework(filename: str) -> bool:
    resolved = str(Path(filename).resolve())
    return resolved.startswith(_FRAMEWORK_DIRS) and not resolved.startswith(_USER_DIRS)


Location = tuple[str, int]


def caller_location() -> Location | None:
    """The first frame outside the framework and pydantic: where the user wrote the call."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith("<") and not _is_framework(filename):
            return filename, frame.f_lineno
        frame = frame.f_back  # type: ignore[assignment]
    return None


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
        self._token = _active.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _active.reset(self._token)
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
            with _building():
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


def display_path(filename: str | Path) -> str:
    """A path relative to the current folder when it is below it; else as given."""
    try:
        return str(Path(filename).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(filename)


def _as_list(value: Stage | Iterable[Stage]) -> list[Stage]:
    if isinstance(value, Stage):
        return [value]
    items = list(value)
    for item in items:
        if not isinstance(item, Stage):
            raise TypeError(f"`>>` works between stages (or lists of stages), not {type(item).__name__}")
    return items


_object_locations: ContextVar[dict[int, tuple[object, Location]] | None] = ContextVar("object_locations", default=None)


@contextmanager
def remembering_locations() -> Iterator[None]:
    """While a definition loads: environments and flags remember the line that created them."""
    token = _object_locations.set({})
    try:
        yield
    finally:
        _object_locations.reset(token)


def remember_location(obj: object) -> None:
    """Called by Environment and Flag on creation (a no-op unless a definition is loading)."""
    found = _object_locations.get()
    if found is not None:
        where = caller_location()
        if where is not None:
            found[id(obj)] = (obj, where)


def location_of(obj: object) -> Location | None:
    found = _object_locations.get() or {}
    entry = found.get(id(obj))
    return entry[1] if entry is not None and entry[0] is obj else None


_building_flag: ContextVar[bool] = ContextVar("building", default=False)


@contextmanager
def _building() -> Iterator[None]:
    token = _building_flag.set(True)
    try:
        yield
    finally:
        _building_flag.reset(token)


def register_stage(stage: Stage) -> None:
    """Called by every Stage on creation: joins the innermost open `with Pipeline(...)` block."""
    builder = _active.get()
    if builder is not None and not _building_flag.get():
        builder._register(stage, caller_location())


def current_builder(operation: str) -> Pipeline:
    builder = _active.get()
    if builder is None:
        raise RuntimeError(
            f"`{operation}` between stages works inside `with Pipeline(...):`; "
            "outside one, pass needs=[...] to the stage instead"
        )
    return builder


@contextmanager
def collect_pipelines() -> Iterator[list[Pipeline]]:
    """Collect every Pipeline created while the block runs (the loader uses this)."""
    found: list[Pipeline] = []
    token = _collector.set(found)
    try:
        yield found
    finally:
        _collector.reset(token)


def problems_from_validation(
    exc: ValidationError, *, prefix: str = "", model: type[Any] | None = None
) -> list[Problem]:
    """pydantic errors as `stages[2].template: Field required` lines, in the user's words: a
    misspelled field gets a did-you-mean, a wrong type says what the field takes (one line per
    field, not one per item or character). `model` is the class validated (for field names)."""
    problems: list[Problem] = []
    seen_fields: set[str] = set()
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if kind == "extra_forbidden" and loc:
            owner = _model_at(model, loc[:-1])
            message = "unknown field" + _did_you_mean_field(str(loc[-1]), owner)
        elif (field := _sequence_field(model, loc, kind)) is not None:
            name, what = field
            if name in seen_fields:
                continue
            seen_fields.add(name)
            given = _given_item(loc[1], err.get("input")) if len(loc) >= 2 else _given(err.get("input"))
            loc = (name,)
            message = f"{name} must be a list of {what}" + given
        elif kind == "too_short" and loc == ("stages",):
            message = "the pipeline has no stages: add a stage inside `with Pipeline(...):` (e.g. CommitTest(...))"
        problems.append(Problem(message=message, path=prefix + _loc(loc)))
    return problems


def _model_at(model: type[Any] | None, loc: tuple[int | str, ...]) -> type[Any] | None:
    """The model class found by following `loc` through `model`'s fields (None if unknown)."""
    import typing

    from pydantic import BaseModel

    current = model
    for part in loc:
        if isinstance(part, int) or current is None or not isinstance(current, type):
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return None
        annotation = fields[part].annotation
        candidates = [annotation, *typing.get_args(annotation)]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return current


def _did_you_mean_field(name: str, owner: type[Any] | None) -> str:
    import difflib

    fields = [f for f in getattr(owner, "model_fields", {}) if f != "kind"]
    close = difflib.get_close_matches(name, fields, n=1, cutoff=0.6) or [f for f in fields if f.startswith(name)][:1]
    if close:
        return f" {name!r} (did you mean {close[0]!r}?)"
    if owner is not None and fields:
        return f" {name!r} ({owner.__name__} takes: {', '.join(fields)})"
    return f" {name!r}"


def _sequence_field(model: type[Any] | None, loc: tuple[int | str, ...], kind: str) -> tuple[str, str] | None:
    """(field, 'strings' / 'Environment objects') when the error is about a list/tuple field of
    `model` given something else, or an item of the wrong type."""
    import typing

    if model is None or not loc or not isinstance(loc[0], str):
        return None
    field = getattr(model, "model_fields", {}).get(loc[0])
    if field is None:
        return None
    origin = typing.get_origin(field.annotation)
    if origin not in (tuple, list):
        return None
    about_items = len(loc) >= 2 and isinstance(loc[1], int)
    if not (kind in ("tuple_type", "list_type") and len(loc) == 1) and not about_items:
        return None
    args = [a for a in typing.get_args(field.annotation) if a is not Ellipsis]
    item: Any = args[0] if args else None
    while item is not None and not isinstance(item, type) and typing.get_args(item):
        item = typing.get_args(item)[0]  # Annotated[str, ...] -> str
    if item is str:
        return loc[0], "strings"
    return loc[0], f"{getattr(item, '__name__', 'value')} objects"


def _given(value: Any) -> str:
    if isinstance(value, str):
        return f", not a single string (write [{value!r}])"
    if value is None:
        return ""
    return f" (got {type(value).__name__})"


def _given_item(index: int | str, value: Any) -> str:
    """What one item of a list field was, when it is the item that has the wrong type."""
    what = f"the string {value!r}" if isinstance(value, str) else f"a {type(value).__name__}"
    return f" (item [{index}] is {what})"


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
