"""The capability table: how each model feature maps to each CI target, from the renderers' own code.

docs/capabilities.md is `markdown()`; tests/unit/test_render_capabilities.py fails when the file is
stale and rewrites it with PIPELINE_REGENERATE_GOLDEN=1. Other tests check each claim against the
rendered files, so the table cannot drift from what the renderers do.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.errors import RendererRegistryError
from pipeline.render.base import Renderer, Support
from pipeline.render.registry import available, get

FEATURES: tuple[tuple[str, str, str], ...] = (
    (
        "stages",
        "Stages",
        "Each stage is one CI job that runs `pipeline run stage NAME` (a rehearsal on the local profile: one "
        "step each, in one job): CI and a laptop run the same code.",
    ),
    ("order", "Order", "`needs` (and `a >> b`) decide what runs after what."),
    ("parallel", "Parallel branches", "Stages with no path between them may run at the same time (fan-out, fan-in)."),
    (
        "render-check",
        "Drift check",
        "Every CI config starts with `pipeline render --check`: the targets of `Pipeline(targets=...)`, else the "
        "file's own target, so a team that uses one CI server commits only its files.",
    ),
    (
        "manifests",
        "Run manifests",
        "`pipeline run stage --manifest .pipeline/ci/manifest` writes `STAGE.json` and reads all of them: CI carries the folder between jobs.",
    ),
    (
        "approval",
        "Approval gate",
        "`Approval(...)` on a stage or its environment: a person approves before the stage runs.",
    ),
    (
        "secrets",
        "Secrets",
        "`Secret(name=..., jenkins=..., teamcity=..., github=...)`: names and references only, never values.",
    ),
    (
        "aws",
        "AWS credentials",
        "Stages on the aws profile (an environment's, or the pipeline's for a bake) get credentials the target's own way (unless the definition lists AWS_* secrets).",
    ),
    (
        "branches",
        "Branch filters",
        '`branches=("main", "release/*")`: the stage runs only there; stages after it are skipped elsewhere.',
    ),
    (
        "push",
        "Promote commits and pushes",
        "An aws-profile `Promote` (`commit=True, push=True`, the defaults) commits the new image into its "
        "environment's template and pushes it: the job needs a branch checked out and credentials that may push.",
    ),
    (
        "agents",
        "Agents",
        "What a stage needs from its CI agent: Docker, Packer, root (a base image only debootstrap makes), or the "
        "local profile's one persistent machine; labels per need from `Pipeline(agents=AgentLabels(...))`, or a "
        "stage's own `agent=(...)`.",
    ),
    ("timeouts", "Timeouts", "`timeout_minutes` per attempt."),
    ("retries", "Retries", "`retries`: extra attempts after a failure."),
    (
        "concurrency",
        "One deploy per environment",
        "Stages acting on a persistent (non-ephemeral) environment never run two at a time; consecutive stages "
        "acting on one (deploy, then smoke test) hold its lock together. A FlagRollout (a flag flip) is always a "
        "job of its own, behind its environment's gate when it has one.",
    ),
    (
        "always",
        "Teardown always runs",
        "Always-run stages (Teardown) run after a failure too; stages after them are still skipped.",
    ),
    (
        "trigger",
        "Trigger",
        '`Trigger(branches=("main",), pull_requests=False)`: a push to these branches (default: '
        "`Pipeline(default_branch=...)`) starts the pipeline; a pull request runs the checks and never deploys.",
    ),
    (
        "profile",
        "Profile",
        "Stages that drive Docker or AWS (bake, stack stages, deploy scripts) run with `--profile`: their environment's, else `Pipeline(profile=...)`; gated ones with `--yes`.",
    ),
)
FEATURE_KEYS = tuple(key for key, _, _ in FEATURES)
DOC_PATH = "docs/capabilities.md"
REGENERATE = "PIPELINE_REGENERATE_GOLDEN=1 pytest tests/unit/test_render_capabilities.py"


def renderers() -> list[Renderer]:
    return [get(name) for name in available()]


def check_complete(renderer: Renderer) -> None:
    """A renderer must say how it maps every feature, and nothing else."""
    keys = set(renderer.capabilities)
    missing = [k for k in FEATURE_KEYS if k not in keys]
    extra = sorted(keys - set(FEATURE_KEYS))
    if missing or extra:
        raise RendererRegistryError(
            f"renderer {renderer.name!r} capabilities: missing {missing or 'none'}, unknown {extra or 'none'}",
            hint=f"describe exactly the features in pipeline.render.capabilities.FEATURES: {', '.join(FEATURE_KEYS)}",
        )


def _cell(support: Support) -> str:
    text = support.how
    if not support.native:
        text = "*No native construct.* " + text
    if support.fails:
        text += f"<br>**Fails the render:** {support.fails}."
    return text.replace("|", "\\|")


def markdown(targets: Sequence[Renderer] | None = None) -> str:
    targets = list(targets) if targets is not None else renderers()
    for renderer in targets:
        check_complete(renderer)
    lines = [
        "# CI capabilities",
        "",
        f"<!-- Generated from the renderers' code: {REGENERATE}. Do not edit; a test fails when this file is stale. -->",
        "",
        "How `pipeline render` expresses each feature of a definition on each CI target. *No native",
        "construct* marks an equivalent the renderer generates or documents; **Fails the render** names",
        "what the target cannot express: rendering stops with an error naming the feature and the target",
        "rather than writing a config that silently does something else.",
        "",
        "| Feature | In the definition | " + " | ".join(r.title for r in targets) + " |",
        "|---|---|" + "---|" * len(targets),
    ]
    for key, title, meaning in FEATURES:
        cells = [_cell(r.capabilities[key]) for r in targets]
        meaning_cell = meaning.replace("|", "\\|")
        lines.append(f"| **{title}** | {meaning_cell} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)
