"""One errors module: every error class the package raises on purpose lives in pipeline/errors.py,
has a fixed exit code, and the table in docs/architecture.md lists it under that code."""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys

import pipeline
from pipeline import errors
from pipeline.errors import EXIT_BAD_INPUT, EXIT_FAILED, PipelineError
from tests.conftest import REPO

EXIT_CODES = {EXIT_FAILED, EXIT_BAD_INPUT, 130}
"""What a class may exit with (Interrupted's 130 becomes 143 for SIGTERM at exit, not on the class)."""


def _package_error_classes() -> list[type[PipelineError]]:
    """Every subclass of PipelineError that a module of the package defines, all modules imported."""
    for info in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
        if not info.name.endswith("__main__"):  # __main__ runs the CLI
            importlib.import_module(info.name)
    found: list[type[PipelineError]] = []
    todo: list[type[PipelineError]] = [PipelineError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in found if c.__module__ == "pipeline" or c.__module__.startswith("pipeline.")]


def test_the_walk_imports_the_whole_package() -> None:
    classes = _package_error_classes()
    names = {c.__name__ for c in classes}
    assert {"PipelineError", "BadInputError", "StackOperationError", "Interrupted"} <= names
    assert len(classes) > 30
    assert "pipeline.engines.git_promote" in sys.modules
    assert "pipeline.flags.store" in sys.modules


def test_every_error_class_is_defined_in_the_errors_module() -> None:
    elsewhere = sorted(
        f"{c.__module__}.{c.__qualname__}" for c in _package_error_classes() if c.__module__ != "pipeline.errors"
    )
    assert elsewhere == [], "error classes belong in pipeline/errors.py"


def test_every_error_class_has_an_exit_code() -> None:
    for cls in _package_error_classes():
        assert isinstance(cls.exit_code, int), cls
        assert cls.exit_code in EXIT_CODES, f"{cls.__name__} exits {cls.exit_code}"
    assert errors.BadInputError.exit_code == EXIT_BAD_INPUT
    assert errors.PipelineError.exit_code == EXIT_FAILED


def test_the_sections_of_the_errors_module_match_the_exit_codes() -> None:
    """A class under the "bad input: exit 2" heading exits 2, one under "failures: exit 1" exits 1."""
    source = (REPO / "pipeline" / "errors.py").read_text()
    section = None
    seen = 0
    for line in source.splitlines():
        heading = re.match(r"# --- .*: (?:exit )?(\d+)", line)
        if heading:
            section = int(heading.group(1))
        match = re.match(r"class (\w+)\(", line)
        if match and section is not None:
            cls = getattr(errors, match.group(1))
            if isinstance(cls, type) and issubclass(cls, PipelineError):
                assert cls.exit_code == section, f"{cls.__name__} (exit {cls.exit_code}) sits under exit {section}"
                seen += 1
    assert seen > 30


def test_the_architecture_doc_lists_every_error_under_its_exit_code() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text()
    rows: dict[int, set[str]] = {}
    for line in doc.splitlines():
        row = re.match(r"\| (\d+)(?: / \d+)? \|(.*)", line)
        if row:
            rows[int(row.group(1))] = set(re.findall(r"`(\w+)`", row.group(2)))
    for cls in _package_error_classes():
        assert cls.__name__ in rows.get(cls.exit_code, set()), (
            f"docs/architecture.md's exit-code table does not list {cls.__name__} under {cls.exit_code}"
        )
