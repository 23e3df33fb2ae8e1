"""The alert route's handler inside the balancer container (python3's standard library only).

nginx passes `POST /.pipeline/alert` (and `DELETE`, to clear) to this agent on 127.0.0.1:9901.
A request must carry `Authorization: Bearer <token>`; the agent compares the token's sha256 with
the one the engine wrote to /etc/pipeline/alert.json (the token itself is never stored in the
container). An accepted alert, at once:

1. creates the marker file nginx checks on every request (`if (-f ...)`): from the next request
   on, every request goes to the `stable` upstream (the old version's replicas during a
   deployment; all replicas otherwise): no reload;
2. on the stack's flag store (its master, on the stack network), sets the alert key and puts every
   flag of a rollout in flight back to 0 % (a history entry each), which the store's replicas
   serve a moment later.

It answers with what it did, as JSON: the flags switched off and each change's history entry (who,
when, from, to), so the caller (`pipeline flag alert`) can record them in its ledger. DELETE clears
the marker and the alert key (flags stay off).

`python3 alert_agent.py [PORT]` serves on 127.0.0.1:PORT (default 9901); $PIPELINE_ALERT_CONFIG
names another settings file (the tests run the agent outside a container).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

CONFIG = os.environ.get("PIPELINE_ALERT_CONFIG", "/etc/pipeline/alert.json")
PORT = 9901


def resp(sock: socket.socket, *args: str | bytes) -> Any:
    """One Redis command over RESP; returns the decoded reply."""
    out = f"*{len(args)}\r\n"
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out += f"${len(data)}\r\n"
        sock.sendall(out.encode() + data + b"\r\n")
        out = ""
    if out:
        sock.sendall(out.encode())
    return _read(sock.makefile("rb"))


def _read(stream: IO[bytes]) -> Any:
    line = stream.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind in (b"+", b":"):
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        return stream.read(size + 2)[:-2].decode()
    if kind == b"*":
        return [_read(stream) for _ in range(int(rest))]
    raise RuntimeError(f"unexpected reply {line!r}")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() % 1 * 1e6):06d}Z"


def flags_off(address: str, who: str) -> list[dict[str, Any]]:
    """Every rollout in flight to 0 %, and the alert key set; returns the history entry of each
    flag switched off."""
    host, _, port = address.rpartition(":")
    done = []
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        at = now_iso()
        resp(sock, "SET", "pipeline:flags:alert", json.dumps({"at": at, "by": who}))
        for name in resp(sock, "SMEMBERS", "pipeline:flags:rollouts") or []:
            key = "pipeline:flag:" + name
            raw = resp(sock, "GET", key)
            before = json.loads(raw) if raw else None
            after = dict(before or {"value": True, "base": None})
            after.update(percent=0.0, at=at, by=who)
            resp(sock, "SET", key, json.dumps(after, sort_keys=True))
            entry = {
                "flag": name,
                "from": before,
                "to": after,
                "by": who,
                "at": at,
                "why": "alert: rollout switched off",
            }
            resp(sock, "LPUSH", "pipeline:flags:history", json.dumps(entry, sort_keys=True))
            done.append(entry)
    return done


class Handler(BaseHTTPRequestHandler):
    def _answer(self, status: int, data: dict[str, Any]) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _config(self) -> dict[str, Any]:
        try:
            with open(CONFIG) as handle:
                data = json.load(handle)
                return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _allowed(self, config: dict[str, Any]) -> bool:
        expected = config.get("token_sha256", "")
        given = self.headers.get("Authorization", "")
        if not expected or not given.startswith("Bearer "):
            return False
        digest = hashlib.sha256(given[len("Bearer ") :].strip().encode()).hexdigest()
        return hmac.compare_digest(digest, expected)

    def do_POST(self) -> None:
        started = time.monotonic()
        config = self._config()
        if not self._allowed(config):
            self._answer(403, {"error": "forbidden"})
            return
        with open(config["marker"], "w") as handle:
            handle.write(now_iso())
        routed = time.monotonic() - started
        who = self.headers.get("X-Alert-By", "alert route")
        try:
            changes = flags_off(config["redis"], who) if config.get("redis") else []
            error = None
        except (OSError, RuntimeError) as exc:
            changes, error = [], str(exc)
        self._answer(
            200 if error is None else 502,
            {
                "routed_to": "stable",
                "routed_seconds": routed,
                "flags_off": [change["flag"] for change in changes],
                "changes": changes,
                "seconds": time.monotonic() - started,
                "error": error,
            },
        )

    def do_DELETE(self) -> None:
        config = self._config()
        if not self._allowed(config):
            self._answer(403, {"error": "forbidden"})
            return
        if os.path.exists(config["marker"]):
            os.remove(config["marker"])
        if config.get("redis"):
            host, _, port = config["redis"].rpartition(":")
            with socket.create_connection((host, int(port)), timeout=2) as sock:
                resp(sock, "DEL", "pipeline:flags:alert")
        self._answer(200, {"cleared": True})

    def log_message(self, format: str, *args: Any) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else PORT), Handler).serve_forever()
