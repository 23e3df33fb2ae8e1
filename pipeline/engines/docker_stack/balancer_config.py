"""The balancer's nginx.conf: written from what a deployment wants, and read back.

The file is the stack's routing state: which replicas serve (its `server` lines, with weights
during a canary), the template parameters the stack runs with, and the warm set a blue-green
switch keeps for a switch back (two comment lines). A later deploy or describe reads them from the
balancer itself, so nothing needs to be remembered between runs. Pure functions: no Docker here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from importlib import resources

from pipeline.engines.docker_stack.labels import json_labels
from pipeline.engines.docker_stack.shaping import DARK_UPSTREAM, Shaping, render_shaping
from pipeline.engines.topology import Topology

PARAMETERS_COMMENT = "# parameters: "
"""The config line that records the template parameters the stack runs with."""
WARM_COMMENT = "# warm: "
"""The config line that names the old set a blue-green switch keeps warm, and until when."""

ALERT_MARKER = "/etc/nginx/pipeline-alert"
"""While this file exists in the balancer (the alert route made it), every request goes to `stable`."""
ALERT_LOCATION = "location = /.pipeline/alert"

Warm = tuple[tuple[str, ...], float]
"""(replica names, until: epoch seconds) of a warm set."""


def render_config(
    stack: str,
    topo: Topology,
    servers: list[str],
    parameters: Mapping[str, str],
    *,
    weights: Mapping[str, int] | None = None,
    warm: Warm | None = None,
    log: str | None = None,
    shaping: Shaping | None = None,
    alert: bool = False,
    stable: list[str] | None = None,
) -> str:
    """The balancer's nginx.conf routing to `servers` (container names on the stack network),
    with balancer `weights` per server (canary steps), the warm set kept for a switch back, a
    request log at `log` while a deployment watches its health signals, and the `shaping` of a
    sticky canary, user groups or a dark launch (shaping.py)."""
    import jinja2

    text = (resources.files("pipeline.engines.docker_stack") / "lb" / "nginx.conf.j2").read_text()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    weights = weights or {}
    shaped = render_shaping(shaping, sorted(servers), topo.target_port, log=bool(log))
    # nginx resolves every upstream name when it loads the file: a stable replica that a rolling
    # update has already retired (stopped, so gone from the network's DNS) would make the reload
    # fail. The alert routes to the stable replicas still here: routed, or kept warm.
    here = set(servers) | set(warm[0] if warm else ())
    stable_here = [name for name in stable or () if name in here]
    return env.from_string(text).render(
        stack=stack,
        parameters=json.dumps(dict(parameters), sort_keys=True),
        servers=[(name, weights.get(name)) for name in shaped.default_upstream],
        shaping=shaped,
        port=topo.target_port,
        listen=topo.listener_port,
        drain=max(1, int(topo.deregistration_delay)),
        warm=f"{','.join(warm[0])} until {warm[1]:.3f}" if warm and warm[0] else "",
        log=log or "",
        alert=alert,
        stable=sorted(stable_here or servers),
        alert_marker=ALERT_MARKER,
    )


def servers(config: str) -> list[str]:
    """The replica names a configuration routes users to, in its order, each once (a dark launch's
    mirrored set answers nobody: it is not among them)."""
    found: list[str] = []
    upstream = ""
    for line in config.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "upstream" and words[2] == "{":
            upstream = words[1]
        if len(words) >= 2 and words[0] == "server" and ":" in words[1] and upstream != DARK_UPSTREAM:
            name = words[1].rsplit(":", 1)[0]
            if name not in found:
                found.append(name)
    return found


def config_parameters(config: str) -> dict[str, str]:
    """The template parameters a configuration records; {} when it records none."""
    for line in config.splitlines():
        if line.startswith(PARAMETERS_COMMENT):
            return json_labels(line[len(PARAMETERS_COMMENT) :])
    return {}


def warm_set(config: str) -> Warm:
    """(names, until) of the warm set the configuration records; ((), 0.0) when there is none."""
    for line in config.splitlines():
        if line.startswith(WARM_COMMENT):
            names, _, until = line[len(WARM_COMMENT) :].partition(" until ")
            try:
                return tuple(n for n in names.split(",") if n), float(until)
            except ValueError:
                return (), 0.0
    return (), 0.0


def canary_weights(new: list[str], old: list[str], percent: int) -> dict[str, int]:
    """Balancer weights per server that give the `new` servers together `percent` % of the
    requests and the `old` ones the rest (smallest whole numbers)."""
    if not new or not old or percent >= 100:
        return {}
    per_new = percent * len(old)
    per_old = (100 - percent) * len(new)
    common = math.gcd(per_new, per_old)
    return {**dict.fromkeys(old, per_old // common), **dict.fromkeys(new, per_new // common)}


def has_alert_route(config: str) -> bool:
    return ALERT_LOCATION in config


__all__ = [
    "ALERT_MARKER",
    "canary_weights",
    "config_parameters",
    "has_alert_route",
    "render_config",
    "servers",
    "warm_set",
]
