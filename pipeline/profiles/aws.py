"""The aws profile: CloudFormation through boto3 (real AWS, or an emulator at AWS_ENDPOINT_URL);
Packer's amazon-ebs builder bakes AMIs; promote commits the image into the template with git."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.model import Profile

if TYPE_CHECKING:
    from pipeline.doctor import Check
    from pipeline.engines.images.ami import AmiImageEngine
    from pipeline.engines.stack import StackEngine
    from pipeline.ledger import ReleaseStore
    from pipeline.model import Environment
    from pipeline.spec import PipelineSpec
    from pipeline.stages.bake import Bake


@dataclass(frozen=True)
class AwsProfile:
    name: Profile = "aws"

    def stack_engine(
        self, spec: PipelineSpec, env: Environment, template: Path, *, environ: Mapping[str, str] | None = None
    ) -> StackEngine:
        """CloudFormation; an ephemeral environment's engine (a test stack) masks the columns its
        database marks sensitive once it is restored from a snapshot. A persistent one gets no
        masks: production is never masked, even when it was restored from a snapshot itself."""
        from pipeline.engines.aws.engine import CloudFormationEngine

        database = spec.database_of(env)
        return CloudFormationEngine(
            pipeline=spec.name,
            template=template,
            settings=env.aws,
            image_parameter=env.image_parameter,
            environ=environ,
            database=database,
            masks=database.sensitive if database is not None and env.ephemeral else (),
        )

    def release_store(self, spec: PipelineSpec, env: Environment, root: Path) -> ReleaseStore | None:
        """The template's git history: every promote, revert and rollback is a commit with trailers
        (when the environment's promote commits; else only the ledger knows)."""
        from pipeline.engines.git_releases import GitReleaseStore
        from pipeline.stages.promote import Promote

        promote = next((s for s in spec.stages if isinstance(s, Promote) and s.environment == env.name), None)
        if env.template is None or (promote is not None and not promote.commit):
            return None
        return GitReleaseStore(root=root, template=env.template, pipeline=spec.name, environment=env.name)

    def image_engine(
        self, spec: PipelineSpec, bake: Bake, *, environ: Mapping[str, str] | None = None
    ) -> AmiImageEngine:
        """Packer's amazon-ebs builder and EC2 (one AwsSession with the stage's settings); the
        template's docker source, when the stage names one, is baked on the local profile's engine
        and checked in the AMI's place."""
        from pipeline.engines.images.ami import AmiImageEngine
        from pipeline.engines.images.base import source_of
        from pipeline.profiles.local import LOCAL

        docker = LOCAL.image_engine(spec, bake, environ=environ) if bake.sources.get(LOCAL.name) else None
        return AmiImageEngine(bake, source=source_of(bake, self.name), environ=environ, docker=docker)

    def doctor_checks(self) -> tuple[Check, ...]:
        """The local profile's (the bake checks its AMIs through a Docker image), then whether the
        EC2 and CloudFormation endpoints answer and accept the credentials, as a run would ask."""
        from pipeline import doctor
        from pipeline.profiles.local import LOCAL

        return (*LOCAL.doctor_checks(), doctor.aws_access)


AWS = AwsProfile()

if TYPE_CHECKING:
    from pipeline.profiles.base import ProfileModule

    _conforms: ProfileModule = AWS
    """mypy holds the profile to the contract (engines included), as cibuildwheel does its platforms."""
