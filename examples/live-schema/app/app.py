"""The live-schema service: a page that greets from PostgreSQL and counts its visits.

GET /        reads the greeting, records the visit, answers "<greeting> from live-schema <release>,
             visit <n>" (500 when the database refuses: the schema is not what this release needs)
GET /health  "OK" while the process serves (the target group's check; no database involved)

The database comes from libpq's variables (PGHOST, PGUSER, PGPASSWORD, PGDATABASE, ...), which the
stack gives every replica. Python's standard library plus Debian's python3-psycopg2, nothing else.
"""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import psycopg2.pool

RELEASE = os.environ.get("APP_RELEASE") or open("/opt/app/RELEASE").read().strip()  # noqa: SIM115
PORT = int(os.environ.get("APP_PORT", "80"))

# What this release reads and writes. Release 1.0.0 reads greetings.text.
GREETING = "SELECT text FROM greetings WHERE id = 1"
RECORD_VISIT = "INSERT INTO visits (agent) VALUES (%s) RETURNING id"

_pools: dict[str, psycopg2.pool.ThreadedConnectionPool] = {}
_pool_lock = threading.Lock()


def pool() -> psycopg2.pool.ThreadedConnectionPool:
    """Connections shared by the request threads (libpq reads PGHOST, PGUSER, ... from the environment)."""
    with _pool_lock:
        if "db" not in _pools:
            _pools["db"] = psycopg2.pool.ThreadedConnectionPool(0, 16, "")
        return _pools["db"]


def page(agent: str) -> str:
    connections = pool()
    conn = connections.getconn()
    broken = False
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(GREETING)
            row = cursor.fetchone()
            greeting = row[0] if row else "Hello"
            cursor.execute(RECORD_VISIT, (agent,))
            visit = cursor.fetchone()[0]
    except psycopg2.OperationalError:
        broken = True  # the server went away: do not hand this connection out again
        raise
    finally:
        connections.putconn(conn, close=broken or bool(conn.closed))
    return f"{greeting} from live-schema {RELEASE}, visit {visit}\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # the standard library's name
        if self.path == "/health":
            self.answer(200, "OK\n")
            return
        if self.path != "/":
            self.answer(404, "not found\n")
            return
        try:
            self.answer(200, page(self.headers.get("User-Agent", "")))
        except psycopg2.Error as exc:
            self.answer(500, f"live-schema {RELEASE}: the database refused: {str(exc).strip().splitlines()[0]}\n")

    def answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the balancer logs requests


if __name__ == "__main__":
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True
    server.serve_forever()
