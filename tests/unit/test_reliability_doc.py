"""docs/reliability.md names the test that holds each guarantee: every test file and test it names
exists, so a renamed or removed test fails here until the table follows."""

from __future__ import annotations

import re

from tests.conftest import REPO

DOC = REPO / "docs" / "reliability.md"


def guarantees() -> list[tuple[str, str]]:
    section = DOC.read_text().split("## Every guarantee and the test that holds it", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 2 and cells[0] not in ("guarantee", "---"):
            rows.append((cells[0], cells[1]))
    return rows


def test_every_guarantee_names_tests_that_exist() -> None:
    rows = guarantees()
    assert len(rows) >= 12
    for guarantee, held_by in rows:
        named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?", held_by)
        assert named or "make test-stress" in held_by, f"no test named for: {guarantee}"
        for path, test in named:
            assert (REPO / path).is_file(), f"{path} does not exist ({guarantee})"
            if test:
                assert re.search(rf"^def {test}\(", (REPO / path).read_text(), re.MULTILINE), f"{path}::{test}"


def test_the_issue_14_guarantees_are_listed() -> None:
    text = " ".join(g for g, _ in guarantees())
    for words in ("A signal is never lost", "busy machine", "every problem at once", "Every secret masked",
                  "The same fault, the same answer", "last second"):  # fmt: skip
        assert words in text, words
