"""The GitHub workflow's YAML: libyaml's text, re-indented, is byte for byte what PyYAML's
pure-Python emitter writes (the reference layout), or it is not used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.render import yaml_dump

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted(
    [*REPO.glob(".github/workflows/*.yml"), *REPO.glob("examples/*/golden/github/.github/workflows/*.yml")]
)

pytestmark = pytest.mark.skipif(yaml_dump.CDumper is None, reason="PyYAML was built without libyaml here")


def test_there_are_workflows_to_compare() -> None:
    assert len(WORKFLOWS) >= 6


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_committed_workflow_takes_the_fast_path_to_the_same_bytes(path: Path) -> None:
    text = path.read_text()
    data = yaml.safe_load(text)
    fast = yaml_dump.dump_fast(data)
    assert fast is not None, "libyaml's re-indented text did not read back as the same data"
    assert fast == yaml_dump.dump_python(data)
    assert text.endswith(fast)  # after the generated-file header


def test_libyaml_alone_would_not_indent_sequences() -> None:
    """What the re-indenting is for (if libyaml ever indents them itself, it can go)."""
    raw = yaml.dump({"steps": [{"run": "x"}]}, Dumper=yaml_dump.CDumper)
    assert raw == "steps:\n- run: x\n"
    assert yaml_dump.dump({"steps": [{"run": "x"}]}) == "steps:\n  - run: x\n"


def test_nested_sequences_and_blocks_inside_sequences_move_together() -> None:
    data = {
        "jobs": {
            "a": {
                "needs": ["x", "y"],
                "steps": [
                    {"run": "echo one\n  indented - not an entry\n- nor this\n", "with": {"k": ["v", "w"]}},
                    {"name": "plain", "args": [["p", "q"], []], "env": {}},
                ],
            }
        },
        "tail": "key: not a key",
        "-dash": "a key that starts with a dash",
    }
    assert yaml_dump.dump_fast(data) == yaml_dump.dump_python(data)


def test_text_that_would_not_read_back_falls_back_to_the_reference_emitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yaml_dump, "_indent_sequences", lambda text: text.replace("- ", "-- "))
    data = {"a": ["b"]}
    assert yaml_dump.dump_fast(data) is None
    assert yaml_dump.dump(data) == yaml_dump.dump_python(data) == "a:\n  - b\n"


# Text as CI files hold it, plus what YAML reads specially and what the two emitters write
# differently (line separators, controls, astral planes, a BOM): `dump` must write all of it as
# the reference emitter does, and read it back as given. (Not U+0085: the reference emitter
# itself writes a key of it that reads back as a space.)
alphabet = st.sampled_from(list("ab -:#|>\n\t'\"\\${}[]%?,!&*@`~=.019yNé€\u00a0\u3000\ufffd\u2028\x07\ufeff🚀"))
words = st.sampled_from(["yes", "no", "on", "null", "~", "true", "1.0", "0x1f", "-", "---", "...", "- a", "? x", "#c"])
text = st.one_of(st.text(alphabet=alphabet, max_size=24), words)
keys = st.one_of(st.text(alphabet=alphabet, min_size=1, max_size=6), words)
scalars = st.one_of(text, st.integers(-5, 5), st.booleans(), st.none())
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=500, deadline=None, database=None)
@given(st.dictionaries(keys, documents, min_size=1, max_size=4))
def test_any_document_comes_out_as_the_reference_emitter_writes_it(data: dict[str, Any]) -> None:
    text = yaml_dump.dump(data)
    assert text == yaml_dump.dump_python(data)
    assert yaml.safe_load(text) == data
