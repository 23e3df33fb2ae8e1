"""`pipeline init --list` says what each example shows: the first paragraph of its own docstring."""

from __future__ import annotations

from pathlib import Path

from pipeline import scaffold
from pipeline.bundled import examples
from tests.conftest import Cli


def test_every_example_describes_itself_in_one_line() -> None:
    entries = dict(scaffold.listing())
    assert list(entries) == scaffold.available()
    for name, summary in entries.items():
        assert summary, f"{name} has no docstring to describe it"
        assert "\n" not in summary, name
        assert not summary.endswith(":"), name
    assert entries["hello-web"] == "The Hello World web service, from commit to production."
    first_line = (examples()["approval-gate"] / "pipelinefile.py").read_text().splitlines()[0]
    assert entries["approval-gate"] == first_line.strip('"')


def test_the_summary_is_the_docstring_s_first_paragraph_joined() -> None:
    source = '"""Two lines\n  that belong together:\n\nNot this paragraph."""\nimport os\n'
    assert scaffold.summary(source) == "Two lines that belong together"
    assert scaffold.summary("x = 1\n") == ""
    assert scaffold.summary("def broken(:\n") == ""


def test_init_list_prints_each_name_with_what_it_shows(cli: Cli, tmp_path: Path) -> None:
    run = cli("init", "--list", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert [line.split()[0] for line in lines] == scaffold.available()
    for (name, summary), line in zip(scaffold.listing(), lines, strict=True):
        assert line.startswith(name), line
        assert line.endswith(summary), line


def test_init_says_which_secrets_to_export_before_the_first_run(cli: Cli, tmp_path: Path) -> None:
    """The feature-flags example's production refuses a deploy without its alert token: `init`
    names it (and every stage's secrets), and says nothing for a project that reads none."""
    run = cli("init", str(tmp_path / "flags"), "--example", "feature-flags", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "it reads FF_ALERT_TOKEN from the environment" in run.stdout
    run = cli("init", str(tmp_path / "secrets"), "--example", "secrets-and-branches", cwd=tmp_path)
    assert "it reads CHAT_WEBHOOK, REGISTRY_TOKEN, SIGNING_KEY from the environment" in run.stdout
    run = cli("init", str(tmp_path / "plain"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "from the environment" not in run.stdout
    assert not list((tmp_path / "flags").rglob("__pycache__")), "reading the new definition wrote bytecode"
