"""`pipeline render`: write the CI configs for one or every target, or check the committed ones."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli.app import FileOption, app, console, err_console

if TYPE_CHECKING:
    from pipeline.spec import PipelineSpec

ci_app = typer.Typer(help="Steps the rendered CI configs run (not needed on a laptop).", no_args_is_help=True)
app.add_typer(ci_app, name="ci")

TARGET_HELP = (
    "jenkins, teamcity, github, gitlab (plugins add more), several as jenkins,teamcity, or all. "
    "Default: the definition's targets (Pipeline(targets=...)), else all."
)


@app.command()
def render(
    target: Annotated[str | None, typer.Option("--target", "-t", help=TARGET_HELP, show_default=False)] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Write under this folder (default: the definition's folder).", show_default=False
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Write nothing; exit 1 and show a diff when the committed files differ."),
    ] = False,
    file: FileOption = None,
) -> None:
    """Render the CI configs (Jenkinsfile, .teamcity/, .github/workflows/, .gitlab-ci.yml) from the definition."""
    from pipeline.errors import RenderDriftError
    from pipeline.loader import load
    from pipeline.render import check as check_drift
    from pipeline.render import parse_targets, resolve_targets, write
    from pipeline.render import render as render_files
    from pipeline.render.base import RenderContext

    if target is not None:
        parse_targets(target)  # an unknown target fails before the definition is imported
    loaded = load(file)
    targets = resolve_targets(target, loaded.spec.targets)
    root = (out or loaded.root).resolve()
    definition = Path(os.path.relpath(loaded.file, root)).as_posix()
    files = render_files(loaded.spec, targets, RenderContext(definition=definition))
    if check:
        try:
            check_drift(files, root)
        except RenderDriftError as exc:
            sys.stdout.write(exc.diff)
            sys.stdout.flush()
            err_console.print(
                f"[bold red]error:[/] {len(exc.paths)} rendered file(s) differ from the committed ones: "
                f"{', '.join(exc.paths)}",
                highlight=False,
                soft_wrap=True,
            )
            again = "pipeline render" + ("" if loaded.spec.targets else f" --target {','.join(targets)}")
            err_console.print(f"[yellow]hint:[/] run `{again}` and commit the result", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        console.print(f"[green]ok[/]: {len(files)} files match a fresh render ({', '.join(targets)})")
        return
    for path, changed in write(files, root):
        shown = Path(os.path.relpath(root / path)).as_posix()
        console.print(f"{'wrote' if changed else 'unchanged'} {shown}")


def report_target_support(spec: PipelineSpec) -> None:
    """For `pipeline validate`: what a target cannot express. The definition's own targets make it
    an error (exit 2, every target's problem at once); without declared targets, a warning per
    installed target that the team might render."""
    from pipeline.errors import UnsupportedTargetsError
    from pipeline.render import available, resolve_targets, unsupported

    declared = resolve_targets(None, spec.targets) if spec.targets else []
    problems = unsupported(spec, declared or available())
    if declared and problems:
        raise UnsupportedTargetsError(problems)
    for problem in problems:
        err_console.print(
            f"[yellow]warning:[/] {problem.message}; rendering for {problem.target} will fail"
            + (f" ({problem.hint})" if problem.hint else "")
            + "; name the targets you use: Pipeline(..., targets=(...))",
            highlight=False,
            soft_wrap=True,
        )


@ci_app.command("github-reviewers")
def github_reviewers(
    environment: Annotated[str, typer.Argument(help="The GitHub environment of the gate.")],
    script: Annotated[
        str, typer.Option("--script", help="The generated script that sets the reviewers (named in the error).")
    ] = "",
) -> None:
    """Fail unless the GitHub environment has required reviewers (the first step of a gated job)."""
    from pipeline.render.github_gate import required_reviewers

    reviewers = required_reviewers(environment, script=script)
    console.print(f"[green]ok[/]: environment {environment} requires a review by one of: {', '.join(reviewers)}")


@ci_app.command("gitlab-approval")
def gitlab_approval(
    user: Annotated[
        list[str] | None, typer.Option("--user", help="A GitLab user name who may approve (repeatable).")
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="A GitLab group path whose members may approve (repeatable).")
    ] = None,
    message: Annotated[str, typer.Option("--message", help="What is being approved (shown in the job log).")] = "",
) -> None:
    """Fail unless the user who started this manual GitLab job may approve it (the first step of a gated job)."""
    from rich.markup import escape

    from pipeline.render.gitlab_gate import check_approver

    approver = check_approver(user or [], group or [])
    console.print(f"[green]ok[/]: approved by {escape(approver)}", highlight=False)
    if message:
        console.print(message, markup=False, highlight=False)
