"""What the stack stages do about a stack's database: a test stack starts from production's data
shape, seeded from a snapshot of production's database (masked as the definition says)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.executors._rehearsal import engine
from pipeline.executors.base import StageContext

if TYPE_CHECKING:
    from pipeline.engines.stack import StackEngine
    from pipeline.model import Environment


def seed_database(
    ctx: StageContext, like: Environment, stack: str, fresh: bool, stack_engine: StackEngine
) -> dict[str, str]:
    """The parameters that make the test stack's database a copy of `like`'s, taken now as the
    snapshot `stack` (deleted with the test stack). {} when `like` has no database yet."""
    source = like.stack_name(ctx.pipeline.name)
    like_engine = engine(ctx, like)
    if fresh or like_engine.database(source) is None:
        ctx.notes.append(f"{like.name} has no database yet: the test stack's database starts empty")
        return stack_engine.database_parameters(None)
    ctx.step(f"taking a snapshot of {source}'s database")
    snapshot = like_engine.snapshot_database(source, stack, on_event=ctx.log)
    database = ctx.pipeline.database_of(like)
    masked = ", ".join(s.column for s in database.sensitive) if database is not None else ""
    ctx.notes.append(
        f"the test stack's database starts from snapshot {snapshot} of {source}"
        + (f" (masked: {masked})" if masked else "")
    )
    return stack_engine.database_parameters(snapshot)


__all__ = ["seed_database"]
