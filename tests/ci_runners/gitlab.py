"""Run a .gitlab-ci.yml with gitlab-ci-local 4.56.2 (npm, tools/ci-runners) on this machine, and
parse what happened.

How a pipeline is run:
- `--shell-executor-no-image`: jobs without `image:` run in a bash shell here (a GitLab shell
  executor). A job with `image:` would make gitlab-ci-local pull it, an `include:` other than a local
  file would be fetched: the harness refuses such a file (nothing but 127.0.0.1 is contacted).
- `--shell-isolation`: each job runs in its own copy of the repository's tracked files,
  `.gitlab-ci-local/builds/<job>`; `--no-artifacts-to-source`: artifacts reach later jobs only through
  gitlab-ci-local's artifact store (`needs:`/`dependencies:`), never through the repository itself.
- The file is validated against GitLab's JSON schema before anything runs (gitlab-ci-local's default).
- `variables` are the project's CI/CD variables (a variables file readable only by us, outside the
  repository; every value a plain `variable`, never a file path); `env` is added to the runner
  machine's environment, which shell jobs inherit as on a GitLab shell runner; `--home` points at an
  empty folder so the user's ~/.gitlab-ci-local/variables.yml does not leak in.
- `manual` names the `when: manual` jobs to play (`--manual`); without it they do not run. `jobs`
  runs only the named jobs (gitlab-ci-local's positional arguments).
- The state folder (`.gitlab-ci-local` in the repository) is deleted first: every run is a new pipeline;
  unless `fresh=False`, which runs the named `jobs` in the previous run's pipeline (gitlab-ci-local
  keeps its artifacts and caches when it runs named jobs), as when someone plays a manual job later.
- gitlab-ci-local is waited on (no sleeps) with a bounded timeout, then its process group is killed.

Known differences from GitLab (gitlab-ci-local 4.56.2):
- A job waits for every job in its `needs` (or earlier stages) to *finish*, and a job skipped
  because an earlier one failed never finishes, so a `when: always` job runs after a failure only
  when none of the jobs it waits for was skipped; GitLab runs it regardless (its newest source alike).
- With `--shell-isolation`, a job's folder is copied from the repository again (rsync `--delete`)
  before its `after_script`, and its cache and artifacts imported again: what the `script` wrote
  there is gone, for `after_script` and for the job's own artifacts (taken after `after_script`).
  GitLab runs `after_script` in the folder the script left. So the artifact of a job that has an
  `after_script` holds only what the job received.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.ci_runners.act import runner_environment

REPO = Path(__file__).resolve().parents[2]
GITLAB_CI_LOCAL = REPO / "tools" / "ci-runners" / "node_modules" / "gitlab-ci-local" / "src" / "index.js"
STATE_DIR = ".gitlab-ci-local"
SUMMARY = re.compile(r"^ (?P<tag>PASS|WARN|FAIL) {2}(?P<rest>.*)$")


class GitLabCiLocalError(RuntimeError):
    """gitlab-ci-local could not run the pipeline as asked: missing tool, bad file, timeout."""


def installed() -> bool:
    return GITLAB_CI_LOCAL.is_file() and shutil.which("node") is not None and shutil.which("rsync") is not None


def safe_job_name(name: str) -> str:
    """gitlab-ci-local's folder name for a job: runs of characters other than [A-Za-z0-9_-] base64url-encoded."""
    return re.sub(r"[^\w-]+", lambda m: base64.urlsafe_b64encode(m.group().encode()).decode().rstrip("="), name)


@dataclass
class Job:
    name: str
    stage: str
    when: str
    allow_failure: bool
    needs: list[str]
    status: str = "skipped"
    """success, failure, warning (failed, allow_failure), manual (not played), skipped (never
    started), unfinished (started, no result)."""
    lines: list[str] = field(default_factory=list)
    started: int | None = None
    """Position in gitlab-ci-local's output of the job's `starting shell` line."""
    finished: int | None = None
    """Position of its `finished in` line."""
    workspace: Path | None = None

    @property
    def log(self) -> str:
        return "".join(self.lines)


@dataclass
class PipelineRun:
    returncode: int
    jobs: dict[str, Job]
    output: str
    """gitlab-ci-local's stdout and stderr, in the order written."""
    seconds: float
    state: Path
    """The state folder: builds/<job> (workspaces), artifacts/<job>, output/<job>.log."""

    def statuses(self) -> dict[str, str]:
        return {name: job.status for name, job in self.jobs.items()}

    def started_order(self) -> list[str]:
        ran = [job for job in self.jobs.values() if job.started is not None]
        return [job.name for job in sorted(ran, key=lambda j: j.started or 0)]

    def finished_before_started(self, first: str, then: str) -> bool:
        a, b = self.jobs[first], self.jobs[then]
        return a.finished is not None and b.started is not None and a.finished < b.started

    def explain(self, tail: int = 60) -> str:
        parts = [f"gitlab-ci-local exit {self.returncode} after {self.seconds:.0f} s; jobs: {self.statuses()}"]
        for job in self.jobs.values():
            if job.status in ("failure", "warning", "unfinished"):
                parts.append(f"--- {job.name} ({job.status}), last {tail} lines:\n" + "".join(job.lines[-tail:]))
        parts.append("--- output (end):\n" + self.output[-3000:])
        return "\n".join(parts)


def run_pipeline(
    repo: Path,
    *,
    run_dir: Path,
    variables: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    manual: Sequence[str] = (),
    jobs: Sequence[str] = (),
    file: str = ".gitlab-ci.yml",
    timeout: float = 1200,
    fresh: bool = True,
) -> PipelineRun:
    """Run the pipeline of `repo` (a git repository) and wait for it. With `fresh=False` and `jobs`,
    the named jobs run as part of the previous run's pipeline (its artifacts and caches kept), the
    way a person plays a manual job of a pipeline that waits for it."""
    if not installed():
        raise GitLabCiLocalError(
            "gitlab-ci-local (tools/ci-runners), node or rsync is missing: run .ci/install-ci-runners.sh"
        )
    config = yaml.safe_load((repo / file).read_text())
    images = [name for name, job in (config or {}).items() if isinstance(job, dict) and "image" in job]
    if "image" in (config or {}) or images:
        raise GitLabCiLocalError(f"{file}: `image:` ({images or 'default'}) would make gitlab-ci-local pull an image")
    includes = (config or {}).get("include") or []
    for include in includes if isinstance(includes, list) else [includes]:
        if not (isinstance(include, str) and not include.startswith(("http:", "https:"))) and not (
            isinstance(include, dict) and set(include) <= {"local", "rules", "inputs"}
        ):
            raise GitLabCiLocalError(f"{file}: include {include!r} would be fetched from a server; only local ones")

    run_dir.mkdir(parents=True, exist_ok=True)
    home = run_dir / "gitlab-ci-local-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    if fresh:
        shutil.rmtree(repo / STATE_DIR, ignore_errors=True)
    elif not jobs:
        raise GitLabCiLocalError("fresh=False continues a pipeline by running named jobs: pass `jobs`")
    variables_file = run_dir / "variables.yml"
    variables_file.unlink(missing_ok=True)
    fd = os.open(variables_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        for key, value in (variables or {}).items():
            handle.write(f"{json.dumps(key)}: {{type: variable, values: {{'*': {json.dumps(value)}}}}}\n")

    base = [
        "node", str(GITLAB_CI_LOCAL),
        "--file", file,
        "--home", str(home),
        "--variables-file", os.path.relpath(variables_file, repo),  # gitlab-ci-local prefixes the cwd
    ]  # fmt: skip
    runner_env = runner_environment(env or {})
    listed = subprocess.run(
        [*base, "--list-json"], cwd=repo, env=runner_env, capture_output=True, text=True, timeout=120, check=False
    )
    if listed.returncode != 0:
        raise GitLabCiLocalError(f"gitlab-ci-local refused {file}:\n{listed.stdout}{listed.stderr}")
    known = {entry["name"]: _job(entry) for entry in json.loads(listed.stdout)}

    command = [*base, "--shell-executor-no-image", "--shell-isolation", "--no-artifacts-to-source", "--no-color"]
    for name in manual:
        command += ["--manual", name]
    command += list(jobs)
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=repo,
        env=runner_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        output = _stop(process)
        partial = _parse(output, known, repo, manual)
        raise GitLabCiLocalError(
            f"gitlab-ci-local did not finish within {timeout:.0f} s (killed); so far: {partial.statuses()}\n{output[-3000:]}"
        ) from None
    result = _parse(output, known, repo, manual)
    result.returncode = process.returncode
    result.seconds = time.monotonic() - started
    return result


def _job(entry: dict[str, Any]) -> Job:
    return Job(
        name=entry["name"],
        stage=entry.get("stage", ""),
        when=entry.get("when", "on_success"),
        allow_failure=bool(entry.get("allow_failure")),
        needs=[need["job"] for need in entry.get("needs") or []],
    )


def _stop(process: subprocess.Popen[str]) -> str:
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 20.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            return process.communicate(timeout=grace)[0]
        except subprocess.TimeoutExpired:
            continue
    return process.communicate()[0]


def _owner(text: str, names: list[str]) -> tuple[str, str] | None:
    """The job a line of output belongs to (lines start with the job's name padded with spaces),
    and the rest of the line; names are tried longest first."""
    for name in names:
        if text.startswith(name) and (len(text) == len(name) or text[len(name)] == " "):
            return name, text[len(name) :].lstrip(" ")
    return None


def _parse(output: str, known: dict[str, Job], repo: Path, manual: Sequence[str]) -> PipelineRun:
    jobs = {name: Job(j.name, j.stage, j.when, j.allow_failure, list(j.needs)) for name, j in known.items()}
    names = sorted(jobs, key=len, reverse=True)
    for position, line in enumerate(output.splitlines()):
        summary = SUMMARY.match(line)
        if summary:
            owner = _owner(summary["rest"], names)
            if owner:
                tag = summary["tag"]
                jobs[owner[0]].status = {"PASS": "success", "FAIL": "failure", "WARN": "warning"}[tag]
            continue
        owned = _owner(line, names)
        if owned is None:
            continue
        name, rest = owned
        job = jobs[name]
        job.lines.append(rest + "\n")
        if rest.startswith("starting shell") and job.started is None:
            job.started = position
            job.status = "unfinished"
        elif rest.startswith("finished in"):
            job.finished = position
    state = repo / STATE_DIR
    for job in jobs.values():
        if job.started is None:
            job.status = "manual" if job.when == "manual" and job.name not in manual else "skipped"
        folder = state / "builds" / safe_job_name(job.name)
        job.workspace = folder if folder.is_dir() else None
    return PipelineRun(returncode=-1, jobs=jobs, output=output, seconds=0.0, state=state)
