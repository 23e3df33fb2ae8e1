"""The base image every local image builds on. When it is missing: our default name is derived
from the registry's image of the same Debian suite (pulled, then a two-line build adds what the
debootstrap image has), so any machine that reaches a registry makes it without root; another name
is pulled; and where no registry answers, or pulling is not allowed, it is built from Debian's
mirror with debootstrap and `docker import` (root; also the disaster-recovery path: a working laptop
needs only git, Docker and Debian's mirror)."""

from __future__ import annotations

import io
import json
import os
import shlex
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
from pipeline.model import DEFAULT_BASE_IMAGE

if TYPE_CHECKING:
    import docker

SUITE = "bookworm"
REGISTRY_BASE_IMAGE = f"debian:{SUITE}-slim"
"""The registry's image of our suite that DEFAULT_BASE_IMAGE is derived from where a registry is reachable."""
MIRROR_ENV = "PIPELINE_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PATH_VALUE = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Kept small: what every image of ours needs (TLS roots for apt over https mirrors).
EXTRA_PACKAGES = ("ca-certificates",)
LABELS = {f"{LABEL_PREFIX}.role": "base", f"{LABEL_PREFIX}.suite": SUITE}
"""What both ways of making the base image label it with."""

__all__ = [
    "DEFAULT_BASE_IMAGE",
    "REGISTRY_BASE_IMAGE",
    "build_base_image",
    "derive_base_image",
    "ensure_base_image",
]


def ensure_base_image(
    name: str = DEFAULT_BASE_IMAGE,
    *,
    on_line: Callable[[str], None] = lambda line: None,
    force: bool = False,
    allow_pull: bool = True,
) -> str:
    """Make sure `name` exists locally; return its image id. `allow_pull=False` never asks a
    registry: it builds with debootstrap (root). `force` makes it again even if it exists."""
    client = connect()
    # one builder per machine; the others wait, then reuse its image
    with FileLock(cache_dir() / "base-image.lock", purpose=f"making the base image {name}", wait=None):
        if not force and image_exists(client, name):
            return str(client.images.get(name).id)
        if allow_pull and name == DEFAULT_BASE_IMAGE:
            if _try_pull(client, REGISTRY_BASE_IMAGE, on_line) or image_exists(client, REGISTRY_BASE_IMAGE):
                return derive_base_image(name, client=client, on_line=on_line)
        elif allow_pull and not force and _try_pull(client, name, on_line):
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
        on_line(f"cannot pull {name} ({str(exc).splitlines()[0][:120]})")
        return False
    return True


def derived_dockerfile(source: str = REGISTRY_BASE_IMAGE, mirror: str | None = None) -> str:
    """FROM the registry's image: what the debootstrap image has (ca-certificates, PATH, a shell as
    CMD, our labels). With `mirror` (PIPELINE_DEBIAN_MIRROR), apt uses only it, as debootstrap does."""
    sources = (
        "RUN rm -f /etc/apt/sources.list.d/debian.sources && "
        f"echo {shlex.quote(f'deb {mirror} {SUITE} main')} > /etc/apt/sources.list\n"
        if mirror
        else ""
    )
    labels = " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in LABELS.items())
    return (
        f"FROM {source}\n"
        f"ENV PATH={PATH_VALUE}\n"
        f"{sources}"
        "RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        f"{' '.join(EXTRA_PACKAGES)} && apt-get clean && rm -rf /var/lib/apt/lists/*\n"
        'CMD ["/bin/bash"]\n'
        f"LABEL {labels}\n"
    )


def derive_base_image(
    name: str = DEFAULT_BASE_IMAGE,
    *,
    source: str = REGISTRY_BASE_IMAGE,
    client: docker.DockerClient | None = None,
    on_line: Callable[[str], None] = lambda line: None,
) -> str:
    """Build `name` from `source` (already here: pulled) with Docker's build API; no root."""
    client = client or connect()
    on_line(f"building the base image {name} from {source} (installs {', '.join(EXTRA_PACKAGES)})")
    dockerfile = derived_dockerfile(source, os.environ.get(MIRROR_ENV)).encode()
    log: list[str] = []
    for chunk in client.api.build(
        fileobj=io.BytesIO(dockerfile), tag=name, rm=True, forcerm=True, pull=False, decode=True
    ):
        text = str(chunk.get("stream", "")).rstrip()
        if text:
            log.append(text)
            on_line(text)
        if "error" in chunk:
            tail = "\n".join(log[-20:])
            raise ToolMissingError(
                f"building the base image {name} from {source} failed: {str(chunk['error']).strip()}"
                + (f"\n{tail}" if tail else ""),
                hint=f"the build installs {', '.join(EXTRA_PACKAGES)} with apt-get: check that containers reach "
                f"Debian's mirror (or set {MIRROR_ENV}), or build it with debootstrap: "
                f"sudo pipeline image base --no-pull --tag {name}",
            )
    return str(client.images.get(name).id)


def build_base_image(name: str = DEFAULT_BASE_IMAGE, *, on_line: Callable[[str], None] = lambda line: None) -> str:
    """debootstrap a minimal Debian into a temporary folder and import it as `name`."""
    if shutil.which("debootstrap") is None:
        raise ToolMissingError(
            "debootstrap is not installed, and the base image cannot be pulled",
            hint="apt-get install -y debootstrap"
            + (f" (or make {REGISTRY_BASE_IMAGE} available: docker pull it)" if name == DEFAULT_BASE_IMAGE else ""),
        )
    if os.geteuid() != 0:
        raise ToolMissingError(
            "building the base image with debootstrap needs root",
            hint=f"run `sudo pipeline image base --no-pull --tag {name}` once"
            + (
                f" (or let Docker pull {REGISTRY_BASE_IMAGE}: no root needed then)"
                if name == DEFAULT_BASE_IMAGE
                else ""
            ),
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
                    "LABEL " + " ".join(f"{key}={value}" for key, value in LABELS.items()),
                ],
            )
        finally:
            tar.stdout.close()
            tar.wait()
        if tar.returncode != 0:
            raise CommandFailedError(["tar", "-C", str(rootfs), "-c", "."], tar.returncode, "")
    return str(client.images.get(name).id)
