"""Ant-style path patterns, as Jenkins' `stash includes:` and TeamCity's artifact rules use them.

`**` matches zero or more whole path segments, `*` any characters within one segment, `?` one
character (after org.apache.tools.ant.types.selectors.SelectorUtils.matchPath). A pattern ending in
`/` means `/**`. Several patterns may be given comma-separated (Jenkins' stash).
"""

from __future__ import annotations

import fnmatch
import re


def _segment_matches(pattern: str, name: str, case_sensitive: bool) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.fullmatch(regex, name, flags | re.DOTALL) is not None


def match_path(pattern: str, path: str, case_sensitive: bool = True) -> bool:
    if pattern.endswith("/"):
        pattern += "**"
    if pattern.startswith("/") != path.startswith("/"):
        return False
    pats = [p for p in pattern.split("/") if p]
    parts = [p for p in path.split("/") if p]
    return _match(pats, parts, case_sensitive)


def _match(pats: list[str], parts: list[str], case_sensitive: bool) -> bool:
    if not pats:
        return not parts
    head, *rest = pats
    if head == "**":
        return any(_match(rest, parts[i:], case_sensitive) for i in range(len(parts) + 1))
    if not parts:
        return False
    return _segment_matches(head, parts[0], case_sensitive) and _match(rest, parts[1:], case_sensitive)


def match_any(patterns: str, path: str, case_sensitive: bool = True) -> bool:
    """`patterns` comma-separated, as Jenkins' stash takes them; empty means every file."""
    items = [p.strip() for p in patterns.split(",") if p.strip()]
    if not items:
        return True
    return any(match_path(p, path, case_sensitive) for p in items)


def literal_prefix(pattern: str) -> str:
    """The folders before the first wildcard ('a/b/*.json' -> 'a/b')."""
    parts = pattern.split("/")
    fixed: list[str] = []
    for part in parts[:-1]:
        if any(c in part for c in "*?"):
            break
        fixed.append(part)
    return "/".join(fixed)


__all__ = ["fnmatch", "literal_prefix", "match_any", "match_path"]
