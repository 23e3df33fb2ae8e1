"""The body of the actions/setup-python@v5 stand-in, run by the machine's Python of the requested
major.minor (setup-python.sh found it). See ../README.md for what is and is not emulated.

- A fresh virtualenv per job in $RUNNER_TEMP stands in for the runner's tool-cache Python: its
  `bin` goes first on PATH, so `python` and `pip install ...` in later steps use it, and what a job
  installs vanishes with the job, as on a fresh hosted VM. A hosted runner's image has that Python
  ready (setup-python only puts it on PATH, about a second), so the venv is made without running
  ensurepip (2-3 s a job here) and gets pip as hard links to a pip installed once per machine
  Python (a folder beside the system temp, made atomically), plus its own `pip` scripts.
- `cache: pip`: the key is computed like the real action's (a hash of the files matching
  `cache-dependency-path`, default `**/requirements.txt`, falling back to `**/pyproject.toml`;
  no matching file is the real action's error), and PIP_CACHE_DIR points at a persistent folder
  named after that key (under $STAND_IN_PIP_CACHE_ROOT, which the test harness sets).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
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
        make_job_python(env_dir)
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


def make_job_python(env_dir: Path) -> None:
    """A virtualenv with pip, as quick as a hosted runner's ready Python: made without ensurepip,
    then pip's files linked in from the machine's template (copied when links cannot be made)."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    site = site_packages(env_dir)
    template = pip_template()
    for entry in template.iterdir():
        target = site / entry.name
        if entry.is_dir():
            try:
                shutil.copytree(entry, target, copy_function=os.link)
            except OSError:
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(entry, target)
        else:
            shutil.copy2(entry, target)
    python = env_dir / "bin" / "python"
    for name in ("pip", "pip3", f"pip{sys.version_info.major}.{sys.version_info.minor}"):
        script = env_dir / "bin" / name
        script.write_text(
            f"#!{python}\nimport sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n", encoding="utf-8"
        )
        script.chmod(0o755)


def site_packages(env_dir: Path) -> Path:
    """The folder a venv's Python installs pure packages into."""
    query = "import sysconfig; print(sysconfig.get_path('purelib'))"
    found = subprocess.run([str(env_dir / "bin" / "python"), "-c", query], check=True, capture_output=True, text=True)
    return Path(found.stdout.strip())


def pip_template() -> Path:
    """pip (with its dist-info, and what else ensurepip installs) installed once for this machine's Python, in a folder shared by every
    job: made in a temporary folder beside it and renamed into place, so jobs racing to make it
    each get a whole one."""
    full = ".".join(str(n) for n in sys.version_info[:3])
    tag = hashlib.sha256(os.path.realpath(sys.executable).encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / "setup-python-stand-in"
    template = root / f"pip-{full}-{tag}"
    if template.is_dir():
        return template
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".pip-{full}-", dir=root))
    staging = work / "venv"
    venv.EnvBuilder(with_pip=True, symlinks=True).create(staging)
    site = site_packages(staging)
    made = work / "site"
    made.mkdir()
    for entry in site.iterdir():  # what ensurepip installed: pip (and setuptools, its .pth, on 3.11)
        shutil.move(str(entry), made / entry.name)
    with contextlib.suppress(OSError):  # another job made it first
        made.rename(template)
    shutil.rmtree(work, ignore_errors=True)
    return template


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
