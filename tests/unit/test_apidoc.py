"""docs/api.md is generated from the models' docstrings (`python -m pipeline.apidoc > docs/api.md`) and
must be current; every public name and every registered stage kind is in it, and nothing public goes
undocumented.

Regenerate: python -m pipeline.apidoc > docs/api.md (or PIPELINE_REGENERATE_GOLDEN=1 pytest this file;
refused when CI is set).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import ClassVar, Literal

import pytest

import pipeline
from pipeline import apidoc
from pipeline.kinds import registered
from pipeline.model import Spec, Stage, StageOutputs
from tests.conftest import REPO


def _section(text: str, title: str) -> str:
    """The text under `### title` up to the next heading of that level or above."""
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^##? |^### |\Z)", text, re.M | re.S)
    assert match, f"no section {title!r}"
    return match.group(1)


def test_docs_api_md_is_current() -> None:
    path = REPO / apidoc.DOC_PATH
    text = apidoc.markdown()
    if os.environ.get("PIPELINE_REGENERATE_GOLDEN") == "1":
        if os.environ.get("CI"):
            pytest.fail("PIPELINE_REGENERATE_GOLDEN=1 is refused when CI is set")
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, f"{apidoc.DOC_PATH} is stale: run `{apidoc.COMMAND}`"


def test_the_command_writes_the_reference_to_stdout() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pipeline.apidoc"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == apidoc.markdown()


def test_every_public_name_and_every_registered_kind_is_in_the_committed_reference() -> None:
    text = (REPO / apidoc.DOC_PATH).read_text(encoding="utf-8")
    headings = set(re.findall(r"^#{2,3} (\w+)", text, re.M))
    for name in pipeline.__all__:
        if name.startswith("__"):
            assert f"`pipeline.{name}`" in text, name
        else:
            assert name in headings, f"{name} has no section in {apidoc.DOC_PATH}"
    for kind, cls in registered().items():
        assert f'`kind: "{kind}"`' in _section(text, cls.__name__), kind


def test_each_kind_lists_its_own_fields_its_outputs_and_what_it_refers_to() -> None:
    text = apidoc.markdown()
    for cls in registered().values():
        section = _section(text, cls.__name__)
        for field in set(cls.model_fields) - set(Stage.model_fields):
            assert f"| `{field}` |" in section, (cls.__name__, field)
        for output in cls.outputs.model_fields:
            assert f"| `{output}` |" in section, (cls.__name__, output)
        for field, kinds in cls.refers_to.items():
            assert f"`{field}` names an earlier stage of kind {' or '.join(f'`{k}`' for k in kinds)}" in section
    assert "Always runs" in _section(text, "Teardown")
    assert "Always runs" not in _section(text, "Promote")
    assert "May have an approval gate" in _section(text, "Shell")
    assert "May have an approval gate" not in _section(text, "Bake")


def test_descriptions_come_from_the_source_not_from_the_models_at_run_time() -> None:
    # The models keep no descriptions (start-up speed); the reference reads the docstrings with ast.
    assert Stage.model_fields["timeout_minutes"].description is None
    docs = {f.name: f for f in apidoc.fields(Stage)}
    assert docs["timeout_minutes"].doc.startswith("Limit of one attempt, in minutes")
    assert docs["timeout_minutes"].limits == ">= 1, <= 10080"
    assert docs["timeout_minutes"].type == "int"
    assert docs["name"].default == apidoc.REQUIRED


def test_an_inherited_field_keeps_the_docstring_of_the_class_that_declares_it() -> None:
    promote_outputs = registered()["promote"].outputs
    docs = {f.name: f.doc for f in apidoc.fields(promote_outputs)}
    assert docs["time_to_restore"] == "Seconds from the breach until the old version served everything again."


class Undocumented(Spec):
    """A model with one field documented and one not."""

    documented: int = 0
    """Has a docstring."""
    bare: int = 0


class NoClassDoc(Spec):
    value: int = 0
    """Documented, but the class is not."""


def test_a_public_field_or_class_without_a_docstring_is_an_error() -> None:
    with pytest.raises(apidoc.MissingDocstringError, match=r"Undocumented\.bare has no docstring"):
        apidoc.fields(Undocumented)
    assert [f.name for f in apidoc.fields(Undocumented, only=["documented"])] == ["documented"]
    with pytest.raises(apidoc.MissingDocstringError, match=r"NoClassDoc has no docstring"):
        apidoc.class_doc(NoClassDoc)


def test_the_command_names_the_missing_docstring_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing() -> str:
        raise apidoc.MissingDocstringError("Shell.workdir has no docstring")

    monkeypatch.setattr(apidoc, "markdown", missing)
    with pytest.raises(SystemExit) as exit_info:
        apidoc.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "error: Shell.workdir has no docstring" in err
    assert apidoc.COMMAND in err


class GreetOutputs(StageOutputs):
    """What the test-only kind writes."""

    greeting: str
    """The words said."""


class Greet(Stage):
    """A test-only kind, as a plugin would register it."""

    kind: Literal["greet"] = "greet"
    whom: str = "world"
    """Who is greeted."""

    outputs: ClassVar[type[StageOutputs]] = GreetOutputs


def test_a_plugin_kind_is_documented_like_a_built_in_one() -> None:
    text = apidoc.markdown({**registered(), "greet": Greet})
    section = _section(text, "Greet")
    assert '`kind: "greet"`' in section
    assert '| `whom` | `str` | `"world"` | Who is greeted. |' in section
    assert "| `greeting` | yes | The words said. |" in section
    assert "Renders for CI but cannot run (no executor)." in section
    assert "[Greet](#greet)" in text


def test_table_cells_escape_pipes_and_defaults_read_as_python() -> None:
    text = apidoc.markdown()
    assert "| `approval` | `Approval \\| None` | `None` |" in text
    assert '`{"local": "docker.web", "aws": "amazon-ebs.web"}`' in text
    assert '| `local` | `tuple[str, ...]` | `("pipeline-local",)` |' in text
    examples = re.findall(r"```python\n(.*?)```", text, re.S)
    assert any(e.startswith("Bake(") for e in examples)


def test_every_type_a_table_names_is_explained_in_the_reference() -> None:
    text = apidoc.markdown()
    headings = set(re.findall(r"^#{2,3} (\w+)", text, re.M))
    aliases = {name for _, name in apidoc.TYPE_ALIASES}
    plain = {"str", "int", "float", "bool", "None", "tuple", "dict", "Literal", "SerializeAsAny"}
    plain |= {"StrictBool", "StrictInt", "StrictFloat", "StrictStr"}  # pydantic: that type, not converted
    for row in re.findall(r"^\| `\w+` \| `([^`]+)`", text, re.M):
        for word in re.findall(r"[A-Za-z_]\w*", row.replace("\\|", "|")):
            if word in {"local", "aws", "expand", "contract"}:  # Literal values
                continue
            assert word in plain | headings | aliases, f"type {word!r} (in `{row}`) is explained nowhere"
