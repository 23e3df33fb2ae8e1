"""The crash journal of a bake, and the order in which what a dead bake left is removed (pure parts;
the real removals run in tests/integration/test_bake_leftovers.py)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.engines.images.docker_leftovers import ImageNode, removal_order
from pipeline.engines.images.journal import Journal


def _journal(tmp_path: Path, run_id: str = "run-2") -> Journal:
    return Journal.open(tmp_path, "shop", "bake", run_id)


def test_a_bake_writes_its_identity_when_it_begins(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    data = json.loads(journal.path.read_text())
    assert data["run_id"] == "run-2"
    assert journal.started is not None
    assert journal.path == tmp_path / "bakes" / "shop" / "bake" / "run-2" / "journal.json"
    assert journal.empty()


def test_each_engine_keeps_its_own_part(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.record("docker", "containers", "c0ffee")
    journal.record("docker", "images", "sha256:1")
    journal.record("docker", "images", "sha256:1")
    journal.record("ami", "images", "ami-1")
    assert journal.entries("docker") == {"containers": ["c0ffee"], "images": ["sha256:1"]}
    assert journal.entries("ami") == {"images": ["ami-1"]}
    journal.forget("docker")
    assert not journal.close_if_empty()  # the AMI is still named: the folder stays
    assert journal.folder.is_dir()
    journal.forget("ami")
    assert journal.close_if_empty()
    assert not journal.folder.exists()


def test_a_journal_written_by_an_older_bake_is_dockers(tmp_path: Path) -> None:
    folder = tmp_path / "bakes" / "shop" / "bake" / "run-1"
    folder.mkdir(parents=True)
    (folder / "journal.json").write_text(json.dumps({"run_id": "run-1", "manifests": ["/m.json"], "artifacts": ["a"]}))
    old = Journal(folder)
    assert old.entries("docker") == {"manifests": ["/m.json"], "images": ["a"]}
    assert old.started is None
    assert not old.empty()
    old.forget("docker")
    assert old.empty()


def test_the_other_bakes_of_the_stage_are_dead_ones(tmp_path: Path) -> None:
    dead = _journal(tmp_path, "run-1")
    alive = _journal(tmp_path, "run-2")
    Journal.open(tmp_path, "shop", "other-bake", "run-0")
    assert [j.run_id for j in alive.dead()] == ["run-1"]
    assert [j.run_id for j in dead.dead()] == ["run-2"]


def _image(id: str, parent: str = "", *, tagged: bool = False) -> ImageNode:
    return ImageNode(id=id, parent=parent, tagged=tagged, created=0.0)


def _graph(*nodes: ImageNode) -> dict[str, ImageNode]:
    return {n.id: n for n in nodes}


def test_children_go_before_parents_whatever_their_ids() -> None:
    # Packer's image "b" with the label layer "a" on it: "a" sorts first and must go first.
    images = _graph(_image("base", tagged=True), _image("b", "base"), _image("a", "b"))
    assert removal_order(images, {"a", "b"}) == ["a", "b"]
    assert removal_order(images, {"b"}) == ["a", "b"]  # what is built on a root goes with it


def test_layers_the_journal_does_not_name_go_first() -> None:
    """An older bake's label layers, one per label, killed between two: the journal names only
    Packer's image; the layers on it go before it (no "image has dependent child images")."""
    images = _graph(_image("base", tagged=True), _image("p", "base"), _image("l1", "p"), _image("l2", "l1"))
    assert removal_order(images, {"p"}) == ["l2", "l1", "p"]


def test_a_tagged_image_and_the_layers_under_it_count() -> None:
    images = _graph(
        _image("base", tagged=True), _image("p", "base"), _image("kept", "p", tagged=True), _image("x", "p")
    )
    assert removal_order(images, {"p", "kept", "x"}) == ["x"]


def test_nothing_below_a_root_is_touched() -> None:
    images = _graph(_image("base"), _image("p", "base"))
    assert removal_order(images, {"p"}) == ["p"]
