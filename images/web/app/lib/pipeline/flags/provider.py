"""An OpenFeature provider over redis-py: flags served by the environment's Redis store.

    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from pipeline.flags.provider import RedisFlagProvider

    api.set_provider(RedisFlagProvider.from_environment())   # PIPELINE_FLAGS_* set by the stack
    client = api.get_client()
    on = client.get_boolean_value("new-greeting", False, EvaluationContext(targeting_key=user_id))

Reads go to a read-only replica (the nearest one the stack names), falling back to the master.
A partial rollout (`percent` below 100) is decided by consistent bucketing on the targeting key
(pipeline/flags/state.py): one user keeps one variant. Without a store (no address configured, or
it does not answer) every flag is its default and the reason is ERROR: the service keeps serving.
After a failed read the store is not asked again for `retry_seconds`, so a missing store costs one
short timeout per interval, not one per request.

Depends on openfeature-sdk and redis only (the `pipeline-as-code[flags]` extra); the reference
image ships a copy of this module with `state.py` (images/web/app/lib/).
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider
from openfeature.provider.metadata import Metadata

from pipeline.flags.state import FLAG_PREFIX, FlagState

T = TypeVar("T")

MASTER_ENV = "PIPELINE_FLAGS_MASTER"
"""host:port of the store's master (set on every replica of a stack that has a flag store)."""
REPLICAS_ENV = "PIPELINE_FLAGS_REPLICAS"
"""Comma-separated host:port of its read-only replicas."""


class RedisFlagProvider(AbstractProvider):
    """OpenFeature provider reading flag states from Redis (see the module docstring)."""

    def __init__(
        self,
        read: Sequence[str] = (),
        *,
        timeout: float = 0.2,
        retry_seconds: float = 1.0,
        clients: Sequence[Any] = (),
    ) -> None:
        super().__init__()
        self.addresses = tuple(read)
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self._clients = list(clients)
        self._down_until = 0.0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, *, me: str | None = None) -> RedisFlagProvider:
        """Addresses from PIPELINE_FLAGS_REPLICAS / PIPELINE_FLAGS_MASTER: one replica first (chosen
        by `me`, default the host name, so the replicas share the reads), then the others, then
        the master. None set: a provider that serves defaults."""
        env = os.environ if environ is None else environ
        replicas = [a for a in env.get(REPLICAS_ENV, "").split(",") if a.strip()]
        if replicas:
            start = zlib.crc32((me or os.uname().nodename).encode()) % len(replicas)
            replicas = replicas[start:] + replicas[:start]
        master = [env[MASTER_ENV]] if env.get(MASTER_ENV) else []
        return cls([*replicas, *master])

    def get_metadata(self) -> Metadata:
        return Metadata(name="pipeline-redis")

    # --- the store ---
    def _connect(self) -> list[Any]:
        if not self._clients and self.addresses:
            import redis

            for address in self.addresses:
                host, _, port = address.rpartition(":")
                self._clients.append(
                    redis.Redis(
                        host=host, port=int(port), socket_timeout=self.timeout, socket_connect_timeout=self.timeout
                    )
                )
        return self._clients

    def read_state(self, flag_key: str) -> tuple[FlagState | None, str | None]:
        """(state, None), (None, None) for a flag the store does not have, or (None, why) when
        no store answers."""
        if time.monotonic() < self._down_until:
            return None, "the flag store did not answer a moment ago"
        clients = self._connect()
        if not clients:
            return None, "no flag store is configured"
        last = "no flag store answered"
        for client in clients:
            try:
                raw = client.get(FLAG_PREFIX + flag_key)
            except Exception as exc:  # any redis/socket error: try the next copy
                last = f"{type(exc).__name__}: {exc}"
                continue
            if raw is None:
                return None, None
            try:
                return FlagState.from_json(raw), None
            except ValueError as exc:
                return None, f"flag {flag_key} holds no flag state: {exc}"
        self._down_until = time.monotonic() + self.retry_seconds
        return None, last

    # --- resolution ---
    def _resolve(
        self, flag_key: str, default: T, context: EvaluationContext | None, kind: type
    ) -> FlagResolutionDetails[T]:
        state, problem = self.read_state(flag_key)
        if problem is not None:
            return FlagResolutionDetails(default, ErrorCode.PROVIDER_NOT_READY, problem, Reason.ERROR)
        if state is None:
            return FlagResolutionDetails(
                default, ErrorCode.FLAG_NOT_FOUND, f"no flag {flag_key} in the store", Reason.DEFAULT
            )
        key = context.targeting_key if context is not None else None
        value, variant, split = state.resolve(flag_key, key, default)
        if not _fits(value, kind):
            return FlagResolutionDetails(
                default,
                ErrorCode.TYPE_MISMATCH,
                f"flag {flag_key} holds {value!r}, not a {kind.__name__}",
                Reason.ERROR,
            )
        if split and not key:
            return FlagResolutionDetails(
                value,
                ErrorCode.TARGETING_KEY_MISSING,
                "a partial rollout needs a targeting key",
                Reason.DEFAULT,
                variant,
            )
        reason = Reason.SPLIT if split else Reason.STATIC
        return FlagResolutionDetails(value, None, None, reason, variant, {"percent": state.percent})

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, bool)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, str)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, int)

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, float)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._resolve(flag_key, default_value, evaluation_context, object)


def _fits(value: Any, kind: type) -> bool:
    if kind is object:
        return isinstance(value, dict | list)
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind)


__all__ = ["MASTER_ENV", "REPLICAS_ENV", "RedisFlagProvider"]
