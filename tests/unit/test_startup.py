"""What the commands a user runs most load when they start: `pipeline --help` and `pipeline
validate` must stay quick (bench/startup prints their times), so the runtime's heavy parts stay out
of their import set. Checked on the module names a real process ends with, not on times."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO, cli_env, need

# Run the console script's main() in a fresh interpreter; print what it imported as it exits.
_IMPORTED_AT_EXIT = textwrap.dedent(
    """
    import atexit, json, sys
    atexit.register(lambda: sys.__stderr__.write("MODULES " + json.dumps(sorted(sys.modules)) + "\\n"))
    sys.argv = ["pipeline", *sys.argv[1:]]
    from pipeline.cli import main
    main()
    """
)

# Never needed to check a definition: the clients of Docker, AWS and git, the test tools.
THIRD_PARTY_RUNTIME = ("docker", "boto3", "botocore", "moto", "testinfra", "git", "redis", "psycopg", "sqlalchemy")

# The deploy machinery of the engines: `validate` reads a template's topology, never deploys.
ENGINE_DEPLOY_PARTS = (
    "pipeline.engines.aws",
    "pipeline.engines.http_check",
    "pipeline.engines.git_promote",
    "pipeline.engines.docker_stack.balancer",
    "pipeline.engines.docker_stack.replicas",
    "pipeline.engines.docker_stack.database",
    "pipeline.engines.docker_stack.converge",
    "pipeline.engines.docker_stack.deployment",
    "pipeline.engines.docker_stack.rollout",
    "pipeline.engines.docker_stack.access_log",
    "pipeline.engines.docker_stack.alert",
    "pipeline.engines.docker_stack.flag_store",
)


def _imported(*args: str, cwd: Path = REPO) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORTED_AT_EXIT, *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in proc.stderr.splitlines() if line.startswith("MODULES ")]
    assert lines, proc.stderr
    return proc, json.loads(lines[-1].removeprefix("MODULES "))


def _matching(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)]


def test_validate_loads_no_runtime_client_and_no_deploy_machinery() -> None:
    need(shutil.which("packer") is not None, "packer is not installed (validate checks the Packer template)")
    proc, modules = _imported("validate")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # It did check the templates through the local profile's stack engine (else this proves nothing).
    assert "templates checked for" in proc.stdout
    assert "pipeline.engines.docker_stack.engine" in modules
    assert _matching(modules, THIRD_PARTY_RUNTIME) == []
    assert _matching(modules, ENGINE_DEPLOY_PARTS) == []
    assert "ctypes" not in modules  # only a process start needs it (pipeline/engines/process.py)


def test_validate_renders_every_target_without_an_http_client(tmp_path: Path) -> None:
    """Without `targets=`, validate renders every installed target in memory to warn about what one
    cannot express; the gates' own checks (an HTTP client: http.client, ssl) run on CI only."""
    (tmp_path / "pipelinefile.py").write_text(
        "from pipeline import CommitTest, Pipeline\n"
        "with Pipeline('p') as p:\n"
        "    CommitTest(name='commit-test', commands=['true'])\n",
        encoding="utf-8",
    )
    proc, modules = _imported("validate", "--definition-only", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pipeline.render.gitlab" in modules  # every target was rendered (else this proves nothing)
    assert _matching(modules, ("urllib.request", "http.client", "ssl")) == []


def test_help_loads_no_model_renderer_or_runtime() -> None:
    proc, modules = _imported("--help")
    assert proc.returncode == 0, proc.stderr
    assert "validate" in proc.stdout
    heavy = (
        "pydantic",
        "jinja2",
        "yaml",
        "pipeline.spec",
        "pipeline.loader",
        "pipeline.render",
        "pipeline.run",
        "pipeline.executors",
        "pipeline.engines",
        *THIRD_PARTY_RUNTIME,
    )
    assert _matching(modules, heavy) == []
