"""One flag's state in the environment's store, and consistent bucketing by a targeting key.

Standard library only: the reference image's app imports this module (a copy of it ships in
images/web/app/lib/), as does the OpenFeature provider.

A flag's state is one JSON string under `pipeline:flag:<name>` (one SET replaces it atomically, so
a replica never serves half a change):

    {"value": true, "percent": 10, "base": false, "at": "...", "by": "ana@laptop"}

A user whose bucket (0..9999, from sha256 of "<flag>:<targeting key>") is below percent x 100
gets `value`, everyone else `base`. The bucket depends only on the flag and the key, so a user
who is in at 10 % stays in at 50 % and 100 %: one user keeps one variant for a whole step.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

FLAG_PREFIX = "pipeline:flag:"
"""Each flag's state: FLAG_PREFIX + name."""
HISTORY_KEY = "pipeline:flags:history"
"""Every change, newest first (a list of JSON objects), kept where the environment lives."""
ROLLOUTS_KEY = "pipeline:flags:rollouts"
"""The flags whose rollout is in flight (a set): what the alert switches off."""
ALERT_KEY = "pipeline:flags:alert"
"""Set (JSON: when, by) while an alert holds every rollout off."""
BUCKETS = 10_000
VARIANT_ON = "on"
"""The variant of a user who gets the flag's rollout value."""
VARIANT_OFF = "off"
"""The variant of a user who gets the base value (outside the rollout, or the flag is off)."""


def bucket(flag: str, targeting_key: str) -> int:
    """The user's bucket for this flag, 0..BUCKETS-1: stable across processes and machines."""
    digest = hashlib.sha256(f"{flag}:{targeting_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_rollout(flag: str, targeting_key: str | None, percent: float) -> bool | None:
    """Whether the user gets the rollout value; None when it depends on a key the caller lacks."""
    if percent >= 100:
        return True
    if percent <= 0:
        return False
    if not targeting_key:
        return None
    return bucket(flag, targeting_key) < round(percent * BUCKETS / 100)


@dataclass(frozen=True)
class FlagState:
    """What the store says about one flag."""

    value: Any
    """What users in the rollout get."""
    percent: float = 100.0
    """Share of users (by targeting key) in the rollout."""
    base: Any = None
    """What the others get; None means the flag's default."""
    at: str = ""
    by: str = ""

    def to_json(self) -> str:
        data = {"value": self.value, "percent": self.percent, "base": self.base, "at": self.at, "by": self.by}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> FlagState:
        """Parse a stored state (ValueError when it is not one)."""
        data = json.loads(text)
        if not isinstance(data, dict) or "value" not in data:
            raise ValueError(f"not a flag state: {text!r}")
        return cls(
            value=data["value"],
            percent=float(data.get("percent", 100.0)),
            base=data.get("base"),
            at=str(data.get("at", "")),
            by=str(data.get("by", "")),
        )

    def resolve(self, flag: str, targeting_key: str | None, default: Any) -> tuple[Any, str, bool]:
        """(value, variant, split) for one user; `split` says whether the bucketing decided it.
        Without a targeting key, a partial rollout gives the base value."""
        base = default if self.base is None else self.base
        inside = in_rollout(flag, targeting_key, self.percent)
        split = 0 < self.percent < 100
        if inside:
            return self.value, VARIANT_ON, split
        return base, VARIANT_OFF, split

    def describe(self) -> str:
        if self.percent >= 100:
            return json.dumps(self.value)
        if self.percent <= 0:
            return json.dumps(self.base) if self.base is not None else "default"
        base = json.dumps(self.base) if self.base is not None else "default"
        return f"{json.dumps(self.value)} for {self.percent:g}% (else {base})"


__all__ = [
    "ALERT_KEY",
    "BUCKETS",
    "FLAG_PREFIX",
    "HISTORY_KEY",
    "ROLLOUTS_KEY",
    "VARIANT_OFF",
    "VARIANT_ON",
    "FlagState",
    "bucket",
    "in_rollout",
]
