"""The ledger under `.pipeline/` (gitignored): what ran, what it produced, who holds which lock.

    .pipeline/
      events.jsonl                              every state change of every run, one JSON per line
      runs/<run-id>/manifest.json               stage outputs of one run (what CI passes between jobs)
      runs/<run-id>/stages/<stage>/output.log   full output of each stage
      stages/<pipeline>/<profile>/<stage>.json  last successful result per stage (key + outputs)
      environments/<pipeline>/<env>.json        releases per environment (known-good images)
      locks/<pipeline>.<env>.lock               one live run per pipeline and environment

The real world wins when it disagrees with the ledger: records are hints that executors check
(`is_live`) before trusting them. Every file is written atomically (temp file + rename).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pipeline.errors import StateCorruptError, StateUnwritableError
from pipeline.locks import FileLock

STATE_DIR = ".pipeline"
MANIFEST_SCHEMA = 1


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_run_id() -> str:
    """`YYYYMMDD-HHMMSSmmm-<hex>` (UTC, to the millisecond): ids sort in the order runs started,
    also two runs in one second (a re-run right after a crash)."""
    now = time.time()
    millis = int(now * 1000) % 1000
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}{millis:03d}-{secrets.token_hex(3)}"


def write_json(path: Path, data: Any) -> None:
    """Atomically replace `path` with `data` as pretty, sorted JSON."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise _unwritable(path, exc) from None


def read_json(path: Path) -> Any:
    """The parsed file, or None when it does not exist. A corrupt file is a clear error."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateCorruptError(f"cannot read ledger file {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateCorruptError(
            f"ledger file {path} is corrupt (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            hint=f"delete {path}: the ledger only caches what the real world says, so the affected "
            "stages will look again (and re-run where needed)",
        ) from None


def _unwritable(path: Path, exc: OSError) -> StateUnwritableError:
    reason = {errno.EROFS: "the file system is read-only", errno.ENOSPC: "the disk is full"}.get(
        exc.errno or 0, exc.strerror or str(exc)
    )
    return StateUnwritableError(
        f"cannot write the ledger at {path}: {reason}",
        hint=f"make {path.parent} writable (or free disk space), then re-run; nothing was changed",
    )


@dataclass
class StageResult:
    """One stage's entry in a run manifest."""

    status: str = "pending"
    key: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "key": self.key,
            "outputs": dict(sorted(self.outputs.items())),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageResult:
        return cls(
            status=str(data.get("status", "pending")),
            key=str(data.get("key", "")),
            outputs={str(k): str(v) for k, v in dict(data.get("outputs", {})).items()},
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            attempts=int(data.get("attempts", 0)),
            message=str(data.get("message", "")),
        )


@dataclass
class Manifest:
    """Stage outputs of one run. On disk: one file, or (on CI) a folder of one file per stage."""

    pipeline: str
    run_id: str
    profile: str
    stages: dict[str, StageResult] = field(default_factory=dict)

    def to_json(self, only: str | None = None) -> dict[str, Any]:
        stages = self.stages if only is None else {only: self.stages[only]}
        return {
            "schema": MANIFEST_SCHEMA,
            "pipeline": self.pipeline,
            "run_id": self.run_id,
            "profile": self.profile,
            "stages": {name: result.to_json() for name, result in sorted(stages.items())},
        }

    def outputs(self) -> dict[str, dict[str, str]]:
        ok = ("succeeded", "up-to-date")
        return {name: dict(r.outputs) for name, r in self.stages.items() if r.status in ok}

    def save(self, path: Path, *, stage: str | None = None) -> None:
        """To a `.json` file (all stages), or into a folder as `<stage>.json` (what CI artifacts carry)."""
        if path.suffix == ".json":
            write_json(path, self.to_json())
        else:
            for name in [stage] if stage else list(self.stages):
                write_json(path / f"{name}.json", self.to_json(only=name))

    @classmethod
    def load(cls, path: Path) -> Manifest | None:
        """Read a manifest file, or merge every `*.json` in a folder. None if there is nothing."""
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        merged: Manifest | None = None
        for file in files:
            data = read_json(file)
            if data is None:
                continue
            if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA or "stages" not in data:
                raise StateCorruptError(
                    f"{file} is not a pipeline run manifest (schema {MANIFEST_SCHEMA})",
                    hint="pass the manifest written by `pipeline run` (runs/<id>/manifest.json or a folder of them)",
                )
            part = cls(
                pipeline=str(data["pipeline"]),
                run_id=str(data["run_id"]),
                profile=str(data.get("profile", "local")),
                stages={k: StageResult.from_json(v) for k, v in data["stages"].items()},
            )
            if merged is None:
                merged = part
            else:
                if part.pipeline != merged.pipeline:
                    raise StateCorruptError(
                        f"{file} belongs to pipeline {part.pipeline!r}, not {merged.pipeline!r}",
                        hint="keep one pipeline's manifests per folder",
                    )
                merged.stages.update(part.stages)
        return merged


@dataclass(frozen=True)
class StageRecord:
    """The last successful result of a stage: the key it ran with and the outputs it produced."""

    key: str
    outputs: dict[str, str]
    run_id: str
    finished_at: str


@dataclass(frozen=True)
class Release:
    """An image that ran in an environment."""

    image: str
    run_id: str
    at: str
    status: str
    """'live' (serving now), 'known-good' (served and verified before), 'failed' (rolled back)."""


class ReleaseStore(Protocol):
    """A durable record of one environment's releases, kept where the environment lives (the
    template's git history on aws, Docker tags on the local profile's machine), so what a CI run did
    is known to a laptop (and to the next CI job) that never saw this machine's ledger."""

    @property
    def where(self) -> str:
        """Where the record lives, for reports (e.g. 'git history of templates/web.yaml')."""
        ...

    def read(self) -> list[Release] | None:
        """The releases, oldest first; None when the store cannot be read now (the ledger speaks)."""
        ...

    def append(self, release: Release) -> None:
        """Record one release (a store whose records are written by the deploy itself ignores it)."""
        ...


@dataclass(frozen=True)
class ReleaseHistory:
    """The releases of one environment, oldest first, and what they say."""

    releases: tuple[Release, ...]
    source: str = "ledger"
    """Where they were read: 'ledger' (this machine) or a durable store's `where`."""

    def live(self) -> str | None:
        """The image last recorded as live (None: nothing yet)."""
        return next((r.image for r in reversed(self.releases) if r.status == "live"), None)

    def known_good(self) -> list[str]:
        """Images that served and verified, newest first, without repeats."""
        seen: list[str] = []
        for release in reversed(self.releases):
            if release.status in ("live", "known-good") and release.image not in seen:
                seen.append(release.image)
        return seen

    def withdrawn(self, image: str) -> bool:
        """Whether the latest release of `image` is 'failed' (it failed, or was rolled back)."""
        latest = [r.status for r in self.releases if r.image == image]
        return bool(latest) and latest[-1] == "failed"

    def candidates(self) -> list[str]:
        """What a rollback may go back to: known-good images, newest first, not withdrawn since."""
        return [image for image in self.known_good() if not self.withdrawn(image)]


class Ledger:
    """Read and write the `.pipeline/` folder of one project root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / STATE_DIR

    # --- layout ---
    def ensure(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            ignore = self.dir / ".gitignore"
            if not ignore.exists():
                ignore.write_text("# created by pipeline: the ledger is local state, never committed\n*\n")
        except OSError as exc:
            raise _unwritable(self.dir, exc) from None

    def run_dir(self, run_id: str) -> Path:
        return self.dir / "runs" / run_id

    def manifest_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "manifest.json"

    # --- runs ---
    def runs(self) -> list[str]:
        base = self.dir / "runs"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / "manifest.json").is_file())

    def manifest(self, run_id: str) -> Manifest | None:
        return Manifest.load(self.manifest_path(run_id))

    # --- stage records ---
    def _record_path(self, pipeline: str, profile: str, stage: str) -> Path:
        return self.dir / "stages" / pipeline / profile / f"{stage}.json"

    def stage_record(self, pipeline: str, profile: str, stage: str) -> StageRecord | None:
        path = self._record_path(pipeline, profile, stage)
        data = read_json(path)
        if data is None:
            return None
        try:
            return StageRecord(
                key=str(data["key"]),
                outputs={str(k): str(v) for k, v in data["outputs"].items()},
                run_id=str(data["run_id"]),
                finished_at=str(data["finished_at"]),
            )
        except (KeyError, TypeError, AttributeError):
            raise StateCorruptError(
                f"ledger file {path} is missing fields",
                hint=f"delete {path}; the stage will look at the real world again",
            ) from None

    def save_stage_record(self, pipeline: str, profile: str, stage: str, record: StageRecord) -> None:
        write_json(
            self._record_path(pipeline, profile, stage),
            {"key": record.key, "outputs": record.outputs, "run_id": record.run_id, "finished_at": record.finished_at},
        )

    def forget_stage(self, pipeline: str, profile: str, stage: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._record_path(pipeline, profile, stage).unlink()

    # --- events ---
    def append_event(self, event: Mapping[str, Any]) -> None:
        line = json.dumps({"ts": now_iso(), **event}, sort_keys=True) + "\n"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with (self.dir / "events.jsonl").open("a") as fh:
                fh.write(line)
        except OSError as exc:
            raise _unwritable(self.dir / "events.jsonl", exc) from None

    def events(self) -> Iterator[dict[str, Any]]:
        path = self.dir / "events.jsonl"
        if not path.is_file():
            return
        with path.open() as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    raise StateCorruptError(
                        f"{path} line {number} is not valid JSON",
                        hint=f"remove that line (or the file) from {path}; it is a log, nothing depends on it",
                    ) from None

    # --- environments ---
    def _env_path(self, pipeline: str, env: str) -> Path:
        return self.dir / "environments" / pipeline / f"{env}.json"

    def releases(self, pipeline: str, env: str) -> list[Release]:
        path = self._env_path(pipeline, env)
        data = read_json(path)
        if data is None:
            return []
        try:
            return [Release(**item) for item in data["releases"]]
        except (KeyError, TypeError):
            raise StateCorruptError(
                f"ledger file {path} is malformed", hint=f"delete {path}; release history restarts from now"
            ) from None

    def record_release(
        self, pipeline: str, env: str, image: str, run_id: str, status: str, *, store: ReleaseStore | None = None
    ) -> None:
        """Append a release, here and to the environment's durable store; the previous 'live' one
        becomes 'known-good' when the new one is live."""
        release = Release(image=image, run_id=run_id, at=now_iso(), status=status)
        history = self.releases(pipeline, env)
        if status == "live":
            history = [Release(r.image, r.run_id, r.at, "known-good") if r.status == "live" else r for r in history]
        history.append(release)
        write_json(self._env_path(pipeline, env), {"releases": [r.__dict__ for r in history[-200:]]})
        if store is not None:
            store.append(release)

    def history(self, pipeline: str, env: str, store: ReleaseStore | None = None) -> ReleaseHistory:
        """The environment's releases: from its durable store when it has one that answers (the real
        world wins), else from this machine's ledger."""
        if store is not None:
            durable = store.read()
            if durable is not None:
                return ReleaseHistory(tuple(durable), store.where)
        return ReleaseHistory(tuple(self.releases(pipeline, env)))

    def known_good(self, pipeline: str, env: str) -> list[str]:
        """Images that served and verified in `env` by this ledger, newest first, without repeats."""
        return self.history(pipeline, env).known_good()

    # --- flags ---
    def _flags_path(self, pipeline: str, env: str) -> Path:
        return self.dir / "flags" / pipeline / f"{env}.jsonl"

    def record_flag_change(self, pipeline: str, env: str, change: Mapping[str, Any]) -> None:
        """One change of a flag (who, when, from, to, why), appended to the environment's flag
        history here and to the events; the store keeps its own copy where the environment lives."""
        entry = {"pipeline": pipeline, "environment": env, **change}
        path = self._flags_path(pipeline, env)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as fh:
                fh.write(json.dumps(entry, sort_keys=True) + "\n")
        except OSError as exc:
            raise _unwritable(path, exc) from None
        self.append_event({"event": "flag-change", **entry})

    def flag_changes(self, pipeline: str, env: str) -> list[dict[str, Any]]:
        """This machine's record of the environment's flag changes, oldest first."""
        path = self._flags_path(pipeline, env)
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # --- locks ---
    def lock(
        self, pipeline: str, env: str, *, purpose: str, run_id: str | None = None, manifest: Path | None = None
    ) -> Lock:
        """The lock of one pipeline and environment. `run_id` and `manifest` say which run holds
        it, so a run that takes it over from a dead holder can finish that run's records."""
        extra = {"run_id": run_id, "manifest": str(manifest) if manifest else None}
        return Lock(
            self.dir / "locks" / f"{pipeline}.{env}.lock",
            purpose=purpose,
            holder={k: v for k, v in extra.items() if v},
        )


class Lock(FileLock):
    """The lock of one pipeline and environment: one live run at a time, refused at once (naming
    the holder) while another run holds it; a lock whose holder was killed is taken over, and
    `took_over` says what it held (see pipeline/locks.py)."""

    def __init__(self, path: Path, *, purpose: str, holder: Mapping[str, str] | None = None) -> None:
        super().__init__(
            path,
            purpose=purpose,
            holder=holder,
            wait=0.0,
            hint="wait for that run to finish (or stop it); a lock whose process died is taken over automatically",
        )

    def acquire(self) -> Lock:
        try:
            return super().acquire()
        except OSError as exc:
            raise _unwritable(self.path, exc) from None
