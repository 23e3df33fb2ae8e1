"""A project's Alembic script folder, read as two branches, and a database brought forward on one.

The folder is a plain Alembic one (env.py, versions/) with no alembic.ini: the Migrate stage gives
Alembic its configuration. Every revision belongs to the `expand` or the `contract` branch: the
revision that starts a branch carries `branch_labels = ("expand",)` (or `("contract",)`), the
others descend from it. A contract revision names the expand revision it needs with
`depends_on`. Alembic's version table is the truth of what a database has: a re-run after a crash
applies exactly what is missing (each revision commits with its version row, in one transaction).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import BadInputError, SchemaError, ToolMissingError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import Script, ScriptDirectory

BRANCHES = ("expand", "contract")
LOCK_TIMEOUT = "5s"
"""A migration waits at most this long for a table lock, then fails (and is retried by a re-run)
instead of queueing every request behind it."""


@dataclass(frozen=True)
class Revision:
    """One migration script."""

    id: str
    branch: str
    """'expand' or 'contract'."""
    path: Path
    down: tuple[str, ...]
    depends_on: tuple[str, ...]
    doc: str


@dataclass(frozen=True)
class Applied:
    """What an upgrade did."""

    before: tuple[str, ...]
    after: tuple[str, ...]
    applied: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass
class Migrations:
    """The migrations of one project (`folder`: Alembic's script location)."""

    folder: Path
    stage: str = "migrate"
    """Names the fault checkpoints (`migrate:<stage>:<revision>:uncommitted`)."""
    on_event: Callable[[str], None] = field(default=lambda text: None)

    def config(self, url: str | None = None) -> Config:
        try:
            from alembic.config import Config
        except ImportError as exc:  # pragma: no cover - the schema extra is missing
            raise ToolMissingError(
                f"Alembic is not installed ({exc})", hint="pip install 'pipeline-as-code[schema]'"
            ) from None
        if not (self.folder / "env.py").is_file():
            raise BadInputError(
                f"{self.folder} is not an Alembic script folder (no env.py)",
                hint="Database(migrations=...) names the folder with env.py and versions/ (docs/schema.md)",
            )
        cfg = Config()
        cfg.set_main_option("script_location", str(self.folder))
        if url is not None:
            cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        cfg.attributes["pipeline_stage"] = self.stage
        cfg.attributes["pipeline_on_event"] = self.on_event
        return cfg

    def scripts(self) -> ScriptDirectory:
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        try:
            return ScriptDirectory.from_config(self.config())
        except CommandError as exc:
            raise BadInputError(f"{self.folder}: {exc}") from None

    def revisions(self) -> list[Revision]:
        """Every revision, oldest first, with its branch (BadInputError for one in no branch)."""
        from alembic.util import CommandError

        scripts = self.scripts()
        try:
            found = list(reversed(list(scripts.walk_revisions())))
        except CommandError as exc:
            raise BadInputError(f"{self.folder}: {exc}") from None
        by_id = {s.revision: s for s in found}
        return [self._revision(s, by_id) for s in found]

    def _revision(self, script: Script, by_id: dict[str, Script]) -> Revision:
        branch = _branch_of(script, by_id)
        if branch is None:
            raise BadInputError(
                f"{script.path}: revision {script.revision} belongs to neither the expand nor the contract branch",
                hint='the first revision of each branch says branch_labels = ("expand",) or ("contract",); '
                "every other revision descends from one of them (docs/schema.md)",
            )
        return Revision(
            id=script.revision,
            branch=branch,
            path=Path(script.path),
            down=_tuple(script.down_revision),
            depends_on=_tuple(script.dependencies),
            doc=(script.doc or "").strip(),
        )

    def branch(self, phase: str) -> list[Revision]:
        return [r for r in self.revisions() if r.branch == phase]

    def heads(self) -> dict[str, str]:
        """{branch: head revision} of each branch that has revisions."""
        heads: dict[str, str] = {}
        for revision in self.revisions():  # oldest first: the last one of a branch is its head
            heads[revision.branch] = revision.id
        return heads

    def known(self, revisions: tuple[str, ...]) -> bool:
        ids = {r.id for r in self.revisions()}
        return all(r in ids for r in revisions)

    # --- a database ---
    def current(self, url: str) -> tuple[str, ...]:
        """The revisions the database is at (Alembic's version table; empty: none)."""
        with _connection(url) as connection:
            from alembic.runtime.migration import MigrationContext

            return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))

    def upgrade(self, url: str, phase: str) -> Applied:
        """Apply every revision of `phase`'s branch (and what it depends on) that the database lacks."""
        import time

        from alembic import command
        from alembic.util import CommandError

        if phase not in BRANCHES:
            raise BadInputError(f"phase {phase!r} is not one of {', '.join(BRANCHES)}")
        before = self.current(url)
        if phase not in self.heads():
            return Applied(before=before, after=before)
        applied: list[str] = []
        cfg = self.config(url)
        cfg.attributes["pipeline_applied"] = applied
        started = time.monotonic()
        try:
            command.upgrade(cfg, f"{phase}@head")
        except CommandError as exc:
            raise SchemaError(f"alembic could not upgrade {phase}@head: {exc}") from None
        except Exception as exc:
            from sqlalchemy.exc import DBAPIError

            if not isinstance(exc, DBAPIError):
                raise
            left = self.pending(url, phase)
            failed = left[0].id if left else "?"
            reason = str(exc.orig or exc).strip().splitlines()[0]
            raise SchemaError(
                f"revision {failed} failed and was rolled back (the database stays at "
                f"{', '.join(self.current(url)) or 'no revision'}): {reason}",
                hint="fix the migration; a re-run applies what is missing (Alembic's version table is the truth)",
            ) from None
        return Applied(
            before=before, after=self.current(url), applied=tuple(applied), seconds=time.monotonic() - started
        )

    def pending(self, url: str, phase: str) -> list[Revision]:
        """Revisions of `phase`'s branch (and what they depend on) the database does not have yet."""
        scripts = self.scripts()
        current = set(self.current(url))
        if phase not in self.heads():
            return []
        have: set[str] = set()
        for head in current:
            have |= {s.revision for s in scripts.iterate_revisions(head, "base")}
        wanted = [s.revision for s in scripts.iterate_revisions(f"{phase}@head", "base")]
        by_id = {r.id: r for r in self.revisions()}
        return [by_id[r] for r in reversed(wanted) if r not in have]


def sqlalchemy_url(url: str) -> str:
    """A postgresql:// URL as SQLAlchemy takes it with psycopg 3."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


@contextmanager
def _connection(url: str) -> Iterator[Any]:
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    except OperationalError as exc:
        raise SchemaError(f"cannot reach the database: {str(exc.orig or exc).strip().splitlines()[0]}") from None
    finally:
        engine.dispose()


def _branch_of(script: Script, by_id: dict[str, Script]) -> str | None:
    seen: set[str] = set()
    todo = [script]
    while todo:
        current = todo.pop()
        if current.revision in seen:
            continue
        seen.add(current.revision)
        labels = set(current.branch_labels or ())
        for branch in BRANCHES:
            if branch in labels:
                return branch
        todo += [by_id[d] for d in _tuple(current.down_revision) if d in by_id]
    return None


def _tuple(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


__all__ = ["BRANCHES", "LOCK_TIMEOUT", "Applied", "Migrations", "Revision", "sqlalchemy_url"]
