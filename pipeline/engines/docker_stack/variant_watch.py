"""Watching a feature flag's variants through the stack's balancer (the local engine's side of a
FlagRollout): while it is open, the balancer logs every request with the variant the app said it
served (X-Flag-Variant), and `stats` splits the answers into the `on` and `off` variants.

The log is switched on with one graceful reload (the routing stays as it is) and off again at the
end, as a deployment does; a crash leaves it on until the next deploy or watch. A probe of
simulated users (each with its own X-User, so the store's bucketing spreads them over both
variants) sends steady load to the flag's page so every window has answers to judge.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from pipeline.engines.deploy_report import VersionStats
from pipeline.engines.docker_stack.access_log import AccessLog, parse_variant
from pipeline.engines.docker_stack.balancer import Balancer, lb_port, read_config
from pipeline.engines.docker_stack.balancer_config import config_parameters, has_alert_route, servers, warm_set
from pipeline.engines.docker_stack.labels import StackId, observe, running
from pipeline.engines.http_check import Hit, version_stats
from pipeline.engines.stack import OnEvent
from pipeline.errors import StackOperationError

if TYPE_CHECKING:
    from pipeline.engines.docker_stack.engine import DockerStackEngine


class VariantLog(AccessLog):
    """The balancer's request log, each answer counted for the variant of `flag` it served."""

    def __init__(self, lb: Any, network: str, flag: str, on_event: OnEvent) -> None:
        super().__init__(lb, 0, network, on_event)
        self.flag = flag

    def feed(self, data: bytes) -> None:
        data = self._rest + data
        cut = data.rfind(b"\n") + 1
        self._rest = data[cut:]
        for line in data[:cut].decode(errors="replace").splitlines():
            hit = parse_variant(line, self.flag)
            if hit is not None:
                self.hits.append(hit)


@dataclass
class UserProbe:
    """`rate` requests per second to `url`, each as one of `users` simulated users (X-User)."""

    url: str
    rate: float
    users: int = 1000
    timeout: float = 5.0

    def __post_init__(self) -> None:
        self.sent = 0
        self.failed = 0
        self.by_user: dict[str, set[str]] = {}
        """Every variant each user was served (X-Flag-Variant)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="user-probe", daemon=True)

    def __enter__(self) -> UserProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout + 5)

    def _loop(self) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        begin = time.monotonic()
        index = 0
        while not self._stop.is_set():
            due = begin + index / self.rate
            now = time.monotonic()
            if due > now and self._stop.wait(due - now):
                return
            user = f"user-{index % self.users}"
            index += 1
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=self.timeout)
            try:
                conn.request("GET", parts.path or "/", headers={"X-User": user, "Connection": "close"})
                answer = conn.getresponse()
                answer.read()
                variant = answer.getheader("X-Flag-Variant") or ""
                self.by_user.setdefault(user, set()).add(variant)
                self.sent += 1
                if answer.status >= 500:
                    self.failed += 1
            except (OSError, http.client.HTTPException):
                self.sent += 1
                self.failed += 1
            finally:
                conn.close()


class VariantWatch:
    """Open on a stack of `engine`: the balancer logs variants of `flag`; see the module docstring."""

    def __init__(self, engine: DockerStackEngine, stack: str, flag: str, *, on_event: OnEvent) -> None:
        self.engine = engine
        self.stack = StackId(engine.pipeline, stack)
        self.flag = flag
        self.on_event = on_event
        self.log: VariantLog | None = None
        self.probe: UserProbe | None = None
        self._lb: Any = None
        self._balancer: Balancer | None = None

    @property
    def url(self) -> str:
        port = lb_port(self._lb)
        return f"http://127.0.0.1:{port}/"

    def _route(self, log: bool) -> None:
        """The balancer's routing as it is, with the request log on or off (one graceful reload)."""
        lb = self._lb
        text = read_config(lb)
        parameters = config_parameters(text)
        topo = self.engine.topology({k: v for k, v in parameters.items() if k != "ImageId"} or None)
        balancer = Balancer(self.engine.client, self.stack, topo, parameters, self.on_event)
        names, until = warm_set(text)
        balancer.warm = (names, until) if names else None
        balancer.log = log
        balancer.alert = has_alert_route(text)
        balancer.config_text = text
        serving = [SimpleNamespace(name=n) for n in servers(text)]
        balancer.route(lb, serving)
        self._balancer = balancer

    def __enter__(self) -> VariantWatch:
        observed = observe(self.engine.client, self.stack)
        if observed.lb is None or not running(observed.lb) or observed.network is None:
            raise StackOperationError(f"stack {self.stack.name} has no running balancer to watch the flag through")
        self._lb = observed.lb
        self._route(log=True)
        self.log = VariantLog(observed.lb, observed.network.name, self.flag, self.on_event)
        self.log.truncate()
        self.on_event(f"{observed.lb.name} logs the variant of {self.flag} each answer served")
        return self

    def start_probe(self, path: str, rate: float, users: int = 1000) -> None:
        self.probe = UserProbe(self.url.rstrip("/") + path, rate, users)
        self.probe.__enter__()

    def read(self) -> None:
        if self.log is not None:
            self.log.read()

    def stats(self, since: float, *, on: bool) -> VersionStats:
        assert self.log is not None
        return version_stats(h for h in self.log.hits if h.new == on and h.at >= since)

    def stats_between(self, windows: list[tuple[float, float]], *, on: bool) -> VersionStats:
        assert self.log is not None
        hits: list[Hit] = [h for h in self.log.hits if h.new == on and any(a <= h.at <= b for a, b in windows)]
        return version_stats(hits)

    def __exit__(self, *exc: object) -> None:
        if self.probe is not None:
            self.probe.stop()
        self.read()
        with contextlib.suppress(StackOperationError):
            self._route(log=False)


__all__ = ["UserProbe", "VariantLog", "VariantWatch"]
