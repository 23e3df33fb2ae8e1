"""The flag store a template declares: an `AWS::ElastiCache::ReplicationGroup` (Redis), read into
the shape the local engine runs in miniature (a master and read-only replicas in the stack).

    FlagStore:
      Type: AWS::ElastiCache::ReplicationGroup
      Properties:
        Engine: redis
        NumCacheClusters: 3        # 1 primary + 2 read replicas (or ReplicasPerNodeGroup: 2)
        Port: 6379

Pure: no Docker, no AWS. A shape the local engine cannot reproduce (cluster mode, another engine,
two stores) is a TemplateError naming the resource and property.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import TemplateError

REPLICATION_GROUP = "AWS::ElastiCache::ReplicationGroup"
DEFAULT_PORT = 6379
FLAG_STORE_OUTPUT = "FlagStoreEndpoint"
"""The template output (aws) that names the primary endpoint address:port."""


@dataclass(frozen=True)
class FlagStoreShape:
    """A Redis master and `replicas` read-only replicas listening on `port`."""

    resource: str
    """The replication group's logical id (for messages)."""
    replicas: int
    port: int = DEFAULT_PORT


def read_flag_store(template: Mapping[str, Any], parameters: Mapping[str, str], source: str) -> FlagStoreShape | None:
    """The template's flag store, or None when it declares none."""
    resources = template.get("Resources") or {}
    groups = [n for n, r in resources.items() if isinstance(r, dict) and r.get("Type") == REPLICATION_GROUP]
    if not groups:
        return None
    if len(groups) > 1:
        raise TemplateError(
            f"{source}: the local engine runs one flag store per stack; found {', '.join(groups)} ({REPLICATION_GROUP})",
            hint="keep one replication group for the flags",
        )
    name = groups[0]
    props = resources[name].get("Properties") or {}
    where = f"{source}: resource {name}"

    def value(key: str, default: Any) -> Any:
        raw = props.get(key, default)
        if isinstance(raw, dict) and set(raw) == {"Ref"}:
            if raw["Ref"] not in parameters:
                raise TemplateError(f"{where} {key} refers to {raw['Ref']!r}, which is not a parameter with a value")
            return parameters[raw["Ref"]]
        if isinstance(raw, dict):
            raise TemplateError(f"{where} {key} uses {next(iter(raw), '?')}; use a literal or a !Ref to a parameter")
        return raw

    def integer(key: str, default: Any) -> int:
        raw = value(key, default)
        try:
            return int(str(raw))
        except ValueError:
            raise TemplateError(f"{where} {key} must be a whole number, not {raw!r}") from None

    engine = str(value("Engine", "redis")).lower()
    if engine not in ("redis", "valkey"):
        raise TemplateError(f"{where} Engine is {engine!r}; the flag store is Redis", hint="set Engine: redis")
    if integer("NumNodeGroups", 1) != 1:
        raise TemplateError(
            f"{where} uses cluster mode (NumNodeGroups > 1), which the local engine does not run",
            hint="one node group: a primary and read replicas (NumCacheClusters)",
        )
    if "ReplicasPerNodeGroup" in props:
        replicas = integer("ReplicasPerNodeGroup", 0)
    else:
        replicas = integer("NumCacheClusters", 1) - 1
    if not 0 <= replicas <= 5:
        raise TemplateError(f"{where} must have 1 to 6 cache clusters (a primary and 0 to 5 replicas)")
    port = integer("Port", DEFAULT_PORT)
    return FlagStoreShape(resource=name, replicas=replicas, port=port)


__all__ = ["FLAG_STORE_OUTPUT", "REPLICATION_GROUP", "FlagStoreShape", "read_flag_store"]
