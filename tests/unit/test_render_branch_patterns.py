"""Branch filters as regexes mean exactly what the definition's globs mean (fnmatch.fnmatchcase).

Java's regex engine (Jenkins' REGEXP comparator, TeamCity's `matches`) agrees on the generated
subset: tests/integration/test_jenkins_standin.py runs the same patterns through Groovy."""

from __future__ import annotations

import fnmatch
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.render.branch_patterns import branch_regex, glob_regex, is_literal

# Characters that mean something to a glob, a regex (Java's or Python's) or a class, and letters.
ALPHABET = "ab/-!]*?[z.^&|~é$(){}+"
NAMES = "ab/-!]z.^&|~é$[*?(){}+A"


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=ALPHABET, min_size=1, max_size=8), st.text(alphabet=NAMES, max_size=6))
def test_a_glob_as_a_regex_matches_what_fnmatch_matches(pattern: str, name: str) -> None:
    assert (re.fullmatch(glob_regex(pattern), name) is not None) == fnmatch.fnmatchcase(name, pattern)


def test_the_cases_where_dialects_differ() -> None:
    regex = branch_regex(("main", "release/*"))
    assert re.fullmatch(regex, "release/1.0/hotfix")  # `*` crosses '/' (Ant's does not)
    assert not re.fullmatch(regex, "Main")  # case-sensitive (Ant's is not)
    assert not re.fullmatch(regex, "RELEASE/1")
    assert glob_regex("v[0-9].[!x]") == r"v[0-9]\.[^x]"
    assert glob_regex("a[&&b]") == r"a[\&\&b]"  # Java would read `&&` in a class as an intersection
    assert glob_regex("[z-a]") == "(?!)"  # an empty range matches nothing, as in fnmatch
    assert glob_regex("a[b") == r"a\[b"  # no closing bracket: a literal


def test_only_names_without_glob_characters_are_literal() -> None:
    assert is_literal("release/1.0")
    assert not is_literal("release/*")
    assert not is_literal("v?")
    assert not is_literal("[ab]")
