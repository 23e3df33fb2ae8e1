"""Stage kinds by name: the built-in ones, then those plugins register in the `pipeline.stages`
entry-point group, keyed by their `kind`.

A kind is a frozen pydantic class (a `Stage` subclass with a literal `kind`) that names its executor
as a dotted path; nothing here imports an executor. A plugin adds a kind with a spec module, an
executor module and one line in its pyproject.toml:

    [project.entry-points."pipeline.stages"]
    smoke-test = "my_plugin.smoke:SmokeTest"

Definitions construct stage objects directly, so the entry points are read only when data names a
kind that is not built in (a spec read back from JSON) or when every kind is listed.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from pipeline.errors import StageKindRegistryError
from pipeline.model import Stage
from pipeline.stages.kinds import STAGE_KINDS

GROUP = "pipeline.stages"


def kind_of(cls: type[Stage]) -> str:
    """The literal `kind` a stage class declares."""
    default = cls.model_fields["kind"].default
    if not isinstance(default, str) or not default:
        raise StageKindRegistryError(f"{cls.__module__}.{cls.__qualname__} declares no literal `kind`")
    return default


BUILTIN: dict[str, type[Stage]] = {kind_of(cls): cls for cls in STAGE_KINDS}


@cache
def plugins() -> dict[str, type[Stage]]:
    """{kind: class} of every kind a plugin registers; a plugin may not take a built-in's name."""
    found: dict[str, type[Stage]] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value)):
        if ep.name in BUILTIN:
            if _path(BUILTIN[ep.name]) != ep.value:
                raise StageKindRegistryError(
                    f"the stage kind {ep.name!r} is built in; {ep.value} cannot take its name",
                    hint=f"register the plugin's kind under another name in the {GROUP!r} group",
                )
            continue
        cls = _load(ep.name, ep.value)
        if ep.name in found and found[ep.name] is not cls:
            raise StageKindRegistryError(
                f"two plugins register the stage kind {ep.name!r}: {_path(found[ep.name])} and {ep.value}",
                hint="uninstall one of them",
            )
        found[ep.name] = cls
    return found


def registered() -> dict[str, type[Stage]]:
    """Every kind, built-ins first, then plugins by name."""
    return {**BUILTIN, **dict(sorted(plugins().items()))}


def spec_class(kind: str) -> type[Stage]:
    """The class of `kind`; an unknown kind lists the known ones."""
    if kind in BUILTIN:
        return BUILTIN[kind]
    known = registered()
    if kind not in known:
        raise StageKindRegistryError(
            f"unknown stage kind {kind!r}; known kinds: {', '.join(known)}",
            hint=f"install the plugin that provides it (entry-point group {GROUP!r})",
        )
    return known[kind]


def stage_from_data(item: Any) -> Any:
    """A stage object stays as it is; a mapping (a spec read back from JSON) becomes the class its
    `kind` names. Anything else is left for pydantic to reject with its own message."""
    if isinstance(item, Mapping) and isinstance(item.get("kind"), str) and not isinstance(item, Stage):
        return spec_class(item["kind"]).model_validate(dict(item))
    return item


def _load(kind: str, value: str) -> type[Stage]:
    module_name, _, attr = value.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise StageKindRegistryError(
            f"stage kind {kind!r} ({value}) cannot be loaded: {exc}", hint="reinstall the package that provides it"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise StageKindRegistryError(f"{value} (stage kind {kind!r}) is not a pipeline Stage class")
    if kind_of(cls) != kind:
        raise StageKindRegistryError(
            f"{value} says its kind is {kind_of(cls)!r} but is registered as {kind!r}",
            hint="make the entry-point name and the class's `kind` the same",
        )
    return cls


def _path(cls: type[Any]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"
