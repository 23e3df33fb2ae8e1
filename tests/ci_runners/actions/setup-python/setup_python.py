"""The body of the actions/setup-python@v5 stand-in, run by the machine's Python of the requested
major.minor (setup-python.sh found it). See ../README.md for what is and is not emulated.

- A fresh virtualenv per job in $RUNNER_TEMP stands in for the runner's tool-cache Python: its
  `bin` goes first on PATH, so `python` and `pip install ...` in later steps use it, and what a job
  installs vanishes with the job, as on a fresh hosted VM.
- `cache: pip`: the key is computed like the real action's (a hash of the files matching
  `cache-dependency-path`, default `**/requirements.txt`, falling back to `**/pyproject.toml`;
  no matching file is the real action's error), and PIP_CACHE_DIR points at a persistent folder
  named after that key (under $STAND_IN_PIP_CACHE_ROOT, which the test harness sets).
"""

from __future__ import annotations

import glob
import hashlib
import os
import platform
import subprocess
import sys
import venv
from pathlib import Path

EMULATED_CACHES = ("pip",)


def main() -> int:
    requested = sys.argv[1]
    full = ".".join(str(n) for n in sys.version_info[:3])
    parts = requested.split(".")
    if len(parts) == 3 and parts[2] != "x" and requested != full:
        return fail(
            f"python-version {requested} was asked for; this machine has Python {full} (exact patch versions are not downloaded by the stand-in)"
        )
    for name, allowed in (
        ("ARCHITECTURE", ("", "x64")),
        ("CHECK_LATEST", ("", "false")),
        ("ALLOW_PRERELEASES", ("", "false")),
        ("FREETHREADED", ("", "false")),
    ):
        value = os.environ.get(f"INPUT_{name}", "")
        if value not in allowed:
            return fail(f"input {name.lower().replace('_', '-')}: {value!r} is not emulated (only {allowed[-1]!r})")

    temp = Path(os.environ["RUNNER_TEMP"])
    env_dir = temp / f"setup-python-{full}"
    if not (env_dir / "bin" / "python").exists():
        venv.EnvBuilder(with_pip=True, symlinks=True).create(env_dir)
    bin_dir = env_dir / "bin"
    python_path = bin_dir / "python"
    print(f"Successfully set up CPython ({full}) from {sys.executable} in a fresh virtualenv {env_dir}")
    print(f"Job workspace: {os.environ.get('GITHUB_WORKSPACE', os.getcwd())}")

    outputs = {"python-version": full, "python-path": str(python_path), "cache-hit": "false"}
    exports: dict[str, str] = {}
    if os.environ.get("INPUT_UPDATE_ENVIRONMENT", "true") != "false":
        append(os.environ["GITHUB_PATH"], f"{bin_dir}\n")
        exports.update(
            pythonLocation=str(env_dir),
            Python_ROOT_DIR=str(env_dir),
            Python3_ROOT_DIR=str(env_dir),
            PKG_CONFIG_PATH=f"{env_dir}/lib/pkgconfig",
        )

    cache = os.environ.get("INPUT_CACHE", "")
    if cache:
        if cache not in EMULATED_CACHES:
            return fail(f"cache: {cache!r} is not emulated (only pip)")
        key = pip_cache_key(full, os.environ.get("INPUT_CACHE_DEPENDENCY_PATH", ""))
        if key is None:
            patterns = os.environ.get("INPUT_CACHE_DEPENDENCY_PATH") or "**/requirements.txt"
            return fail(
                f"No file in {os.getcwd()} matched to [{','.join(patterns.splitlines())} or **/pyproject.toml], "
                "make sure you have checked out the target repository"
            )
        root = Path(os.environ.get("STAND_IN_PIP_CACHE_ROOT") or Path(os.environ["RUNNER_TOOL_CACHE"]) / "pip-cache")
        cache_dir = root / key
        hit = cache_dir.is_dir() and any(cache_dir.iterdir())
        cache_dir.mkdir(parents=True, exist_ok=True)
        exports["PIP_CACHE_DIR"] = str(cache_dir)
        outputs["cache-hit"] = "true" if hit else "false"
        print(f"Cache {'restored from' if hit else 'not found for'} key: {key}")

    append(os.environ["GITHUB_ENV"], "".join(f"{k}={v}\n" for k, v in exports.items()))
    append(os.environ["GITHUB_OUTPUT"], "".join(f"{k}={v}\n" for k, v in outputs.items()))
    subprocess.run([str(python_path), "--version"], check=True)
    return 0


def pip_cache_key(version: str, dependency_path: str) -> str | None:
    """The real action's primary key: `setup-python-{RUNNER_OS}-{arch}-{os version}-{os name}-python-
    {version}-pip-{hash}`, the hash over the files the patterns match (the fallback pattern
    `**/pyproject.toml` when the given ones match nothing); None when no file matches."""
    patterns = [p.strip() for line in dependency_path.splitlines() for p in line.split(",") if p.strip()]
    digest = hash_files(patterns or ["**/requirements.txt"]) or hash_files(["**/pyproject.toml"])
    if digest is None:
        return None
    os_release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    os_name = os_release.get("ID", "linux").strip('"')
    os_version = os_release.get("VERSION_ID", "").strip('"')
    arch = {"x86_64": "x64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return f"setup-python-{os.environ.get('RUNNER_OS', 'Linux')}-{arch}-{os_version}-{os_name}-python-{version}-pip-{digest}"


def hash_files(patterns: list[str]) -> str | None:
    """A sha256 over the sorted matching files' own sha256s (like `hashFiles`), relative to the
    workspace; None when nothing matches."""
    workspace = Path(os.environ.get("GITHUB_WORKSPACE") or os.getcwd())
    files = sorted({Path(p) for pattern in patterns for p in matches(str(workspace / pattern)) if Path(p).is_file()})
    if not files:
        return None
    outer = hashlib.sha256()
    for path in files:
        outer.update(hashlib.sha256(path.read_bytes()).digest())
    return outer.hexdigest()


def matches(pattern: str) -> list[str]:
    """The paths `pattern` matches, hidden files and folders included: the real action hashes
    with @actions/glob, whose matching is minimatch's with `dot: true` (so `**/*.yml` finds
    `.github/workflows/NAME.yml`)."""
    return glob.glob(pattern, recursive=True, include_hidden=True)


def append(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def fail(message: str) -> int:
    print(f"::error::setup-python stand-in: {message}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
