"""Stable content hashes for idempotency keys: the same inputs give the same key on any machine."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# Folders never part of a stage's inputs when we walk a tree that is not a git checkout.
_STATE_DIR = ".pipeline/"
_SKIP_DIRS = {".git", ".pipeline", "__pycache__", ".venv", "venv", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def digest(value: Any) -> str:
    """sha256 of a JSON-able value with sorted keys: independent of dict ordering."""
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode()).hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_files(root: Path, relative: str = ".") -> list[str]:
    """Files under `root/relative`, as '/'-paths relative to root, sorted.

    In a git work tree: tracked plus untracked-but-not-ignored files (what a commit would see).
    Elsewhere: every file, skipping caches and state folders."""
    base = (root / relative).resolve()
    if base.is_file():
        return [base.relative_to(root.resolve()).as_posix()]
    rel_root = root.resolve()
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", str(base)],
            cwd=rel_root,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        # git prints paths relative to its working directory, which is `root`.
        names = (n for n in out.decode().split("\0") if n)
        return sorted({n for n in names if not n.startswith(_STATE_DIR) and (rel_root / n).is_file()})
    except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired):
        pass
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in filenames:
            found.append((Path(dirpath) / name).relative_to(rel_root).as_posix())
    return sorted(found)


def hash_paths(root: Path, paths: Iterable[str]) -> dict[str, str]:
    """{relative file path: sha256} for every file under each of `paths` (files or folders)."""
    result: dict[str, str] = {}
    for rel in paths:
        target = root / rel
        if target.is_dir():
            for name in tree_files(root, rel):
                result[name] = file_digest(root / name)
        elif target.is_file():
            result[Path(rel).as_posix()] = file_digest(target)
        else:
            result[Path(rel).as_posix()] = "missing"
    return dict(sorted(result.items()))


def stage_key(
    spec: Mapping[str, Any],
    files: Mapping[str, str],
    upstream: Mapping[str, Mapping[str, str]],
    observed: Mapping[str, str],
) -> str:
    return digest({"spec": spec, "files": files, "upstream": upstream, "observed": observed})[:32]
