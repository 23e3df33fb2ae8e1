"""The local profile: Docker on this machine. Packer's docker builder bakes images; a stack is
replicas of the image behind an nginx balancer on 127.0.0.1 (pipeline/engines/local_stack.py)."""

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
class LocalProfile:
    name: Profile = "local"

    def stack_engine(
        self, spec: PipelineSpec, env: Environment, template: Path, *, environ: Mapping[str, str] | None = None
    ) -> StackEngine:
        from pipeline.engines.local_stack import LocalStackEngine

        return LocalStackEngine(pipeline=spec.name, template=template)


LOCAL = LocalProfile()
