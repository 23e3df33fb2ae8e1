"""The alert route on the local engine's balancer: `POST /.pipeline/alert` with the environment's
token sends every request to the stable version and switches every flag of a rollout in flight
off, at once (the agent: lb/alert_agent.py, run by python3 inside the balancer container).

The engine puts the agent and its settings (the token's sha256, never the token; the flag store's
master on the stack network; the marker nginx checks) into the balancer, and starts the agent when
it does not run (a balancer made by an earlier version, or an engine restart). Without a token the
balancer has no alert route at all: nothing is open to whoever reaches the balancer.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from typing import Any

from pipeline.engines.docker_stack.balancer_config import ALERT_MARKER
from pipeline.engines.docker_stack.flag_store import container_name
from pipeline.engines.docker_stack.labels import StackId
from pipeline.engines.docker_stack.service_image import tar_archive
from pipeline.engines.flag_store_shape import FlagStoreShape
from pipeline.engines.stack import OnEvent

SETTINGS = "/etc/pipeline/alert.json"
AGENT = "/etc/pipeline/alert_agent.py"
ALERT_PATH = "/.pipeline/alert"


def alert_files(stack: StackId, token: str | None, shape: FlagStoreShape | None) -> dict[str, str]:
    """{path: text} to put into the balancer; {} when the environment has no alert token."""
    if not token:
        return {}
    settings = {
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "redis": f"{container_name(stack, 0)}:{shape.port}" if shape is not None else "",
        "marker": ALERT_MARKER,
    }
    agent = (resources.files("pipeline.engines.docker_stack") / "lb" / "alert_agent.py").read_text()
    return {SETTINGS: json.dumps(settings, sort_keys=True) + "\n", AGENT: agent}


def ensure_agent(lb: Any, files: dict[str, str], on_event: OnEvent) -> None:
    """The settings in place and the agent running in the balancer `lb` (idempotent)."""
    if not files:
        return
    for path, text in files.items():
        directory, _, name = path.rpartition("/")
        lb.put_archive(directory, tar_archive({name: text.encode()}))
    processes = lb.top().get("Processes") or []
    if any("alert_agent.py" in " ".join(str(c) for c in row) for row in processes):
        return
    lb.exec_run(["/usr/bin/python3", AGENT], detach=True)
    on_event(f"{lb.name}: the alert route's agent is running")


__all__ = ["ALERT_PATH", "alert_files", "ensure_agent"]
