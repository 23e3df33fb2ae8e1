"""The images of a local stack's own services (the balancer's nginx, the database's PostgreSQL, the
flag store's redis-server): each built on the base image from a Dockerfile packaged with pipeline,
once per machine, tagged by the digest of what it is built from.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from pipeline.engines.docker_stack.labels import ENGINE, L_ENGINE, L_ROLE
from pipeline.engines.stack import OnEvent
from pipeline.errors import StackOperationError
from pipeline.hashing import digest
from pipeline.locks import FileLock, cache_dir


@dataclass(frozen=True)
class ServiceImage:
    """What one service image is built from and how it is named."""

    folder: str
    """Its folder under pipeline/engines/docker_stack/ (also names the machine-wide build lock)."""
    files: Mapping[str, str]
    """The build context: each file of the folder, and its key in the tag's digest."""
    repository: str
    role: str
    """Its `io.pipeline.role` label."""
    noun: str
    """What it is called in messages, e.g. "load balancer image"."""
    software: str
    """What the build installs, as said in the progress line, e.g. "nginx"."""
    package: str
    """The Debian package the build installs, as said in the error's hint."""


def ensure_service_image(
    client: Any,
    base_image: str,
    image: ServiceImage,
    *,
    on_event: OnEvent,
    after_build: Callable[[str], None] | None = None,
) -> str:
    """`image` on `base_image`, built unless this machine has it already; returns its tag.
    `after_build(tag)` runs once this call has built it, still under the build lock."""
    import docker.errors

    from pipeline.engines.base_image import ensure_base_image

    folder = resources.files("pipeline.engines.docker_stack") / image.folder
    texts = {name: (folder / name).read_text() for name in image.files}
    try:
        base_id = str(client.images.get(base_image).id)
    except docker.errors.ImageNotFound:
        on_event(f"base image {base_image} is missing: building it")
        base_id = ensure_base_image(base_image, on_line=on_event)
    keyed = {key: texts[name] for name, key in image.files.items()}
    tag = f"{image.repository}:{digest({**keyed, 'base': base_id})[:12]}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(tag)
        return tag
    # one builder per machine; the others wait, then use its image
    with FileLock(cache_dir() / f"{image.folder}-image.lock", purpose=f"building {tag}", wait=None):
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.get(tag)
            return tag
        on_event(f"building the {image.noun} {tag} ({image.software} from Debian's mirror)")
        try:
            client.images.build(
                fileobj=io.BytesIO(tar_archive({name: text.encode() for name, text in texts.items()})),
                custom_context=True,
                tag=tag,
                buildargs={"BASE": base_image},
                labels={L_ROLE: image.role, L_ENGINE: ENGINE},
                rm=True,
                forcerm=True,
            )
        except docker.errors.BuildError as exc:
            tail = "\n".join(str(c.get("stream", c.get("error", ""))).rstrip() for c in exc.build_log)[-2000:]
            raise StackOperationError(
                f"building the {image.noun} failed: {exc.msg}\n{tail}",
                hint=f"the build installs {image.package} with apt-get from Debian's mirror: check that containers reach it",
            ) from None
        if after_build is not None:
            after_build(tag)
    return tag


def tar_archive(files: Mapping[str, bytes]) -> bytes:
    """A tar of `files` (name: content), mode 0644, as put_archive and a build context take it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


__all__ = ["ServiceImage", "ensure_service_image", "tar_archive"]
