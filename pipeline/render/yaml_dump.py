"""YAML as data: block style, sequences indented under their key, literal blocks for multi-line
text, never anchors or aliases, byte-identical on every machine.

PyYAML's pure-Python emitter writes exactly that (`dump_python`, the reference), but it took most
of the time `pipeline render` spends. libyaml, PyYAML's C emitter, is five times faster and writes
the same scalars, except that it puts a sequence inside a mapping at its key's column (`key:` then
`- a`) and that it escapes, quotes or ends documents differently for rare text (controls, line
separators, astral planes, trailing blank lines). So `dump` takes libyaml's text, re-indented,
when the document holds none of that rare text and the text reads back as the same data; else,
or without libyaml, the reference emitter writes it. Tests hold both paths to the same bytes.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_OPTIONS: dict[str, Any] = {"sort_keys": False, "default_flow_style": False, "width": 4096, "allow_unicode": True}


def _represent_str(dumper: yaml.representer.SafeRepresenter, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


class _NoAliases:
    def ignore_aliases(self, data: Any) -> bool:
        return True  # a dict used twice is written twice, never as an anchor and an alias


class PythonDumper(_NoAliases, yaml.SafeDumper):
    """The reference layout: PyYAML's emitter with sequences indented under their key."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


PythonDumper.add_representer(str, _represent_str)

CDumper: type | None = None
if getattr(yaml, "__with_libyaml__", False):

    class _CDumper(_NoAliases, yaml.CSafeDumper):
        pass

    _CDumper.add_representer(str, _represent_str)
    CDumper = _CDumper


def dump_python(data: Any) -> str:
    """`data` as YAML by PyYAML's pure-Python emitter (the layout `dump` always produces)."""
    text: str = yaml.dump(data, Dumper=PythonDumper, **_OPTIONS)
    return text


def dump_fast(data: Any) -> str | None:
    """`data` as YAML by libyaml, re-indented; None without libyaml, for rare text, or when the
    text would not read back as `data` (then `dump_python` is the answer)."""
    if CDumper is None or not _plain(data):
        return None
    text = _indent_sequences(yaml.dump(data, Dumper=CDumper, **_OPTIONS))
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        same = yaml.load(text, Loader=loader) == data
    except yaml.YAMLError:
        same = False
    return text if same else None


def dump(data: Any) -> str:
    return dump_fast(data) or dump_python(data)


# Text both emitters write alike (found by fuzzing them against each other, tests/unit/test_yaml_dump.py).
_SAFE_TEXT = re.compile(r"[\t\n\x20-\x7e\u00a0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd]*")


def _plain(data: Any) -> bool:
    """True when both emitters write `data` alike."""
    if isinstance(data, str):  # a `|+` block (trailing blank lines) ends the document differently
        return _SAFE_TEXT.fullmatch(data) is not None and not (data.endswith("\n\n") or data == "\n")
    if isinstance(data, dict):
        return all(_simple_key(k) and _plain(v) for k, v in data.items())
    if isinstance(data, list):
        return all(_plain(v) for v in data)
    return data is None or isinstance(data, bool | int)


def _simple_key(key: Any) -> bool:
    """A key written on its own line as `key: value` (not as a `? ` complex key)."""
    return not isinstance(key, str) or ("\n" not in key and len(key) < 100 and _plain(key))


def _is_entry(body: str) -> bool:
    """A line (without its indentation) that is an entry of a block sequence."""
    return body == "-" or body.startswith("- ")


def _after_dashes(line: str) -> tuple[str, int]:
    """A line's content after its indentation and any sequence dashes, and the column it starts at."""
    body = line.lstrip(" ")
    column = len(line) - len(body)
    while body.startswith("- "):
        body, column = body[2:], column + 2
    return body, column


def _key_column(line: str) -> int | None:
    """Where the key of a `key:` line (one whose value follows on the next lines) starts."""
    return _after_dashes(line)[1] if line.endswith(":") else None


def _block_column(line: str) -> int | None:
    """For a line that starts a literal or folded block scalar, the column its content lines are
    further right than (its key's, or its dash's for an entry that is the block); else None."""
    tail = line.rsplit(" ", 1)[-1]
    if tail[:1] not in ("|", ">") or not all(c in "+-0123456789" for c in tail[1:]):
        return None
    body, column = _after_dashes(line)
    return column - 2 if body == tail else column


def _indent_sequences(text: str) -> str:
    """libyaml's `key:\\n- a` as `key:\\n  - a`: each block sequence that starts at its key's column
    moves two columns right, with everything inside it (nested sequences add up)."""
    out: list[str] = []
    open_sequences: list[int] = []  # columns (in libyaml's text) of the dashes of sequences being moved
    block_column: int | None = None  # inside a block scalar opened by a line at this column
    previous = ""
    for line in text.split("\n"):
        body = line.lstrip(" ")
        column = len(line) - len(body)
        if block_column is None or (body and column <= block_column):  # not a line inside a block scalar
            block_column = None
            if body:
                while open_sequences and (
                    column < open_sequences[-1] or (column == open_sequences[-1] and not _is_entry(body))
                ):
                    open_sequences.pop()
                if _is_entry(body) and _key_column(previous) == column:
                    open_sequences.append(column)
                block_column = _block_column(line)
            previous = line
        out.append(" " * (2 * len(open_sequences)) + line if body else line)
    return "\n".join(out)
