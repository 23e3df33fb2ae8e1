"""Branch filters as CI servers can match them, meaning exactly what the definition means.

A definition's branch patterns are globs with `fnmatch.fnmatchcase` semantics (pipeline.spec.branch_matches):
case-sensitive, `*` matches any characters including `/`, `?` one character, `[...]` / `[!...]` a class.
CI servers match otherwise (Jenkins' `when { branch }` uses Ant's path glob: case-insensitive, `*`
stops at `/`), so renderers hand them a regular expression that means the same: written in the
subset on which Java's `java.util.regex` (Jenkins' REGEXP comparator, TeamCity's `matches`) and
Python's `re` agree: escaped literals, `.*`, `.`, and character classes of escaped characters and ranges.
"""

from __future__ import annotations

import re
from collections.abc import Callable

GLOB_CHARACTERS = frozenset("*?[")


def is_literal(pattern: str) -> bool:
    """A pattern without glob characters names one branch (compare it for equality)."""
    return not GLOB_CHARACTERS & set(pattern)


def branch_regex(patterns: tuple[str, ...] | list[str]) -> str:
    """Any of the glob patterns, as one anchored regex (anchors are harmless where the server
    matches the whole name anyway)."""
    return "^(?:" + "|".join(glob_regex(p) for p in patterns) + ")$"


def glob_regex(pattern: str, *, literal: Callable[[str], str] = re.escape, nothing: str = "(?!)") -> str:
    """One glob pattern as an (unanchored) regex matching what fnmatch.fnmatchcase matches.

    `literal` writes a character outside a class, `nothing` a class that matches nothing (an
    empty range): the defaults suit Java and Python; GitLab (RE2 between slashes) passes its own."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            end = _class_end(pattern, i)
            if end < 0:
                out.append(literal(char))  # no closing bracket: a literal '[' (as fnmatch)
            else:
                out.append(_class(pattern[i:end], nothing))
                i = end + 1
        else:
            out.append(literal(char))
    return "".join(out)


def _class_end(pattern: str, start: int) -> int:
    """Index of the `]` closing a class whose body starts at `start` (fnmatch: a `]` right after
    `[` or `[!` is a member), or -1."""
    j = start
    if j < len(pattern) and pattern[j] == "!":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    return pattern.find("]", j)


def _class(body: str, nothing: str) -> str:
    """fnmatch's class body as a regex class: `!` negates, `a-z` is a range (an empty one, like
    `z-a`, matches nothing), a `-` elsewhere is literal; every member character is escaped so that
    neither Java (`&&`, nested `[`) nor Python reads an operator into it."""
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    members: list[str] = []
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            low, high = body[k], body[k + 2]
            if low <= high:
                members.append(f"{punctuation_escaped(low)}-{punctuation_escaped(high)}")
            k += 3
        else:
            members.append(punctuation_escaped(body[k]))
            k += 1
    if not members:
        return "." if negate else nothing
    return "[" + ("^" if negate else "") + "".join(members) + "]"


def punctuation_escaped(char: str) -> str:
    """ASCII punctuation escaped (a backslash before any other character would be an error in Java)."""
    return "\\" + char if char.isascii() and not char.isalnum() else char
