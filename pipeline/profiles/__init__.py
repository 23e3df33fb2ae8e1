"""Profiles: where a pipeline's stages act. One module each (`local`: Docker on this machine; `aws`:
CloudFormation and AMIs), each handing out its engines behind the contracts in
`pipeline.profiles.base`, found by name and imported only when used (so `validate` and `render`
never import Docker or boto3).

    engines = ProfileEngines()
    stack = engines.stack_engine(spec, env, "aws", root, environ=os.environ)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import BadInputError

if TYPE_CHECKING:
    from pipeline.doctor import Probes, Report
    from pipeline.engines.images.base import ImageEngine
    from pipeline.engines.stack import StackEngine
    from pipeline.ledger import ReleaseStore
    from pipeline.model import Environment, Profile
    from pipeline.profiles.base import ProfileModule
    from pipeline.spec import PipelineSpec
    from pipeline.stages.bake import Bake

BUILTIN: dict[str, str] = {
    "local": "pipeline.profiles.local:LOCAL",
    "aws": "pipeline.profiles.aws:AWS",
}


@cache
def profile(name: str) -> ProfileModule:
    """The profile called `name` (BadInputError naming the known ones if there is none)."""
    value = BUILTIN.get(name)
    if value is None:
        raise BadInputError(f"no profile {name!r}", hint=f"profiles: {', '.join(BUILTIN)}")
    module_name, _, attr = value.partition(":")
    found: ProfileModule = getattr(importlib.import_module(module_name), attr)
    return found


def diagnose(
    profile_name: Profile = "local",
    *,
    base_image: str = "pipeline-base:bookworm",
    probes: Probes | None = None,
) -> Report:
    """Every tool the profile needs (its module's `doctor_checks`), in the order a user would fix them."""
    from pipeline.doctor import Asked, Probes, Report

    probes = probes or Probes()
    asked = Asked(base_image=base_image)
    report = Report(profile_name)
    report.findings += [check(probes, asked) for check in profile(profile_name).doctor_checks()]
    return report


class ProfileEngines:
    """The engines of the real profiles: what a run uses unless a test injects others."""

    def stack_engine(
        self,
        spec: PipelineSpec,
        env: Environment,
        profile_name: Profile,
        root: Path,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> StackEngine:
        """The engine for `env`'s stacks on the profile `profile_name`."""
        template = spec.template_of(env)
        if template is None:
            raise BadInputError(
                f"environment {env.name!r} has no template", hint=f"set Environment(name={env.name!r}, template=...)"
            )
        return profile(profile_name).stack_engine(spec, env, root / template, environ=environ)

    def release_store(
        self, spec: PipelineSpec, env: Environment, profile_name: Profile, root: Path
    ) -> ReleaseStore | None:
        """Where `env`'s release history outlives this machine's ledger (None: only the ledger)."""
        return profile(profile_name).release_store(spec, env, root)

    def image_engine(
        self, spec: PipelineSpec, bake: Bake, profile_name: Profile, *, environ: Mapping[str, str] | None = None
    ) -> ImageEngine:
        """The engine that bakes `bake`'s images on the profile `profile_name`."""
        return profile(profile_name).image_engine(spec, bake, environ=environ)
