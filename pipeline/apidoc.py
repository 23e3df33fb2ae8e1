"""The API reference (docs/api.md), generated from the models' own docstrings.

    python -m pipeline.apidoc > docs/api.md

tests/unit/test_apidoc.py fails when the committed file differs from this output. The models keep no
field descriptions at run time (pydantic parsed our sources at every import to make them, a quarter of
each command's start-up), so the class docstrings and the attribute docstrings under each field are read
here from the source files with `ast`; types are the annotations as written, defaults and limits come
from the models themselves.

A module run with `python -m`, not a `pipeline` subcommand: the reference is a file of the project, made
by whoever changes a docstring, like the capability table; a team's CI never needs it. Stage kinds come
from the registry, so a plugin's kinds appear when the plugin is installed.
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import FunctionType
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from pipeline.builder import Pipeline
from pipeline.flags.spec import Flag
from pipeline.kinds import registered
from pipeline.model import (
    AgentLabels,
    Approval,
    AwsSettings,
    Database,
    Definition,
    Environment,
    Secret,
    Sensitive,
    Stage,
    StageOutputs,
    Verify,
)
from pipeline.spec import PipelineSpec, Trigger
from pipeline.strategy import STRATEGY_KINDS, Group, Health

DOC_PATH = "docs/api.md"
REQUIRED = "required"
COMMAND = "python -m pipeline.apidoc > docs/api.md"
PIPELINE_METHODS = ("add", "depend", "spec", "build")
"""The builder's public methods and properties the reference lists."""
TYPE_ALIASES: tuple[tuple[str, str], ...] = (
    ("pipeline.model", "Name"),
    ("pipeline.model", "EnvVar"),
    ("pipeline.model", "RelPath"),
    ("pipeline.model", "Profile"),
    ("pipeline.strategy", "StrategyChoice"),
    ("pipeline.strategy", "UserFacing"),
    ("pipeline.stages.migrate", "Phase"),
    ("pipeline.model", "FlagValue"),
)
"""Annotations the field tables use that are not classes: where each is defined."""


ENVIRONMENT_MODELS: tuple[type[BaseModel], ...] = (
    Environment,
    Approval,
    Secret,
    AwsSettings,
    Database,
    Sensitive,
    Flag,
)
"""What the Environments section documents, in this order."""


class MissingDocstringError(Exception):
    """A public class or field has no docstring: the reference would say nothing about it."""


@dataclass(frozen=True)
class FieldDoc:
    name: str
    type: str
    """The annotation as written in the source."""
    default: str
    """The default as Python source, or 'required'."""
    limits: str
    """Bounds pydantic enforces, e.g. '>= 1, <= 10080' (empty: none)."""
    doc: str


# ----------------------------------------------------------------------------- reading the source
@cache
def _module_tree(path: str) -> tuple[str, ast.Module]:
    source = Path(path).read_text(encoding="utf-8")
    return source, ast.parse(source)


def _source_of(obj: Any) -> tuple[str, ast.Module]:
    path = inspect.getsourcefile(obj)
    if path is None:  # pragma: no cover - every documented object is defined in a .py file
        raise MissingDocstringError(f"no source file for {obj!r}")
    return _module_tree(path)


def _class_node(cls: type) -> tuple[str, ast.ClassDef] | None:
    source, tree = _source_of(cls)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return source, node
    return None


def class_doc(cls: type) -> str:
    """The class docstring as written (cleaned of indentation)."""
    found = _class_node(cls)
    doc = ast.get_docstring(found[1]) if found else None
    if not doc:
        raise MissingDocstringError(f"{cls.__module__}.{cls.__qualname__} has no docstring")
    return doc


def _attribute_docs(body: Sequence[ast.stmt], source: str) -> dict[str, tuple[str, str]]:
    """{name: (annotation source, docstring)} for `name: T = ...` followed by a string literal."""
    found: dict[str, tuple[str, str]] = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            annotation = " ".join((ast.get_source_segment(source, node.annotation) or "").split())
            found[node.target.id] = (annotation, _string_after(after))
    return found


def _string_after(node: ast.stmt | None) -> str:
    """The docstring of the statement before `node`: `node` when it is a string literal ('' otherwise)."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
        return inspect.cleandoc(node.value.value)
    return ""


def _declared(cls: type) -> dict[str, tuple[str, str]]:
    """Each field's annotation and docstring from the nearest class in the MRO that declares it."""
    out: dict[str, tuple[str, str]] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, BaseModel)) or klass.__module__.startswith("pydantic"):
            continue
        found = _class_node(klass)
        if found is not None:
            out.update(_attribute_docs(found[1].body, found[0]))
    return out


def _alias_doc(module: str, name: str) -> tuple[str, str]:
    """A module-level alias: the type it stands for (its `Annotated[...]` base, other aliases of the
    module followed) and the docstring under it."""
    source, tree = _source_of(sys.modules[module])
    definitions: dict[str, tuple[ast.expr, str]] = {}
    body = tree.body
    for node, after in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    definitions[target.id] = (node.value, _string_after(after))
    if name not in definitions:
        raise MissingDocstringError(f"{module}.{name} is not defined there")
    value, doc = definitions[name]
    if not doc:
        raise MissingDocstringError(f"{module}.{name} has no docstring")
    seen = {name}
    while True:
        if isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name) and value.value.id == "Annotated":
            value = value.slice.elts[0] if isinstance(value.slice, ast.Tuple) else value.slice
        elif isinstance(value, ast.Name) and value.id in definitions and value.id not in seen:
            seen.add(value.id)
            value = definitions[value.id][0]
        else:
            break
    return " ".join((ast.get_source_segment(source, value) or "").split()), doc


# ----------------------------------------------------------------------------- fields
def fields(cls: type[BaseModel], *, only: Sequence[str] | None = None, skip: Sequence[str] = ()) -> list[FieldDoc]:
    """The model's fields in declaration order (`only`: these, in this order), each with its docstring."""
    declared = _declared(cls)
    names = list(only) if only is not None else [n for n in cls.model_fields if n not in skip]
    out = []
    for name in names:
        info = cls.model_fields[name]
        annotation, doc = declared.get(name, ("", ""))
        if not doc:
            raise MissingDocstringError(f"{cls.__qualname__}.{name} has no docstring")
        out.append(FieldDoc(name, annotation, _default(info), _limits(info), doc))
    return out


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return REQUIRED
    return _literal(info.get_default(call_default_factory=True))


def _literal(value: Any) -> str:
    """A default as the Python a user would write."""
    if isinstance(value, BaseModel):
        given = [n for n in type(value).model_fields if n in value.model_fields_set]
        return f"{type(value).__name__}({', '.join(f'{n}={_literal(getattr(value, n))}' for n in given)})"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        items = [_literal(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "at least"), ("max_length", "at most"))


def _limits(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        for attr, word in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None:
                items = (" item" + ("" if value == 1 else "s")) if attr.endswith("length") else ""
                parts.append(f"{word} {value}{items}")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- markdown pieces
def _cell(text: str) -> str:
    """Text inside a table cell: one line, pipes escaped (also inside code spans, as GFM requires)."""
    return " ".join(text.split()).replace("|", "\\|")


def _prose(doc: str) -> str:
    """A class docstring as Markdown: paragraphs as written; an indented block (an example, after a
    line ending in ':' or after a blank line) as a Python code block."""
    lines = doc.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        opens = line.rstrip().endswith(":") or not line.strip()
        if opens and index + 1 < len(lines) and lines[index + 1].startswith("    "):
            block: list[str] = []
            index += 1
            while index < len(lines) and (lines[index].startswith("    ") or not lines[index].strip()):
                block.append(lines[index])
                index += 1
            while block and not block[-1].strip():
                block.pop()
            lead = [line, ""] if line.strip() else [""]
            out += [*lead, "```python", *textwrap.dedent("\n".join(block)).splitlines(), "```", ""]
            continue
        out.append(line)
        index += 1
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out)


def _field_table(docs: Sequence[FieldDoc], *, head: str = "field") -> list[str]:
    rows = [f"| {head} | type | default | description |", "|---|---|---|---|"]
    for f in docs:
        kind = f"`{_cell(f.type)}`" + (f", {f.limits}" if f.limits else "")
        default = f.default if f.default == REQUIRED else f"`{_cell(f.default)}`"
        rows.append(f"| `{f.name}` | {kind} | {default} | {_cell(f.doc)} |")
    return rows


def _outputs_table(cls: type[StageOutputs]) -> list[str]:
    docs = fields(cls)
    if not docs:
        return ["It writes no outputs."]
    rows = ["| output | always set | description |", "|---|---|---|"]
    for f in docs:
        rows.append(f"| `{f.name}` | {'yes' if f.default == REQUIRED else 'no'} | {_cell(f.doc)} |")
    return rows


def _signature(function: Any) -> str:
    """`(a: T, *, b: U) -> R` as written (annotations are strings under `from __future__ import annotations`)."""
    parts: list[str] = []
    keyword_only = False
    for param in list(inspect.signature(function).parameters.values())[1:]:  # without self
        if param.kind is param.KEYWORD_ONLY and not keyword_only:
            parts.append("*")
            keyword_only = True
        star = "*" if param.kind is param.VAR_POSITIONAL else "**" if param.kind is param.VAR_KEYWORD else ""
        keyword_only = keyword_only or param.kind is param.VAR_POSITIONAL
        note = f": {param.annotation}" if param.annotation is not param.empty else ""
        default = f" = {_literal(param.default)}" if param.default is not param.empty else ""
        parts.append(f"{star}{param.name}{note}{default}")
    returns = inspect.signature(function).return_annotation
    return f"({', '.join(parts)})" + (f" -> {returns}" if returns is not inspect.Signature.empty else "")


def _anchor(title: str) -> str:
    """GitHub's heading anchor for a plain-text title."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


# ----------------------------------------------------------------------------- sections
def _pipeline_section() -> Iterator[str]:
    yield "## Pipeline"
    yield ""
    yield _prose(class_doc(Pipeline))
    yield ""
    params = [p for p in inspect.signature(Pipeline.__init__).parameters if p != "self"]
    yield (
        "Its parameters are the fields of the `PipelineSpec` it builds (the stages come from the `with` "
        "block); a parameter left out takes the spec's default:"
    )
    yield ""
    yield from _field_table(fields(PipelineSpec, only=params), head="parameter")
    yield ""
    yield "Methods and properties:"
    yield ""
    yield from _members(Pipeline, PIPELINE_METHODS, "p")
    yield ""
    yield (
        "`a >> b` (inside the `with` block) makes `b` need `a`; `a >> [b, c]` and `[a, b] >> c` fan out and in. "
        "Outside a `with` block, pass `needs=[...]` to the stage instead."
    )
    yield ""
    yield "### PipelineSpec"
    yield ""
    yield _prose(class_doc(PipelineSpec))
    yield ""
    yield (
        "`p.spec` is one. Its fields are the parameters above plus these; it round-trips through JSON "
        "(`spec.model_dump_json()`, `PipelineSpec.model_validate_json(text)`):"
    )
    yield ""
    extra = [n for n in PipelineSpec.model_fields if n not in params]
    yield from _field_table(fields(PipelineSpec, only=extra))


def _common_stage_section() -> Iterator[str]:
    yield "### Stage: the fields every kind has"
    yield ""
    yield _prose(class_doc(Stage))
    yield ""
    yield from _field_table(fields(Stage, skip=("kind",)))
    yield ""
    yield "### StageOutputs"
    yield ""
    yield _prose(class_doc(StageOutputs))
    yield ""
    yield (
        "A `Shell` stage receives the outputs of every stage before it as environment variables "
        "`PIPELINE_<STAGE>_<OUTPUT>` (upper case, hyphens as underscores; e.g. `PIPELINE_BAKE_IMAGE`), "
        "and `pipeline run stage` writes them to the run manifest CI carries between jobs."
    )
    yield ""
    yield "### Definition"
    yield ""
    yield _prose(class_doc(Definition))
    yield ""
    public = [
        n for n, m in vars(Definition).items() if not n.startswith("_") and isinstance(m, property | FunctionType)
    ]
    yield from _members(Definition, public, "spec")


def _members(cls: type, names: Sequence[str], owner: str) -> Iterator[str]:
    """A line per method or property: `owner.name(signature)`: its docstring."""
    for name in names:
        member = inspect.getattr_static(cls, name)
        target = member.fget if isinstance(member, property) else member
        doc = inspect.getdoc(target)
        if not doc:
            raise MissingDocstringError(f"{cls.__name__}.{name} has no docstring")
        call = name if isinstance(member, property) else name + _signature(target)
        yield f"- `{owner}.{call}`: {' '.join(doc.split())}"


def _kind_section(kind: str, cls: type[Stage]) -> Iterator[str]:
    outputs = cls.outputs
    yield f"### {cls.__name__}"
    yield ""
    yield f"`kind: {json.dumps(kind)}`, from `{cls.__module__}`; outputs: `{outputs.__name__}`."
    yield ""
    yield _prose(class_doc(cls))
    yield ""
    common = set(Stage.model_fields)
    own = fields(cls, skip=tuple(common))
    if own:
        yield from _field_table(own)
        yield ""
    yield f"Plus every stage's fields ([Stage](#{_anchor('Stage: the fields every kind has')}))."
    yield ""
    facts = list(_kind_facts(cls))
    if facts:
        yield from (f"- {fact}" for fact in facts)
        yield ""
    yield f"Outputs ({outputs.__name__}):"
    yield ""
    yield from _outputs_table(outputs)


def _kind_facts(cls: type[Stage]) -> Iterator[str]:
    """What the class-level facts of a kind mean for whoever writes one."""
    for field, kinds in cls.refers_to.items():
        yield (
            f"`{field}` names an earlier stage of kind {' or '.join(f'`{k}`' for k in kinds)} (the stage object "
            "works too); the stage then runs after it and reads its outputs."
        )
    if cls.follows_environment_of:
        yield (
            f"Acts on the environment of the stage its `{cls.follows_environment_of}` names: that environment's "
            "profile and secrets apply."
        )
    if cls.copies_environment:
        yield (
            f"`{cls.copies_environment}` names the environment it copies: an ephemeral environment without a "
            "template of its own uses that environment's template."
        )
    if cls.deletes:
        yield (
            f"Deletes what the stage its `{cls.deletes}` names created, so it must run after every stage that "
            "uses that stage's outputs."
        )
    if cls.always:
        yield "Always runs: also when a stage it needs failed, after Ctrl-C and after a CI's stop."
    if cls.approvable:
        yield "May have an approval gate (`approval=`, or its environment's)."
    if cls.uses_profile:
        yield (
            "Drives Docker or AWS, as its profile says: CI runs it with `--profile`, and on the aws profile "
            "gives it AWS credentials."
        )
    for profile, why in cls.cannot_run_on.items():
        yield (
            f"Cannot run on the {profile} profile ({why}): `validate --profile {profile}`, a run and `render` "
            f"(when CI would run it with {profile}) refuse it with exit 2."
        )
    if cls.own_job:
        yield "Always a CI job of its own, never merged with the stages holding its environment's lock."
    if not cls.executor:
        yield "Renders for CI but cannot run (no executor)."


def _plain_section(cls: type[BaseModel], *, level: str = "###", note: str = "") -> Iterator[str]:
    yield f"{level} {cls.__name__}"
    yield ""
    yield _prose(class_doc(cls))
    yield ""
    if note:
        yield note
        yield ""
    yield from _field_table(fields(cls, skip=("kind",)))


def _strategy_section(name: str, cls: type[BaseModel]) -> Iterator[str]:
    yield f"### {cls.__name__}"
    yield ""
    yield f"`strategy={json.dumps(name)}` takes these defaults; `strategy={cls.__name__}(...)` sets them."
    yield ""
    yield _prose(class_doc(cls))
    yield ""
    yield from _field_table(fields(cls, skip=("kind",)))


def _types_section() -> Iterator[str]:
    yield "## Types the tables use"
    yield ""
    yield "| type | is | what it accepts |"
    yield "|---|---|---|"
    for module, name in TYPE_ALIASES:
        value, doc = _alias_doc(module, name)
        yield f"| `{name}` | `{_cell(value)}` | {_cell(doc)} |"


def markdown(kinds: Mapping[str, type[Stage]] | None = None) -> str:
    """The whole reference. `kinds`: the stage kinds to document (default: every registered one)."""
    kinds = registered() if kinds is None else kinds
    import pipeline

    kind_titles = [cls.__name__ for cls in kinds.values()]
    strategy_titles = [cls.__name__ for cls in STRATEGY_KINDS.values()]
    parts: list[str] = [
        "# API reference",
        "",
        f"<!-- Generated from the models' docstrings by `{COMMAND}`. Do not edit; "
        "tests/unit/test_apidoc.py fails when this file is stale. -->",
        "",
        "Everything a definition uses is importable from `pipeline` "
        f"(`from pipeline import {', '.join(n for n in pipeline.__all__ if not n.startswith('_'))}`). "
        "Every object is frozen and rejects unknown fields: a misspelled field is an error naming the "
        "field (with a suggestion), never ignored. `pipeline.__version__` is the installed version "
        "(`pipeline --version`); CI installs exactly the version that rendered its files.",
        "",
        "- [Pipeline](#pipeline) and [PipelineSpec](#pipelinespec)",
        "- [Stage kinds](#stage-kinds): "
        + ", ".join(f"[{t}](#{_anchor(t)})" for t in kind_titles)
        + f"; [every stage's fields](#{_anchor('Stage: the fields every kind has')}), [StageOutputs](#stageoutputs), "
        "[Definition](#definition) (what a kind's `check` reads)",
        "- [Environments](#environments): "
        + ", ".join(f"[{m.__name__}](#{_anchor(m.__name__)})" for m in ENVIRONMENT_MODELS),
        "- [Triggers and agents](#triggers-and-agents): [Trigger](#trigger), [AgentLabels](#agentlabels)",
        "- [Checks](#checks): [Verify](#verify), [Health](#health)",
        "- [Deployment strategies](#deployment-strategies): "
        + ", ".join(f"[{t}](#{_anchor(t)})" for t in [*strategy_titles, Group.__name__]),
        "- [Types the tables use](#types-the-tables-use)",
        "",
    ]
    parts += list(_pipeline_section())
    parts += ["", "## Stage kinds", ""]
    parts += [
        "On CI each stage runs as `pipeline run stage NAME`, in a job of its own (a local-profile rehearsal, or "
        "consecutive stages holding one environment's lock, share one); locally `pipeline run local` runs them "
        "all in order. The kinds below are the registered ones, built-in kinds first (a plugin adds kinds "
        "through the `pipeline.stages` entry-point group).",
        "",
    ]
    parts += list(_common_stage_section())
    for kind, cls in kinds.items():
        parts += ["", *_kind_section(kind, cls)]
    parts += ["", "## Environments", ""]
    for i, model in enumerate(ENVIRONMENT_MODELS):
        parts += [*([""] if i else []), *_plain_section(model)]
    parts += ["", "## Triggers and agents", ""]
    parts += [*_plain_section(Trigger), "", *_plain_section(AgentLabels)]
    parts += ["", "## Checks", ""]
    parts += [*_plain_section(Verify), "", *_plain_section(Health)]
    parts += ["", "## Deployment strategies", ""]
    parts += [
        "`UpdateStack` and `Promote` take `strategy=`: a strategy object, or its name for the defaults. "
        "docs/strategies.md says how each one runs and which to choose.",
    ]
    for name, strategy in STRATEGY_KINDS.items():
        parts += ["", *_strategy_section(name, strategy)]
    parts += ["", *_plain_section(Group)]
    parts += ["", *_types_section()]
    return "\n".join(parts) + "\n"


def main() -> None:
    try:
        text = markdown()
    except MissingDocstringError as exc:
        sys.stderr.write(f"error: {exc}: write one under it, then run `{COMMAND}` again\n")
        raise SystemExit(1) from None
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
