"""`pipeline render` through the real CLI: writing, --check and its diff, errors, exit codes, imports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.loader import load
from pipeline.render import render
from pipeline.render.base import RenderContext
from pipeline.render.drift import diff
from pipeline.render.registry import BUILTIN
from tests.conftest import REPO, Cli, cli_env

EXAMPLE = REPO / "examples" / "reference-chain"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the reference-chain example (definition and the files it refers to), no goldens."""
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("golden", "__pycache__"))
    return root


def test_render_writes_every_target_and_check_passes(cli: Cli, project: Path) -> None:
    before = {p for p in project.rglob("*") if p.is_file()}
    result = cli("render", "--target", "all", cwd=project)
    assert result.returncode == 0, result.stderr
    written = sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file() and p not in before)
    assert written == [
        ".github/reference-chain-environments.sh",
        ".github/workflows/reference-chain.yml",
        ".gitlab-ci.yml",
        ".teamcity/pom.xml",
        ".teamcity/settings.kts",
        "Jenkinsfile",
    ]
    for rel in written:
        assert f"wrote {rel}" in result.stdout
    assert (project / ".github/reference-chain-environments.sh").stat().st_mode & 0o100
    for target in BUILTIN:  # same bytes as the committed golden files
        for golden in (EXAMPLE / "golden" / target).rglob("*"):
            if golden.is_file():
                rel = golden.relative_to(EXAMPLE / "golden" / target)
                assert (project / rel).read_bytes() == golden.read_bytes(), rel
    again = cli("render", cwd=project)
    assert "unchanged Jenkinsfile" in again.stdout
    check = cli("render", "--target", "all", "--check", cwd=project)
    assert check.returncode == 0, check.stderr
    assert "6 files match a fresh render" in check.stdout


def test_check_fails_with_a_diff_after_a_one_line_change_to_the_definition(cli: Cli, project: Path) -> None:
    assert cli("render", cwd=project).returncode == 0
    definition = project / "pipelinefile.py"
    definition.write_text(
        definition.read_text().replace('message="Promote the new image to production?"', 'message="Go live?"')
    )
    result = cli("render", "--target", "all", "--check", cwd=project)
    assert result.returncode == 1
    assert "--- a/Jenkinsfile\n+++ b/Jenkinsfile (fresh render)" in result.stdout
    assert "-                message 'Promote the new image to production?'" in result.stdout
    assert "+                message 'Go live?'" in result.stdout
    assert "Jenkinsfile" in result.stderr
    assert "pipeline render --target jenkins,teamcity,github,gitlab" in result.stderr
    # nothing was written by --check
    assert "Promote the new image" in (project / "Jenkinsfile").read_text()


def test_check_reports_missing_files_and_ignores_line_endings(cli: Cli, project: Path) -> None:
    assert cli("render", cwd=project).returncode == 0
    jenkinsfile = project / "Jenkinsfile"
    jenkinsfile.write_bytes(jenkinsfile.read_bytes().replace(b"\n", b"\r\n"))
    assert cli("render", "--check", cwd=project).returncode == 0
    (project / ".teamcity" / "pom.xml").unlink()
    result = cli("render", "--check", cwd=project)
    assert result.returncode == 1
    assert "a/.teamcity/pom.xml (missing)" in result.stdout


def test_unknown_target_exits_2_listing_the_available_ones(cli: Cli, project: Path) -> None:
    result = cli("render", "--target", "circleci", cwd=project)
    assert result.returncode == 2
    assert "no renderer for target 'circleci'" in result.stderr
    assert "available targets: jenkins, teamcity, github, gitlab (or `all`" in result.stderr


def test_unsupported_feature_exits_2_naming_feature_and_target(cli: Cli, project: Path) -> None:
    definition = project / "pipelinefile.py"
    definition.write_text(
        definition.read_text().replace(
            'approvers=("release-manager",)', 'approvers=("release-manager",), timeout_minutes=30'
        )
    )
    result = cli("render", "--target", "github", cwd=project)
    assert result.returncode == 2
    assert "github cannot express an approval timeout (30 min) (used by stage 'promote')" in result.stderr
    assert not (project / ".github").exists()
    assert cli("render", "--target", "jenkins", cwd=project).returncode == 0


def test_out_and_file_options(cli: Cli, project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli(
        "render", "--target", "github", "--out", str(out), "-f", str(project / "pipelinefile.py"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    workflow = (out / ".github/workflows/reference-chain.yml").read_text()
    assert "pipeline render --target github --check -f ../repo/pipelinefile.py" in workflow
    assert (
        "pipeline run stage bake --manifest .pipeline/ci/manifest --profile local -f ../repo/pipelinefile.py"
        in workflow
    )
    assert not (out / "Jenkinsfile").exists()


def test_the_repository_commits_its_own_rendered_ci_files() -> None:
    loaded = load(REPO / "pipelinefile.py")
    assert loaded.spec.targets == ("jenkins", "teamcity", "github")
    files = render(loaded.spec, list(loaded.spec.targets), RenderContext())
    assert sorted(f.path for f in files) == [
        ".github/hello-web-environments.sh",
        ".github/workflows/hello-web.yml",
        ".teamcity/pom.xml",
        ".teamcity/settings.kts",
        "Jenkinsfile",
    ]
    text, drifted = diff(files, REPO)
    assert drifted == [], f"re-render with `pipeline render` and commit:\n{text}"


HEAVY = ("boto3", "botocore", "docker", "testinfra")


@pytest.mark.parametrize(
    "args",
    [
        ["render", "--target", "all", "--out", "{out}"],
        ["render", "--target", "all", "--check"],
        ["validate"],
        ["graph", "--format", "mermaid"],
    ],
    ids=["render", "render-check", "validate", "graph"],
)
def test_render_validate_and_graph_never_import_engines(args: list[str], project: Path, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        from pipeline.cli import main
        sys.argv = ["pipeline", *{[a.replace("{out}", str(tmp_path / "out")) for a in args]!r}]
        try:
            main()
        except SystemExit as exc:
            code = exc.code
        print(json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules],
                          "renderers": sorted(m for m in sys.modules if m.startswith("pipeline.render."))}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], f"{args[0]} imported {report['heavy']}"
    assert report["code"] in (0, 1), proc.stderr  # --check may find nothing committed in the copy


def test_one_target_imports_only_its_renderer(project: Path) -> None:
    script = (
        "import sys\nfrom pipeline.cli import main\nsys.argv = ['pipeline', 'render', '--target', 'github']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m in ('pipeline.render.jenkins', 'pipeline.render.teamcity', 'pipeline.render.github')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert proc.stdout.strip().splitlines()[-1] == "['pipeline.render.github']"
