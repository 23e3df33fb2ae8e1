"""Examples are the specification of the renderers: every examples/*/ pipeline has committed golden
output per target, and a fresh render must match it byte for byte.

Regenerate after an intended change with `PIPELINE_REGENERATE_GOLDEN=1 pytest tests/unit/test_golden.py`
(refused when CI is set, so CI can never bless its own output), then review the diff and commit it.
"""

from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path

import pytest

from pipeline.loader import load
from pipeline.render import render, write
from pipeline.render.base import RenderContext
from pipeline.render.registry import BUILTIN
from pipeline.render.validate import check
from tests.conftest import REPO

EXAMPLES_DIR = REPO / "examples"
EXAMPLES = sorted(p for p in EXAMPLES_DIR.iterdir() if (p / "pipelinefile.py").is_file())
TARGETS = list(BUILTIN)
REGENERATE = os.environ.get("PIPELINE_REGENERATE_GOLDEN") == "1"


def golden_files(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8") for p in folder.rglob("*") if p.is_file()}


def test_the_examples_cover_the_required_shapes() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"linear", "fan-out-fan-in", "approval-gate", "secrets-and-branches", "reference-chain"} <= names
    assert not (EXAMPLES_DIR / ".keep").exists()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_render_matches_the_committed_golden_files(example: Path, target: str) -> None:
    loaded = load(example / "pipelinefile.py")
    files = render(loaded.spec, [target], RenderContext())
    folder = example / "golden" / target
    if REGENERATE:
        if os.environ.get("CI"):
            pytest.fail(
                "PIPELINE_REGENERATE_GOLDEN=1 is refused when CI is set: regenerate on a workstation and commit"
            )
        shutil.rmtree(folder, ignore_errors=True)
        write(files, folder)
    expected = golden_files(folder)
    actual = {f.path: f.content for f in files}
    assert sorted(actual) == sorted(expected), (
        f"{example.name}/{target}: rendered files differ from golden/{target}/ "
        "(PIPELINE_REGENERATE_GOLDEN=1 pytest tests/unit/test_golden.py regenerates them)"
    )
    for path, text in actual.items():
        if text != expected[path]:
            diff = "".join(
                difflib.unified_diff(
                    expected[path].splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    f"golden/{target}/{path}",
                    "fresh render",
                )
            )
            pytest.fail(f"{example.name}: {path} differs from its golden file:\n{diff}")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_golden_files_are_structurally_sound(example: Path) -> None:
    for target in TARGETS:
        for path, text in golden_files(example / "golden" / target).items():
            assert check(path, text) == [], f"{example.name}/golden/{target}/{path}"
            assert "\r" not in text
            assert text.endswith("\n")


def test_golden_scripts_are_executable() -> None:
    scripts = [p for e in EXAMPLES for p in (e / "golden" / "github").rglob("*.sh")]
    assert scripts, "the approval examples must ship their GitHub environment scripts"
    for script in scripts:
        assert script.stat().st_mode & 0o100, script
