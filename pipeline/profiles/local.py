"""The local profile: Docker on this machine. Packer's docker builder bakes images; a stack is
replicas of the image behind an nginx balancer on 127.0.0.1 (pipeline/engines/docker_stack/)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.model import Profile

if TYPE_CHECKING:
    from pipeline.doctor import Check
    from pipeline.engines.images.docker import DockerImageEngine
    from pipeline.engines.stack import StackEngine
    from pipeline.ledger import ReleaseStore
    from pipeline.model import Environment
    from pipeline.spec import PipelineSpec
    from pipeline.stages.bake import Bake


@dataclass(frozen=True)
class LocalProfile:
    name: Profile = "local"

    def stack_engine(
        self, spec: PipelineSpec, env: Environment, template: Path, *, environ: Mapping[str, str] | None = None
    ) -> StackEngine:
        import os

        from pipeline.engines.docker_stack import DockerStackEngine

        database = spec.database_of(env)
        values = os.environ if environ is None else environ
        token = values.get(env.alert_secret) if env.alert_secret else None
        return DockerStackEngine(
            pipeline=spec.name,
            template=template,
            masks=database.sensitive if database is not None else (),
            flags=spec.flag_values(env),
            alert_token=token,
            alert_secret=env.alert_secret,
            environment=env.name,
        )

    def release_store(self, spec: PipelineSpec, env: Environment, root: Path) -> ReleaseStore | None:
        """Tags on the images, in the Docker engine that runs the stacks: the machine's own record,
        shared by every workspace (CI job) and user of that engine."""
        from pipeline.engines.docker_releases import DockerReleaseStore

        return DockerReleaseStore(pipeline=spec.name, environment=env.name)

    def image_engine(
        self, spec: PipelineSpec, bake: Bake, *, environ: Mapping[str, str] | None = None
    ) -> DockerImageEngine:
        """Packer's docker builder and the Docker engine at DOCKER_HOST."""
        from pipeline.engines.images.base import source_of
        from pipeline.engines.images.docker import DockerImageEngine

        return DockerImageEngine(bake, source=source_of(bake, self.name), environ=environ)

    def doctor_checks(self) -> tuple[Check, ...]:
        """Docker, Packer and the base image (bakes and stacks), git, and the Python packages."""
        from pipeline import doctor

        return (doctor.python_packages, doctor.docker_engine, doctor.packer, doctor.base_image, doctor.git)


LOCAL = LocalProfile()

if TYPE_CHECKING:
    from pipeline.profiles.base import ProfileModule

    _conforms: ProfileModule = LOCAL
    """mypy holds the profile to the contract (engines included), as cibuildwheel does its platforms."""
