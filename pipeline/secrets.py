"""Secret values: read from the environment when a stage starts, masked everywhere we write text."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from pipeline.errors import MissingSecretError
from pipeline.model import Secret

MASK = "***"
MIN_SECRET_LENGTH = 4
"""Shorter values would mask every occurrence of a common string (every 'a1b' in every log); they
are refused (at validate when the variable is set, and when a stage starts)."""


def resolve(secrets: Iterable[Secret], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{name: value} for each secret, from the environment. Missing or too-short values are errors."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    missing = []
    for secret in secrets:
        value = environ.get(secret.name)
        if value is None or value == "":
            missing.append(secret.name)
        elif len(value) < MIN_SECRET_LENGTH:
            raise short_secret(secret.name)
        else:
            values[secret.name] = value
    if missing:
        names = ", ".join(missing)
        raise MissingSecretError(
            f"secret{'s' if len(missing) > 1 else ''} {names} not set in the environment",
            hint=f"export {missing[0]}=... before running (on CI the rendered config binds it from the secret store)",
        )
    return values


def short_secret(name: str) -> MissingSecretError:
    return MissingSecretError(
        f"secret {name} is shorter than {MIN_SECRET_LENGTH} characters: it could not be masked in logs without "
        "masking ordinary text too",
        hint=f"use a real secret value for {name} (an empty or placeholder value is a configuration error)",
    )


def check_lengths(secrets: Iterable[Secret], environ: Mapping[str, str] | None = None) -> None:
    """Refuse (exit 2) the secrets that are set, but too short to mask (`pipeline validate`)."""
    environ = os.environ if environ is None else environ
    for secret in secrets:
        value = environ.get(secret.name)
        if value and len(value) < MIN_SECRET_LENGTH:
            raise short_secret(secret.name)


def maskable_parts(value: str) -> list[str]:
    """What to mask for one secret: the whole value, and each of its lines (a PEM key printed by a
    command reaches a log line by line, as GitHub Actions masks it); lines too short to mask alone
    (a blank line, a lone '=') are left out."""
    parts = [value] if len(value) >= MIN_SECRET_LENGTH else []
    if "\n" in value or "\r" in value:
        for line in value.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            stripped = line.strip()
            if len(stripped) >= MIN_SECRET_LENGTH:
                parts.append(stripped)
    return parts


class Masker:
    """Replaces every known secret value (and every line of a multi-line one) in a text with ***."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: list[str] = []
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        for value in values:
            for part in maskable_parts(value or ""):
                if part not in self._values:
                    self._values.append(part)
        # Longest first, so a secret containing another is masked whole.
        self._values.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text
