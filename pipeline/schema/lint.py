"""Unsafe migrations caught before they run: squawk (squawk-cli, a linter for PostgreSQL
migrations) reads each revision's SQL, rendered offline by sql.py.

Why squawk rather than Alembic's own checks: Alembic checks that the models and the migrations
agree (`alembic check`), not what a statement does to a live table. squawk knows PostgreSQL's
locks: an index built without CONCURRENTLY, a column type change, a constraint validated in the
same statement, a NOT NULL column without a default, a missing lock timeout. And it flags drops
and renames, which break the release still running: errors in the `expand` branch, expected in
the `contract` branch.

A finding names the migration file and the line of the `op.*` call that emitted the statement.
A revision may silence a rule it has a reason for with a module-level
`lint_ignore = ("require-concurrent-index-creation",)`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import MigrationLintError, ToolMissingError
from pipeline.schema.migrations import Migrations, Revision
from pipeline.schema.sql import lint_script, revision_sql

IGNORED = (
    "prefer-robust-stmts",  # each revision runs in one transaction with its version row: a re-run converges
    "require-statement-timeout",  # backfills may take long; the lock timeout is what protects requests
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-text-field",
    "transaction-nesting",
)
"""squawk rules that say nothing about a live schema change made the Migrate stage's way."""
BREAKS_THE_RUNNING_RELEASE = (
    "ban-drop-column",
    "ban-drop-table",
    "ban-drop-database",
    "renaming-column",
    "renaming-table",
    "ban-truncate-cascade",
)
"""Errors in the expand branch (the previous release still reads what they remove); expected in
the contract branch, which runs only once no replica of an older release runs."""


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    revision: str
    branch: str
    rule: str
    message: str
    statement: str

    def describe(self, root: Path | None = None) -> str:
        where = self.path
        if root is not None and self.path.is_relative_to(root):
            where = self.path.relative_to(root)
        first = self.statement.splitlines()[0] if self.statement else ""
        return f"{where}:{self.line}: [{self.rule}] {self.message} ({self.branch} revision {self.revision}: {first})"


def squawk() -> str:
    """The squawk executable (next to this Python first: the schema extra installs it there)."""
    beside = Path(sys.executable).parent / "squawk"
    if beside.is_file():
        return str(beside)
    found = shutil.which("squawk")
    if found is None:
        raise ToolMissingError(
            "squawk (the migration linter) is not installed", hint="pip install 'pipeline-as-code[schema]'"
        )
    return found


def lint(migrations: Migrations, revisions: list[Revision] | None = None) -> list[Finding]:
    """Every finding in `revisions` (default: all of them), in order."""
    findings: list[Finding] = []
    for revision in revisions if revisions is not None else migrations.revisions():
        findings += _lint_revision(migrations, revision)
    return findings


_checked: dict[str, list[Finding]] = {}
"""Findings by the content of a migrations folder: every Migrate stage of a run lints the same one."""


def check(migrations: Migrations, *, root: Path | None = None) -> None:
    """Raise MigrationLintError (exit 2) naming each finding's file and line, if there is one."""
    from pipeline.hashing import digest, hash_paths

    key = digest({"folder": str(migrations.folder), "files": hash_paths(migrations.folder, ["."])})
    if key not in _checked:
        _checked[key] = lint(migrations)
    findings = _checked[key]
    if findings:
        shown = "\n  - ".join(f.describe(root) for f in findings)
        raise MigrationLintError(
            f"{len(findings)} unsafe migration statement{'s' if len(findings) != 1 else ''} "
            f"in {migrations.folder}:\n  - {shown}",
            hint="an expand only adds (new tables, nullable columns, backfills, indexes built CONCURRENTLY); "
            "drops and renames go to the contract branch; a rule with a reason to break goes in the "
            "revision's lint_ignore (docs/schema.md)",
        )


def _lint_revision(migrations: Migrations, revision: Revision) -> list[Finding]:
    statements = revision_sql(migrations, revision)
    if not statements:
        return []
    text, owner = lint_script(statements)
    ignored = set(IGNORED) | set(_ignored_by(migrations, revision))
    if revision.branch == "contract":
        ignored |= set(BREAKS_THE_RUNNING_RELEASE)
    with tempfile.TemporaryDirectory(prefix="pipeline-lint-") as tmp:
        path = Path(tmp) / f"{revision.id}.sql"
        path.write_text(text)
        command = [squawk(), "--reporter", "json", "--assume-in-transaction", "--no-error-on-unmatched-pattern"]
        command += [arg for rule in sorted(ignored) for arg in ("--exclude", rule)]
        result = subprocess.run([*command, str(path)], capture_output=True, text=True, check=False)
    try:
        reported = json.loads(result.stdout or "[]")
    except ValueError:
        raise ToolMissingError(
            f"squawk did not answer in JSON (exit {result.returncode}): {(result.stderr or result.stdout)[-500:]}",
            hint="pip install 'pipeline-as-code[schema]' (squawk-cli >= 2)",
        ) from None
    findings = []
    for item in reported:
        rule = str(item.get("rule_name", ""))
        if rule in ignored:
            continue
        statement = owner.get(int(item.get("line", -1)))
        findings.append(
            Finding(
                path=revision.path,
                line=statement.line if statement is not None else 0,
                revision=revision.id,
                branch=revision.branch,
                rule=rule,
                message=str(item.get("message", "")).strip(),
                statement=statement.sql if statement is not None else "",
            )
        )
    return findings


def _ignored_by(migrations: Migrations, revision: Revision) -> tuple[str, ...]:
    script = migrations.scripts().get_revision(revision.id)
    value = getattr(script.module, "lint_ignore", ()) if script is not None else ()
    return tuple(str(v) for v in value) if isinstance(value, list | tuple) else ()


__all__ = ["BREAKS_THE_RUNNING_RELEASE", "IGNORED", "Finding", "check", "lint", "squawk"]
