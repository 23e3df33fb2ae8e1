"""How the base image is made when it is missing, against a fake Docker client (the engine itself
is proved by tests/integration/test_bake.py): our default name is derived from the registry's
Debian image with Docker's build API (no root), and debootstrap is the path where no registry
answers or pulling is not allowed."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest

from pipeline.engines import base_image
from pipeline.engines.base_image import DEFAULT_BASE_IMAGE, REGISTRY_BASE_IMAGE, ensure_base_image
from pipeline.errors import ToolMissingError

NO_REGISTRY = "Get https://registry-1.docker.io/v2/: dial tcp: lookup registry-1.docker.io: no such host"


@dataclass
class FakeImages:
    present: set[str]
    registry: bool
    pulled: list[str] = field(default_factory=list)

    def get(self, name: str) -> Any:
        if name not in self.present:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return SimpleNamespace(id=f"sha256:id-of-{name}")

    def pull(self, name: str) -> Any:
        self.pulled.append(name)
        if not self.registry:
            raise docker.errors.APIError(NO_REGISTRY)
        self.present.add(name)
        return self.get(name)


@dataclass
class FakeApi:
    images: FakeImages
    error: str = ""
    builds: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def build(self, *, fileobj: io.BytesIO, **options: Any) -> Iterator[dict[str, Any]]:
        dockerfile = fileobj.read().decode()
        self.builds.append((dockerfile, options))
        assert dockerfile.startswith(f"FROM {REGISTRY_BASE_IMAGE}\n")
        assert REGISTRY_BASE_IMAGE in self.images.present, "derived before its source was there"
        yield {"stream": f"Step 1/5 : FROM {REGISTRY_BASE_IMAGE}\n"}
        if self.error:
            yield {"error": self.error}
            return
        self.images.present.add(options["tag"])
        yield {"aux": {"ID": f"sha256:id-of-{options['tag']}"}}


@dataclass
class World:
    images: FakeImages
    api: FakeApi
    debootstrapped: list[str]
    lines: list[str]

    def ensure(self, name: str = DEFAULT_BASE_IMAGE, **options: Any) -> str:
        return ensure_base_image(name, on_line=self.lines.append, **options)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    def make(present: set[str] = frozenset(), *, registry: bool = True, build_error: str = "") -> World:  # type: ignore[assignment]
        images = FakeImages(set(present), registry)
        api = FakeApi(images, build_error)
        client = SimpleNamespace(images=images, api=api)
        debootstrapped: list[str] = []

        def debootstrap(name: str, *, on_line: Any) -> str:
            debootstrapped.append(name)
            images.present.add(name)
            return f"sha256:debootstrapped-{name}"

        monkeypatch.setattr(base_image, "connect", lambda: client)
        monkeypatch.setattr(base_image, "build_base_image", debootstrap)
        return World(images, api, debootstrapped, [])

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the machine-wide build lock
    monkeypatch.delenv(base_image.MIRROR_ENV, raising=False)
    return make


def test_the_default_base_image_is_derived_from_the_registrys_debian_image(world: Any) -> None:
    w = world()
    assert w.ensure() == f"sha256:id-of-{DEFAULT_BASE_IMAGE}"
    assert w.images.pulled == [REGISTRY_BASE_IMAGE] == ["debian:bookworm-slim"]
    assert w.debootstrapped == []
    [(dockerfile, options)] = w.api.builds
    assert options["tag"] == DEFAULT_BASE_IMAGE
    assert options["pull"] is False  # pulled just before, once
    lines = dockerfile.splitlines()
    assert lines[0] == "FROM debian:bookworm-slim"
    assert f"ENV PATH={base_image.PATH_VALUE}" in lines
    assert any(
        line.startswith("RUN apt-get update") and "install" in line and "ca-certificates" in line for line in lines
    )
    assert 'CMD ["/bin/bash"]' in lines
    # the labels the debootstrap image carries (docker import's LABEL change), as JSON strings
    assert lines[-1] == 'LABEL "io.pipeline.role"="base" "io.pipeline.suite"="bookworm"'
    assert "sources.list" not in dockerfile  # the image's own apt sources
    assert f"building the base image {DEFAULT_BASE_IMAGE} from debian:bookworm-slim" in "\n".join(w.lines)


def test_without_a_registry_the_default_base_image_is_built_with_debootstrap(world: Any) -> None:
    w = world(registry=False)
    assert w.ensure() == f"sha256:debootstrapped-{DEFAULT_BASE_IMAGE}"
    assert w.images.pulled == [REGISTRY_BASE_IMAGE]
    assert w.debootstrapped == [DEFAULT_BASE_IMAGE]
    assert w.api.builds == []
    assert any(line.startswith("cannot pull debian:bookworm-slim (Get https://registry-1") for line in w.lines)


def test_without_a_registry_a_debian_image_already_here_is_derived_from(world: Any) -> None:
    w = world({REGISTRY_BASE_IMAGE}, registry=False)
    assert w.ensure() == f"sha256:id-of-{DEFAULT_BASE_IMAGE}"
    assert w.debootstrapped == []
    assert len(w.api.builds) == 1


def test_no_pull_never_asks_a_registry(world: Any) -> None:
    w = world({REGISTRY_BASE_IMAGE})  # even with the source at hand: --no-pull is debootstrap, as before
    assert w.ensure(allow_pull=False) == f"sha256:debootstrapped-{DEFAULT_BASE_IMAGE}"
    assert w.ensure("pipeline-base-own:bookworm", allow_pull=False, force=True).startswith("sha256:debootstrapped")
    assert w.images.pulled == []
    assert w.api.builds == []
    assert w.debootstrapped == [DEFAULT_BASE_IMAGE, "pipeline-base-own:bookworm"]


@pytest.mark.parametrize("name", [DEFAULT_BASE_IMAGE, "pipeline-base-own:bookworm", "debian:bookworm-slim"])
def test_an_image_that_exists_is_used_as_it_is(world: Any, name: str) -> None:
    w = world({name})
    assert w.ensure(name) == f"sha256:id-of-{name}"
    assert (w.images.pulled, w.api.builds, w.debootstrapped, w.lines) == ([], [], [], [])


def test_another_pipeline_name_is_never_pulled_and_built_with_debootstrap(world: Any) -> None:
    w = world()
    w.ensure("pipeline-base-own:bookworm")
    assert (w.images.pulled, w.api.builds) == ([], [])
    assert w.debootstrapped == ["pipeline-base-own:bookworm"]


def test_any_other_name_is_pulled_as_it_is(world: Any) -> None:
    w = world()
    assert w.ensure("registry.example.com/team/base:12") == "sha256:id-of-registry.example.com/team/base:12"
    assert w.images.pulled == ["registry.example.com/team/base:12"]
    assert (w.api.builds, w.debootstrapped) == ([], [])


def test_force_derives_the_default_again_from_a_fresh_pull(world: Any) -> None:
    w = world({DEFAULT_BASE_IMAGE, REGISTRY_BASE_IMAGE})
    w.ensure(force=True)
    assert w.images.pulled == [REGISTRY_BASE_IMAGE]
    assert len(w.api.builds) == 1
    assert w.debootstrapped == []


def test_a_failed_derivation_says_what_failed_and_how_to_build_without_a_registry(world: Any) -> None:
    w = world(build_error="E: Unable to locate package ca-certificates\n")
    with pytest.raises(ToolMissingError) as err:
        w.ensure()
    message = str(err.value)
    assert f"building the base image {DEFAULT_BASE_IMAGE} from debian:bookworm-slim failed" in message
    assert "E: Unable to locate package ca-certificates" in message
    assert "Step 1/5 : FROM debian:bookworm-slim" in message  # the build's tail
    assert err.value.hint is not None
    assert f"sudo pipeline image base --no-pull --tag {DEFAULT_BASE_IMAGE}" in err.value.hint
    assert w.debootstrapped == []


def test_a_debian_mirror_setting_is_the_derived_images_only_apt_source(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(base_image.MIRROR_ENV, "http://127.0.0.1:3142/debian")
    w = world()
    w.ensure()
    [(dockerfile, _)] = w.api.builds
    lines = dockerfile.splitlines()
    sources = next(i for i, line in enumerate(lines) if "sources.list" in line)
    assert lines[sources] == (
        "RUN rm -f /etc/apt/sources.list.d/debian.sources && "
        "echo 'deb http://127.0.0.1:3142/debian bookworm main' > /etc/apt/sources.list"
    )
    assert sources < next(i for i, line in enumerate(lines) if "apt-get update" in line)
