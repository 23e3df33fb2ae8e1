"""What a profile hands out, and what a run asks for: the contracts between the executors and the
real world, checked by mypy against each profile module (as cibuildwheel checks its platforms)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pipeline.doctor import Check
    from pipeline.engines.images.base import ImageEngine
    from pipeline.engines.stack import StackEngine
    from pipeline.ledger import ReleaseStore
    from pipeline.model import Environment, Profile
    from pipeline.spec import PipelineSpec
    from pipeline.stages.bake import Bake


class ProfileModule(Protocol):
    """One profile: its name and the engines it builds."""

    @property
    def name(self) -> Profile: ...

    def stack_engine(
        self, spec: PipelineSpec, env: Environment, template: Path, *, environ: Mapping[str, str] | None = None
    ) -> StackEngine:
        """The engine that runs `env`'s stacks from `template` (an absolute path)."""
        ...

    def release_store(self, spec: PipelineSpec, env: Environment, root: Path) -> ReleaseStore | None:
        """Where `env`'s release history lives beyond this machine's ledger (None: nowhere)."""
        ...

    def image_engine(self, spec: PipelineSpec, bake: Bake, *, environ: Mapping[str, str] | None = None) -> ImageEngine:
        """The engine that bakes `bake`'s images; `environ`: the environment with the stage's env
        and secrets (credentials) on top."""
        ...

    def doctor_checks(self) -> Sequence[Check]:
        """What `pipeline doctor --profile NAME` looks at, in the order a user would fix them."""
        ...


class Engines(Protocol):
    """Where executors, `status` and `rollback` get their engines: the profiles' by default
    (`pipeline.profiles.ProfileEngines`); tests inject fakes through the Runner or the CLI."""

    def stack_engine(
        self,
        spec: PipelineSpec,
        env: Environment,
        profile_name: Profile,
        root: Path,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> StackEngine: ...

    def release_store(
        self, spec: PipelineSpec, env: Environment, profile_name: Profile, root: Path
    ) -> ReleaseStore | None: ...

    def image_engine(
        self, spec: PipelineSpec, bake: Bake, profile_name: Profile, *, environ: Mapping[str, str] | None = None
    ) -> ImageEngine: ...
