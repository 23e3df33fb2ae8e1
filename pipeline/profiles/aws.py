"""The aws profile: CloudFormation through boto3 (real AWS, or an emulator at AWS_ENDPOINT_URL);
Packer's amazon-ebs builder bakes AMIs; promote commits the image into the template with git."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.model import Profile

if TYPE_CHECKING:
    from pipeline.engines.stack import StackEngine
    from pipeline.model import Environment
    from pipeline.spec import PipelineSpec


@dataclass(frozen=True)
class AwsProfile:
    name: Profile = "aws"

    def stack_engine(
        self, spec: PipelineSpec, env: Environment, template: Path, *, environ: Mapping[str, str] | None = None
    ) -> StackEngine:
        from pipeline.engines.cloudformation import CloudFormationEngine

        return CloudFormationEngine(
            pipeline=spec.name,
            template=template,
            settings=env.aws,
            image_parameter=env.image_parameter,
            environ=environ,
        )


AWS = AwsProfile()
