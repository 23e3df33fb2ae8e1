"""Commands that read a definition: validate, graph, run local, run stage, status."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from pipeline.cli.app import ENGINES, FileOption, ProfileOption, app, console, is_plain, run_app

if TYPE_CHECKING:
    from pipeline.loader import Loaded
    from pipeline.model import Approval, Stage
    from pipeline.run import Runner

GraphFormat = Literal["text", "mermaid", "dot"]


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write the files.")] = Path("."),
    example: Annotated[str, typer.Option("--example", "-e", help="What to write (see --list).")] = "hello-web",
    list_examples: Annotated[bool, typer.Option("--list", help="List what can be written.")] = False,
) -> None:
    """Write the reference Hello World service (or a bundled example) into a folder."""
    from pipeline import scaffold

    if list_examples:
        entries = scaffold.listing()
        width = max(len(name) for name, _ in entries)
        for name, summary in entries:
            console.print(f"{name:<{width}}  {summary}".rstrip(), markup=False, highlight=False, soft_wrap=True)
        return
    done = scaffold.init(directory, example)
    console.print(f"[green]wrote[/] {len(done.files)} files of {done.name} into {done.target}")
    console.print("next: [bold]pipeline validate[/], then [bold]pipeline run local[/]")
    variables = _variables_read(done.target / "pipelinefile.py")
    if variables:
        console.print(
            f"it reads {', '.join(variables)} from the environment (secrets, by name): export them before "
            "[bold]pipeline run local[/]"
        )


def _variables_read(file: Path) -> list[str]:
    """The secrets a definition reads from the environment: every stage's and every environment's
    (its alert route's token included), so a new project says what to export before its first run."""
    from pipeline.loader import load

    spec = load(file).spec
    names = {s.name for stage in spec.stages for s in stage.secrets}
    names.update(s.name for environment in spec.environments for s in environment.bound_secrets)
    return sorted(names)


@app.command()
def validate(
    file: FileOption = None,
    profile: ProfileOption = None,
    definition_only: Annotated[
        bool, typer.Option("--definition-only", help="Skip template checks that need tools (packer, cfn-lint).")
    ] = False,
) -> None:
    """Check the definition, the files it refers to and the templates. No side effects."""
    from pipeline.cli.render import report_target_support
    from pipeline.run import Runner
    from pipeline.secrets import check_lengths

    loaded = _load(file)
    spec = loaded.spec
    check_lengths(
        [s for stage in spec.stages for s in stage.secrets] + [s for e in spec.environments for s in e.bound_secrets]
    )
    if profile:
        spec.check_profiles(profile)  # a stage kind --profile cannot carry out (a FlagRollout on aws): exit 2
    spec.check_profiles()  # ... nor the profile CI runs it with (render refuses the same)
    report_target_support(spec)  # what a CI target the definition uses cannot express: exit 2 now, not on CI
    checked = [] if definition_only else Runner(loaded).check_templates(profile or "local")
    templates = f"; templates checked for {', '.join(checked)}" if checked else ""
    console.print(
        f"[green]ok[/]: pipeline [bold]{spec.name}[/] ({loaded.file.name}): "
        f"{len(spec.stages)} stages, {len(spec.environments)} environments{templates}"
    )


@app.command()
def graph(
    file: FileOption = None,
    fmt: Annotated[GraphFormat, typer.Option("--format", help="text, mermaid or dot.")] = "text",
) -> None:
    """Show the stage graph: order, parallel groups, gates."""
    from pipeline.diagram import draw

    loaded = _load(file)
    sys.stdout.write(draw(loaded.spec, fmt))


@run_app.command("local")
def run_local(
    file: FileOption = None,
    profile: ProfileOption = None,
    from_stage: Annotated[
        str | None, typer.Option("--from", help="Start at this stage (and run what follows).")
    ] = None,
    only: Annotated[str | None, typer.Option("--only", help="Run just this stage.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-run stages even when up to date.")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the ephemeral test stack and print its URL.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Answer approval gates with yes.")] = False,
) -> None:
    """Run the whole chain on this machine, in DAG order; unchanged stages are skipped."""
    from pipeline.run import RunOptions

    loaded = _load(file)
    options = RunOptions(
        profile=profile, only=only, from_stage=from_stage, force=force, keep=keep, yes=yes, interactive=_interactive()
    )
    summary = _runner(loaded).run_local(options)
    raise typer.Exit(summary.exit_code)


@run_app.command("stage")
def run_stage(
    name: Annotated[str, typer.Argument(help="The stage to run.")],
    file: FileOption = None,
    profile: ProfileOption = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            "-m",
            help="Run manifest: a manifest.json, or a folder of <stage>.json files (CI artifacts). "
            "Default: $PIPELINE_MANIFEST, else this machine's latest run.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-run even when up to date.")] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Answer the approval gate with yes (CI gates first).")
    ] = False,
) -> None:
    """Run one stage, as a CI job calls it: upstream outputs come from the run manifest."""
    from pipeline.run import RunOptions

    loaded = _load(file)
    options = RunOptions(profile=profile, force=force, yes=yes, interactive=_interactive(), manifest=manifest)
    summary = _runner(loaded).run_stage(name, options)
    raise typer.Exit(summary.exit_code)


@app.command()
def status(
    environment: Annotated[str | None, typer.Argument(help="Only this environment.")] = None,
    file: FileOption = None,
    profile: ProfileOption = None,
) -> None:
    """What runs where (image, stack, URL) and the last runs."""
    from pipeline.cli.status_view import show_status

    show_status(_load(file), environment, profile, engines=ENGINES.get())


def _load(file: Path | None) -> Loaded:
    from pipeline.loader import load

    return load(file)


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty() and not is_plain()


def _runner(loaded: Loaded) -> Runner:
    from pipeline.cli.progress import LiveReporter, PlainReporter
    from pipeline.run import Runner

    reporter = PlainReporter(console) if is_plain() else LiveReporter(console)

    def approver(stage: Stage, approval: Approval) -> bool:
        return typer.confirm(f"{stage.name}: {approval.message}", default=False, err=True)

    return Runner(loaded, reporter=reporter, approver=approver, engines=ENGINES.get())
