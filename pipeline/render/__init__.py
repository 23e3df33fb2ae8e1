"""Renderers: the same PipelineSpec as a Jenkinsfile, TeamCity Kotlin DSL or a GitHub Actions workflow.

    files = render(spec, ["github"])            # in memory, nothing written
    write(files, Path("."))                      # the files CI reads
    check(files, Path("."))                      # RenderDriftError when committed files differ

Rendering reads only the declarative spec: it never imports boto3, docker or testinfra.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from pipeline.errors import UnsupportedFeatureError
from pipeline.render.base import RenderContext, RenderedFile, Renderer, Support
from pipeline.render.drift import check
from pipeline.render.registry import available, get, parse_targets, resolve_targets
from pipeline.spec import PipelineSpec

__all__ = [
    "RenderContext",
    "RenderedFile",
    "Renderer",
    "Support",
    "available",
    "check",
    "get",
    "parse_targets",
    "render",
    "resolve_targets",
    "unsupported",
    "write",
]


def render(spec: PipelineSpec, targets: Sequence[str], context: RenderContext | None = None) -> list[RenderedFile]:
    """Every file of every target, in target order. Raises before returning anything on any problem."""
    context = context or RenderContext()
    files: list[RenderedFile] = []
    for target in targets:
        files += get(target).render(spec, context)
    return files


def unsupported(
    spec: PipelineSpec, targets: Sequence[str], context: RenderContext | None = None
) -> list[UnsupportedFeatureError]:
    """What each target cannot express (the first problem per target), rendering in memory: the
    same checks `render` makes, so `validate` finds them before CI does."""
    context = context or RenderContext()
    problems = []
    for target in targets:
        try:
            get(target).render(spec, context)
        except UnsupportedFeatureError as exc:
            problems.append(exc)
    return problems


def write(files: Iterable[RenderedFile], out: Path) -> list[tuple[str, bool]]:
    """Write each file under `out` (atomically; untouched when unchanged). Returns (path, changed)."""
    results = []
    for file in files:
        path = out / file.path
        data = file.content.encode("utf-8")
        changed = not path.is_file() or path.read_bytes() != data
        if changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o755 if file.executable else 0o644)
            os.replace(tmp, path)
        elif file.executable and not path.stat().st_mode & 0o100:
            path.chmod(path.stat().st_mode | 0o111)
        results.append((file.path, changed))
    return results
