"""`Flag(name, default, description)`: a feature flag the pipeline declares, and the checks of the
values environments and stages give it (unknown flag, wrong type).

    with Pipeline("shop", flags=[Flag(name="new-checkout", default=False)],
                  environments=[Environment(name="production", flags={"new-checkout": False})]):
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.authoring import did_you_mean, remember_location
from pipeline.errors import Problem
from pipeline.model import DeclaredFlag, FlagValue, Name, Spec


class Flag(Spec):
    """A feature flag: released by moving its value in the environment's store, not by a deploy.

    The type of `default` is the flag's type; every value given to it (an environment's, a
    FlagRollout's, `pipeline flag set`'s) must be of that type."""

    name: Name
    """The flag's key in every environment's store (what the application asks OpenFeature for)."""
    default: FlagValue = False
    """The value every user gets unless the store says otherwise (also without a store)."""
    description: str = ""
    """What the flag turns on, for people reading `pipeline flag list`."""

    def model_post_init(self, context: Any, /) -> None:
        remember_location(self)

    @property
    def type_name(self) -> str:
        return type_name(self.default)


def type_name(value: Any) -> str:
    """'boolean', 'integer', 'number' or 'string' (bool before int: True is an int in Python)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def same_type(value: Any, default: Any) -> bool:
    """Whether `value` fits a flag whose default is `default` (an integer fits a number flag)."""
    kind, wanted = type_name(value), type_name(default)
    return kind == wanted or (wanted == "number" and kind == "integer")


def parse_value(text: str, flag: Flag) -> FlagValue:
    """A value typed on the command line, as the flag's type (ValueError saying what it takes)."""
    kind = flag.type_name
    if kind == "boolean":
        lowered = text.strip().lower()
        if lowered in ("true", "on", "1", "yes"):
            return True
        if lowered in ("false", "off", "0", "no"):
            return False
        raise ValueError(f"flag {flag.name!r} is a boolean: give true/false (or on/off), not {text!r}")
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"flag {flag.name!r} is an integer: {text!r} is not a whole number") from None
    if kind == "number":
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"flag {flag.name!r} is a number: {text!r} is not one") from None
    return text


def check_flag_values(
    values: Mapping[str, Any], flags: Iterable[DeclaredFlag], where: str, *, stage: str | None = None
) -> list[Problem]:
    """Problems of `values` ({flag: value}) against the declared flags: unknown names, wrong types."""
    declared = {f.name: f for f in flags}
    problems: list[Problem] = []
    for name, value in values.items():
        flag = declared.get(name)
        if flag is None:
            known = f"; declared flags: {', '.join(declared)}" if declared else ""
            problems.append(
                Problem(
                    f"unknown flag {name!r}{did_you_mean(name, list(declared))}{known}; declare it in "
                    f"Pipeline(flags=[Flag(name={name!r}, default=...)])",
                    f"{where}[{name!r}]",
                    stage=stage,
                )
            )
        elif not same_type(value, flag.default):
            problems.append(
                Problem(
                    f"flag {name!r} is a {flag.type_name} (its default is {flag.default!r}); "
                    f"{value!r} is a {type_name(value)}",
                    f"{where}[{name!r}]",
                    stage=stage,
                )
            )
    return problems


def check_flags(flags: Iterable[Flag]) -> list[Problem]:
    """Problems of the declarations themselves: a name used twice."""
    names = [f.name for f in flags]
    return [
        Problem(f"flag name {dup!r} is declared more than once", "flags")
        for dup in sorted({n for n in names if names.count(n) > 1})
    ]


__all__ = ["Flag", "FlagValue", "check_flag_values", "check_flags", "parse_value", "same_type", "type_name"]
