"""The crash journal of a bake: `<ledger>/bakes/<pipeline>/<stage>/<run id>/`, one folder per bake in
progress, so that a bake killed anywhere (SIGKILL, a lost machine) leaves nothing a later bake cannot
find.

A bake writes down what it may leave behind *before* it makes it:

- its run id and start time, when it begins (its identity: image engines label what they make
  with the run id, and an image made after the start by a container the journal names is the bake's);
- the manifest file, before `packer build`;
- Packer's build container, the moment Packer names it (before Packer commits it);
- each image, the moment it exists (Packer's, then the label layer on top of it).

The folder also holds Packer's temporary folder (`PACKER_TMP_DIR`), which Packer bind-mounts into
its build container: that ties the container to the bake even before Packer names it.

The folder goes when the bake ends. One left behind is a bake that died: the next bake of the stage
hands it to each image engine's `sweep`, which removes what it finds and forgets its part; the folder
goes only once no part is left, never before its images are gone. Each engine keeps its own part
(`docker`, `ami`), so a local bake leaves an aws bake's AMIs for the next aws bake to sweep.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.ledger import read_json, write_json

WORK_DIR = "bakes"
"""Under the ledger's folder: `bakes/<pipeline>/<stage>/<run id>/`."""
FILE = "journal.json"
PACKER_TMP = "packer-tmp"
_OLD_KEYS = {"manifests": "manifests", "artifacts": "images"}
"""Journals written before engines kept their own parts: top-level lists, all Docker's."""


class Journal:
    """One bake's folder and journal. Safe to share between the threads of one bake."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()

    @classmethod
    def open(cls, ledger_dir: Path, pipeline: str, stage: str, run_id: str) -> Journal:
        """The journal of the bake of `stage` in run `run_id`, begun (identity written) if new."""
        journal = cls(ledger_dir / WORK_DIR / pipeline / stage / run_id)
        journal.begin()
        return journal

    @property
    def run_id(self) -> str:
        return self.folder.name

    @property
    def path(self) -> Path:
        return self.folder / FILE

    @property
    def packer_tmp(self) -> Path:
        """Packer's temporary folder for this bake (`PACKER_TMP_DIR`)."""
        path = self.folder / PACKER_TMP
        path.mkdir(parents=True, exist_ok=True)
        return path

    def begin(self) -> None:
        with self._lock:
            if read_json(self.path) is None:
                write_json(self.path, {"run_id": self.run_id, "started": time.time()})

    def _data(self) -> dict[str, Any]:
        data = read_json(self.path)
        return data if isinstance(data, dict) else {}

    @property
    def started(self) -> float | None:
        """When the bake began (seconds since the epoch); None for a journal that does not say."""
        value = self._data().get("started")
        return float(value) if isinstance(value, int | float) else None

    def entries(self, part: str) -> dict[str, list[str]]:
        """What engine `part` wrote down: {"images": [...], "containers": [...], ...}."""
        data = self._data()
        found = {k: [str(v) for v in values] for k, values in (data.get(part) or {}).items()}
        if part == "docker":
            for old, new in _OLD_KEYS.items():
                found.setdefault(new, [])
                found[new] += [str(v) for v in data.get(old) or [] if str(v) not in found[new]]
        return {k: v for k, v in found.items() if v}

    def record(self, part: str, what: str, value: str) -> None:
        """Write down, before relying on it, one thing engine `part` may leave behind."""
        with self._lock:
            data = self._data() or {"run_id": self.run_id, "started": time.time()}
            values = data.setdefault(part, {}).setdefault(what, [])
            if value not in values:
                values.append(value)
                write_json(self.path, data)

    def forget(self, part: str) -> None:
        """Engine `part` has removed all it wrote down (or found it gone)."""
        with self._lock:
            data = self._data()
            if not data:
                return
            data.pop(part, None)
            if part == "docker":
                for old in _OLD_KEYS:
                    data.pop(old, None)
            write_json(self.path, data)

    def empty(self) -> bool:
        """Nothing is written down that any engine must still remove."""
        data = self._data()
        parts = [v for k, v in data.items() if isinstance(v, dict) and any(v.values())]
        old = [k for k in _OLD_KEYS if data.get(k)]
        return not parts and not old

    def close(self) -> None:
        """The bake is over and left nothing untracked: the folder goes."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def close_if_empty(self) -> bool:
        if self.empty():
            self.close()
            return True
        return False

    def dead(self) -> list[Journal]:
        """The other bakes of this stage whose folders are still here: bakes that died. (The run
        holds the pipeline's lock, so no other bake of this stage is alive.)"""
        stage = self.folder.parent
        if not stage.is_dir():
            return []
        return [Journal(p) for p in sorted(stage.iterdir()) if p.is_dir() and p.name != self.run_id]
