"""Files that ship with the package: the reference service (templates, Packer images, testinfra
checks) and the examples. In a wheel they live in `pipeline/_bundled/`; in a source checkout, at
the repository root."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REFERENCE_PARTS = ("templates", "images", "serverspec")


def bundled_root() -> Path:
    wheel = PACKAGE_DIR / "_bundled"
    if wheel.is_dir():
        return wheel
    return PACKAGE_DIR.parent


def examples() -> dict[str, Path]:
    folder = bundled_root() / "examples"
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if (p / "pipelinefile.py").is_file()}
