"""How flags are shown: the table of `pipeline flag list ENV`, also under each environment of
`pipeline status`."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from pipeline.flags.overview import FlagsOverview


def flags_table(flags: FlagsOverview, title: str) -> Table:
    table = Table(title=f"{title} ({escape(flags.where)})", title_justify="left")
    for column in ("flag", "type", "serving", "definition", "changed", "by"):
        table.add_column(column, overflow="fold")
    for row in flags.rows:
        serving = row.serving if row.in_store else f"{row.serving} (not in the store)"
        if row.rollout:
            serving += " [rollout in flight]"
        table.add_row(row.name, row.type_name, escape(serving), escape(row.definition), row.changed, escape(row.by))
    return table


def alert_line(flags: FlagsOverview) -> str | None:
    """The line saying an alert holds every rollout off (None when none does)."""
    if flags.alert is None:
        return None
    return f"[red]alert[/] raised at {escape(str(flags.alert.get('at')))} by {escape(str(flags.alert.get('by')))}"
