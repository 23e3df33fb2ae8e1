"""A bake killed in its last second leaves nothing that the next bake does not find and remove.

Real Docker and Packer, on the tiny template of test_bake.py (it bakes in seconds). Each test kills
`pipeline run local --only bake` with SIGKILL at a fault-injection checkpoint (pipeline/faults.py)
in the windows where an image exists that nothing tags yet: while Packer commits its build
container (the pipeline alone killed, Packer's helpers living on; or the whole process tree), while
the label layer is made, and once it is made but before the journal names it. It reads what the kill
left by the dead bake's identity, independently of the code under test (the labels, the journal,
the image's parent chain), requires that the window was hit (something untagged exists), then runs
the bake again and requires it all gone: no container, no untagged image, no journal.

Two more tests set up what a bake killed by an older version left, and what a bake leaves on a
Docker engine that does not say which container an image was committed from: layers on top of
Packer's image that the journal does not name (removing the parent alone fails with "image has
dependent child images"), and an image known only by its labels.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.images.journal import Journal
from tests.conftest import need
from tests.integration.test_bake import SESSION, bake, docker_ids, remove_everything_of, tiny_project

pytestmark = pytest.mark.integration

RUN_LABEL = "io.pipeline.run-id"


@pytest.fixture(scope="module")
def tools(docker_client: object, base_image: str) -> str:
    need(shutil.which("packer") is not None, "packer is not installed (apt-get install -y packer)")
    return base_image


@pytest.fixture(scope="module")
def cleanup() -> Iterator[list[str]]:
    """Pipelines whose containers and images are removed when the module ends."""
    names: list[str] = []
    yield names
    for name in names:
        remove_everything_of(name)


def _images(client: Any) -> dict[str, dict[str, Any]]:
    return {str(i["Id"]): i for i in client.api.images(all=True)}


def left_by(client: Any, journal_file: Path) -> dict[str, list[str]]:
    """What the bake of `journal_file` left: containers (mounting its folder, carrying its run id or
    named by its journal) and untagged images (carrying its run id, named by its journal, committed
    from a container it names, or built on one of those)."""
    data = json.loads(journal_file.read_text())
    run = str(data["run_id"])
    docker_part = data.get("docker") or {}
    named_containers = set(docker_part.get("containers", []))
    named_images = set(docker_part.get("images", [])) | set(data.get("artifacts", []))
    folder = str(journal_file.parent.resolve()) + "/"
    containers = []
    for container in client.containers.list(all=True):
        mounts = [str(m.get("Source", "")) for m in container.attrs.get("Mounts") or []]
        if (
            container.id in named_containers
            or container.labels.get(RUN_LABEL) == run
            or any(m.startswith(folder) for m in mounts)
        ):
            containers.append(container.id)
    images = _images(client)
    ours = set()
    for image_id in images:
        attrs = client.api.inspect_image(image_id)
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(RUN_LABEL) == run or image_id in named_images or attrs.get("Container") in named_containers:
            ours.add(image_id)
    grown = True
    while grown:  # and everything built on them
        children = {i for i, s in images.items() if s.get("ParentId") in ours} - ours
        grown = bool(children)
        ours |= children
    untagged = sorted(i for i in ours if not [t for t in images[i].get("RepoTags") or [] if t != "<none>:<none>"])
    return {"run": [run], "containers": sorted(containers), "images": untagged}


def dead_journal(root: Path) -> Path:
    journals = list((root / ".pipeline" / "bakes").rglob("journal.json"))
    assert len(journals) == 1, journals
    return journals[0]


def wait_for_leftover_image(client: Any, journal_file: Path, timeout: float = 90.0) -> dict[str, list[str]]:
    """A commit the kill did not stop ends a moment later: wait for its image (the observable event)."""
    deadline = time.monotonic() + timeout
    while True:
        left = left_by(client, journal_file)
        if left["images"] or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


WINDOWS = [
    ("packer:bake:committing", False, "Packer commits; the pipeline alone is killed"),
    ("packer:bake:committing", True, "Packer commits; the whole process tree is killed"),
    ("bake:bake:labelling", False, "the label layer is being made"),
    ("bake:bake:labelled", False, "the label layer is made, not in the journal yet"),
]
"""(checkpoint, kill the process tree, where). Killed alone, the pipeline leaves Packer's helpers
running: the commit goes on and makes an untagged image. With the tree, the commit never starts:
Packer's build container is left, running."""


@pytest.mark.parametrize(("fault", "tree", "where"), WINDOWS, ids=[f"{w[0]}{'-tree' if w[1] else ''}" for w in WINDOWS])
def test_a_bake_killed_here_leaves_nothing_after_the_next_bake(
    fault: str, tree: bool, where: str, tools: str, docker_client: Any, tmp_path: Path, cleanup: list[str]
) -> None:
    name = f"bake-kill-{SESSION}-{uuid.uuid4().hex[:4]}"
    cleanup.append(name)
    root = tiny_project(tmp_path, name, message=f"killed while {where}")  # its own key: a fresh bake
    env = {"PIPELINE_FAULT": fault, **({"PIPELINE_FAULT_TREE": "1"} if tree else {})}
    killed = bake(root, env=env)
    assert killed.proc.returncode == -9, killed.text
    journal = dead_journal(root)
    if tree:
        left = left_by(docker_client, journal)
        assert left["containers"], f"the kill ({where}) left no container: the window was missed\n{killed.text}"
    else:
        left = wait_for_leftover_image(docker_client, journal)
        assert left["images"], f"the kill ({where}) left no untagged image: the window was missed\n{killed.text}"

    again = bake(root)
    assert again.proc.returncode == 0, again.text
    assert f"removed what a bake killed in run {left['run'][0]} left" in again.result.message
    images = _images(docker_client)
    assert [i for i in left["images"] if i in images] == [], f"left after the re-run: {left}\n{again.text}"
    existing = set(
        subprocess.run(["docker", "ps", "-aq", "--no-trunc"], capture_output=True, text=True, check=True).stdout.split()
    )
    assert [c for c in left["containers"] if c in existing] == []
    assert list((root / ".pipeline" / "bakes").rglob("journal.json")) == []
    assert docker_ids("images --filter dangling=true", f"io.pipeline.pipeline={name}") == []
    for process in subprocess.run(
        ["pgrep", "-af", "packer"], capture_output=True, text=True, check=False
    ).stdout.splitlines():
        assert str(journal.parent) not in process, f"a Packer of the dead bake still runs: {process}"


def _commit(client: Any, image: str, labels: dict[str, str]) -> str:
    """An image as Packer's docker builder makes one: a container of `image`, committed."""
    container = client.containers.create(image, command=["/bin/true"])
    try:
        line = " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in labels.items())
        return str(client.api.commit(container.id, changes=[f"LABEL {line}"] if labels else None)["Id"])
    finally:
        container.remove(force=True)


def test_label_layers_of_an_older_bake_go_children_first(
    tools: str, docker_client: Any, tmp_path: Path, cleanup: list[str]
) -> None:
    """An older bake labelled with one layer per label; killed between two of them, its journal names
    Packer's image only. Removing that image alone fails ("image has dependent child images"): the
    next bake removes the layers first, then the image, and only then forgets the journal."""
    name = f"bake-old-{SESSION}"
    cleanup.append(name)
    root = tiny_project(tmp_path, name, message="after an old bake")
    version = f"old-{uuid.uuid4().hex[:6]}"
    artifact = _commit(docker_client, tools, {"org.opencontainers.image.version": version})
    partial, _ = docker_client.images.build(  # three of the old seven labels: killed between layers
        fileobj=io.BytesIO(f"FROM {artifact}\n".encode()),
        labels={"io.pipeline.role": "bake", "io.pipeline.bake-key": "0" * 32, "io.pipeline.pipeline": name},
        rm=True,
        pull=False,
    )
    layers = _images(docker_client)
    chain = [partial.id]
    while chain[-1] != artifact:
        chain.append(str(layers[chain[-1]]["ParentId"]))
    assert len(chain) == 4, chain  # one layer per label, on top of Packer's image
    folder = root / ".pipeline" / "bakes" / name / "bake" / "20250101-000000-dead01"
    folder.mkdir(parents=True)
    (folder / "journal.json").write_text(json.dumps({"run_id": folder.name, "manifests": [], "artifacts": [artifact]}))

    run = bake(root)
    assert run.proc.returncode == 0, run.text
    images = _images(docker_client)
    assert [i for i in chain if i in images] == []
    assert not folder.exists()
    assert f"removed what a bake killed in run {folder.name} left" in run.result.message


def test_an_image_known_only_by_its_labels_is_found(tools: str, docker_client: Any, tmp_path: Path) -> None:
    """A template that puts `${var.bake_labels}` in its commit makes Packer's image carry the bake's
    identity: on a Docker engine that no longer says which container an image came from (API 1.45+,
    the containerd image store), and with nothing in the journal, the labels find it and what is on it."""
    from pipeline.engines.images.docker_leftovers import remove_leftovers

    identity = {"io.pipeline.pipeline": f"bake-labels-{SESSION}", "io.pipeline.stage": "bake", RUN_LABEL: "dead-run"}
    artifact = _commit(docker_client, tools, identity)
    child = _commit(docker_client, artifact, {"io.pipeline.role": "label-layer-of-someone"})
    journal = Journal.open(tmp_path, identity["io.pipeline.pipeline"], "bake", "dead-run")
    swept = remove_leftovers(docker_client, journal, identity)
    images = _images(docker_client)
    assert (artifact in images, child in images) == (False, False)
    assert swept.kept == []
    assert len([r for r in swept.removed if r.startswith("image")]) == 2


def test_a_tagged_image_of_a_dead_bake_counts_and_stays(tools: str, docker_client: Any, tmp_path: Path) -> None:
    """A bake that died after tagging its image: the image counts; the layers under it stay too."""
    from pipeline.engines.images.docker_leftovers import remove_leftovers

    identity = {"io.pipeline.pipeline": f"bake-tagged-{SESSION}", "io.pipeline.stage": "bake", RUN_LABEL: "dead-2"}
    artifact = _commit(docker_client, tools, {})
    labelled = _commit(docker_client, artifact, identity)
    repository = f"bake-tagged-{SESSION}"
    docker_client.api.tag(labelled, repository, "kept")
    try:
        journal = Journal.open(tmp_path, identity["io.pipeline.pipeline"], "bake", "dead-2")
        journal.record("docker", "images", artifact)
        swept = remove_leftovers(docker_client, journal, identity)
        images = _images(docker_client)
        assert (artifact in images, labelled in images) == (True, True)
        assert swept.removed == []
        assert swept.kept == []
    finally:
        docker_client.images.remove(f"{repository}:kept", force=True)


assert os.sep == "/"  # the journal's folders and Packer's mounts are compared as POSIX paths
