"""A commit promote made (a release record or its revert): plain data that promote's engine returns
and its errors carry (`PromoteRolledBackError`), importing nothing of the package.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CommitInfo:
    """One commit made by promote (a record or a revert)."""

    sha: str
    branch: str
    template: str
    """The template's path relative to the repository root, written with '/'."""
    image: str | None
    """The image the template names after this commit."""
    previous_image: str | None
    """The image it named before."""
    author: str
    message: str
    pushed_to: str | None = None
    """'remote/branch' the commit was pushed to, or None (no remote, or push disabled)."""
