"""The base image derived with Docker's build API (where a registry is reachable, from
debian:bookworm-slim) carries what the debootstrap image does. No registry answers here, so the
registry's image is stood in for by a real bookworm root file system without what the derivation
must add: the debootstrap base with ca-certificates purged, our labels emptied, another PATH and CMD.
Needs Docker (run under the shared lock) and containers that reach Debian's mirror."""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.engines.base_image import LABELS, PATH_VALUE, derive_base_image

pytestmark = pytest.mark.integration

SESSION = uuid.uuid4().hex[:8]

STAND_IN = """\
FROM {base}
RUN dpkg --purge --force-depends ca-certificates && rm -f /etc/ssl/certs/ca-certificates.crt
ENV PATH=/usr/bin:/bin
CMD ["/bin/sh"]
LABEL "io.pipeline.role"="" "io.pipeline.suite"=""
"""

CHECK = "dpkg-query -W -f='${Status}' ca-certificates && test -s /etc/ssl/certs/ca-certificates.crt && echo CERTS-OK"


def _ours(image: Any) -> dict[str, str]:
    return {k: v for k, v in (image.labels or {}).items() if k.startswith("io.pipeline.")}


@pytest.fixture
def stand_in(docker_client: Any, base_image: str) -> Iterator[str]:
    """The registry's Debian image, stood in for (see the module docstring); removed afterwards."""
    source = f"pipeline-test-slim-{SESSION}:bookworm"
    docker_client.images.build(
        fileobj=io.BytesIO(STAND_IN.format(base=base_image).encode()), tag=source, rm=True, forcerm=True, pull=False
    )
    yield source
    with contextlib.suppress(Exception):
        docker_client.images.remove(source, force=True)


def test_a_derived_base_image_carries_what_the_debootstrap_image_does(
    docker_client: Any, base_image: str, stand_in: str
) -> None:
    derived = f"pipeline-test-derived-{SESSION}:bookworm"
    lines: list[str] = []
    try:
        before = docker_client.containers.run(stand_in, ["sh", "-c", f"{CHECK} || echo MISSING"], remove=True)
        assert b"CERTS-OK" not in before  # the stand-in lacks what the derivation adds
        image_id = derive_base_image(derived, source=stand_in, client=docker_client, on_line=lines.append)
        made = docker_client.images.get(derived)
        reference = docker_client.images.get(base_image)
        assert made.id == image_id
        assert _ours(made) == _ours(reference) == LABELS
        assert made.attrs["Config"]["Cmd"] == reference.attrs["Config"]["Cmd"] == ["/bin/bash"]
        assert f"PATH={PATH_VALUE}" in made.attrs["Config"]["Env"]
        assert f"PATH={PATH_VALUE}" in reference.attrs["Config"]["Env"]
        after = docker_client.containers.run(derived, ["sh", "-c", CHECK], remove=True)
        assert b"install ok installed" in after
        assert b"CERTS-OK" in after
        assert f"building the base image {derived} from {stand_in}" in lines[0]
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(derived, force=True)
