"""A thin wrapper over `packer -machine-readable`: validate, inspect, build, read the manifest.

Why not packer-py (PyPI `packer.py`): it buffers a build's whole output until Packer exits, so a
ten-minute AMI bake would show nothing until the end; we need each line as it comes (the live view's
current step, the stage log, deadlines and Ctrl-C). This module streams through
`pipeline.engines.process.stream` and parses Packer's machine-readable records:

    <unix timestamp>,<target>,<type>,<data>...

Commas inside data are written as `%!(PACKER_COMMA)` and newlines as a literal `\\n`. The artifact id
is read from the manifest post-processor, whose file *appends* one entry per build across runs: the
current build is the one whose `packer_run_uuid` equals the file's `last_run_uuid`.

Packer versions: Debian's 1.6.6 has its builders built in and has no `packer init`. From 1.7 on,
plugins are declared in `packer { required_plugins { ... } }` and installed with `packer init`
(required from 1.10, which no longer bundles the docker and amazon plugins). `Packer.prepare` runs
`packer init` on a plugins file when the installed Packer is >= 1.7, and skips it on older ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.engines.process import run_quiet, stream
from pipeline.errors import CommandFailedError, CommandTimeoutError, PipelineError, TemplateError, ToolMissingError
from pipeline.faults import checkpoint

PACKER_COMMA = "%!(PACKER_COMMA)"
BINARY_ENV = "PIPELINE_PACKER"
"""Path of the packer binary to use (default: `packer` on PATH)."""
INIT_MIN_VERSION = (1, 7, 0)
"""The first Packer with `packer init` and `required_plugins`."""
PLUGINS_FILE = "plugins.pkr.hcl"
"""Next to a template: its `required_plugins`, for `packer init` on Packer >= 1.7."""
INSTALL_HINT = (
    "install Packer: Debian/Ubuntu `apt-get install -y packer` (1.6.6), or a release from "
    "https://developer.hashicorp.com/packer/install; then check with `pipeline doctor`"
)

Version = tuple[int, int, int]


# --- the machine-readable format -----------------------------------------------------------------


def unescape(text: str) -> str:
    """Undo Packer's escaping of one machine-readable field."""
    return text.replace(PACKER_COMMA, ",").replace("\\n", "\n").replace("\\r", "\r")


@dataclass(frozen=True)
class Record:
    """One machine-readable line: `timestamp,target,type,data...` (data fields unescaped)."""

    timestamp: int
    target: str
    type: str
    data: tuple[str, ...]


def parse_line(line: str) -> Record | None:
    """A record, or None for a line that is not machine-readable (e.g. a plugin's stray stderr)."""
    parts = line.rstrip("\r\n").split(",", 3)
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    timestamp, target, kind = parts[0], parts[1], parts[2]
    data = tuple(unescape(value) for value in parts[3].split(",")) if len(parts) == 4 else ()
    return Record(int(timestamp), target, kind, data)


def parse_output(text: str) -> list[Record]:
    return [r for r in (parse_line(line) for line in text.splitlines()) if r is not None]


@dataclass
class Artifact:
    """What a build produced, from the `artifact,<n>,<field>,<value>` records."""

    index: int
    builder_id: str = ""
    id: str = ""
    string: str = ""


_STEP_PREFIX = re.compile(r"^\s*==>\s*")
_CONTAINER_ID = re.compile(r"Container ID: ([0-9a-f]{12,64})")
COMMITTING = "Committing the container"
"""What the docker builder says as it starts `docker commit` of its build container."""
STEP_WIDTH = 100


def step_text(message: str) -> str | None:
    """The live view's short 'current step' for a `ui,say` message, or None if it is not a step.

    Packer marks steps with `==> ` (`==> docker.web: Provisioning with shell script: ...`); `--> `
    lines repeat a build's artifacts and are not steps."""
    first = message.strip("\n").split("\n", 1)[0]
    if not _STEP_PREFIX.match(first):
        return None
    text = _STEP_PREFIX.sub("", first).strip()
    if not text:
        return None
    return text if len(text) <= STEP_WIDTH else text[: STEP_WIDTH - 3] + "..."


class BuildProgress:
    """Follows a running build's records: steps for the live view, every line for the log, and what
    the build has said so far (artifacts, errors, containers it started), kept when it fails."""

    def __init__(
        self,
        on_step: Callable[[str], None] = lambda text: None,
        on_line: Callable[[str], None] = lambda line: None,
        raw: Callable[[str], None] = lambda line: None,
        *,
        name: str = "build",
        on_container: Callable[[str], None] = lambda container: None,
    ) -> None:
        self.on_step = on_step
        self.on_line = on_line
        self.raw = raw
        self.name = name
        """Who builds (the stage): names the fault-injection checkpoints `packer:<name>:...`."""
        self.on_container = on_container
        """Called with each container Packer says it started, before the next line is read (so a
        bake can write it down before Packer commits it)."""
        self.provisioning = False
        self.artifacts: dict[str, dict[int, Artifact]] = {}
        self.errors: list[str] = []
        self.containers: list[str] = []
        self.error_count: int | None = None
        self._lock = threading.Lock()

    def feed(self, line: str) -> None:
        with self._lock:
            self.raw(line)
            record = parse_line(line)
            if record is None:
                if line.strip():
                    self.on_line(line)
                return
            self._record(record)

    def _record(self, record: Record) -> None:
        if record.type == "ui" and len(record.data) >= 2:
            level, message = record.data[0], ",".join(record.data[1:])
            for text in message.strip("\n").split("\n"):
                self.on_line(text)
            found = _CONTAINER_ID.search(message)
            if found and found.group(1) not in self.containers:
                self.containers.append(found.group(1))
                self.on_container(found.group(1))
            if COMMITTING in message:  # crash-test checkpoint: the docker builder commits now
                self.provisioning = False
                checkpoint(f"packer:{self.name}:committing")
            elif self.provisioning:  # a crash-test checkpoint on every line of the provisioning
                checkpoint(f"packer:{self.name}:provisioning")
            elif "Provisioning with" in message:
                self.provisioning = True
            if level == "say":
                step = step_text(message)
                if step:
                    self.on_step(step)
        elif record.type == "artifact" and len(record.data) >= 2 and record.data[0].isdigit():
            index = int(record.data[0])
            artifact = self.artifacts.setdefault(record.target, {}).setdefault(index, Artifact(index))
            name, value = record.data[1], ",".join(record.data[2:])
            if name == "builder-id":
                artifact.builder_id = value
            elif name == "id":
                artifact.id = value
            elif name == "string":
                artifact.string = value
        elif record.type == "error" and record.data:
            self.errors.append(",".join(record.data).strip())
        elif record.type == "error-count" and record.data and record.data[0].isdigit():
            self.error_count = int(record.data[0])

    def artifact_ids(self, target: str) -> list[str]:
        """The artifact ids a build target produced, in order (post-processors may repeat them)."""
        found = self.artifacts.get(target, {})
        return [found[i].id for i in sorted(found) if found[i].id]


# --- the manifest post-processor ------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestBuild:
    """One build entry of a manifest post-processor file."""

    name: str
    builder_type: str
    artifact_id: str
    packer_run_uuid: str
    build_time: int = 0
    custom_data: Mapping[str, str] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """`<builder type>.<name>`, as `-only` spells it (e.g. `docker.web`)."""
        return f"{self.builder_type}.{self.name}"


def read_manifest(path: Path, source: str | None = None) -> ManifestBuild:
    """The current run's build in a manifest file (by `last_run_uuid`; the file appends).

    With `source`, the build of that source (`docker.web`); else the last build of the run."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(
            f"Packer wrote no manifest at {path}",
            hint='add a manifest post-processor to the template\'s build: post-processor "manifest" '
            "{ output = var.manifest } (with a `manifest` variable, so the bake chooses the path)",
        ) from None
    except (OSError, ValueError) as exc:
        raise PipelineError(f"cannot read Packer's manifest {path}: {exc}") from None
    run_uuid = data.get("last_run_uuid") if isinstance(data, dict) else None
    builds = data.get("builds") if isinstance(data, dict) else None
    if not isinstance(builds, list) or not run_uuid:
        raise PipelineError(f"Packer's manifest {path} has no last_run_uuid or builds list")
    current = [b for b in builds if isinstance(b, dict) and b.get("packer_run_uuid") == run_uuid]
    entries = [
        ManifestBuild(
            name=str(b.get("name", "")),
            builder_type=str(b.get("builder_type", "")),
            artifact_id=str(b.get("artifact_id", "")),
            packer_run_uuid=str(run_uuid),
            build_time=int(b.get("build_time") or 0),
            custom_data={str(k): str(v) for k, v in (b.get("custom_data") or {}).items()},
        )
        for b in current
    ]
    if source is not None:
        entries = [e for e in entries if e.source == source]
    if not entries:
        what = f" for {source}" if source else ""
        raise PipelineError(f"Packer's manifest {path} has no build{what} in its last run ({run_uuid})")
    return entries[-1]


def split_ami_artifact(artifact_id: str, region: str | None = None) -> tuple[str, str]:
    """(region, AMI id) from an amazon-ebs artifact id: `us-east-1:ami-0123`, comma-separated
    `region:ami` pairs when copied to several regions (then the pair for `region`, else the first)."""
    pairs = []
    for item in artifact_id.split(","):
        reg, sep, ami = item.strip().partition(":")
        if sep and ami.startswith("ami-"):
            pairs.append((reg, ami))
    if not pairs:
        raise PipelineError(f"unexpected amazon-ebs artifact id {artifact_id!r} (expected region:ami-...)")
    for reg, ami in pairs:
        if reg == region:
            return reg, ami
    return pairs[0]


# --- inspecting a template ------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateInfo:
    """What `packer inspect` says a template declares."""

    variables: Mapping[str, str]
    """Input variables and their defaults as Packer prints them (`"<unknown>"`: no default)."""
    sources: tuple[str, ...]
    """Sources the builds use, as `-only` spells them (`docker.web`)."""

    def required(self) -> list[str]:
        return sorted(name for name, default in self.variables.items() if default == '"<unknown>"')


_VAR_LINE = re.compile(r"^var\.([A-Za-z_][A-Za-z0-9_-]*):\s*(.*)$")
_SOURCE_LINE = re.compile(r"^\s+([a-z0-9][a-z0-9_-]*\.[A-Za-z0-9_-]+)\s*$")


def parse_inspect(text: str) -> TemplateInfo:
    """Parse `packer inspect` (HCL2 mode) output: `var.NAME: default` lines and the build sources."""
    variables: dict[str, str] = {}
    sources: list[str] = []
    section = ""
    in_sources = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("> ") and stripped.endswith(":"):
            section = stripped[2:-1]
            in_sources = False
            continue
        if section == "input-variables":
            found = _VAR_LINE.match(stripped)
            if found:
                variables[found.group(1)] = found.group(2)
        elif section == "builds" or section.startswith("<"):
            if stripped.endswith(":"):
                in_sources = stripped == "sources:"
                continue
            if in_sources:
                src = _SOURCE_LINE.match(line)
                if src and src.group(1) not in sources:
                    sources.append(src.group(1))
    return TemplateInfo(variables, tuple(sources))


def parse_version(text: str) -> Version | None:
    """The version in `packer version -machine-readable` (or plain `Packer v1.6.6`) output."""
    for record in parse_output(text):
        if record.type == "version" and record.data:
            found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", record.data[0])
            if found:
                return int(found.group(1)), int(found.group(2)), int(found.group(3))
    found = re.search(r"Packer v?(\d+)\.(\d+)\.(\d+)", text)
    if found:
        return int(found.group(1)), int(found.group(2)), int(found.group(3))
    return None


def format_version(version: Version) -> str:
    return ".".join(str(part) for part in version)


# --- running packer -------------------------------------------------------------------------------


def find_binary() -> str | None:
    """The packer binary: $PIPELINE_PACKER, else `packer` on PATH."""
    configured = os.environ.get(BINARY_ENV)
    if configured:
        return configured if Path(configured).is_file() else shutil.which(configured)
    return shutil.which("packer")


def var_args(variables: Mapping[str, str]) -> list[str]:
    args: list[str] = []
    for name, value in sorted(variables.items()):
        args += ["-var", f"{name}={value}"]
    return args


class Packer:
    """One packer binary, run with a fixed environment (credentials, `CHECKPOINT_DISABLE`)."""

    def __init__(self, binary: str | None = None, *, env: Mapping[str, str] | None = None) -> None:
        found = binary or find_binary()
        configured = os.environ.get(BINARY_ENV)
        if not found and configured:
            raise ToolMissingError(
                f"{BINARY_ENV} names {configured!r}, which is not a packer binary on this machine",
                hint=f"point {BINARY_ENV} at the packer executable, or unset it to use `packer` from PATH",
            )
        if not found:
            raise ToolMissingError("packer is not installed (not on PATH)", hint=INSTALL_HINT)
        self.binary = found
        # No update check against checkpoint.hashicorp.com: offline machines would wait for it.
        self.env = {"CHECKPOINT_DISABLE": "1", **(env or {})}
        self._version: Version | None = None

    def _quiet(self, args: Sequence[str], *, cwd: Path | None = None, timeout: float = 120) -> tuple[int, str]:
        try:
            proc = subprocess.run(
                [self.binary, *args],
                cwd=cwd,
                env={**os.environ, **self.env},
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise ToolMissingError(f"cannot run {self.binary!r}", hint=INSTALL_HINT) from None
        except subprocess.TimeoutExpired:
            raise CommandTimeoutError(" ".join(_quote(a) for a in [self.binary, *args]), timeout) from None
        return proc.returncode, proc.stdout + proc.stderr

    def version(self) -> Version:
        if self._version is None:
            code, out = self._quiet(["version", "-machine-readable"], timeout=30)
            parsed = parse_version(out)
            if code != 0 or parsed is None:
                raise ToolMissingError(
                    f"cannot tell the version of {self.binary} (exit {code}): {out.strip()[:200]}",
                    hint=INSTALL_HINT,
                )
            self._version = parsed
        return self._version

    def supports_init(self) -> bool:
        return self.version() >= INIT_MIN_VERSION

    def prepare(self, template: Path, *, on_line: Callable[[str], None] = lambda line: None) -> bool:
        """Install the template's plugins with `packer init` where Packer has it (>= 1.7).

        Runs on the `plugins.pkr.hcl` next to the template, or on the template itself when it
        declares `required_plugins`. Returns whether `packer init` ran."""
        if not self.supports_init():
            return False
        plugins = template.parent / PLUGINS_FILE
        if plugins.is_file():
            target = plugins
        elif "required_plugins" in template.read_text(errors="replace"):
            target = template
        else:
            return False
        command = [self.binary, "init", target.name]
        try:
            stream(command, cwd=target.parent, env=self.env, on_line=on_line)
        except CommandFailedError as exc:
            raise ToolMissingError(
                f"`packer init {target.name}` failed: the plugins the template needs are not installed",
                hint=f"run it by hand to see why (network, GitHub rate limits): cd {target.parent} && "
                f"packer init {target.name}\n{exc.tail}",
            ) from None
        return True

    def inspect(self, template: Path) -> TemplateInfo:
        """Variables and sources the template declares (`packer inspect`); TemplateError if broken."""
        code, out = self._quiet(["inspect", "-machine-readable", template.name], cwd=template.parent)
        text = "\n".join(
            ",".join(record.data[1:]) if record.type == "ui" else ",".join(record.data) for record in parse_output(out)
        )
        if code != 0:
            raise TemplateError(
                f"Packer cannot read the template {template}:\n{_indent(text or out)}",
                hint=f"fix the template; check it with: cd {template.parent} && packer inspect {template.name}",
            )
        return parse_inspect(text)

    def validate(self, template: Path, variables: Mapping[str, str], *, only: str | None = None) -> None:
        """`packer validate`; a TemplateError (exit 2) naming file and line when it fails."""
        args = ["validate", *(["-only=" + only] if only else []), *var_args(variables), template.name]
        code, out = self._quiet(args, cwd=template.parent)
        if code != 0:
            reproduce = " ".join(_quote(a) for a in ["packer", *args])
            raise TemplateError(
                f"Packer template {template} is invalid:\n{_indent(out.strip())}",
                hint=f"fix the template, then check it with: cd {template.parent} && {reproduce}",
            )

    def build(
        self,
        template: Path,
        *,
        only: str,
        variables: Mapping[str, str],
        progress: BuildProgress,
        deadline: float | None = None,
        cancel: threading.Event | None = None,
        env: Mapping[str, str] | None = None,
    ) -> BuildProgress:
        """`packer build -machine-readable -only=SOURCE`, streamed into `progress`.

        Raises CommandFailedError with Packer's own error messages when the build fails (Packer
        has already cleaned up: `-on-error=cleanup`), CommandTimeoutError or Interrupted. `env`
        adds to the binary's environment for this build (e.g. `PACKER_TMP_DIR`)."""
        args = ["build", "-machine-readable", "-on-error=cleanup", f"-only={only}", *var_args(variables), template.name]
        command = [self.binary, *args]
        try:
            stream(
                command,
                cwd=template.parent,
                env={**self.env, **(env or {})},
                on_line=progress.feed,
                deadline=deadline,
                cancel=cancel,
            )
        except CommandFailedError as exc:
            errors = progress.errors or [line for line in exc.tail.splitlines() if line.strip()][-5:]
            raise CommandFailedError(
                ["packer", *args], exc.returncode, "\n".join(errors), cwd=str(template.parent)
            ) from None
        return progress


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def packer_version_quick() -> tuple[str | None, Version | None]:
    """(binary, version) without raising: for `pipeline doctor`."""
    binary = find_binary()
    if not binary:
        return None, None
    try:
        proc = run_quiet([binary, "version", "-machine-readable"], timeout=30)
    except (OSError, subprocess.SubprocessError):
        return binary, None
    return binary, parse_version(proc.stdout + proc.stderr)
