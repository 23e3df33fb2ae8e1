"""`render --check`: compare a fresh render with the committed files, line endings normalized."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import RenderDriftError
from pipeline.render.base import RenderedFile


def normalize(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def diff(files: Iterable[RenderedFile], out: Path) -> tuple[str, list[str]]:
    """A unified diff (committed -> fresh) over every file that differs or is missing, and their paths."""
    chunks: list[str] = []
    drifted: list[str] = []
    for file in files:
        path = out / file.path
        try:
            committed = normalize(path.read_text(encoding="utf-8"))
            label = f"a/{file.path}"
        except FileNotFoundError:
            committed, label = "", f"a/{file.path} (missing)"
        except UnicodeDecodeError:
            committed, label = "", f"a/{file.path} (not UTF-8 text)"
        if committed == file.content and not label.endswith(")"):
            continue
        drifted.append(file.path)
        lines = difflib.unified_diff(
            committed.splitlines(keepends=True),
            file.content.splitlines(keepends=True),
            fromfile=label,
            tofile=f"b/{file.path} (fresh render)",
        )
        chunks.append("".join(line if line.endswith("\n") else line + "\n" for line in lines))
    return "".join(chunks), drifted


def check(files: Iterable[RenderedFile], out: Path) -> None:
    """Raise RenderDriftError (exit 1) with the diff when any committed file differs."""
    text, drifted = diff(files, out)
    if drifted:
        raise RenderDriftError(text, drifted)
