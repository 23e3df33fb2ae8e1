"""Renderers register in the `pipeline.renderers` entry-point group, keyed by their `name`.

The built-in four are declared in this package's own pyproject.toml like any plugin; they are
also known here by module path, so a source checkout that was never installed still renders.
Two different classes under one name, or a class whose `name` differs from its entry point's, is
an error. Renderer modules are imported only when asked for, so `render --target github` never
imports the Jenkins or TeamCity code.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from functools import cache
from importlib.metadata import entry_points

from pipeline.errors import RendererRegistryError, UndeclaredTargetError, UnknownTargetError
from pipeline.render.base import Renderer

GROUP = "pipeline.renderers"
ALL = "all"
BUILTIN: dict[str, str] = {
    "jenkins": "pipeline.render.jenkins:JenkinsRenderer",
    "teamcity": "pipeline.render.teamcity:TeamCityRenderer",
    "github": "pipeline.render.github:GitHubRenderer",
    "gitlab": "pipeline.render.gitlab:GitLabRenderer",
}


@cache
def registered() -> dict[str, str]:
    """{target name: 'module:Class'} for every renderer, built-ins first, then plugins by name."""
    found: dict[str, str] = dict(BUILTIN)
    plugins: dict[str, str] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value)):
        known = found.get(ep.name) or plugins.get(ep.name)
        if known is not None and known != ep.value:
            raise RendererRegistryError(
                f"two renderers claim the target name {ep.name!r}: {known} and {ep.value}",
                hint=f"uninstall one of them, or register the plugin under another name in the {GROUP!r} group",
            )
        if ep.name not in found:
            plugins[ep.name] = ep.value
    if ALL in plugins:
        raise RendererRegistryError(f"a renderer may not be named {ALL!r}: it means every target")
    return {**found, **dict(sorted(plugins.items()))}


def available() -> list[str]:
    return list(registered())


def parse_targets(value: str) -> list[str]:
    """`--target` as names: one, a comma list (`jenkins,teamcity`) or `all` (kept as is). An unknown
    name lists the known ones."""
    names = available()
    wanted = [part.strip() for part in value.split(",") if part.strip()]
    if not wanted:
        raise UnknownTargetError(value, names)
    for name in wanted:
        if name != ALL and name not in names:
            raise UnknownTargetError(name, names)
    return list(dict.fromkeys(wanted))


def resolve_targets(value: str | None, declared: Sequence[str] = ()) -> list[str]:
    """The targets to render. Without `--target`: the definition's targets, else every installed one.
    `all` means the definition's targets when it names them (every installed one otherwise); a
    named target must then be one of them, since the drift check in each rendered file covers
    exactly the definition's targets (UndeclaredTargetError, exit 2)."""
    names = available()
    for name in declared:
        if name not in names:
            raise UnknownTargetError(name, names, where="Pipeline(targets=...)")
    if value is None:
        return list(declared) or names
    wanted = parse_targets(value)
    if ALL in wanted:
        return list(declared) or names
    outside = [name for name in wanted if declared and name not in declared]
    if outside:
        raise UndeclaredTargetError(outside, declared)
    return wanted


@cache
def get(name: str) -> Renderer:
    """An instance of the renderer registered as `name`."""
    value = registered().get(name)
    if value is None:
        raise UnknownTargetError(name, available())
    module_name, _, attr = value.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise RendererRegistryError(
            f"renderer {name!r} ({value}) cannot be loaded: {exc}",
            hint="reinstall the package that provides it",
        ) from exc
    if getattr(cls, "name", None) != name:
        raise RendererRegistryError(
            f"renderer {value} says its name is {getattr(cls, 'name', None)!r} but is registered as {name!r}",
            hint="make the entry-point name and the class's `name` attribute the same",
        )
    renderer = cls()
    if not isinstance(renderer, Renderer):
        raise RendererRegistryError(
            f"{value} does not implement the Renderer protocol (name, title, capabilities, outputs, render)"
        )
    return renderer
