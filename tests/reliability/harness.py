"""What the reliability tests share: copies of the reference service, runs of the real CLI, and an
inventory of everything a pipeline made (containers, networks, images, locks, ledger) to prove
there are no orphans and no duplicates.

Every project is a copy of the reference service (`pipeline init`) under its own pipeline name,
so scenarios cannot see each other's stacks. They all bake into one repository (`IMAGE_NAME`):
the bake is content-addressed, so a release baked by one scenario is reused by the next one.
Release versions carry a per-session token, which also marks Packer's own (unlabelled) images
of this session.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.engines.docker_client import LABEL_PREFIX
from pipeline.engines.http_check import request
from pipeline.ledger import Ledger, Manifest
from tests.conftest import cli_env, commit_all, init_reference_service

SESSION = secrets.token_hex(2)
PREFIX = f"rel{SESSION}"
"""Every pipeline name of this session starts with it (cleanup finds them by it)."""
IMAGE_NAME = f"{PREFIX}-web"
"""The one repository every project of the session bakes into (so bakes are reused)."""
V1 = f"1.0.0-{SESSION}"
V2 = f"2.0.0-{SESSION}"
STAGES = ["commit-test", "bake", "test-stack", "update-stack", "rollback", "teardown", "promote"]
REPLICAS = 2
"""DesiredCapacity of the reference template: the replica count every production must have."""
FLAG_STORE_SIZE = 3
"""A master and two replicas: NumCacheClusters of the feature-flags example's template."""

L_PIPELINE = f"{LABEL_PREFIX}.pipeline"
L_STACK = f"{LABEL_PREFIX}.stack"
L_ROLE = f"{LABEL_PREFIX}.role"
L_IMAGE = f"{LABEL_PREFIX}.image"
L_VERSION = "org.opencontainers.image.version"
"""Set by the reference Packer template on every image it builds (also on Packer's raw artifact)."""


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-8000:]}\n--- stderr\n{result.stderr[-4000:]}"


# --------------------------------------------------------------------------------------------- projects


@dataclass
class Project:
    """A copy of the reference service with its own pipeline name, ledger and lock folder."""

    root: Path
    name: str
    cache: Path
    """XDG_CACHE_HOME of its runs: where the local engine keeps its per-stack lock files."""

    @property
    def production(self) -> str:
        return f"{self.name}-production"

    @property
    def test_prefix(self) -> str:
        return f"{self.name}-test-"

    def env(self, **extra: str) -> dict[str, str]:
        return cli_env(XDG_CACHE_HOME=str(self.cache), PYTHONUNBUFFERED="1", **extra)

    def run(self, *args: str, timeout: float = 900, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            cwd=self.root,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args],
            cwd=self.root,
            env=self.env(**extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.root, check=True, capture_output=True, text=True).stdout

    def edit(self, rel: str, old: str, new: str, *, commit: bool = True) -> None:
        path = self.root / rel
        text = path.read_text()
        assert old in text, f"{old!r} not in {rel}"
        path.write_text(text.replace(old, new, 1))
        if commit:
            self.git("commit", "-qam", f"edit {rel}: {new[:40]}")

    def release(self, version: str) -> None:
        """Change RELEASE in the definition (the page says "Hello World <version>")."""
        text = (self.root / "pipelinefile.py").read_text()
        current = re.search(r'^RELEASE = "([^"]+)"$', text, re.MULTILINE)
        assert current is not None
        self.edit("pipelinefile.py", current.group(0), f'RELEASE = "{version}"')

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.root)

    def manifests(self) -> list[Manifest]:
        ledger = self.ledger
        found = [ledger.manifest(run_id) for run_id in ledger.runs()]
        return [m for m in found if m is not None]

    def last_run(self) -> Manifest:
        return self.manifests()[-1]

    def run_of(self, result: subprocess.CompletedProcess[str]) -> Manifest:
        """The manifest of the run whose output `result` is (its first line names the run)."""
        found = re.search(r"^run (\S+): ", result.stdout, re.MULTILINE)
        assert found, f"no run id in the output:\n{result.stdout[-2000:]}"
        manifest = self.ledger.manifest(found.group(1))
        assert manifest is not None
        return manifest

    def statuses(self, manifest: Manifest | None = None) -> dict[str, str]:
        manifest = manifest or self.last_run()
        return {name: manifest.stages[name].status for name in STAGES if name in manifest.stages}


def make_project(base: Path, name: str, version: str, template: Path) -> Project:
    """A copy of `template` (a `pipeline init` of the reference service) named `name`, releasing `version`."""
    root = base / name
    shutil.copytree(template, root)
    definition = root / "pipelinefile.py"
    text = definition.read_text()
    text = text.replace('"hello-web",', f'"{name}",', 1)
    text = re.sub(r'^RELEASE = "[^"]+"$', f'RELEASE = "{version}"', text, count=1, flags=re.MULTILINE)
    text = text.replace('checks="serverspec",', f'checks="serverspec", image_name="{IMAGE_NAME}",', 1)
    assert f'image_name="{IMAGE_NAME}"' in text
    assert f'"{name}"' in text
    definition.write_text(text)
    commit_all(root, "the reference service")
    cache = base / f"{name}.cache"
    cache.mkdir()
    return Project(root=root, name=name, cache=cache)


def init_template(base: Path) -> Path:
    """`pipeline init` once per session; projects are copies of it."""
    return init_reference_service(base / "reference")


# --------------------------------------------------------------------------------------------- inventory


@dataclass
class Inventory:
    """Everything of one pipeline that exists in the Docker engine right now."""

    containers: list[Any]
    networks: list[Any]
    images: list[Any]

    def stacks(self) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for container in self.containers:
            found.setdefault(str(container.labels.get(L_STACK, "")), []).append(container)
        return found

    def summary(self) -> str:
        if not self.containers and not self.networks:
            return "nothing"
        parts = []
        for stack, containers in sorted(self.stacks().items()):
            roles = sorted(str(c.labels.get(L_ROLE, "?")) for c in containers)
            parts.append(f"{_short(stack)}: {roles.count('lb')} lb + {roles.count('replica')} replicas")
        others = [n.name for n in self.networks if not any(n.name.startswith(s) for s in self.stacks())]
        if others:
            parts.append(f"networks {', '.join(_short(o) for o in others)}")
        return "; ".join(parts)


def _short(stack: str) -> str:
    """`rel1a2b-k07-test-20261124-001510-4c665e` -> `test-…4c665e` (for the table)."""
    match = re.match(rf"^{PREFIX}-[a-z0-9]+-(production|test)(?:-.*-([0-9a-f]{{6}}))?", stack)
    if not match:
        return stack or "(no stack label)"
    return match.group(1) + (f"-…{match.group(2)}" if match.group(2) else "")


def inventory(client: Any, name: str) -> Inventory:
    selector = {"label": f"{L_PIPELINE}={name}"}
    return Inventory(
        containers=list(client.containers.list(all=True, filters=selector)),
        networks=list(client.networks.list(filters=selector)),
        images=list(client.images.list(filters=selector)),
    )


def packer_containers(client: Any, under: Path) -> list[Any]:
    """Packer build containers (they bind-mount Packer's temporary folder) started from `under`."""
    inside = str(under.resolve()) + "/"
    found = []
    for container in client.containers.list(all=True, filters={"volume": "/packer-files"}):
        sources = [str(m.get("Source", "")) for m in container.attrs.get("Mounts") or []]
        if any(s.startswith(inside) for s in sources):
            found.append(container)
    return found


def dangling_images(client: Any, version: str, *, wait: bool = False) -> list[str]:
    """Images of release `version` that nothing tags and nothing is built on: Packer's images, and
    the layers on them, of dead bakes (every layer of a chain carries the version label Packer's
    image has, so an orphan chain always has such a leaf). `wait`: a commit that outlived the kill
    ends a moment later; wait (up to a minute) for its image to appear."""
    deadline = time.monotonic() + (60.0 if wait else 0.0)
    while True:
        found = [
            image.short_id
            for image in client.images.list(all=True, filters={"dangling": True, "label": f"{L_VERSION}={version}"})
        ]
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


def lock_problems(project: Project) -> list[str]:
    """Lock files that are held, that name a holder, or that belong to no existing stack."""
    problems = []
    for path in sorted((project.root / ".pipeline" / "locks").glob("*.lock")):
        with path.open("a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                problems.append(f"{path.name} is held")
                continue
            fh.seek(0)
            if fh.read().strip():
                problems.append(f"{path.name} still names a holder")
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    stack_locks = sorted(p.name for p in (project.cache / "pipeline" / "stacks").glob("*.lock"))
    expected = [f"{project.name}.{project.production}.lock"]
    extra = [n for n in stack_locks if n not in expected]
    if extra:
        problems.append(f"stack lock files of stacks that do not exist: {', '.join(extra)}")
    return problems


def accounted_images(project: Project, client: Any) -> set[str]:
    """Image ids the ledger accounts for: every image output of every run, every release."""
    ledger = project.ledger
    refs = {r.image for env in ("production",) for r in ledger.releases(project.name, env)}
    for manifest in project.manifests():
        refs |= {v for result in manifest.stages.values() for k, v in result.outputs.items() if "image" in k and v}
    ids = set()
    for ref in refs:
        with contextlib.suppress(Exception):
            ids.add(str(client.images.get(ref).id))
    return ids


def production_page(project: Project, client: Any, requests: int = 10) -> list[str]:
    """The production page as users see it: `requests` GETs through the balancer."""
    from pipeline.engines.docker_stack import DockerStackEngine

    state = DockerStackEngine(project.name, project.root / "templates" / "web.yaml", client=client).describe(
        project.production
    )
    assert state.exists, f"{project.production} does not exist"
    assert state.url, f"{project.production} has no balancer URL ({state.status})"
    bodies = []
    for _ in range(requests):
        status, body = request(state.url, timeout=5)
        bodies.append(f"{status} {body.strip()}")
    return bodies


def convergence_problems(project: Project, client: Any, version: str) -> list[str]:
    """Everything that is not as a converged run leaves it: production serves `version` through
    its balancer on the template's replica count, and nothing else of the pipeline exists unless
    the ledger accounts for it."""
    problems: list[str] = []
    found = inventory(client, project.name)
    stacks = found.stacks()
    for stack in stacks:
        if stack != project.production:
            problems.append(f"orphan stack {stack}: {[c.name for c in stacks[stack]]}")
    production = stacks.get(project.production, [])
    lbs = [c for c in production if c.labels.get(L_ROLE) == "lb"]
    replicas = [c for c in production if c.labels.get(L_ROLE) == "replica"]
    stores = [c for c in production if c.labels.get(L_ROLE) == "flag-store"]
    strays = [c for c in production if c.labels.get(L_ROLE) not in ("lb", "replica", "flag-store")]
    if len(lbs) != 1:
        problems.append(f"production has {len(lbs)} balancers, not 1")
    if len(replicas) != REPLICAS:
        problems.append(f"production has {len(replicas)} replicas, not {REPLICAS} (the template's DesiredCapacity)")
    if strays:
        problems.append(f"production has containers of unknown role: {[c.name for c in strays]}")
    template = (project.root / "templates" / "web.yaml").read_text()
    wanted_stores = FLAG_STORE_SIZE if "AWS::ElastiCache::ReplicationGroup" in template else 0
    if len(stores) != wanted_stores:
        problems.append(f"production has {len(stores)} flag store containers, not {wanted_stores}")
    problems += [f"{c.name} is {c.status}" for c in production if c.status != "running"]
    # In service means restarted by Docker after a crash, also for a replica a killed run started
    problems += [
        f"{c.name} is in service but would not be restarted (restart policy {policy!r})"
        for c in production
        if (policy := c.attrs["HostConfig"]["RestartPolicy"]["Name"]) != "unless-stopped"
    ]
    networks = sorted(n.name for n in found.networks)
    if networks != [f"{project.production}-net"]:
        problems.append(f"networks: {networks} (expected only {project.production}-net)")
    try:
        bodies = production_page(project, client)
    except (AssertionError, OSError) as exc:
        problems.append(f"production does not answer: {exc}")
    else:
        wrong = [b for b in bodies if b != f"200 Hello World {version}"]
        if wrong:
            problems.append(f"production answered {wrong[0]!r} ({len(wrong)}/{len(bodies)} requests), not {version}")
    accounted = accounted_images(project, client)
    for image in found.images:  # top-level images (layers under a tagged image are part of it)
        if not image.tags:
            problems.append(f"untagged image {image.short_id} of the pipeline (a bake that died before tagging it)")
        elif image.id not in accounted:
            problems.append(f"image {image.tags} is not in the ledger")
    left = packer_containers(client, project.root)
    if left:
        problems.append(f"Packer build containers left: {[c.short_id for c in left]}")
    problems += lock_problems(project)
    journals = list((project.root / ".pipeline" / "bakes").rglob("journal.json"))
    if journals:
        problems.append(f"bake journals left (a dead bake nobody cleaned up): {journals}")
    for manifest in project.manifests():
        unfinished = {n: r.status for n, r in manifest.stages.items() if r.status in ("running", "pending")}
        if unfinished:
            problems.append(f"run {manifest.run_id} still says {unfinished}")
    return problems


def remove_pipeline(client: Any, name: str) -> None:
    """Remove everything labelled with pipeline `name` (containers, networks, images)."""
    selector = {"label": f"{L_PIPELINE}={name}"}
    for container in client.containers.list(all=True, filters=selector):
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)
    for network in client.networks.list(filters=selector):
        with contextlib.suppress(Exception):
            network.remove()
    for volume in client.volumes.list(filters=selector):  # a stack's database data
        with contextlib.suppress(Exception):
            volume.remove(force=True)


def remove_session(client: Any, roots: list[Path]) -> None:
    """Everything this session made: its pipelines' containers and networks, Packer containers
    started from its projects, the shared repository's images and this session's Packer artifacts."""
    names: set[str] = set()
    for container in client.containers.list(all=True, filters={"label": L_PIPELINE}):
        value = str(container.labels.get(L_PIPELINE, ""))
        if value.startswith(PREFIX):
            names.add(value)
    for network in client.networks.list(filters={"label": L_PIPELINE}):
        value = str((network.attrs.get("Labels") or {}).get(L_PIPELINE, ""))
        if value.startswith(PREFIX):
            names.add(value)
    for name in names:
        remove_pipeline(client, name)
    for root in roots:
        for container in packer_containers(client, root):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
    for image in client.images.list(name=IMAGE_NAME):
        for tag in image.tags:
            with contextlib.suppress(Exception):
                client.images.remove(tag, force=True)
    for image in client.images.list(all=True, filters={"label": L_PIPELINE}):
        if str((image.labels or {}).get(L_PIPELINE, "")).startswith(PREFIX):
            with contextlib.suppress(Exception):
                client.images.remove(image.id, force=True)
    for image in client.images.list(all=True, filters={"dangling": True}):
        if SESSION in str((image.labels or {}).get(L_VERSION, "")):
            with contextlib.suppress(Exception):
                client.images.remove(image.id, force=True)


# --------------------------------------------------------------------------------------------- watching


@dataclass
class Watch:
    """Samples a pipeline's stacks while a run goes on: how many test stacks and production
    balancers existed at once (a duplicate would show here even if a later step removed it)."""

    client: Any
    project: Project
    interval: float = 0.1
    max_test_stacks: int = 0
    max_production_lbs: int = 0
    max_production_replicas: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Watch:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        selector = {"label": f"{L_PIPELINE}={self.project.name}"}
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a container may vanish while it is listed
                containers = self.client.containers.list(all=True, filters=selector, ignore_removed=True)
                stacks = {str(c.labels.get(L_STACK, "")) for c in containers}
                tests = [s for s in stacks if s.startswith(self.project.test_prefix)]
                production = [c for c in containers if c.labels.get(L_STACK) == self.project.production]
                lbs = sum(1 for c in production if c.labels.get(L_ROLE) == "lb")
                replicas = sum(1 for c in production if c.labels.get(L_ROLE) == "replica")
                self.max_test_stacks = max(self.max_test_stacks, len(tests))
                self.max_production_lbs = max(self.max_production_lbs, lbs)
                self.max_production_replicas = max(self.max_production_replicas, replicas)
                self.samples += 1
            self._stop.wait(self.interval)


@dataclass
class Timeline:
    """A run's output lines with the time.monotonic() each arrived (for incident timing)."""

    lines: list[tuple[float, str]] = field(default_factory=list)
    stderr: str = ""
    returncode: int | None = None

    def first(self, pattern: str, after: float = 0.0) -> float | None:
        regex = re.compile(pattern)
        return next((t for t, line in self.lines if t >= after and regex.search(line)), None)

    @property
    def stdout(self) -> str:
        return "\n".join(line for _, line in self.lines)


def run_timed(project: Project, *args: str, timeout: float = 900, **extra: str) -> Timeline:
    """Run the CLI and stamp each output line as it arrives."""
    proc = project.popen(*args, **extra)
    timeline = Timeline()
    assert proc.stdout is not None
    assert proc.stderr is not None
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read() if proc.stderr else ""), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        timeline.lines.append((time.monotonic(), line.rstrip("\n")))
        if time.monotonic() > deadline:
            proc.kill()
    timeline.returncode = proc.wait()
    reader.join(timeout=10)
    timeline.stderr = "".join(errors)
    return timeline


# --------------------------------------------------------------------------------------------- the report


@dataclass
class Row:
    section: str
    cells: dict[str, str]


REPORT: list[Row] = []
"""Rows the tests add; conftest prints them as tables at the end of the session."""


def report(section: str, **cells: object) -> None:
    REPORT.append(Row(section, {k.replace("_", " "): str(v) for k, v in cells.items()}))


WIDTHS = {"message": 110, "scenario": 44, "checkpoint": 34, "phases": 70, "searched": 70, "what": 60, "result": 110}
"""Column widths (characters) other than the default; longer cells wrap onto more lines."""
DEFAULT_WIDTH = 36


def render_tables() -> list[str]:
    lines: list[str] = []
    sections: dict[str, list[Row]] = {}
    for row in REPORT:
        sections.setdefault(row.section, []).append(row)
    for section, rows in sections.items():
        columns = list(dict.fromkeys(k for row in rows for k in row.cells))
        widths = {
            c: min(WIDTHS.get(c, DEFAULT_WIDTH), max(len(c), *(len(row.cells.get(c, "")) for row in rows)))
            for c in columns
        }
        lines.append("")
        lines.append(section)
        lines.append(" | ".join(c.ljust(widths[c]) for c in columns))
        lines.append("-+-".join("-" * widths[c] for c in columns))
        for row in rows:
            wrapped = {
                c: textwrap.wrap(row.cells.get(c, ""), widths[c], break_on_hyphens=False) or [""] for c in columns
            }
            for index in range(max(len(w) for w in wrapped.values())):
                cells = [(wrapped[c][index] if index < len(wrapped[c]) else "").ljust(widths[c]) for c in columns]
                lines.append(" | ".join(cells).rstrip())
    return lines


def write_report(path: Path) -> None:
    path.write_text(json.dumps([{"section": r.section, **r.cells} for r in REPORT], indent=2))


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    """`with stopwatch() as elapsed:` ... `elapsed[0]` is the seconds it took."""
    box: list[float] = []
    started = time.monotonic()
    try:
        yield box
    finally:
        box.append(time.monotonic() - started)


def env_without(tool: str, base: Path) -> str:
    """A PATH like this one, with every directory's `tool` hidden (a folder of symlinks to the rest)."""
    shadow = base / f"path-without-{tool}"
    shadow.mkdir(exist_ok=True)
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or not Path(folder).is_dir():
            continue
        for entry in Path(folder).iterdir():
            target = shadow / entry.name
            if entry.name == tool or target.exists() or target.is_symlink():
                continue
            with contextlib.suppress(OSError):
                target.symlink_to(entry)
    return str(shadow)
