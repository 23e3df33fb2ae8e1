"""What a bake left in the Docker engine and did not tag, found by the bake's identity, and removed:
containers first, then images, children before parents.

A bake's things are found by each of the identities it wrote down before making them
(journal.py): the run-id label the framework puts on what it makes (check containers, the label
layer, and Packer's own image when the template puts `${var.bake_labels}` in its `changes`);
Packer's temporary folder, which Packer's build container bind-mounts; the containers and images
in the journal; and an image committed, after the bake began, from a container the journal names
(the `Container` an image records, where the engine reports it). Everything built on top of one of
those (its descendants) goes with it: children first, so no removal fails with "image has
dependent child images". A tagged image counts (a bake that died after tagging it), and so do the
images it is built on: neither is touched. Nothing is forced: an image a container still uses stays,
and so does the journal that names it, for a later bake to try again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.engines.image_checks import remove_container
from pipeline.engines.images.journal import Journal
from pipeline.engines.packer import read_manifest
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    import docker

PACKER_MOUNT = "/packer-files"
"""Where Packer's docker builder mounts its temporary folder in the build container."""
COMMIT_WAIT = 120.0
"""Seconds to wait for a commit still under way in a dead bake's container (it is paused meanwhile)."""
CLOCK_SLACK = 60.0
"""Images made this long before a journal began may still be the bake's (clock steps)."""


@dataclass
class Swept:
    """What one removal found: `removed` (for the report) and `kept` (what could not go, and why)."""

    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def remove_leftovers(
    client: docker.DockerClient,
    journal: Journal,
    identity: Mapping[str, str],
    *,
    part: str = "docker",
    log: Callable[[str], None] = lambda line: None,
) -> Swept:
    """Remove every container and untagged image the bake of `journal` made (see the module's
    docstring); `identity` is its labels (pipeline, stage, run id)."""
    swept = Swept()
    entries = journal.entries(part)
    containers = _remove_containers(client, journal, identity, entries.get("containers", []), swept, log)
    doomed = _images_of(client, journal, identity, entries, containers)
    _remove_images(client, doomed, journal.run_id, swept, log)
    return swept


# --- containers -------------------------------------------------------------------------------------


def _remove_containers(
    client: docker.DockerClient,
    journal: Journal,
    identity: Mapping[str, str],
    named: list[str],
    swept: Swept,
    log: Callable[[str], None],
) -> set[str]:
    """Remove the bake's containers; returns the ids of every container it is known to have made
    (gone already or removed now), whose commits are the bake's images."""
    import docker.errors

    labelled = client.containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in identity.items()]})
    found = {c.id: c for c in labelled}
    inside = str(journal.folder.resolve()) + "/"
    for container in client.containers.list(all=True, filters={"volume": PACKER_MOUNT}):
        sources = [str(m.get("Source", "")) for m in container.attrs.get("Mounts") or []]
        if any(source.startswith(inside) for source in sources):
            found[container.id] = container
    for name in named:
        try:
            container = client.containers.get(name)
        except docker.errors.NotFound:
            continue
        found[container.id] = container
    for container in found.values():
        _wait_for_commit(container)
        try:
            remove_container(client, container.id)
        except PipelineError as exc:
            swept.kept.append(f"container {container.short_id}: {exc.message}")
            continue
        log(f"removed container {container.short_id} (run {journal.run_id} died while it existed)")
        swept.removed.append(f"container {container.short_id}")
    return set(found) | set(named)


def _wait_for_commit(container: Any) -> None:
    """A commit pauses its container: wait until the commit is done, so the image it makes exists
    (and is found) before the container goes."""
    deadline = time.monotonic() + COMMIT_WAIT
    while (container.attrs.get("State") or {}).get("Paused") and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            container.reload()
        except Exception:  # gone meanwhile
            return


# --- images -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageNode:
    """What the engine's image list says of one image."""

    id: str
    parent: str
    tagged: bool
    created: float
    labels: Mapping[str, str] = field(default_factory=dict)


def _images_of(
    client: docker.DockerClient,
    journal: Journal,
    identity: Mapping[str, str],
    entries: Mapping[str, list[str]],
    containers: set[str],
) -> list[str]:
    """The bake's untagged images, children before parents."""
    images = {
        str(i["Id"]): ImageNode(
            id=str(i["Id"]),
            parent=str(i.get("ParentId") or ""),
            tagged=any(t != "<none>:<none>" for t in i.get("RepoTags") or []),
            created=float(i.get("Created") or 0),
            labels=i.get("Labels") or {},
        )
        for i in client.api.images(all=True)
    }
    roots = {i.id for i in images.values() if identity.items() <= dict(i.labels).items()}
    named = list(entries.get("images", []))
    for manifest in entries.get("manifests", []):
        try:
            named.append(read_manifest(Path(manifest)).artifact_id)
        except (PipelineError, OSError, ValueError):
            continue  # Packer wrote none: the build did not get that far
    roots |= {_full_id(images, name) for name in named} - {""}
    started = journal.started
    if containers and started is not None:
        for image in images.values():
            if not image.tagged and image.id not in roots and image.created >= started - CLOCK_SLACK:
                roots |= {image.id} if _committed_from(client, image.id) in containers else set()
    return removal_order(images, roots)


def removal_order(images: Mapping[str, ImageNode], roots: set[str]) -> list[str]:
    """`roots` and every image built on them, children before parents, without those that count
    (tagged, or under a tagged image)."""
    children: dict[str, list[str]] = {}
    for image in images.values():
        if image.parent:
            children.setdefault(image.parent, []).append(image.id)
    doomed = set(roots)
    wave = set(roots)
    while wave:
        wave = {c for i in wave for c in children.get(i, []) if c not in doomed}
        doomed |= wave
    remaining = {i for i in doomed if not _counts(i, images, children)}
    ordered: list[str] = []  # each round: the images nothing left is built on
    while remaining:
        leaves = sorted(i for i in remaining if not remaining.intersection(children.get(i, [])))
        ordered += leaves
        remaining -= set(leaves)
    return ordered


def _counts(image: str, images: Mapping[str, ImageNode], children: Mapping[str, list[str]]) -> bool:
    """Tagged, or under a tagged image: part of an image that counts."""
    if images[image].tagged:
        return True
    return any(_counts(child, images, children) for child in children.get(image, []))


def _committed_from(client: docker.DockerClient, image: str) -> str:
    """The container an image was committed from, where the engine says (API < 1.45, not the
    containerd image store); '' otherwise."""
    import docker.errors

    try:
        return str(client.api.inspect_image(image).get("Container") or "")
    except docker.errors.NotFound:
        return ""


def _full_id(images: Mapping[str, ImageNode], name: str) -> str:
    if name in images:
        return name
    prefixed = name if name.startswith("sha256:") else f"sha256:{name}"
    return next((i for i in images if i.startswith(prefixed)), "")


def _remove_images(
    client: docker.DockerClient, doomed: list[str], run_id: str, swept: Swept, log: Callable[[str], None]
) -> None:
    import docker.errors

    for image in doomed:
        try:  # no force: an image a container uses stays (and its journal with it)
            client.images.remove(image, force=False, noprune=True)
        except docker.errors.ImageNotFound:
            continue
        except docker.errors.APIError as exc:
            swept.kept.append(f"image {image[:19]}: {exc.explanation or exc}")
            log(f"kept {image[:19]} left by run {run_id}: {exc.explanation or exc}")
            continue
        log(f"removed image {image[:19]} (run {run_id} died before tagging it)")
        swept.removed.append(f"image {image[:19]}")
