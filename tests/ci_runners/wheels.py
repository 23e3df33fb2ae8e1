"""Make the install step a rendered workflow generates (`pip install pipeline-as-code[run]`, or with
a pinned `==X.Y.Z`) work offline in CI jobs run by act, without changing the rendered file.

The package is on no index here. Rather than rendering with the definition's `install=` override
(a file no user would commit, and the generated install step would go untested), the runner machine
is configured the way a self-hosted runner with a private mirror would be: its environment has
PIP_NO_INDEX=1 and PIP_FIND_LINKS naming a folder with a wheel of this checkout (built once per test
session, offline) and tools/ci-runners/wheelhouse (its dependencies and build backend, filled by
.ci/install-ci-runners.sh). So the jobs install exactly what a user's jobs would install from PyPI:
this version of the package, with its `[run]` extra.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = REPO / "tools" / "ci-runners" / "wheelhouse"


def wheelhouse_ready() -> bool:
    return any(WHEELHOUSE.glob("hatchling-*.whl"))


def offline_pip_environment(out: Path) -> dict[str, str]:
    """Build the checkout's wheel into `out` (no index: the build backend comes from the wheelhouse)
    and return the runner environment that makes pip install from there and the wheelhouse only."""
    out.mkdir(parents=True, exist_ok=True)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--find-links", str(WHEELHOUSE),
         "--wheel-dir", str(out), str(REPO)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if built.returncode != 0 or not list(out.glob("pipeline_as_code-*.whl")):
        raise RuntimeError(f"could not build the package's wheel:\n{built.stdout}{built.stderr}")
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": f"{out} {WHEELHOUSE}"}
