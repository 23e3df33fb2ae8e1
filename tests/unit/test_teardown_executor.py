"""The teardown finishes what a signal interrupted: found by the signal stress test, a SIGINT that
landed while the teardown was removing the test stack (its containers gone, its network not yet)
left the network behind, because the teardown had nothing to do when interrupted."""

from __future__ import annotations

from pathlib import Path

from pipeline import Bake, Environment, Pipeline, Teardown, TestStack
from pipeline.executors.base import StageContext
from pipeline.executors.teardown import TeardownExecutor
from pipeline.ledger import Ledger
from pipeline.testing import FakeEngines, FakeStackEngine


def _context(tmp_path: Path, stacks: FakeStackEngine, *, keep: bool = False) -> StageContext:
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "images" / "web.pkr.hcl").write_text("source {}\n")
    environments = [
        Environment(name="test", ephemeral=True),
        Environment(name="production", template="web.yaml"),
    ]
    with Pipeline("shop", environments=environments) as p:
        bake = Bake(name="bake", template="images/web.pkr.hcl")
        created = TestStack(name="test-stack", environment="test", like="production", image=bake)
        teardown = Teardown(name="teardown", stack=created)
    return StageContext(
        pipeline=p.spec,
        stage=teardown,
        root=tmp_path,
        run_id="run-1",
        run_dir=tmp_path / "run",
        profile="local",
        upstream={"test-stack": {"stack": "shop-test-run-1"}},
        ledger=Ledger(tmp_path),
        engines=FakeEngines(stacks),
        keep=keep,
    )


def test_an_interrupted_teardown_finishes_the_deletion(tmp_path: Path) -> None:
    stacks = FakeStackEngine(image=None, stacks_by_name={"shop-test-run-1": "shop:1"})
    ctx = _context(tmp_path, stacks)
    assert isinstance(ctx.stage, Teardown)
    TeardownExecutor(ctx.stage).interrupted(ctx)
    assert stacks.deleted == ["shop-test-run-1"]
    assert not stacks.describe("shop-test-run-1").exists
    assert ctx.partial_outputs == {"deleted": "shop-test-run-1"}


def test_an_interrupted_teardown_keeps_a_stack_kept_with_keep(tmp_path: Path) -> None:
    stacks = FakeStackEngine(image=None, stacks_by_name={"shop-test-run-1": "shop:1"})
    ctx = _context(tmp_path, stacks, keep=True)
    assert isinstance(ctx.stage, Teardown)
    TeardownExecutor(ctx.stage).interrupted(ctx)
    assert stacks.deleted == []
