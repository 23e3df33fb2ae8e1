"""What every renderer shares: the protocol, the files it returns, and the header they start with.

A renderer is a pure function of the frozen spec: it reads `PipelineSpec` (never boto3, docker or
testinfra), returns `RenderedFile`s with LF line endings, and raises `UnsupportedFeatureError`
when its target cannot express something the definition uses. Writing and drift checks live
elsewhere (`pipeline.render.write`, `pipeline.render.drift`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

from pipeline.spec import PipelineSpec

DEFAULT_DEFINITION = "pipelinefile.py"
MANIFEST_DIR = ".pipeline/ci/manifest"
"""Where CI jobs keep the run manifest: `pipeline run stage` writes `<stage>.json` here and reads every
`*.json` in it. CI artifacts carry this folder from job to job."""


@dataclass(frozen=True)
class RenderedFile:
    """One generated file: a path relative to the output folder (with '/'), and its text."""

    path: str
    content: str
    executable: bool = False

    def __post_init__(self) -> None:
        if self.path.startswith("/") or "\\" in self.path or ".." in self.path.split("/"):
            raise ValueError(f"rendered path {self.path!r} must be relative and use '/'")
        if "\r" in self.content:
            raise ValueError(f"{self.path}: rendered text must use LF line endings")
        if not self.content.endswith("\n"):
            raise ValueError(f"{self.path}: rendered text must end with a newline")


@dataclass(frozen=True)
class Support:
    """How a target expresses one feature of the model (a cell of docs/capabilities.md)."""

    how: str
    """Markdown, one sentence or two: the construct used, or the documented equivalent."""
    native: bool = True
    """False when the target has no native construct and an equivalent is generated or documented."""
    fails: str | None = None
    """What makes the render fail for this feature on this target, if anything."""


def tool_version() -> str:
    """The version of this tool: what a rendered file pins its CI install to and names in its header."""
    from pipeline import __version__

    return __version__


@dataclass(frozen=True)
class RenderContext:
    """Facts about where the output goes that the spec itself does not know."""

    definition: str = DEFAULT_DEFINITION
    """The definition file, relative to the output folder (the repository root CI checks out)."""
    version: str = field(default_factory=tool_version)
    """The tool version that renders: the default install pins CI to it (like a lock file)."""

    @property
    def file_args(self) -> str:
        """` -f FILE` for every `pipeline` command CI runs, when the file is not found by default."""
        if self.definition == DEFAULT_DEFINITION:
            return ""
        return f" -f {shlex.quote(self.definition)}"


@runtime_checkable
class Renderer(Protocol):
    """A CI target. Registered under `name` in the `pipeline.renderers` entry-point group."""

    name: ClassVar[str]
    """The `--target` value, e.g. 'github'."""
    title: ClassVar[str]
    """Human name of the CI system, e.g. 'GitHub Actions'."""
    capabilities: ClassVar[Mapping[str, Support]]
    """How each feature in `pipeline.render.capabilities.FEATURES` maps to this target."""

    def outputs(self, spec: PipelineSpec) -> Sequence[str]:
        """The paths `render` writes for this spec (without rendering)."""
        ...

    def render(self, spec: PipelineSpec, context: RenderContext) -> list[RenderedFile]:
        """Every file for this target; raises UnsupportedFeatureError for what it cannot express."""
        ...
