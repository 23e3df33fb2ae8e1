"""A real PostgreSQL server for tests: Debian's PostgreSQL binaries, a cluster of its own in a
temporary folder, listening on a free 127.0.0.1 port only, stopped and removed at the end.

As root (initdb refuses to run as root) the cluster belongs to the `postgres` system user that
Debian's package creates."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import need

READY_TIMEOUT = 60.0


def binaries() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin with initdb, if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


@dataclass(frozen=True)
class Server:
    port: int
    user: str = "app"
    password: str = "app-password"

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def postgres_server() -> Iterator[Server]:
    bin_dir = binaries()
    need(bin_dir is not None, "PostgreSQL is not installed (apt-get install -y postgresql)")
    assert bin_dir is not None
    as_root = os.geteuid() == 0
    prefix: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
    if as_root:
        need(shutil.which("setpriv") is not None, "setpriv (util-linux) is missing")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            need(False, "no postgres system user (apt-get install -y postgresql creates it)")
            raise
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        prefix = ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--init-groups"]
    server = Server(port=_free_port())
    data = folder / "data"
    pwfile = folder / "pw"
    pwfile.write_text(server.password + "\n")
    if as_root:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    subprocess.run(
        [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", server.user, f"--pwfile={pwfile}",
         "-A", "scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C"],
        check=True, capture_output=True,
    )  # fmt: skip
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(
        [*prefix, str(bin_dir / "postgres"), "-D", str(data), "-p", str(server.port),
         "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={folder}", "-c", "fsync=off"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_ready(server, process, folder / "server.log")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_ready(server: Server, process: subprocess.Popen[bytes], log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            with psycopg.connect(server.url("postgres"), connect_timeout=2):
                return
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise RuntimeError(f"PostgreSQL did not accept connections in {READY_TIMEOUT:g} s: {log.read_text()[-2000:]}")
