"""The reference image's app carries the package's OpenFeature provider: its copies must be the
package's own modules, and its OpenFeature wheel the version the `flags` extra allows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

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


APP_PROBE = """
import importlib.machinery, importlib.util, json, sys
path, etc = sys.argv[1], sys.argv[2]
loader = importlib.machinery.SourceFileLoader("hello_web_app", path)
spec = importlib.util.spec_from_loader("hello_web_app", loader)
app = importlib.util.module_from_spec(spec)
loader.exec_module(app)
app.ETC = etc
found = app._store_environment()
provider = app.RedisFlagProvider.from_environment(found, me="web-1")
print(json.dumps({"found": found, "addresses": list(provider.addresses)}))
"""


def _app_store_environment(tmp_path: Path, flags_env: str | None, **environ: str) -> dict[str, object]:
    """What the reference app (images/web/app/app.wsgi, loaded as mod_wsgi does: a file, its own
    lib/ first on the path) finds as its flag store, in a process of its own (it edits sys.path)."""
    etc = tmp_path / "etc"
    etc.mkdir(parents=True)
    if flags_env is not None:
        (etc / "flags.env").write_text(flags_env)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_FLAGS_")}
    done = subprocess.run(
        [sys.executable, "-c", APP_PROBE, str(REPO / "images" / "web" / "app" / "app.wsgi"), str(etc)],
        env={**env, "PYTHONDONTWRITEBYTECODE": "1", **environ},  # nothing written into the image's files
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


# what the aws launch templates' UserData writes (examples/feature-flags/templates/web.yaml), resolved
FLAGS_ENV = "PIPELINE_FLAGS_MASTER=ff.abc.cache.amazonaws.com:6379\nPIPELINE_FLAGS_REPLICAS=ff-ro.abc.cache.amazonaws.com:6379\n"


def test_the_app_reads_the_store_from_flags_env_on_aws(tmp_path: Path) -> None:
    seen = _app_store_environment(tmp_path, FLAGS_ENV)
    assert seen["found"] == {
        "PIPELINE_FLAGS_MASTER": "ff.abc.cache.amazonaws.com:6379",
        "PIPELINE_FLAGS_REPLICAS": "ff-ro.abc.cache.amazonaws.com:6379",
    }
    # the reader endpoint first, the primary last
    assert seen["addresses"] == ["ff-ro.abc.cache.amazonaws.com:6379", "ff.abc.cache.amazonaws.com:6379"]


def test_the_containers_environment_wins_over_flags_env_and_no_store_is_no_addresses(tmp_path: Path) -> None:
    local = _app_store_environment(tmp_path / "a", FLAGS_ENV, PIPELINE_FLAGS_MASTER="shop-flags-0:6379")
    assert local["found"] == {
        "PIPELINE_FLAGS_MASTER": "shop-flags-0:6379",
        "PIPELINE_FLAGS_REPLICAS": "ff-ro.abc.cache.amazonaws.com:6379",
    }
    assert _app_store_environment(tmp_path / "b", None) == {"found": {}, "addresses": []}
