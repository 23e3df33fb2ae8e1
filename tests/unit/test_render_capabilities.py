"""docs/capabilities.md is generated from the renderers' own tables and must be current.

Regenerate: PIPELINE_REGENERATE_GOLDEN=1 pytest tests/unit/test_render_capabilities.py (refused when CI is set).
"""

from __future__ import annotations

import os

import pytest

from pipeline.errors import RendererRegistryError
from pipeline.render.base import Support
from pipeline.render.capabilities import DOC_PATH, FEATURE_KEYS, check_complete, markdown, renderers
from tests.conftest import REPO


def test_every_renderer_describes_every_feature() -> None:
    for renderer in renderers():
        check_complete(renderer)
        assert list(renderer.capabilities) == list(FEATURE_KEYS), renderer.name


def test_an_incomplete_table_is_refused() -> None:
    class Partial:
        name = "partial"
        title = "Partial"
        capabilities = {"stages": Support("x"), "bogus": Support("y")}

    with pytest.raises(RendererRegistryError, match=r"missing .*order.*unknown \['bogus'\]"):
        check_complete(Partial())  # type: ignore[arg-type]


def test_docs_capabilities_md_is_current() -> None:
    path = REPO / DOC_PATH
    text = markdown()
    if os.environ.get("PIPELINE_REGENERATE_GOLDEN") == "1":
        if os.environ.get("CI"):
            pytest.fail("PIPELINE_REGENERATE_GOLDEN=1 is refused when CI is set")
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, (
        f"{DOC_PATH} is stale: PIPELINE_REGENERATE_GOLDEN=1 pytest tests/unit/test_render_capabilities.py"
    )


def test_the_table_has_a_row_per_feature_and_a_column_per_target() -> None:
    lines = [line for line in markdown().splitlines() if line.startswith("| **")]
    assert len(lines) == len(FEATURE_KEYS)
    for line in lines:
        assert line.count(" | ") == 1 + len(renderers())


def test_what_a_target_cannot_express_is_in_the_table() -> None:
    text = markdown()
    assert "**Fails the render:** pull-request triggers" in text
    assert "**Fails the render:** a non-default Approval.timeout_minutes" in text
    assert "**Fails the render:** a branch filter on an always-run stage" in text
