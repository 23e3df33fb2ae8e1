"""An environment's release history read from its template's git history (the aws profile).

Every promote commits the image into the template with trailers (`Pipeline`, `Environment`,
`Image`, `Previous-Image`, `Run`, `Release: promote|rollback`), and a promote that fails after its
commit reverts it with a new commit (`Reverts: <sha>`). So a fresh clone on a laptop knows what a
CI run released, and which image failed, without this machine's ledger:

- a promote or rollback commit: its image went live;
- a rollback commit: the image it replaced (`Previous-Image`) was withdrawn ('failed');
- a revert of a promote commit: that image failed (it never counted as live); the one before it
  is live again.

Appending is a no-op: the commits are the record. A shallow clone (CI checkouts often are) holds
only the newest commits; the store says so in `where`.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipeline.ledger import Release

_RECORD = "\x1e"
_FIELD = "\x1f"


@dataclass(frozen=True)
class _Commit:
    sha: str
    at: str
    trailers: dict[str, str] = field(default_factory=dict)


def parse_trailers(message: str) -> dict[str, str]:
    """The `Key: value` lines of a commit message's last paragraph."""
    paragraphs = [p for p in message.strip().split("\n\n") if p.strip()]
    if len(paragraphs) < 2:
        return {}
    found: dict[str, str] = {}
    for line in paragraphs[-1].splitlines():
        key, sep, value = line.partition(": ")
        if not sep or not key or " " in key:
            return {}
        found[key] = value.strip()
    return found


def releases_from_commits(commits: list[_Commit], pipeline: str, environment: str) -> list[Release]:
    """The releases the commits (oldest first) record for one pipeline and environment."""
    by_sha = {c.sha: c for c in commits}
    reverted_shas = {c.trailers["Reverts"] for c in commits if c.trailers.get("Reverts")}
    releases: list[Release] = []
    for commit in commits:
        t = commit.trailers
        if t.get("Pipeline") != pipeline:
            continue
        run = t.get("Run", "")
        reverted = by_sha.get(t.get("Reverts", ""))
        if reverted is not None:
            original = reverted.trailers
            if original.get("Environment") != environment or not original.get("Image"):
                continue
            releases.append(Release(original["Image"], run, commit.at, "failed"))
            if original.get("Previous-Image"):
                releases.append(Release(original["Previous-Image"], run, commit.at, "live"))
            continue
        if t.get("Environment") != environment or not t.get("Image") or commit.sha in reverted_shas:
            continue  # a promote reverted later never went live: its revert records the failure
        if t.get("Release") == "rollback" and t.get("Previous-Image"):
            releases.append(Release(t["Previous-Image"], run, commit.at, "failed"))
        releases.append(Release(t["Image"], run, commit.at, "live"))
    return _known_good_before_live(releases)


def _known_good_before_live(releases: list[Release]) -> list[Release]:
    """As the ledger keeps them: a live release becomes known-good when a later one goes live."""
    out: list[Release] = []
    for release in releases:
        if release.status == "live":
            out = [Release(r.image, r.run_id, r.at, "known-good") if r.status == "live" else r for r in out]
        out.append(release)
    return out


@dataclass
class GitReleaseStore:
    """The release record of one environment in the git history of its template."""

    root: Path
    template: str
    pipeline: str
    environment: str
    timeout: float = 30.0

    @property
    def where(self) -> str:
        return f"git history of {self.template}" + (
            " (a shallow clone: older releases missing)" if self._shallow() else ""
        )

    def read(self) -> list[Release] | None:
        """None when this is not a git checkout (or git is missing): the ledger speaks then."""
        listing = self._git("log", "--reverse", f"--format=%H{_FIELD}%ct{_FIELD}%B{_RECORD}", "--", self.template)
        if listing is None:
            return None
        commits = []
        for record in listing.split(_RECORD):
            if not record.strip():
                continue
            sha, _, rest = record.strip("\n").partition(_FIELD)
            stamp, _, message = rest.partition(_FIELD)
            at = datetime.fromtimestamp(int(stamp or 0), UTC).isoformat(timespec="seconds")
            commits.append(_Commit(sha.strip(), at, parse_trailers(message)))
        # A revert whose reverted commit is outside a shallow history is skipped.
        return releases_from_commits(commits, self.pipeline, self.environment)

    def append(self, release: Release) -> None:
        """The promote and rollback commits are the record: nothing to add."""

    def _shallow(self) -> bool:
        return (self._git("rev-parse", "--is-shallow-repository") or "").strip() == "true"

    def _git(self, *args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=self.root, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None
