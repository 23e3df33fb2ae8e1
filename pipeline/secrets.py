"""Secret values: read from the environment when a stage starts, masked everywhere we write text."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from pipeline.errors import BadInputError
from pipeline.model import Secret

MASK = "***"
_MIN_MASKED = 3  # shorter values would mask ordinary text; they are refused instead


class MissingSecretError(BadInputError):
    pass


def resolve(secrets: Iterable[Secret], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{name: value} for each secret, from the environment. Missing or too-short values are errors."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    missing = []
    for secret in secrets:
        value = environ.get(secret.name)
        if value is None or value == "":
            missing.append(secret.name)
        elif len(value) < _MIN_MASKED:
            raise MissingSecretError(
                f"secret {secret.name} is shorter than {_MIN_MASKED} characters, so it could not be masked in logs",
                hint=f"use a real secret value for {secret.name}",
            )
        else:
            values[secret.name] = value
    if missing:
        names = ", ".join(missing)
        raise MissingSecretError(
            f"secret{'s' if len(missing) > 1 else ''} {names} not set in the environment",
            hint=f"export {missing[0]}=... before running (on CI the rendered config binds it from the secret store)",
        )
    return values


class Masker:
    """Replaces every known secret value in a text with ***."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: list[str] = []
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        for value in values:
            if value and len(value) >= _MIN_MASKED and value not in self._values:
                self._values.append(value)
        # Longest first, so a secret containing another is masked whole.
        self._values.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text
