"""Renderers come from the `pipeline.renderers` entry-point group, built-ins too; clashes are errors."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint
from typing import Any

import pytest

from pipeline.errors import RendererRegistryError, UnknownTargetError
from pipeline.render import registry
from pipeline.render.base import Renderer


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[EntryPoint]]:
    """Pretend these entry points are installed (in addition to nothing else)."""
    found: list[EntryPoint] = []

    def fake(group: str) -> list[EntryPoint]:
        assert group == registry.GROUP
        return found

    monkeypatch.setattr(registry, "entry_points", fake)
    registry.registered.cache_clear()
    registry.get.cache_clear()
    yield found
    registry.registered.cache_clear()
    registry.get.cache_clear()


class FakeRenderer:
    name = "fake"
    title = "Fake CI"
    capabilities: dict[str, Any] = {}

    def outputs(self, spec: Any) -> list[str]:
        return []

    def render(self, spec: Any, context: Any) -> list[Any]:
        return []


class Misnamed(FakeRenderer):
    name = "other"


def ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=registry.GROUP)


def test_the_installed_package_declares_the_builtins_as_entry_points() -> None:
    registry.registered.cache_clear()
    from importlib.metadata import entry_points

    declared = {e.name: e.value for e in entry_points(group=registry.GROUP)}
    assert declared.items() >= registry.BUILTIN.items()


def test_builtins_come_first_and_render_all_targets(plugins: list[EntryPoint]) -> None:
    assert registry.available() == ["jenkins", "teamcity", "github", "gitlab"]
    assert registry.resolve_targets("all") == ["jenkins", "teamcity", "github", "gitlab"]
    assert registry.resolve_targets("github") == ["github"]
    for name in registry.available():
        renderer = registry.get(name)
        assert isinstance(renderer, Renderer)
        assert renderer.name == name


def test_an_unknown_target_lists_the_available_ones(plugins: list[EntryPoint]) -> None:
    with pytest.raises(UnknownTargetError) as err:
        registry.resolve_targets("circleci")
    assert err.value.exit_code == 2
    assert (
        err.value.hint == "available targets: jenkins, teamcity, github, gitlab (or `all`; several: jenkins,teamcity)"
    )


def test_a_plugin_is_found_and_loaded_by_name(plugins: list[EntryPoint]) -> None:
    plugins.append(ep("fake", f"{__name__}:FakeRenderer"))
    assert registry.available() == ["jenkins", "teamcity", "github", "gitlab", "fake"]
    assert isinstance(registry.get("fake"), FakeRenderer)


def test_the_same_builtin_declared_again_is_not_a_clash(plugins: list[EntryPoint]) -> None:
    plugins.append(ep("github", registry.BUILTIN["github"]))
    assert registry.available() == ["jenkins", "teamcity", "github", "gitlab"]


def test_two_renderers_under_one_name_raise(plugins: list[EntryPoint]) -> None:
    plugins.append(ep("github", f"{__name__}:FakeRenderer"))
    with pytest.raises(RendererRegistryError, match="two renderers claim the target name 'github'"):
        registry.available()


def test_two_plugins_under_one_name_raise(plugins: list[EntryPoint]) -> None:
    plugins += [ep("fake", f"{__name__}:FakeRenderer"), ep("fake", f"{__name__}:Misnamed")]
    with pytest.raises(RendererRegistryError, match="two renderers"):
        registry.available()


def test_a_class_whose_name_differs_from_its_entry_point_raises(plugins: list[EntryPoint]) -> None:
    plugins.append(ep("fake", f"{__name__}:Misnamed"))
    with pytest.raises(RendererRegistryError, match="says its name is 'other'"):
        registry.get("fake")


def test_a_plugin_that_cannot_be_imported_names_itself(plugins: list[EntryPoint]) -> None:
    plugins.append(ep("broken", "no_such_module_anywhere:Renderer"))
    with pytest.raises(RendererRegistryError, match="renderer 'broken'"):
        registry.get("broken")


def test_all_is_reserved(plugins: list[EntryPoint]) -> None:
    plugins.append(ep("all", f"{__name__}:FakeRenderer"))
    with pytest.raises(RendererRegistryError, match="may not be named 'all'"):
        registry.available()
