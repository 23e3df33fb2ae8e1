"""Authoring-time plumbing under the declarative layer: where the user wrote each call, which
`with Pipeline(...)` block a new stage joins, and pydantic's errors in the user's words.

The stage, environment and flag models (`pipeline/model.py`, `pipeline/flags/spec.py`) call these
when they are created; the builder (`pipeline/builder.py`) opens the blocks and places problems at
the user's lines. This module imports nothing else of the package but `pipeline.errors`, so the
models below the builder need not import it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from pipeline.errors import Problem

Location = tuple[str, int]
"""(file, line) of a call in the user's definition."""


class OpenPipeline(Protocol):
    """What an open `with Pipeline(...)` block offers the stages created in it (pipeline/builder.py)."""

    def _register(self, stage: Any, where: Location | None) -> None: ...

    def depend(self, targets: Any, *, on: Any) -> None: ...


active_pipeline: ContextVar[OpenPipeline | None] = ContextVar("active_pipeline", default=None)
"""The innermost open `with Pipeline(...)` block (set by the builder)."""

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


def caller_location() -> Location | None:
    """The first frame outside the framework and pydantic: where the user wrote the call."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith("<") and not _is_framework(filename):
            return filename, frame.f_lineno
        frame = frame.f_back  # type: ignore[assignment]
    return None


def display_path(filename: str | Path) -> str:
    """A path relative to the current folder when it is below it; else as given."""
    try:
        return str(Path(filename).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(filename)


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
def building() -> Iterator[None]:
    """While the builder makes the spec: stages it creates (copies) join no block."""
    token = _building_flag.set(True)
    try:
        yield
    finally:
        _building_flag.reset(token)


def register_stage(stage: object) -> None:
    """Called by every Stage on creation: joins the innermost open `with Pipeline(...)` block."""
    builder = active_pipeline.get()
    if builder is not None and not _building_flag.get():
        builder._register(stage, caller_location())


def current_builder(operation: str) -> OpenPipeline:
    """The innermost open `with Pipeline(...)` block (for `a >> b`)."""
    builder = active_pipeline.get()
    if builder is None:
        raise RuntimeError(
            f"`{operation}` between stages works inside `with Pipeline(...):`; "
            "outside one, pass needs=[...] to the stage instead"
        )
    return builder


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


def did_you_mean(word: str, choices: list[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, else ''."""
    import difflib

    close = difflib.get_close_matches(word, choices, n=1) or [c for c in choices if c.startswith(word)][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""
