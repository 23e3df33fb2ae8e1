"""Lists that name the same things in two places agree, so adding one to the first and forgetting the
second fails here rather than for a user: the package's public names (the lazy import map, `__all__`,
the stage kinds), and the extras the CLI names in its "install the extra" hint (pyproject.toml)."""

from __future__ import annotations

import importlib
import importlib.metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import pipeline
import pipeline.stages
from pipeline.cli import EXTRA_BRINGS, EXTRA_MODULES, EXTRA_PURPOSE
from pipeline.stages.kinds import STAGE_KINDS

REPO = Path(__file__).resolve().parents[2]


def test_the_lazy_import_map_names_exactly_the_public_api() -> None:
    exports = pipeline._EXPORTS
    assert set(exports) == set(pipeline.__all__) - {"__version__"}
    for name, module in exports.items():  # each name lives in the module the map says
        assert getattr(importlib.import_module(module), name) is getattr(pipeline, name), name


def test_every_built_in_stage_kind_is_exported_from_pipeline_and_pipeline_stages() -> None:
    kinds = {cls.__name__ for cls in STAGE_KINDS}
    assert {name for name, module in pipeline._EXPORTS.items() if module == "pipeline.stages"} == kinds
    assert set(pipeline.stages.__all__) - {"STAGE_KINDS"} == kinds


def _requirement_name(requirement: str) -> str:
    """'psycopg[binary]>=3.1' -> 'psycopg' (normalized as distributions are)."""
    return canonicalize_name(Requirement(requirement).name)


def _closure(names: set[str]) -> set[str]:
    """The distributions these need, themselves included (the installed ones: dev installs every extra)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        # What the package itself needs, not what its own extras would add.
        todo += [_requirement_name(r) for r in requires if "extra" not in str(Requirement(r).marker or "")]
    return seen


def test_the_missing_extra_hint_knows_every_extra_and_its_modules() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    user_extras = {name for name in extras if name != "dev"}
    assert set(EXTRA_MODULES) == set(EXTRA_BRINGS) == set(EXTRA_PURPOSE) == user_extras
    distributions = {
        module: {_requirement_name(d) for d in dists}
        for module, dists in importlib.metadata.packages_distributions().items()
    }
    mapped = set().union(*EXTRA_MODULES.values())
    for extra in user_extras:
        requirements = {_requirement_name(r) for r in extras[extra]}
        needed = _closure(requirements)
        # Each module the hint maps to this extra comes from the extra's packages (or what they need).
        for module in EXTRA_MODULES[extra]:
            assert distributions.get(module, set()) & needed, f"{module} is in no package of [{extra}]"
        # Each package of the extra that brings Python modules has one of them in the map (under this
        # extra, or an earlier one that brings it too: the hint names the first, e.g. redis -> [run]).
        for requirement in requirements:
            provided = {m for m, dists in distributions.items() if requirement in dists and not m.startswith("_")}
            if provided:
                assert provided & mapped, f"[{extra}] {requirement}: none of {sorted(provided)} in EXTRA_MODULES"
