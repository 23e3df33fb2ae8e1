"""Where an environment's flag store answers, found from its stack (runtime side: engines).

Local profile: the stack's flag store containers publish their Redis ports on 127.0.0.1 (the
engine's `describe` lists them). aws: the stack's `FlagStoreEndpoint` output (reachable from inside
the VPC only: a CI agent there, or a tunnel). `PIPELINE_FLAGS_URL=host:port` overrides both (e.g. a
tunnel to ElastiCache), and `PIPELINE_FLAGS_REPLICAS=host:port,...` names replicas to check.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.engines.flag_store_shape import FLAG_STORE_OUTPUT
from pipeline.errors import BadInputError, NoFlagStoreError
from pipeline.flags.store import FlagEndpoint

if TYPE_CHECKING:
    from pipeline.model import Environment, Profile
    from pipeline.profiles.base import Engines
    from pipeline.spec import PipelineSpec

URL_ENV = "PIPELINE_FLAGS_URL"


def flag_endpoint(
    spec: PipelineSpec,
    env: Environment,
    profile: Profile,
    root: Path,
    *,
    engines: Engines | None = None,
    environ: Mapping[str, str] | None = None,
) -> FlagEndpoint:
    """The store of `env`'s stack (NoFlagStoreError saying why there is none)."""
    environ = os.environ if environ is None else environ
    if environ.get(URL_ENV):
        replicas = tuple(a for a in environ.get("PIPELINE_FLAGS_REPLICAS", "").split(",") if a)
        return FlagEndpoint(environ[URL_ENV].removeprefix("redis://"), replicas, where=URL_ENV)
    if env.ephemeral:
        raise BadInputError(
            f"environment {env.name!r} is ephemeral: its stacks live for one run",
            hint="flags move in persistent environments (e.g. production); a test stack starts from the definition",
        )
    from pipeline.profiles import ProfileEngines

    engine = (engines or ProfileEngines()).stack_engine(spec, env, profile, root, environ=environ)
    stack = env.stack_name(spec.name)
    state = engine.describe(stack)
    if not state.exists:
        raise NoFlagStoreError(
            f"{env.name} has no stack ({stack}) on the {profile} profile, so no flag store",
            hint="create it first (pipeline run local), or set PIPELINE_FLAGS_URL=host:port",
        )
    details = state.details
    if details.get("flags_master"):
        replicas = tuple(a for a in details.get("flags_replicas", "").split(",") if a)
        return FlagEndpoint(details["flags_master"], replicas, where=f"the flag store of {stack} ({profile})")
    output = details.get(f"output.{FLAG_STORE_OUTPUT}")
    if output:
        return FlagEndpoint(output, (), where=f"{FLAG_STORE_OUTPUT} of stack {stack} ({profile})")
    raise NoFlagStoreError(
        f"the stack {stack} of {env.name} has no flag store",
        hint="declare an AWS::ElastiCache::ReplicationGroup in its template (see docs/flags.md); "
        "without one every flag serves its default",
    )


__all__ = ["URL_ENV", "flag_endpoint"]
