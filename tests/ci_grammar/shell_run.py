"""Run a CI job's shell steps for real, with stand-ins for Python, pip and the tool, to see which
`pipeline` each command runs.

The job's scripts (what each `sh` step or TeamCity script step receives, already evaluated by the
stand-in or decoded from Kotlin) run in order in one empty workspace folder, each in its own
`/bin/sh` as the server starts it (Jenkins: `sh -e` (durable-task runs `sh -xe`; the trace is
left out), TeamCity: `sh`), with the job's environment. Everything the shell itself does is real:
variables, quoting, `if`, `[`, `.`, `&&`, `set -e`, `rm`, `touch`. On PATH first are stand-ins:

- `python3.X -m venv DIR` (and python3, python) makes DIR/bin/activate (sets VIRTUAL_ENV, puts
  DIR/bin first on PATH) and DIR/bin/pip;
- `pip install ARGS` records every non-option argument as a requirement of the active venv (or
  of "no venv" when none is active) and, when one names the tool, writes DIR/bin/pipeline;
- that `pipeline` logs the requirements of the venv it belongs to and its arguments;
- `git` logs its arguments (a promote's `git checkout -B "$BRANCH_NAME"` shows the branch).

No `pipeline` exists outside a venv: a command that runs it without having activated the venv it
was installed into fails with 127, as on an agent without it. Nothing is downloaded, nothing
touches the network. A job can be run again in the same workspace (a later build on the same
agent) to see what a reused venv does.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PYTHON = r"""#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "venv" ] && [ -n "$3" ]; then
    mkdir -p "$3/bin" || exit 1
    dir=$(cd "$3" && pwd)
    printf 'VIRTUAL_ENV=%s\nexport VIRTUAL_ENV\nPATH="%s/bin:$PATH"\nexport PATH\n' "$dir" "$dir" > "$dir/bin/activate"
    ln -sf "$PROBE_STUBS/pip" "$dir/bin/pip"
    : > "$dir/requirements"
    exit 0
fi
printf 'python %s\n' "$*" >> "$PROBE_LOG"
exit 0
"""

PIP = r"""#!/bin/sh
venv=${VIRTUAL_ENV:-}
printf 'pip\t%s\t%s\n' "${venv:-no venv}" "$*" >> "$PROBE_LOG"
[ "$1" = "install" ] || exit 0
shift
tool=no
for arg in "$@"; do
    case "$arg" in
        -*) ;;
        *) [ -n "$venv" ] && printf '%s\n' "$arg" >> "$venv/requirements"
           case "$arg" in pipeline-as-code*|.*|*/*) tool=yes ;; esac ;;
    esac
done
if [ "$tool" = yes ] && [ -n "$venv" ]; then
    ln -sf "$PROBE_STUBS/tool" "$venv/bin/pipeline"
fi
exit 0
"""

TOOL = r"""#!/bin/sh
venv=$(cd "$(dirname "$0")/.." && pwd)
{
    printf 'pipeline\t%s\t' "$venv"
    tr '\n' '\037' < "$venv/requirements"
    printf '\t'
    for arg in "$@"; do printf '%s\037' "$arg"; done
    printf '\n'
} >> "$PROBE_LOG"
exit 0
"""


GIT = r"""#!/bin/sh
{ printf 'git\t'; for arg in "$@"; do printf '%s\037' "$arg"; done; printf '\n'; } >> "$PROBE_LOG"
exit 0
"""


@dataclass
class Invocation:
    venv: str
    requirements: tuple[str, ...]
    """What was pip-installed into the venv the `pipeline` belongs to, in order."""
    argv: tuple[str, ...]


@dataclass
class JobRun:
    statuses: list[int] = field(default_factory=list)
    """Each script's exit status, in order."""
    invocations: list[Invocation] = field(default_factory=list)
    pip_installs: list[tuple[str, str]] = field(default_factory=list)
    """(venv or 'no venv', arguments) of every `pip` call."""
    git: list[tuple[str, ...]] = field(default_factory=list)
    """The arguments of every `git` call."""


@dataclass(frozen=True)
class Job:
    key: str
    scripts: tuple[str, ...]
    env: Mapping[str, str]
    errexit: bool
    """Jenkins' `sh` step runs its script with -e; TeamCity's script runner without."""


def run_jobs(jobs: Sequence[Job], *, repeat: int = 1, timeout: float = 300) -> dict[str, list[JobRun]]:
    """Every job `repeat` times in its own workspace (one driver shell for all of them); for each
    job, one JobRun per repetition."""
    with tempfile.TemporaryDirectory(prefix="shell-run-") as tmp:
        root = Path(tmp)
        stubs = root / "stubs"
        stubs.mkdir()
        for name in ("python3.11", "python3.12", "python3.13", "python3", "python"):
            _write_executable(stubs / name, PYTHON)
        _write_executable(stubs / "pip", PIP)
        _write_executable(stubs / "tool", TOOL)
        _write_executable(stubs / "git", GIT)
        lines = ["#!/bin/sh"]
        for i, job in enumerate(jobs):
            work = root / f"job{i}"
            work.mkdir()
            for j, script in enumerate(job.scripts):
                (root / f"job{i}.s{j}.sh").write_text(script, encoding="utf-8")
            env = {**job.env, "PATH": f"{stubs}:/usr/bin:/bin", "HOME": str(root), "PROBE_STUBS": str(stubs)}
            assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items() if _name(k))
            for r in range(repeat):
                log = root / f"job{i}.r{r}.log"
                status = root / f"job{i}.r{r}.status"
                lines.append(f": > {shlex.quote(str(log))}; : > {shlex.quote(str(status))}")
                for j in range(len(job.scripts)):
                    script = shlex.quote(str(root / f"job{i}.s{j}.sh"))
                    flags = "-e " if job.errexit else ""
                    lines.append(
                        f"(cd {shlex.quote(str(work))} && exec env -i {assignments} PROBE_LOG={shlex.quote(str(log))} "
                        f"/bin/sh {flags}{script}) </dev/null >/dev/null 2>&1; "
                        f"echo $? >> {shlex.quote(str(status))}"
                    )
        driver = root / "driver.sh"
        driver.write_text("\n".join(lines) + "\n", encoding="utf-8")
        subprocess.run(["/bin/sh", str(driver)], check=True, timeout=timeout, env={"PATH": "/usr/bin:/bin"})
        results: dict[str, list[JobRun]] = {}
        for i, job in enumerate(jobs):
            results[job.key] = [_read(root, i, r) for r in range(repeat)]
        return results


def _read(root: Path, i: int, r: int) -> JobRun:
    run = JobRun(statuses=[int(s) for s in (root / f"job{i}.r{r}.status").read_text().split()])
    for line in (root / f"job{i}.r{r}.log").read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if parts[0] == "pip":
            run.pip_installs.append((parts[1], parts[2]))
        elif parts[0] == "git":
            run.git.append(tuple(parts[1].split("\037")[:-1]))
        elif parts[0] == "pipeline":
            venv, installed, argv = parts[1], parts[2].split("\037")[:-1], parts[3].split("\037")[:-1]
            run.invocations.append(Invocation(venv, tuple(installed), ("pipeline", *argv)))
    return run


def _name(key: str) -> bool:
    return key.replace("_", "a").isalnum() and not key[:1].isdigit()


def _write_executable(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)


__all__ = ["Invocation", "Job", "JobRun", "run_jobs"]
