"""The reference image's app carries the package's OpenFeature provider: its copies must be the
package's own modules, and its OpenFeature wheel the version the `flags` extra allows."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.conftest import REPO

LIB = REPO / "images" / "web" / "app" / "lib"


@pytest.mark.parametrize("module", ["__init__.py", "state.py", "provider.py"])
def test_the_images_provider_is_the_packages(module: str) -> None:
    assert (LIB / "pipeline" / "flags" / module).read_bytes() == (REPO / "pipeline" / "flags" / module).read_bytes(), (
        f"images/web/app/lib/pipeline/flags/{module} differs from pipeline/flags/{module}: copy it over"
    )


def test_the_openfeature_wheel_is_one_the_flags_extra_allows() -> None:
    wheels = sorted(p.name for p in LIB.glob("openfeature_sdk-*.whl"))
    assert len(wheels) == 1
    version = re.match(r"openfeature_sdk-([0-9.]+)-py3-none-any\.whl", wheels[0])
    assert version is not None
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["flags"]
    spec = next(s for s in extra if s.startswith("openfeature-sdk"))
    low, high = re.findall(r"[<>]=?([0-9.]+)", spec)
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(low) <= as_tuple(version.group(1)) < as_tuple(high)


def test_the_feature_flags_example_carries_the_reference_image_unchanged() -> None:
    example = REPO / "examples" / "feature-flags"
    for part in ("images", "serverspec"):
        for path in sorted((REPO / part).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                copy = example / path.relative_to(REPO)
                assert copy.is_file(), f"{copy} is missing: the example ships the reference image"
                assert copy.read_bytes() == path.read_bytes(), f"{copy} differs from {path.relative_to(REPO)}"
