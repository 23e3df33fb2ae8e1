"""The base image every local image builds on: pulled when a registry has it, else built from
Debian's mirror with debootstrap and `docker import` (also the disaster-recovery path: a working
laptop needs only git, Docker and Debian's mirror)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.engines.docker_client import LABEL_PREFIX, connect, image_exists
from pipeline.engines.process import stream
from pipeline.errors import CommandFailedError, ToolMissingError
from pipeline.locks import FileLock, cache_dir

if TYPE_CHECKING:
    import docker

DEFAULT_BASE_IMAGE = "pipeline-base:bookworm"
SUITE = "bookworm"
MIRROR_ENV = "PIPELINE_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PATH_VALUE = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Kept small: what every image of ours needs (TLS roots for apt over https mirrors).
EXTRA_PACKAGES = ("ca-certificates",)


def ensure_base_image(
    name: str = DEFAULT_BASE_IMAGE,
    *,
    on_line: Callable[[str], None] = lambda line: None,
    force: bool = False,
    allow_pull: bool = True,
) -> str:
    """Make sure `name` exists locally; return its image id. Builds it when it cannot be pulled."""
    client = connect()
    # one builder per machine; the others wait, then reuse its image
    with FileLock(cache_dir() / "base-image.lock", purpose=f"making the base image {name}", wait=None):
        if not force and image_exists(client, name):
            return str(client.images.get(name).id)
        if allow_pull and not force and _try_pull(client, name, on_line):
            return str(client.images.get(name).id)
        return build_base_image(name, on_line=on_line)


def _try_pull(client: docker.DockerClient, name: str, on_line: Callable[[str], None]) -> bool:
    import docker.errors

    if "/" not in name and ":" in name and name.split(":", maxsplit=1)[0].startswith("pipeline-"):
        return False  # our own name: no registry has it
    on_line(f"pulling {name} ...")
    try:
        client.images.pull(name)
    except docker.errors.DockerException as exc:
        on_line(f"cannot pull {name} ({str(exc).splitlines()[0][:120]}); building it from Debian's mirror")
        return False
    return True


def build_base_image(name: str = DEFAULT_BASE_IMAGE, *, on_line: Callable[[str], None] = lambda line: None) -> str:
    """debootstrap a minimal Debian into a temporary folder and import it as `name`."""
    if shutil.which("debootstrap") is None:
        raise ToolMissingError(
            "debootstrap is not installed, and the base image cannot be pulled",
            hint="apt-get install -y debootstrap (or make the image available: docker pull debian:bookworm-slim)",
        )
    if os.geteuid() != 0:
        raise ToolMissingError(
            "building the base image with debootstrap needs root",
            hint=f"run `sudo pipeline image base --tag {name}` once",
        )
    mirror = os.environ.get(MIRROR_ENV, DEFAULT_MIRROR)
    client = connect()
    on_line(f"building the base image {name}: debootstrap --variant=minbase {SUITE} from {mirror} (about 30 s)")
    with tempfile.TemporaryDirectory(prefix="pipeline-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        command = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(EXTRA_PACKAGES)}",
            SUITE,
            str(rootfs),
            mirror,
        ]
        try:
            stream(command, on_line=on_line)
        except CommandFailedError as exc:
            raise CommandFailedError(command, exc.returncode, exc.tail) from None
        # Smaller image, reproducible apt state: drop the package cache.
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        on_line(f"importing {rootfs} as {name}")
        repository, _, tag = name.partition(":")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            client.api.import_image_from_stream(
                tar.stdout,
                repository=repository,
                tag=tag or "latest",
                changes=[
                    f"ENV PATH={PATH_VALUE}",
                    'CMD ["/bin/bash"]',
                    f"LABEL {LABEL_PREFIX}.role=base {LABEL_PREFIX}.suite={SUITE}",
                ],
            )
        finally:
            tar.stdout.close()
            tar.wait()
        if tar.returncode != 0:
            raise CommandFailedError(["tar", "-C", str(rootfs), "-c", "."], tar.returncode, "")
    return str(client.images.get(name).id)
