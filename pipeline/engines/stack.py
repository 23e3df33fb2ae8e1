"""One interface for the two kinds of environment: Docker on this machine, CloudFormation on AWS.

A stack runs one image behind a load balancer. `deploy` creates or updates it idempotently
(update and rollback are the same operation with a different image); `delete` removes everything
of the stack and nothing else; `describe` reads the real world (never an in-memory cache).
Stage executors in `stages/` talk only to this protocol; `engine_for` picks the implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pipeline.model import Environment, Profile, Verify

if TYPE_CHECKING:
    from pipeline.spec import PipelineSpec

OnEvent = Callable[[str], None]


def _ignore(text: str) -> None:
    pass


@dataclass(frozen=True)
class StackState:
    """What a stack is, as observed now."""

    name: str
    exists: bool
    image: str | None = None
    """The image every replica / instance runs (None while mixed or absent)."""
    url: str | None = None
    status: str = "absent"
    """'ready', 'updating', 'failed' or 'absent' (engine-specific detail in `details`)."""
    parameters: Mapping[str, str] = field(default_factory=dict)
    """Template parameters the stack runs with (aws) or their local equivalent."""
    details: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of verifying a stack through its load balancer."""

    ok: bool
    requests: int
    failures: int
    detail: str = ""
    """The first failure, or a one-line summary."""
    real: tuple[str, ...] = ()
    """Checks that ran against the real data plane (HTTP through the balancer)."""
    emulated: tuple[str, ...] = ()
    """Checks that only an emulator's control plane could answer (stack status, image id)."""


class StackEngine(Protocol):
    """Create, update, describe, verify and delete stacks of one pipeline on one profile."""

    profile: Profile

    def describe(self, stack: str) -> StackState: ...

    def deploy(
        self, stack: str, image: str, *, parameters: Mapping[str, str] | None = None, on_event: OnEvent = _ignore
    ) -> StackState:
        """Create the stack, or move it to `image` (rolling, zero downtime); idempotent."""
        ...

    def delete(self, stack: str, *, on_event: OnEvent = _ignore) -> None:
        """Remove every resource of the stack; a missing stack is not an error."""
        ...

    def verify(self, state: StackState, check: Verify, *, on_event: OnEvent = _ignore) -> VerifyReport: ...

    def stacks(self) -> list[str]:
        """Names of every stack of this pipeline that exists now (to find orphans)."""
        ...


def engine_for(
    spec: PipelineSpec,
    env: Environment,
    profile: Profile,
    root: Path,
    *,
    environ: Mapping[str, str] | None = None,
) -> StackEngine:
    """The engine for `env` on `profile`. Imports docker or boto3 only when called.

    `environ` is what the aws engine reads credentials and AWS_ENDPOINT_URL from (the process
    environment plus the stage's env and secrets); default: the process environment."""
    template = env.template or _template_of_copied_environment(spec, env)
    if template is None:
        from pipeline.errors import BadInputError

        raise BadInputError(
            f"environment {env.name!r} has no template", hint=f"set Environment(name={env.name!r}, template=...)"
        )
    if profile == "local":
        from pipeline.engines.local_stack import LocalStackEngine

        return LocalStackEngine(pipeline=spec.name, template=root / template)
    from pipeline.engines.cloudformation import CloudFormationEngine

    return CloudFormationEngine(
        pipeline=spec.name,
        template=root / template,
        settings=env.aws,
        image_parameter=env.image_parameter,
        environ=environ,
    )


def _template_of_copied_environment(spec: PipelineSpec, env: Environment) -> str | None:
    """An ephemeral environment without a template uses the template of the one it copies."""
    for stage in spec.stages:
        if stage.kind == "test-stack" and stage.environment_name() == env.name:
            like = getattr(stage, "like", None)
            if like:
                return spec.environment(like).template
    return None


__all__ = ["OnEvent", "StackEngine", "StackState", "VerifyReport", "engine_for"]
