"""jinja2 for the Groovy and Kotlin targets: strict about undefined names and about escaping.

Every `{{ ... }}` in a template must go through an escaping filter (or be an int): a bare string
raises at render time. That makes "forgot to escape" a failing test, not a broken CI file.
"""

from __future__ import annotations

import contextlib
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from pipeline.errors import TemplateBugError


class Escaped(str):
    """Text an escaping filter produced; the only kind of string a template may output."""

    __slots__ = ()


def _finalize(value: Any) -> Any:
    if isinstance(value, Escaped) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise TemplateBugError(
        f"template printed {value!r} without an escaping filter",
        hint="pass the value through groovy/kotlin/xml/ident/comment in the template",
    )


# --- Groovy ------------------------------------------------------------------------------------


def groovy(value: str) -> Escaped:
    """A single-quoted Groovy string literal on one line: no interpolation, so `$` stays for the
    shell, and newlines, tabs and trailing spaces written as escapes, so the value reaches the agent
    byte for byte (a multi-line literal would take the file's indentation and lose trailing spaces)."""
    return Escaped("'" + _escape(str(value), {"\\": "\\\\", "'": "\\'"}) + "'")


# --- Kotlin (TeamCity) -----------------------------------------------------------------------------


def kotlin(value: str) -> Escaped:
    """A Kotlin "..." literal on one line holding a TeamCity value (also a whole script): `%` doubled
    (TeamCity parameter syntax), `$` escaped (Kotlin templates), newlines and tabs as escapes, so
    the agent receives the exact text (a raw string with trimIndent() drops indentation and
    trailing spaces)."""
    text = str(value).replace("%", "%%")
    return Escaped('"' + _escape(text, {"\\": "\\\\", '"': '\\"', "$": "\\$"}) + '"')


_CONTROL_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(text: str, extra: dict[str, str]) -> str:
    """Backslash escapes both languages read alike; other control characters (which validation
    refuses) as \\uXXXX, so nothing unprintable ever lands in a file."""
    table = {**_CONTROL_ESCAPES, **extra}
    out = []
    for char in text:
        if char in table:
            out.append(table[char])
        elif ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 or char in "\u2028\u2029":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def kotlin_param_ref(name: str) -> Escaped:
    """A literal TeamCity parameter reference `%name%` inside a Kotlin string (deliberately unescaped)."""
    if not re.fullmatch(r"[A-Za-z0-9_.]+", name):
        raise ValueError(f"not a TeamCity parameter name: {name!r}")
    return Escaped(f"%{name}%")


# --- shared ------------------------------------------------------------------------------------------

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def ident(value: str) -> Escaped:
    """An identifier (Kotlin object name, Groovy symbol) checked, not escaped."""
    if not _IDENT_RE.fullmatch(str(value)):
        raise ValueError(f"not an identifier: {value!r}")
    return Escaped(str(value))


_PATH_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?:\.\*)?")


def ident_path(value: str) -> Escaped:
    """A dotted name for a Kotlin import (`a.b.c` or `a.b.*`), checked, not escaped."""
    if not _PATH_RE.fullmatch(str(value)):
        raise ValueError(f"not an import path: {value!r}")
    return Escaped(str(value))


def comment(value: str) -> Escaped:
    """Text inside a // line comment: one line only, and no way to close a block comment."""
    return Escaped(" ".join(str(value).split()).replace("*/", "* /"))


def xml(value: str) -> Escaped:
    return Escaped(str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"))


def xml_comment(value: str) -> Escaped:
    """Text inside <!-- -->, which may not contain `--`."""
    text = str(xml(" ".join(str(value).split())))
    while "--" in text:
        text = text.replace("--", "-&#8203;-")
    return Escaped(text)


def block(value: str, width: int = 0) -> Escaped:
    """Output of a macro (already escaped piece by piece), indented by `width` spaces."""
    pad = " " * width
    lines = str(value).strip("\n").split("\n")
    return Escaped("\n".join(pad + line if line.strip() else "" for line in lines))


class _BytecodeCache(jinja2.FileSystemBytecodeCache):
    """Compiled templates kept between processes (keyed by template checksum and Jinja version).
    Only speed depends on it: a cache that cannot be read or written is simply not used."""

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except (OSError, EOFError, ValueError):
            bucket.reset()

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    if os.environ.get("PIPELINE_TEMPLATE_CACHE") == "0":
        return None
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = base / "pipeline-as-code" / f"templates-jinja{jinja2.__version__}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return _BytecodeCache(str(folder))


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        bytecode_cache=_bytecode_cache(),
        loader=jinja2.PackageLoader("pipeline.render", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_finalize,
    )
    env.filters.update(
        groovy=groovy,
        kotlin=kotlin,
        param_ref=kotlin_param_ref,
        ident=ident,
        ident_path=ident_path,
        comment=comment,
        xml=xml,
        xml_comment=xml_comment,
        block=block,
    )
    return env


def render_template(name: str, **context: Any) -> str:
    text = environment().get_template(name).render(**context)
    # One trailing newline, no trailing spaces, LF only: byte-identical output everywhere.
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip("\n") + "\n"
