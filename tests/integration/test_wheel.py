"""Everything a user needs ships in the wheel: build it, install it into a fresh virtualenv outside
the repository, and use it there with no checkout around."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, need


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv (outside the repo) with the freshly built wheel installed; returns its bin/."""
    need(shutil.which("git") is not None, "git is not installed")
    try:
        import build  # noqa: F401
    except ImportError:
        need(False, "the 'build' package is not installed (pip install build)")
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(work / "dist"), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    wheels = list((work / "dist").glob("pipeline_as_code-*.whl"))
    assert len(wheels) == 1, wheels
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheels[0])], check=True, capture_output=True, timeout=900
    )
    return venv / "bin"


def run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(cwd), "CI": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [str(bin_dir / "pipeline"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import pipeline, pipeline.stages; print(pipeline.__file__); print(pipeline.stages.__file__)",
        ],
        cwd=tmp_path,
        env={"PATH": f"{installed}:/usr/bin:/bin", "HOME": str(tmp_path)},  # no PYTHONPATH of the caller's
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all("site-packages" in w and str(REPO) not in w for w in where), where


def test_the_wheel_installs_one_import_name(installed: Path) -> None:
    """Only `pipeline` lands in site-packages (the built-in stage kinds are `pipeline.stages`)."""
    site = next((installed.parent / "lib").glob("python3*/site-packages"))
    ours = {
        line.split("/", 1)[0]
        for record in site.glob("pipeline_as_code-*.dist-info/RECORD")
        for line in record.read_text().splitlines()
        if not line.startswith(("pipeline_as_code-", "../"))
    }
    assert ours == {"pipeline"}, ours
    assert not (site / "stages").exists()


def test_a_user_s_own_stages_package_works_in_a_definition(installed: Path, tmp_path: Path) -> None:
    """`stages` is a natural name for a team's own package; the tool must not take it."""
    project = tmp_path / "mine"
    (project / "stages").mkdir(parents=True)
    (project / "stages" / "__init__.py").write_text("")
    (project / "stages" / "checks.py").write_text(
        "from pipeline import CommitTest\n\n\ndef unit() -> CommitTest:\n"
        "    return CommitTest(name='unit', commands=['true'])\n"
    )
    (project / "pipelinefile.py").write_text(
        "from pipeline import Pipeline\nfrom stages.checks import unit\n\nwith Pipeline('mine') as p:\n    unit()\n"
    )
    result = run(installed, "validate", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "ok: pipeline mine" in result.stdout


def test_init_validate_and_graph_the_reference_service_outside_the_repo(installed: Path, tmp_path: Path) -> None:
    init = run(installed, "init", "hello", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    project = tmp_path / "hello"
    for rel in ("pipelinefile.py", "templates/web.yaml", "images/web.pkr.hcl", "serverspec"):
        assert (project / rel).exists(), rel
    validate = run(installed, "validate", cwd=project)
    assert validate.returncode == 0, validate.stderr
    assert "ok: pipeline hello-web" in validate.stdout
    graph = run(installed, "graph", "--format", "mermaid", cwd=project)
    assert graph.returncode == 0, graph.stderr
    assert "bake --> test_stack" in graph.stdout


NEEDS_EXTRA = {"live-schema": "schema"}
"""Examples whose full validate needs an extra (live-schema's Migrate stages lint their Alembic
migrations); the wheel here is installed plain, so validate must name the extra."""


def test_every_bundled_example_validates_outside_the_repo(installed: Path, tmp_path: Path) -> None:
    listing = run(installed, "init", "--list", cwd=tmp_path)
    names = [line.split()[0] for line in listing.stdout.splitlines() if line.strip()]  # name, then what it shows
    names = [n for n in names if n != "hello-web"]
    assert len(names) >= 5, listing.stdout
    for name in names:
        assert run(installed, "init", "--example", name, name, cwd=tmp_path).returncode == 0
        result = run(installed, "validate", cwd=tmp_path / name)
        if name in NEEDS_EXTRA:  # the wheel is installed plain: validate names the extra, no traceback
            extra = NEEDS_EXTRA[name]
            assert result.returncode == 1, f"{name}: {result.stderr}"
            assert "Traceback" not in result.stderr, result.stderr
            assert f"which comes with the [{extra}] extra" in result.stderr, result.stderr
            assert f"pip install 'pipeline-as-code[{extra}]'" in result.stderr, result.stderr
            assert run(installed, "validate", "--definition-only", cwd=tmp_path / name).returncode == 0
        else:
            assert result.returncode == 0, f"{name}: {result.stderr}"
        assert run(installed, "graph", cwd=tmp_path / name).returncode == 0
    assert not os.path.exists(tmp_path / "hello-web")
