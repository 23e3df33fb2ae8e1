"""Record the promoted image in git: the production template's image parameter Default, one commit.

"The template alone says what runs": promote writes the AMI into the `Default` of the template's
`ImageId` parameter with a minimal textual edit (comments, quoting, order and line endings kept;
the result is re-parsed and must differ from the original in that one value only), commits only
that file with a message naming the pipeline, the image, the run and the source commit, and pushes.
A failure later in the promote is undone with `revert`: a new commit, never a history rewrite.

Policies (see docs/aws.md):
- Refused (GitStateError, exit 2, nothing changed): not a git repository, a detached HEAD, a branch
  without commits, tracked files with uncommitted changes (untracked files are ignored), a template
  git does not track, and unpushed commits on the branch other than this pipeline's own.
- Author: an explicit `author` wins; else git's configured identity (user.name/user.email or
  GIT_AUTHOR_*); else `default_author` (the Promote stage's `author`), which then is the committer
  too, so a CI agent with no identity configured can commit.
- Push: to the branch's upstream; without one, to `origin` (or the only remote) under the same
  branch name; with no remote at all, the commit stays local (CommitInfo.pushed_to is None).
  Pushes never prompt (GIT_TERMINAL_PROMPT=0). A rejected push is undone locally with a revert
  commit and reported (PushFailedError, exit 1).
- Idempotent: when the template already names the image, no commit is made (None is returned);
  an earlier promote commit of this pipeline that was not pushed yet is pushed.
- Preflight: `check_can_record` makes every refusal above (and checks the Default can be edited
  exactly) without writing anything, so a promote is refused before any stack changes.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.engines.cfn_template import parse_template
from pipeline.engines.commit_info import CommitInfo
from pipeline.errors import (
    BadInputError,
    GitOperationError,
    GitStateError,
    PipelineError,
    PushFailedError,
    TemplateError,
    ToolMissingError,
)
from pipeline.model import IMAGE_PARAMETER

if TYPE_CHECKING:
    import git

OnEvent = Callable[[str], None]

_AUTHOR = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<email>[^<>]+)>\s*$")
_PLAIN_SAFE = re.compile(r"^[A-Za-z][A-Za-z0-9._/-]*$")
_PLACEHOLDER_AMI = "ami-0123456789abcdef0"
"""Stands in for the image when a preflight checks that the Default can be written."""
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"})


def _ignore(text: str) -> None:
    pass


# --- the textual edit ------------------------------------------------------------------------------


def read_default(text: str, parameter: str = IMAGE_PARAMETER, *, source: str = "template") -> str | None:
    """The Default of `parameter` in a template's text (None when it has none)."""
    doc = parse_template(text, source=source)
    decl = (doc.get("Parameters") or {}).get(parameter)
    if not isinstance(decl, dict):
        raise TemplateError(f"{source} has no parameter {parameter!r}", hint="check Environment(image_parameter=...)")
    value = decl.get("Default")
    return None if value is None else str(value)


def set_default(text: str, parameter: str, value: str, *, source: str = "template") -> str:
    """`text` with the Default of `parameter` set to `value`: a minimal textual edit, verified by re-parsing.

    Keeps comments, quoting style, key order and line endings. Adds a `Default:` line when the
    parameter has none. Raises TemplateError (and changes nothing) when the edit cannot be made
    exactly."""
    before = parse_template(text, source=source)
    params = before.get("Parameters")
    if not isinstance(params, dict) or not isinstance(params.get(parameter), dict):
        raise TemplateError(
            f"{source} has no parameter {parameter!r}",
            hint=f"declare Parameters: {parameter}: {{Type: AWS::EC2::Image::Id, Default: ...}}",
        )
    decl_node = _parameter_node(yaml.compose(text, Loader=yaml.SafeLoader), parameter, source)
    default_node = _value_of(decl_node, "Default")
    if default_node is not None:
        if not isinstance(default_node, yaml.ScalarNode):
            raise TemplateError(f"{source}: the Default of {parameter} is not a single value")
        start, end = default_node.start_mark.index, default_node.end_mark.index
        edited = text[:start] + _scalar(value, default_node.style) + text[end:]
    elif decl_node.flow_style:
        brace = decl_node.start_mark.index
        if text[brace] != "{":
            raise TemplateError(f"{source}: cannot add a Default to {parameter}", hint="add `Default:` by hand once")
        edited = text[: brace + 1] + f' "Default": {json.dumps(value)},' + text[brace + 1 :]
    else:
        edited = _insert_default_line(text, decl_node, value, source, parameter)
    after = parse_template(edited, source=source)
    expected = copy.deepcopy(before)
    expected["Parameters"][parameter]["Default"] = value
    if after != expected:
        raise TemplateError(
            f"{source}: setting the Default of {parameter} by a textual edit would change more than that value",
            hint="simplify how the parameter's Default is written (a plain `Default: ami-...` line); nothing was written",
        )
    return edited


def _parameter_node(root: yaml.Node | None, parameter: str, source: str) -> yaml.MappingNode:
    params = _value_of(root, "Parameters") if isinstance(root, yaml.MappingNode) else None
    decl = _value_of(params, parameter) if isinstance(params, yaml.MappingNode) else None
    if not isinstance(decl, yaml.MappingNode):
        raise TemplateError(f"{source}: parameter {parameter!r} is not a mapping")
    return decl


def _value_of(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key and isinstance(value_node, yaml.Node):
            return value_node
    return None


def _scalar(value: str, style: str | None) -> str:
    if style == '"':
        return json.dumps(value)
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if _PLAIN_SAFE.match(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value)


def _insert_default_line(text: str, decl: yaml.MappingNode, value: str, source: str, parameter: str) -> str:
    """Add `Default: value` on its own line after the line where the declaration's `Type` ends."""
    if not decl.value:
        raise TemplateError(f"{source}: parameter {parameter} is empty")
    first_key = decl.value[0][0]
    indent = first_key.start_mark.column
    line_start = text.rfind("\n", 0, first_key.start_mark.index) + 1
    if text[line_start : first_key.start_mark.index].strip():
        raise TemplateError(f"{source}: cannot add a Default to {parameter}", hint="add `Default:` by hand once")
    anchor = _value_of(decl, "Type") or decl.value[-1][1]
    newline = "\r\n" if "\r\n" in text else "\n"
    eol = text.find("\n", int(anchor.end_mark.index))
    line = " " * indent + f"Default: {_scalar(value, None)}"
    if eol == -1:
        return f"{text}{newline}{line}{newline}"
    return f"{text[: eol + 1]}{line}{newline}{text[eol + 1 :]}"


# --- git ---------------------------------------------------------------------------------------------


def record_image(
    repo_root: Path,
    template: Path,
    parameter: str,
    image: str,
    *,
    pipeline: str,
    run_id: str,
    source_commit: str | None = None,
    environment: str | None = None,
    author: str | None = None,
    default_author: str,
    push: bool = True,
    subject: str | None = None,
    release: str = "promote",
    on_event: OnEvent = _ignore,
) -> CommitInfo | None:
    """Commit `image` as the Default of `parameter` in `template`; push it; None when already there.

    `template` is absolute or relative to `repo_root` (any folder inside the working tree).
    `source_commit` defaults to HEAD before the commit (the revision the pipeline ran on).
    `subject` replaces the first line of the message (default `<pipeline>: promote <image> to <env>`;
    `pipeline rollback` says it rolled back); the trailers are always written, `release` ('promote' or
    'rollback') among them: the template's history is the environment's release record
    (pipeline/engines/git_releases.py reads it)."""
    repo, branch, rel, path, target = _ready(repo_root, template, pipeline=pipeline, push=push)
    text = _read(path)
    previous = read_default(text, parameter, source=rel)
    if previous == image:
        on_event(f"{rel} already names {image} as the Default of {parameter}: no commit needed")
        if target is not None:
            _push(repo, target, on_event)
        return None
    edited = set_default(text, parameter, image, source=rel)
    source = source_commit or repo.head.commit.hexsha
    subject = subject or f"{pipeline}: promote {image}" + (f" to {environment}" if environment else "")
    body = (
        f"Record {image} as the Default of the {parameter} parameter in {rel}"
        f" (was {previous or 'unset'}): the template says what runs."
    )
    trailers = {
        "Pipeline": pipeline,
        "Environment": environment,
        "Image": image,
        "Previous-Image": previous,
        "Run": run_id,
        "Source-Commit": source,
        "Release": release,
    }
    message = _message(subject, body, trailers)
    chosen, env = _identity(repo, author, default_author)
    _write(path, edited)
    try:
        with _git_errors("committing the promoted image"), repo.git.custom_environment(**env):
            repo.git.commit("-q", "-m", message, "--", rel)
    except PipelineError:
        repo.git.checkout("--", rel)
        raise
    info = CommitInfo(
        sha=repo.head.commit.hexsha,
        branch=branch,
        template=rel,
        image=image,
        previous_image=previous,
        author=chosen,
        message=message,
    )
    on_event(f"committed {info.sha[:12]} on {branch}: {subject}")
    if target is None:
        if push:
            on_event(f"branch {branch} has no remote: the commit stays local")
        return info
    try:
        pushed = _push(repo, target, on_event)
    except GitOperationError as exc:
        undo = revert(
            repo_root,
            info,
            pipeline=pipeline,
            run_id=run_id,
            reason=f"the push to {target[0]}/{target[1]} failed",
            author=author,
            default_author=default_author,
            push=False,
            on_event=on_event,
        )
        raise PushFailedError(
            f"the promote commit {info.sha[:12]} could not be pushed to {target[0]}/{target[1]}: {exc.message}",
            hint=f"it has been reverted locally with a new commit; bring {branch} up to date "
            f"(git pull) and re-run the promote",
            commit=info,
            revert=undo,
        ) from None
    return replace(info, pushed_to=pushed)


def check_can_record(repo_root: Path, template: Path, parameter: str, *, pipeline: str, push: bool = True) -> str:
    """What `record_image` refuses, checked with no side effect (a promote's preflight): the
    repository, the branch (not detached, has commits), the template (tracked; its image
    parameter's Default can be edited exactly), a clean tree, and no foreign unpushed commits
    when a push would publish them. Raises GitStateError or TemplateError (exit 2); returns the
    branch. Reads only local state: no fetch, no network."""
    _, branch, rel, path, _ = _ready(repo_root, template, pipeline=pipeline, push=push)
    text = _read(path)
    current = read_default(text, parameter, source=rel)
    set_default(text, parameter, current or _PLACEHOLDER_AMI, source=rel)
    return branch


def _ready(
    repo_root: Path, template: Path, *, pipeline: str, push: bool
) -> tuple[git.Repo, str, str, Path, tuple[str, str] | None]:
    """The checks before a record: (repo, branch, template path in the repo, its file, push target)."""
    repo = _open(repo_root)
    branch = _check_branch(repo)
    rel = _tracked_path(repo, repo_root, template)
    path = Path(repo.working_tree_dir or repo_root) / rel
    _check_clean(repo)
    target = _push_target(repo, branch) if push else None
    if target is not None:
        _check_ahead(repo, target, pipeline)
    return repo, branch, rel, path, target


def revert(
    repo_root: Path,
    commit: CommitInfo | str,
    *,
    pipeline: str,
    run_id: str,
    reason: str = "",
    author: str | None = None,
    default_author: str,
    push: bool = True,
    on_event: OnEvent = _ignore,
) -> CommitInfo | None:
    """Undo a promote commit with a new commit (never a rewrite) and push it; None if already undone."""
    repo = _open(repo_root)
    branch = _check_branch(repo)
    _check_clean(repo)
    sha = commit.sha if isinstance(commit, CommitInfo) else commit
    with _git_errors(f"finding commit {sha}"):
        original = repo.commit(sha)
    full = original.hexsha
    target = _push_target(repo, branch) if push else None
    if repo.git.log("--format=%H", f"--grep=This reverts commit {full}", f"{full}..HEAD"):
        on_event(f"commit {full[:12]} is already reverted: nothing to do")
        if target is not None:
            _push(repo, target, on_event)
        return None
    if not repo.is_ancestor(original, repo.head.commit):
        raise GitStateError(
            f"commit {full[:12]} is not on branch {branch}", hint="check out the branch the promote committed to"
        )
    original_message = str(original.message)
    original_subject = original_message.splitlines()[0] if original_message else full
    changed = sorted(str(p) for p in original.stats.files)
    rel = changed[0] if len(changed) == 1 else (commit.template if isinstance(commit, CommitInfo) else "")
    before_image = after_image = None
    if isinstance(commit, CommitInfo):
        before_image, after_image = commit.image, commit.previous_image
    try:
        with _git_errors(f"reverting {full[:12]}"):
            repo.git.revert("--no-commit", full)
    except GitOperationError as exc:
        repo.git.revert("--abort")
        raise GitOperationError(
            f"cannot revert {full[:12]} automatically: {exc.message}",
            hint=f"the template changed since; revert it by hand: git revert {full}",
        ) from None
    trailers = {"Pipeline": pipeline, "Run": run_id, "Reverts": full}
    body = f"This reverts commit {full}." + (f"\n\nWhy: {reason}." if reason else "")
    message = _message(f"{pipeline}: revert {original_subject!r}"[:200], body, trailers)
    chosen, env = _identity(repo, author, default_author)
    with _git_errors("committing the revert"), repo.git.custom_environment(**env):
        repo.git.commit("-q", "-m", message)
    info = CommitInfo(
        sha=repo.head.commit.hexsha,
        branch=branch,
        template=rel,
        image=after_image,
        previous_image=before_image,
        author=chosen,
        message=message,
    )
    on_event(f"reverted {full[:12]} with {info.sha[:12]} on {branch}")
    if target is None:
        return info
    pushed = _push(repo, target, on_event)
    return replace(info, pushed_to=pushed)


def _open(repo_root: Path) -> git.Repo:
    try:
        import git
    except ImportError as exc:  # GitPython missing, or no git executable
        raise ToolMissingError(
            f"git is not usable from Python: {exc}", hint="install git and pip install 'pipeline-as-code[run]'"
        ) from None
    try:
        repo = git.Repo(repo_root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise GitStateError(
            f"{repo_root} is not inside a git repository",
            hint="promote commits the image into the template: run it in a clone of the repository",
        ) from None
    if repo.bare:
        raise GitStateError(f"{repo_root} is a bare repository", hint="run promote in a working tree")
    return repo


def _check_branch(repo: git.Repo) -> str:
    if repo.head.is_detached:
        raise GitStateError(
            "HEAD is detached: promote commits to a branch and will not leave a commit on no branch",
            hint="check out the branch first (e.g. git checkout -B main origin/main); the rendered CI configs do "
            "this before a promote (Jenkins: git checkout -B $BRANCH_NAME)",
        )
    if not repo.head.is_valid():
        raise GitStateError(f"branch {repo.active_branch.name} has no commits yet", hint="commit the template first")
    return str(repo.active_branch.name)


def _check_clean(repo: git.Repo) -> None:
    if repo.is_dirty(index=True, working_tree=True, untracked_files=False):
        changed = repo.git.status("--porcelain", "--untracked-files=no").splitlines()
        shown = ", ".join(line[3:] for line in changed[:10]) + (" ..." if len(changed) > 10 else "")
        raise GitStateError(
            f"the working tree has uncommitted changes ({shown}): promote commits only on a clean tree",
            hint="commit or stash them (git stash), then re-run",
        )


def _tracked_path(repo: git.Repo, repo_root: Path, template: Path) -> str:
    work = Path(repo.working_tree_dir or repo_root).resolve()
    full = (template if template.is_absolute() else Path(repo_root) / template).resolve()
    try:
        rel = full.relative_to(work).as_posix()
    except ValueError:
        raise GitStateError(f"{template} is outside the repository {work}") from None
    if not repo.git.ls_files("--", rel):
        raise GitStateError(
            f"{rel} is not tracked by git", hint=f"commit it first (git add {rel} && git commit), then re-run"
        )
    return rel


def _push_target(repo: git.Repo, branch: str) -> tuple[str, str] | None:
    tracking = repo.active_branch.tracking_branch()
    if tracking is not None:
        return str(tracking.remote_name), str(tracking.remote_head)
    names = [r.name for r in repo.remotes]
    if "origin" in names:
        return "origin", branch
    if len(names) == 1:
        return names[0], branch
    return None


def _check_ahead(repo: git.Repo, target: tuple[str, str], pipeline: str) -> None:
    """Refuse to publish someone's unpushed work along with the promote commit."""
    remote_ref = f"refs/remotes/{target[0]}/{target[1]}"
    try:
        repo.git.rev_parse("--verify", "-q", remote_ref)
    except _git_command_error():
        return  # nothing known about the remote branch yet (first push)
    foreign = [
        c.hexsha[:12]
        for c in repo.iter_commits(f"{remote_ref}..HEAD")
        if f"Pipeline: {pipeline}" not in str(c.message).splitlines()
    ]
    if foreign:
        raise GitStateError(
            f"branch has {len(foreign)} unpushed commit(s) that are not promote commits ({', '.join(foreign[:5])}): "
            "pushing the promote would publish them too",
            hint=f"push them first (git push {target[0]} HEAD:{target[1]}) or run without push",
        )


def _push(repo: git.Repo, target: tuple[str, str], on_event: OnEvent) -> str:
    remote, head = target
    env = {"GIT_TERMINAL_PROMPT": "0"}
    if "GIT_SSH_COMMAND" not in os.environ:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    with _git_errors(f"pushing to {remote}/{head}"), repo.git.custom_environment(**env):
        repo.git.push("--porcelain", remote, f"HEAD:refs/heads/{head}")
    on_event(f"pushed {repo.head.commit.hexsha[:12]} to {remote}/{head}")
    return f"{remote}/{head}"


def _identity(repo: git.Repo, author: str | None, default_author: str) -> tuple[str, dict[str, str]]:
    """The author to use and the environment that makes git use it (see the module's policy)."""
    configured = _configured_identity(repo)
    chosen = author or configured or default_author
    match = _AUTHOR.match(chosen)
    if not match or not match.group("name"):
        raise BadInputError(f"{chosen!r} is not a git identity", hint="write it as 'Name <email>'")
    name, email = match.group("name"), match.group("email")
    env: dict[str, str] = {}
    if author or configured is None:
        env.update(GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email)
    if configured is None:
        env.setdefault("GIT_COMMITTER_NAME", os.environ.get("GIT_COMMITTER_NAME") or name)
        env.setdefault("GIT_COMMITTER_EMAIL", os.environ.get("GIT_COMMITTER_EMAIL") or email)
    return f"{name} <{email}>", env


def _configured_identity(repo: git.Repo) -> str | None:
    def config(key: str) -> str | None:
        try:
            value = str(repo.git.config("--get", key)).strip()
        except _git_command_error():
            return None
        return value or None

    name = os.environ.get("GIT_AUTHOR_NAME") or config("user.name")
    email = os.environ.get("GIT_AUTHOR_EMAIL") or config("user.email") or os.environ.get("EMAIL")
    return f"{name} <{email}>" if name and email else None


def _message(subject: str, body: str, trailers: Mapping[str, str | None]) -> str:
    lines = [f"{key}: {value}" for key, value in trailers.items() if value]
    return f"{subject}\n\n{body}\n\n" + "\n".join(lines) + "\n"


def _git_command_error() -> type[Exception]:
    import git

    error: type[Exception] = git.GitCommandError
    return error


@contextmanager
def _git_errors(action: str) -> Iterator[None]:
    import git

    try:
        yield
    except git.GitCommandError as exc:
        stderr = str(exc.stderr or "").strip().removeprefix("stderr:").strip().strip("'").strip()
        tail = "\n".join(stderr.splitlines()[-10:]) or str(exc)
        raise GitOperationError(f"{action} failed: {tail}", hint=f"reproduce with: {_command(exc.command)}") from None
    except (git.BadName, ValueError) as exc:
        raise GitStateError(f"{action}: {exc}") from None


def _command(command: Any) -> str:
    if isinstance(command, list | tuple):
        return " ".join(str(c) for c in command)
    return str(command)


def _read(path: Path) -> str:
    with path.open(encoding="utf-8", newline="") as handle:
        return handle.read()


def _write(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(text)


__all__ = [
    "check_can_record",
    "read_default",
    "record_image",
    "revert",
    "set_default",
]
