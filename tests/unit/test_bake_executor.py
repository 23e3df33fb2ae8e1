"""The bake executor plans and reports; the image engine does the work. Here the engine is
`pipeline.testing.FakeImageEngine` (images in memory, no Docker, no Packer): these tests pin the
plan (given, reused or built; checked before kept; discarded when the checks fail; a stand-in checked
in place of an engine that cannot check its own images), what is reported, and the journal's life.
The real engines run in tests/integration/test_bake.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline import Bake, Pipeline
from pipeline.errors import StageFailedError
from pipeline.executors.bake import BakeExecutor
from pipeline.executors.base import PlanContext, StageContext
from pipeline.ledger import Ledger
from pipeline.model import Profile
from pipeline.testing import FakeEngines, FakeImageEngine, FakeStackEngine

EXECUTOR = Path(__file__).resolve().parents[2] / "pipeline" / "executors" / "bake.py"


def _project(tmp_path: Path, **fields: object) -> tuple[Pipeline, Bake]:
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "images" / "web.pkr.hcl").write_text("source {}\n")
    with Pipeline("shop") as p:
        bake = Bake(name="bake", template="images/web.pkr.hcl", **fields)
    return p, bake


def _context(tmp_path: Path, images: FakeImageEngine, profile: Profile = "local", **fields: object) -> StageContext:
    p, bake = _project(tmp_path, **fields)
    return StageContext(
        pipeline=p.spec,
        stage=bake,
        root=tmp_path,
        run_id="run-2",
        run_dir=tmp_path / "run",
        profile=profile,
        upstream={},
        ledger=Ledger(tmp_path),
        engines=FakeEngines(FakeStackEngine(), images=images),
    )


def _run(ctx: StageContext) -> dict[str, str]:
    assert isinstance(ctx.stage, Bake)
    return BakeExecutor(ctx.stage).run(ctx)


def _journals(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / ".pipeline" / "bakes").rglob("journal.json"))


def test_a_new_image_is_built_checked_then_kept(tmp_path: Path) -> None:
    images = FakeImageEngine()
    ctx = _context(tmp_path, images, checks="serverspec")
    outputs = _run(ctx)
    assert images.calls == [
        "check_template",
        "sweep",
        "find",
        "build fake.web-1",
        "check fake.web-1",
        "keep fake.web-1 checks=1/1 checks passed",
    ]
    assert outputs == {"image": "fake.web-1", "key": images.kept["fake.web-1"], "packer_run_uuid": "uuid-1"}
    assert len(outputs["key"]) == 32
    assert ctx.notes == ["baked fake.web-1 from fake.web in 1.0 s; 1/1 checks passed in 0.5 s"]
    assert _journals(tmp_path) == []  # done: the journal goes


def test_an_image_baked_earlier_with_the_same_key_is_reused(tmp_path: Path) -> None:
    images = FakeImageEngine()
    first = _run(_context(tmp_path, images, checks="serverspec"))
    images.calls.clear()
    ctx = _context(tmp_path, images, checks="serverspec")
    again = _run(ctx)
    assert images.calls == ["check_template", "sweep", "find"]
    assert again == {"image": first["image"], "key": first["key"], "packer_run_uuid": f"uuid-of-{first['image']}"}
    assert ctx.notes == [f"reused {first['image']}: baked earlier from the same inputs, checks passed then"]


def test_force_bakes_again(tmp_path: Path) -> None:
    images = FakeImageEngine()
    _run(_context(tmp_path, images))
    ctx = _context(tmp_path, images)
    ctx.options = {"force": "1"}
    assert _run(ctx)["image"] == "fake.web-2"


def test_every_input_the_engine_adds_changes_the_key(tmp_path: Path) -> None:
    images = FakeImageEngine()
    first = _run(_context(tmp_path, images))
    images.base_image_id = "sha256:rebuilt"
    assert _run(_context(tmp_path, images))["key"] != first["key"]


def test_failed_checks_discard_the_image_and_keep_the_journal(tmp_path: Path) -> None:
    images = FakeImageEngine(failing={"fake.web-1"})
    ctx = _context(tmp_path, images, checks="serverspec")
    with pytest.raises(StageFailedError, match="test_fake::test_page") as caught:
        _run(ctx)
    assert "the image was removed; nothing is recorded" in caught.value.message
    assert images.calls[-2:] == ["check fake.web-1", "discard fake.web-1"]
    assert "fake.web-1" not in images.present
    assert images.kept == {}
    assert ctx.partial_outputs["key"]  # what the stage got to, for the manifest
    # A failure leaves the journal for the next bake to sweep.
    assert [p.parent.name for p in _journals(tmp_path)] == ["run-2"]


def test_a_given_image_is_checked_and_used_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = FakeImageEngine(present={"shop:handmade"})
    monkeypatch.setenv("PIPELINE_BAKE_USE_IMAGE", "shop:handmade")
    ctx = _context(tmp_path, images, checks="serverspec")
    outputs = _run(ctx)
    assert outputs == {"image": "shop:handmade", "key": "", "packer_run_uuid": ""}
    assert images.calls == ["check_template", "sweep", "given shop:handmade", "check shop:handmade"]
    assert ctx.notes == ["used the given image shop:handmade (not built here); 1/1 checks passed in 0.5 s"]


def test_a_given_image_that_does_not_exist_fails_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_BAKE_USE_IMAGE", "shop:nowhere")
    with pytest.raises(StageFailedError, match="PIPELINE_BAKE_USE_IMAGE"):
        _run(_context(tmp_path, FakeImageEngine()))


def test_the_given_image_of_the_runs_profile_is_used(tmp_path: Path) -> None:
    images = FakeImageEngine(present={"ami-0123"})
    outputs = _run(_context(tmp_path, images, "aws", use_image={"aws": "ami-0123", "local": "shop:1"}))
    assert outputs["image"] == "ami-0123"


def test_without_checks_the_report_says_the_image_was_not_verified(tmp_path: Path) -> None:
    images = FakeImageEngine()
    ctx = _context(tmp_path, images)
    _run(ctx)
    assert not any(c.startswith("check ") for c in images.calls)
    assert "no checks configured (Bake.checks): the image was not verified" in ctx.notes
    assert images.calls[-1] == "keep fake.web-1 checks=none"


def test_an_engine_that_cannot_check_its_images_has_its_stand_in_checked_first(tmp_path: Path) -> None:
    stand_in = FakeImageEngine(source="fake.docker")
    ami = FakeImageEngine(
        source="fake.ami", checks_images=False, stand_in=stand_in, noun="AMI", where="the emulator", emulated=True
    )
    ami.extra_outputs = {"region": "eu-west-1"}
    ctx = _context(tmp_path, ami, "aws", checks="serverspec")
    outputs = _run(ctx)
    assert stand_in.calls == ["sweep", "find", "build fake.docker-1", "check fake.docker-1", stand_in.calls[-1]]
    assert ami.calls == [
        "check_template",
        "sweep",
        "find",
        "build fake.ami-1",
        "keep fake.ami-1 checks=emulated: fake.docker-1",
    ]
    assert outputs == {
        "image": "fake.ami-1",
        "key": ami.kept["fake.ami-1"],
        "packer_run_uuid": "uuid-1",
        "region": "eu-west-1",
        "checked_image": "fake.docker-1",
    }
    assert stand_in.kept["fake.docker-1"] != ami.kept["fake.ami-1"]  # each source has its own key
    assert ctx.notes[-2:] == [
        "baked fake.ami-1 from fake.ami in the emulator in 1.0 s",
        "checks emulated: the testinfra checks ran against fake.docker-1 (fake.docker, built by the same "
        "provisioner scripts; 1/1 checks passed), not against an instance of fake.ami-1 (an emulator runs no instances)",
    ]


def test_failed_checks_of_the_stand_in_stop_the_bake_before_it_builds(tmp_path: Path) -> None:
    stand_in = FakeImageEngine(source="fake.docker", failing={"fake.docker-1"})
    ami = FakeImageEngine(source="fake.ami", checks_images=False, stand_in=stand_in)
    with pytest.raises(StageFailedError):
        _run(_context(tmp_path, ami, "aws", checks="serverspec"))
    assert ami.built == 0


def test_an_engine_without_a_stand_in_says_no_checks_ran(tmp_path: Path) -> None:
    ami = FakeImageEngine(source="fake.ami", checks_images=False)
    ctx = _context(tmp_path, ami, "aws")
    _run(ctx)
    assert ctx.notes[-1] == "checks: none ran for fake.ami-1 (no checks are configured)"


def test_what_dead_bakes_left_is_swept_and_reported(tmp_path: Path) -> None:
    images = FakeImageEngine(leftovers={"run-1": ["container 0123abcd", "image sha256:4567"]})
    ctx = _context(tmp_path, images)
    _run(ctx)
    assert ctx.notes[0] == "removed what a bake killed in run run-1 left: container 0123abcd, image sha256:4567"


def test_an_interrupt_asks_the_engine_to_clean_up_then_closes_the_journal(tmp_path: Path) -> None:
    images = FakeImageEngine(failing={"fake.web-1"})
    ctx = _context(tmp_path, images, checks="serverspec")
    executor = BakeExecutor(ctx.stage)  # type: ignore[arg-type]
    with pytest.raises(StageFailedError):
        executor.run(ctx)
    assert _journals(tmp_path)
    executor.interrupted(ctx)
    assert images.calls[-1] == "interrupted"
    assert _journals(tmp_path) == []


def test_the_plan_asks_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = FakeImageEngine(present={"shop:1"}, kept={"shop:1": "k1"})
    p, bake = _project(tmp_path)
    ctx = PlanContext(
        p.spec, bake, tmp_path, "local", {}, Ledger(tmp_path), FakeEngines(FakeStackEngine(), images=images)
    )
    executor = BakeExecutor(bake)
    assert executor.inputs(ctx)["base_image"] == "sha256:base"
    assert executor.is_live(ctx, {"image": "shop:1", "key": "k1"})
    assert not executor.is_live(ctx, {"image": "shop:1", "key": "other"})
    assert not executor.is_live(ctx, {"image": "", "key": "k1"})
    monkeypatch.setenv("PIPELINE_BAKE_USE_IMAGE", "shop:1")  # a given image carries no key
    assert executor.is_live(ctx, {"image": "shop:1", "key": "other"})


def test_ready_leaves_credentials_for_later_when_a_secret_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.model import Secret

    images = FakeImageEngine()
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    p, bake = _project(tmp_path, secrets=(Secret(name="AWS_SECRET_ACCESS_KEY"),))
    ctx = PlanContext(
        p.spec, bake, tmp_path, "aws", {}, Ledger(tmp_path), FakeEngines(FakeStackEngine(), images=images)
    )
    BakeExecutor(bake).ready(ctx)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    BakeExecutor(bake).ready(ctx)
    assert images.calls == ["ready credentials=False", "ready credentials=True"]


def test_the_executor_names_no_profile() -> None:
    """Profile differences live in the profile modules and their engines, not in the bake's plan."""
    strings = [n.value for n in ast.walk(ast.parse(EXECUTOR.read_text())) if isinstance(n, ast.Constant)]
    assert [s for s in strings if s in ("local", "aws")] == []
