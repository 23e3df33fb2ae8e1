"""An environment's flag store (Redis: one master, read-only replicas) as the pipeline uses it:
read and set flags, the history of changes, the rollouts in flight and the alert.

Every change is one transaction on the master: the flag's new state and a history entry (who,
when, from, to) together, so the store's history is complete even when the ledger of the machine
that made the change is lost. Replicas follow the master asynchronously; `set` waits (Redis WAIT)
until every replica acknowledged the change, so "set" returning means every replica serves it.

redis-py is imported lazily (the `flags` and `run` extras install it).
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import FlagStoreError
from pipeline.flags.state import ALERT_KEY, FLAG_PREFIX, HISTORY_KEY, ROLLOUTS_KEY, FlagState

HISTORY_MAX = 1000
"""History entries the store keeps (the ledger keeps its own)."""
REPLICATION_TIMEOUT = 5.0


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def actor() -> str:
    """Who makes a change: $PIPELINE_ACTOR (CI sets its user), else user@host."""
    import os

    named = os.environ.get("PIPELINE_ACTOR")
    if named:
        return named
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class FlagEndpoint:
    """Where an environment's flag store answers: the master (writes) and its replicas (reads),
    as host:port addresses this machine reaches."""

    master: str
    replicas: tuple[str, ...] = ()
    where: str = ""
    """For messages, e.g. 'containers shop-production-flags-* (local)'."""


@dataclass(frozen=True)
class FlagChange:
    """One change of one flag: the store's history entry and the ledger's record."""

    flag: str
    before: FlagState | None
    after: FlagState
    by: str
    at: str
    why: str = ""
    replicas_acked: int = 0
    seconds: float = 0.0
    """From the write on the master until every replica acknowledged it."""

    def to_json(self) -> dict[str, Any]:
        return {
            "flag": self.flag,
            "from": json.loads(self.before.to_json()) if self.before is not None else None,
            "to": json.loads(self.after.to_json()),
            "by": self.by,
            "at": self.at,
            "why": self.why,
        }


def _client(address: str, timeout: float, *, retry: bool = True) -> Any:
    import redis

    host, _, port = address.rpartition(":")
    options: dict[str, Any] = {}
    if not retry:  # redis-py's default retries a refused connection 3 times with backoff (~4 s)
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options["retry"] = Retry(NoBackoff(), 0)
    return redis.Redis(
        host=host or "127.0.0.1", port=int(port), socket_timeout=timeout, socket_connect_timeout=timeout, **options
    )


@dataclass
class FlagStore:
    """The pipeline's side of one environment's flag store."""

    endpoint: FlagEndpoint
    timeout: float = 5.0
    retry: bool = True
    """Retry a failed connection (redis-py's default); a read-only look (`pipeline status`) asks once."""
    master_client: Any = None
    replica_clients: Sequence[Any] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.master_client is None:
            self.master_client = _client(self.endpoint.master, self.timeout, retry=self.retry)
        if not self.replica_clients:
            self.replica_clients = tuple(_client(r, self.timeout, retry=self.retry) for r in self.endpoint.replicas)

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return function(*args, **kwargs)
        except redis.RedisError as exc:
            raise FlagStoreError(
                f"the flag store at {self.endpoint.master} ({self.endpoint.where or 'master'}) cannot {what}: {exc}",
                hint="is the environment's stack up? `pipeline status` shows it; a stack without a "
                "flag store serves every flag at its default",
            ) from None

    # --- reading ---
    def get(self, name: str) -> FlagState | None:
        raw = self._call(f"read flag {name}", self.master_client.get, FLAG_PREFIX + name)
        return None if raw is None else FlagState.from_json(raw)

    def all(self) -> dict[str, FlagState]:
        keys = sorted(self._call("list flags", lambda: list(self.master_client.scan_iter(FLAG_PREFIX + "*"))))
        values = self._call("read flags", self.master_client.mget, keys) if keys else []
        found = {}
        for key, raw in zip(keys, values, strict=True):
            if raw is not None:
                name = key.decode() if isinstance(key, bytes) else str(key)
                found[name[len(FLAG_PREFIX) :]] = FlagState.from_json(raw)
        return found

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        raw = self._call("read the history", self.master_client.lrange, HISTORY_KEY, 0, limit - 1)
        return [json.loads(item) for item in raw]

    def rollouts(self) -> list[str]:
        raw = self._call("read the rollouts", self.master_client.smembers, ROLLOUTS_KEY)
        return sorted(r.decode() if isinstance(r, bytes) else str(r) for r in raw)

    def alert(self) -> dict[str, Any] | None:
        raw = self._call("read the alert", self.master_client.get, ALERT_KEY)
        return None if raw is None else dict(json.loads(raw))

    def replica_values(self, name: str) -> list[FlagState | None]:
        """The flag as each replica serves it now."""
        out: list[FlagState | None] = []
        for client in self.replica_clients:
            raw = self._call(f"read flag {name} from a replica", client.get, FLAG_PREFIX + name)
            out.append(None if raw is None else FlagState.from_json(raw))
        return out

    # --- changing ---
    def set(self, name: str, state: FlagState, *, why: str = "", by: str | None = None) -> FlagChange:
        """Replace the flag's state and record the change (one transaction), then wait until every
        replica has it."""
        import redis

        who = by or actor()
        at = now_iso()
        stamped = FlagState(state.value, state.percent, state.base, at, who)
        key = FLAG_PREFIX + name
        for _ in range(20):
            try:
                with self.master_client.pipeline(transaction=True) as pipe:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    before = None if raw is None else FlagState.from_json(raw)
                    change = FlagChange(name, before, stamped, who, at, why)
                    pipe.multi()
                    pipe.set(key, stamped.to_json())
                    pipe.lpush(HISTORY_KEY, json.dumps(change.to_json(), sort_keys=True))
                    pipe.ltrim(HISTORY_KEY, 0, HISTORY_MAX - 1)
                    pipe.execute()
                    break
            except redis.WatchError:
                continue
            except redis.RedisError as exc:
                raise FlagStoreError(f"the flag store at {self.endpoint.master} refused the change: {exc}") from None
        else:
            raise FlagStoreError(f"flag {name} kept changing under this change (20 tries); try again")
        acked, seconds = self.wait_replicas()
        return FlagChange(name, before, stamped, who, at, why, acked, seconds)

    def wait_replicas(self) -> tuple[int, float]:
        """Until every replica acknowledged the master's writes so far: (replicas, seconds)."""
        wanted = len(self.endpoint.replicas)
        started = time.monotonic()
        if wanted == 0:
            return 0, 0.0
        acked = int(
            self._call("wait for its replicas", self.master_client.wait, wanted, int(REPLICATION_TIMEOUT * 1000))
        )
        seconds = time.monotonic() - started
        if acked < wanted:
            raise FlagStoreError(
                f"only {acked} of {wanted} replicas of the flag store acknowledged the change within "
                f"{REPLICATION_TIMEOUT:g} s; the others serve the previous value until they catch up",
                hint="the change is on the master and recorded; check the replicas (`pipeline status`)",
            )
        return acked, seconds

    def seed(self, values: Mapping[str, Any], *, by: str = "pipeline") -> list[str]:
        """Give every flag not in the store yet its first value; returns the names seeded. A flag
        already in the store keeps its state: the store, not the definition, is the truth."""
        seeded = []
        for name, value in values.items():
            state = FlagState(value=value, percent=100.0, at=now_iso(), by=by)
            if self._call(f"seed flag {name}", self.master_client.set, FLAG_PREFIX + name, state.to_json(), nx=True):
                entry = FlagChange(name, None, state, by, state.at, "seeded from the definition")
                self._call("record the seed", self.master_client.lpush, HISTORY_KEY, json.dumps(entry.to_json()))
                seeded.append(name)
        return seeded

    def begin_rollout(self, name: str) -> None:
        self._call("mark a rollout", self.master_client.sadd, ROLLOUTS_KEY, name)

    def end_rollout(self, name: str) -> None:
        self._call("unmark a rollout", self.master_client.srem, ROLLOUTS_KEY, name)

    def raise_alert(self, *, by: str | None = None, base_of: Mapping[str, Any] | None = None) -> list[FlagChange]:
        """Every flag of a rollout in flight back to its base value (percent 0), and the alert set."""
        who = by or actor()
        self._call("set the alert", self.master_client.set, ALERT_KEY, json.dumps({"at": now_iso(), "by": who}))
        changes = []
        for name in self.rollouts():
            current = self.get(name)
            base = (base_of or {}).get(name, current.base if current is not None else None)
            value = current.value if current is not None else base
            changes.append(self.set(name, FlagState(value, 0.0, base), why="alert: rollout switched off", by=who))
        return changes

    def clear_alert(self) -> None:
        self._call("clear the alert", self.master_client.delete, ALERT_KEY)


__all__ = ["FlagChange", "FlagEndpoint", "FlagStore", "actor"]
