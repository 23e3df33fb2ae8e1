"""docs/architecture.md names the rooms of the repository by path; every such path must exist, so
a file that moves or goes makes this fail until the page says where it went."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO

DOC = REPO / "docs" / "architecture.md"

RUNTIME_ROOTS = frozenset({".pipeline"})
"""Folders a run makes (gitignored): named in the doc, never in the repository."""

_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_CODE = re.compile(r"`([^`\n]+)`")
_PLACEHOLDER = re.compile(r"[<>*{}\[\]]")


def repo_paths(markdown: str) -> list[str]:
    """Backticked spans outside fenced blocks that look like repository paths: one token with a
    '/' in it (a module, a folder, a file), e.g. `pipeline/run/plan.py` or `stages/`. A span with
    spaces (a command) or ':' / '=' (an entry point, an option) is not a path."""
    prose = _FENCE.sub("", markdown)
    found = []
    for span in _CODE.findall(prose):
        if "/" in span and not re.search(r"[\s:=\"']", span) and not span.startswith(("http", "/")):
            found.append(span)
    return found


def missing(paths: list[str], root: Path) -> list[str]:
    """The paths that do not exist under `root`. A placeholder segment (`<run-id>`, `*`) ends what
    is checked; a path under a folder that runs make is not checked at all."""
    out = []
    for path in paths:
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] in RUNTIME_ROOTS:
            continue
        fixed = []
        for part in parts:
            if _PLACEHOLDER.search(part):
                break
            fixed.append(part)
        if fixed and not (root.joinpath(*fixed)).exists():
            out.append(path)
    return out


def test_every_path_the_architecture_doc_names_exists() -> None:
    paths = repo_paths(DOC.read_text(encoding="utf-8"))
    assert len(set(paths)) > 40, "the doc names the rooms by path; the extractor found too few"
    assert missing(paths, REPO) == []


def test_a_moved_file_would_be_found(tmp_path: Path) -> None:
    (tmp_path / "pipeline" / "run").mkdir(parents=True)
    (tmp_path / "pipeline" / "run" / "plan.py").write_text("")
    text = (
        "The planner is `pipeline/run/plan.py`; the applier was `pipeline/run/apply.py`.\n"
        "```\nfenced: `pipeline/nowhere.py`\n```\n"
        'Commands are no paths: `pipeline run stage NAME`, `pkg.mod:X`, `a = "b/c"`.\n'
        "Runs write `.pipeline/runs/<run-id>/manifest.json`; a folder: `pipeline/run/<x>.py`.\n"
    )
    paths = repo_paths(text)
    assert paths == [
        "pipeline/run/plan.py",
        "pipeline/run/apply.py",
        ".pipeline/runs/<run-id>/manifest.json",
        "pipeline/run/<x>.py",
    ]
    assert missing(paths, tmp_path) == ["pipeline/run/apply.py"]
