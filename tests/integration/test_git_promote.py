"""Promote's git side against real repositories in temp folders: a working clone and a bare remote.

git runs with no system or global configuration (HOME is a temp folder), as on a fresh CI agent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.engines.git_promote import (
    CommitInfo,
    check_can_record,
    read_default,
    record_image,
    revert,
    set_default,
)
from pipeline.errors import EXIT_BAD_INPUT, GitStateError, PushFailedError, TemplateError
from pipeline.stages.promote import DEFAULT_AUTHOR
from tests.conftest import REPO, need

pytestmark = pytest.mark.integration

OLD = "ami-03cf127a"
NEW = "ami-0123456789abcdef0"
TEMPLATE = "templates/web.yaml"
SEED = ("-c", "user.name=Seed", "-c", "user.email=seed@example.invalid")

Git = Callable[..., str]


def run_git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


@pytest.fixture(autouse=True)
def no_git_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No system/global git config and no identity variables: like a fresh CI agent."""
    need(shutil.which("git") is not None, "git is not installed")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig-empty"))
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    bare = tmp_path / "remote.git"
    run_git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    return bare


@pytest.fixture
def clone(tmp_path: Path, remote: Path) -> Path:
    """A working tree with the reference template committed and pushed (upstream set)."""
    work = tmp_path / "work"
    (work / "templates").mkdir(parents=True)
    shutil.copy(REPO / TEMPLATE, work / TEMPLATE)
    (work / "README.md").write_text("service\n")
    run_git(work, "init", "-q", "-b", "main")
    run_git(work, "add", "-A")
    run_git(work, *SEED, "commit", "-qm", "initial")
    run_git(work, "remote", "add", "origin", str(remote))
    run_git(work, "push", "-q", "-u", "origin", "main")
    return work


def count(work: Path) -> int:
    return int(run_git(work, "rev-list", "--count", "HEAD"))


def promote(work: Path, image: str = NEW, **kwargs: object) -> CommitInfo | None:
    options: dict[str, object] = {
        "pipeline": "hello-web",
        "run_id": "run-42",
        "environment": "production",
        "default_author": DEFAULT_AUTHOR,
    }
    options.update(kwargs)
    return record_image(work, Path(TEMPLATE), "ImageId", image, **options)  # type: ignore[arg-type]


def test_the_commit_changes_only_the_image_default_and_is_pushed(clone: Path, remote: Path) -> None:
    before = (clone / TEMPLATE).read_text()

    info = promote(clone)

    assert info is not None
    assert count(clone) == 2
    assert run_git(clone, "show", "--format=", "--name-only", "HEAD") == TEMPLATE
    diff = run_git(clone, "diff", "-U0", "HEAD~1", "HEAD", "--", TEMPLATE).splitlines()
    changes = [line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changes == [f"-    Default: {OLD}", f"+    Default: {NEW}"]
    assert (clone / TEMPLATE).read_text() == before.replace(f"Default: {OLD}", f"Default: {NEW}")
    assert read_default((clone / TEMPLATE).read_text()) == NEW
    assert info.sha == run_git(clone, "rev-parse", "HEAD")
    assert (info.image, info.previous_image, info.branch, info.template) == (NEW, OLD, "main", TEMPLATE)
    assert info.pushed_to == "origin/main"
    assert run_git(remote, "rev-parse", "main") == info.sha
    assert run_git(clone, "status", "--porcelain") == ""


def test_the_message_names_pipeline_image_run_and_source_commit(clone: Path) -> None:
    source = run_git(clone, "rev-parse", "HEAD")
    promote(clone, source_commit=None)
    message = run_git(clone, "log", "-1", "--format=%B")
    assert message.splitlines()[0] == f"hello-web: promote {NEW} to production"
    trailers = run_git(clone, "log", "-1", "--format=%(trailers:only,unfold)")
    assert "Pipeline: hello-web" in trailers
    assert f"Image: {NEW}" in trailers
    assert f"Previous-Image: {OLD}" in trailers
    assert "Run: run-42" in trailers
    assert f"Source-Commit: {source}" in trailers
    assert "Environment: production" in trailers


def test_an_explicit_source_commit_is_recorded(clone: Path) -> None:
    promote(clone, source_commit="0123abc")
    assert "Source-Commit: 0123abc" in run_git(clone, "log", "-1", "--format=%B")


def test_without_any_git_identity_the_default_author_commits(clone: Path) -> None:
    probe = subprocess.run(["git", "config", "user.email"], cwd=clone, capture_output=True, check=False)
    assert probe.returncode != 0
    info = promote(clone)
    assert info is not None
    assert info.author == DEFAULT_AUTHOR
    assert run_git(clone, "log", "-1", "--format=%an <%ae>") == DEFAULT_AUTHOR
    assert run_git(clone, "log", "-1", "--format=%cn <%ce>") == DEFAULT_AUTHOR


def test_a_setting_overrides_the_default_author(clone: Path) -> None:
    info = promote(clone, default_author="Release Bot <release@example.invalid>")
    assert info is not None
    assert run_git(clone, "log", "-1", "--format=%an <%ae>|%cn <%ce>") == (
        "Release Bot <release@example.invalid>|Release Bot <release@example.invalid>"
    )


def test_a_configured_identity_is_used_and_an_explicit_author_wins_over_it(clone: Path) -> None:
    run_git(clone, "config", "user.name", "Dev")
    run_git(clone, "config", "user.email", "dev@example.invalid")
    promote(clone)
    assert run_git(clone, "log", "-1", "--format=%an <%ae>|%cn <%ce>") == (
        "Dev <dev@example.invalid>|Dev <dev@example.invalid>"
    )
    promote(clone, image="ami-0fedcba9876543210", author="CI <ci@example.invalid>")
    assert run_git(clone, "log", "-1", "--format=%an <%ae>|%cn <%ce>") == (
        "CI <ci@example.invalid>|Dev <dev@example.invalid>"
    )


def test_a_dirty_tree_is_refused_and_nothing_changes(clone: Path, remote: Path) -> None:
    (clone / "README.md").write_text("edited, not committed\n")
    with pytest.raises(GitStateError) as caught:
        promote(clone)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert "uncommitted changes" in caught.value.message
    assert "README.md" in caught.value.message
    assert caught.value.hint
    assert "stash" in caught.value.hint
    assert count(clone) == 1
    assert read_default((clone / TEMPLATE).read_text()) == OLD
    assert run_git(clone, "status", "--porcelain") == "M README.md"


def test_a_staged_change_is_refused_too(clone: Path) -> None:
    (clone / "README.md").write_text("staged\n")
    run_git(clone, "add", "README.md")
    with pytest.raises(GitStateError):
        promote(clone)
    assert count(clone) == 1


def test_untracked_files_do_not_block_a_promote(clone: Path) -> None:
    (clone / "notes.txt").write_text("scratch\n")
    info = promote(clone)
    assert info is not None
    assert run_git(clone, "show", "--format=", "--name-only", "HEAD") == TEMPLATE
    assert (clone / "notes.txt").exists()


def test_a_detached_head_is_refused(clone: Path) -> None:
    run_git(clone, "checkout", "-q", "--detach")
    with pytest.raises(GitStateError) as caught:
        promote(clone)
    assert "detached" in caught.value.message
    assert caught.value.hint
    assert "git checkout -B main origin/main" in caught.value.hint
    assert read_default((clone / TEMPLATE).read_text()) == OLD


def test_an_untracked_template_is_refused(clone: Path) -> None:
    shutil.copy(clone / TEMPLATE, clone / "templates/new.yaml")
    with pytest.raises(GitStateError, match="not tracked"):
        record_image(
            clone, Path("templates/new.yaml"), "ImageId", NEW, pipeline="p", run_id="r", default_author=DEFAULT_AUTHOR
        )


def test_outside_a_repository_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    (folder / "templates").mkdir(parents=True)
    shutil.copy(REPO / TEMPLATE, folder / TEMPLATE)
    with pytest.raises(GitStateError, match="not inside a git repository"):
        promote(folder)


def test_a_rerun_with_the_same_image_makes_no_new_commit(clone: Path, remote: Path) -> None:
    first = promote(clone)
    assert first is not None
    assert promote(clone) is None
    assert count(clone) == 2
    assert run_git(remote, "rev-parse", "main") == first.sha


def test_a_rerun_pushes_an_earlier_promote_commit_that_was_not_pushed(clone: Path, remote: Path) -> None:
    first = promote(clone, push=False)
    assert first is not None
    assert first.pushed_to is None
    assert run_git(remote, "rev-parse", "main") != first.sha
    assert promote(clone) is None
    assert run_git(remote, "rev-parse", "main") == first.sha


def test_unpushed_commits_of_someone_else_are_not_published(clone: Path, remote: Path) -> None:
    (clone / "README.md").write_text("local work\n")
    run_git(clone, *SEED, "commit", "-qam", "local work")
    with pytest.raises(GitStateError, match="unpushed commit"):
        promote(clone)
    assert count(clone) == 2
    assert read_default((clone / TEMPLATE).read_text()) == OLD


def test_revert_is_a_new_commit_restores_the_template_and_is_pushed(clone: Path, remote: Path) -> None:
    original = (clone / TEMPLATE).read_bytes()
    info = promote(clone)
    assert info is not None

    undo = revert(
        clone,
        info,
        pipeline="hello-web",
        run_id="run-42",
        reason="verification failed",
        default_author=DEFAULT_AUTHOR,
    )

    assert undo is not None
    assert count(clone) == 3
    assert run_git(clone, "rev-parse", "HEAD~1") == info.sha  # history kept, not rewritten
    assert (clone / TEMPLATE).read_bytes() == original
    message = run_git(clone, "log", "-1", "--format=%B")
    assert f"This reverts commit {info.sha}." in message
    assert "verification failed" in message
    assert "Run: run-42" in message
    assert "Pipeline: hello-web" in message
    assert (undo.image, undo.previous_image) == (OLD, NEW)
    assert undo.pushed_to == "origin/main"
    assert run_git(remote, "rev-parse", "main") == undo.sha
    assert run_git(clone, "log", "-1", "--format=%an <%ae>") == DEFAULT_AUTHOR

    assert revert(clone, info.sha, pipeline="hello-web", run_id="run-42", default_author=DEFAULT_AUTHOR) is None
    assert count(clone) == 3


def test_a_rejected_push_is_reverted_locally_and_reported(clone: Path, remote: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    run_git(tmp_path, "clone", "-q", str(remote), str(other))
    (other / "README.md").write_text("someone else pushed\n")
    run_git(other, *SEED, "commit", "-qam", "concurrent change")
    run_git(other, "push", "-q", "origin", "main")
    remote_head = run_git(remote, "rev-parse", "main")
    original = (clone / TEMPLATE).read_bytes()

    with pytest.raises(PushFailedError) as caught:
        promote(clone)

    error = caught.value
    assert error.exit_code == 1
    assert error.revert is not None
    assert "could not be pushed" in error.message
    assert error.hint
    assert "git pull" in error.hint
    assert count(clone) == 3  # initial, promote, revert: nothing rewritten
    assert run_git(clone, "rev-parse", "HEAD~1") == error.commit.sha
    assert (clone / TEMPLATE).read_bytes() == original
    assert run_git(remote, "rev-parse", "main") == remote_head


def test_without_a_remote_the_commit_stays_local(tmp_path: Path) -> None:
    work = tmp_path / "solo"
    (work / "templates").mkdir(parents=True)
    shutil.copy(REPO / TEMPLATE, work / TEMPLATE)
    run_git(work, "init", "-q", "-b", "main")
    run_git(work, "add", "-A")
    run_git(work, *SEED, "commit", "-qm", "initial")
    events: list[str] = []
    info = promote(work, on_event=events.append)
    assert info is not None
    assert info.pushed_to is None
    assert any("no remote" in e for e in events)


def test_a_branch_without_upstream_pushes_to_origin(clone: Path, remote: Path) -> None:
    run_git(clone, "checkout", "-q", "-b", "release")
    info = promote(clone)
    assert info is not None
    assert info.pushed_to == "origin/release"
    assert run_git(remote, "rev-parse", "release") == info.sha


def test_a_template_in_a_subfolder_of_the_repository(clone: Path) -> None:
    info = record_image(
        clone / "templates", Path("web.yaml"), "ImageId", NEW, pipeline="p", run_id="r", default_author=DEFAULT_AUTHOR
    )
    assert info is not None
    assert info.template == TEMPLATE


def test_a_custom_subject_keeps_the_trailers(clone: Path) -> None:
    """`pipeline rollback` records the image it went back to with its own subject."""
    info = promote(clone, subject=f"hello-web: roll production back to {NEW}")
    assert info is not None
    message = run_git(clone, "log", "-1", "--format=%B")
    assert message.splitlines()[0] == f"hello-web: roll production back to {NEW}"
    assert f"Image: {NEW}" in message
    assert "Pipeline: hello-web" in message


# --- the preflight: everything record_image refuses, with no side effect --------------------------------


def _state(work: Path) -> tuple[str, str, bytes]:
    return run_git(work, "rev-parse", "HEAD"), run_git(work, "status", "--porcelain"), (work / TEMPLATE).read_bytes()


def test_check_can_record_passes_on_a_clean_branch_and_changes_nothing(clone: Path, remote: Path) -> None:
    before = _state(clone)
    assert check_can_record(clone, clone / TEMPLATE, "ImageId", pipeline="hello-web") == "main"
    assert _state(clone) == before
    assert run_git(remote, "rev-parse", "main") == before[0]


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda work: (work / "README.md").write_text("edited\n"), "uncommitted changes (README.md)"),
        (lambda work: run_git(work, "checkout", "-q", "--detach"), "HEAD is detached"),
        (
            lambda work: ((work / "README.md").write_text("mine\n"), run_git(work, *SEED, "commit", "-qam", "mine")),
            "unpushed commit",
        ),
    ],
    ids=["dirty", "detached", "unpushed"],
)
def test_check_can_record_refuses_what_record_image_refuses(
    clone: Path, spoil: Callable[[Path], object], message: str
) -> None:
    spoil(clone)
    before = _state(clone)
    with pytest.raises(GitStateError, match=re.escape(message)) as caught:
        check_can_record(clone, clone / TEMPLATE, "ImageId", pipeline="hello-web")
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert _state(clone) == before


def test_check_can_record_refuses_a_default_it_could_not_edit(clone: Path) -> None:
    (clone / TEMPLATE).write_text(
        "Parameters:\n  A: {Type: String, Default: &d ami-03cf127a}\n  ImageId: {Type: String, Default: *d}\n"
        "Resources: {X: {Type: AWS::SNS::Topic}}\n"
    )
    run_git(clone, *SEED, "commit", "-qam", "anchored default")
    with pytest.raises(TemplateError):
        check_can_record(clone, clone / TEMPLATE, "ImageId", pipeline="hello-web", push=False)


# --- the textual edit alone ---------------------------------------------------------------------------


def test_set_default_keeps_comments_quotes_and_crlf() -> None:
    text = (
        "# top comment\r\n"
        "Parameters:\r\n"
        "  ImageId:   # the image\r\n"
        "    Type: AWS::EC2::Image::Id\r\n"
        "    Default: 'ami-03cf127a'  # production runs this\r\n"
        "Resources:\r\n"
        "  X: {Type: AWS::SNS::Topic, Properties: {TopicName: !Ref ImageId}}\r\n"
    )
    edited = set_default(text, "ImageId", NEW)
    assert edited == text.replace("'ami-03cf127a'", f"'{NEW}'")


def test_set_default_adds_a_missing_default_after_type() -> None:
    text = "Parameters:\n  ImageId:\n    Type: AWS::EC2::Image::Id\n    Description: d\nResources:\n  X: {Type: AWS::SNS::Topic}\n"
    edited = set_default(text, "ImageId", NEW)
    assert edited.splitlines()[2:4] == ["    Type: AWS::EC2::Image::Id", f"    Default: {NEW}"]
    assert read_default(edited) == NEW


def test_set_default_edits_json_templates() -> None:
    doc = {
        "Parameters": {"ImageId": {"Type": "String", "Default": OLD}},
        "Resources": {"X": {"Type": "AWS::SNS::Topic"}},
    }
    text = json.dumps(doc, indent=2)
    edited = set_default(text, "ImageId", NEW)
    assert json.loads(edited)["Parameters"]["ImageId"]["Default"] == NEW
    assert edited == text.replace(OLD, NEW)
    del doc["Parameters"]["ImageId"]["Default"]  # type: ignore[attr-defined]
    added = set_default(json.dumps(doc), "ImageId", NEW)
    assert json.loads(added)["Parameters"]["ImageId"] == {"Default": NEW, "Type": "String"}


def test_set_default_refuses_what_it_cannot_edit_exactly() -> None:
    with pytest.raises(TemplateError, match="no parameter"):
        set_default("Parameters: {}\nResources: {X: {Type: AWS::SNS::Topic}}\n", "ImageId", NEW)
    anchored = "Parameters:\n  A: {Type: String, Default: &d ami-03cf127a}\n  ImageId: {Type: String, Default: *d}\nResources: {X: {Type: AWS::SNS::Topic}}\n"
    with pytest.raises(TemplateError):
        set_default(anchored, "ImageId", NEW)
