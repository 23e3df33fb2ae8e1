"""The same fault, the same answer: a walk through the fault table of docs/reliability.md.

Each row of the table is provoked for real (a Docker socket that does not exist, a closed port on
127.0.0.1, a profile that does not exist, a stand-in on 127.0.0.1 that answers like AWS for an
expired token) and met by every command of its last column, through the CLI, in a fresh copy of
the reference service. Every command must exit with the row's code and say the row's message with a
hint, and all of them the same (the AWS rows name the service they met). No request leaves
127.0.0.1; the whole aws run pings the local Docker engine first (read-only), so run this file
under the Docker lock like the other integration tests.
"""

from __future__ import annotations

import contextlib
import http.server
import re
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, cli_env, commit_all, init_reference_service, need

DOC = REPO / "docs" / "reliability.md"
SECTION = "## The same fault, the same answer"


@dataclass(frozen=True)
class Row:
    ident: str
    fault: str
    exit: int
    message: str
    commands: tuple[tuple[str, ...], ...]


def fault_table() -> list[Row]:
    """The rows of the table under SECTION in docs/reliability.md."""
    text = DOC.read_text()
    assert SECTION in text, f"{DOC} has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 6 or cells[0] in ("id", "---"):
            continue
        ident, fault, _provoked, code, message, met_by = cells
        commands = tuple(tuple(shlex.split(c.strip().strip("`"))) for c in met_by.split(";"))
        rows.append(Row(ident, fault, int(code), message.strip("`"), commands))
    return rows


ROWS = fault_table()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def answering_request_expired() -> Iterator[str]:
    """An endpoint on 127.0.0.1 that answers every call as AWS does for an expired session token."""
    body = (
        b"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>RequestExpired</Code>"
        b"<Message>Request has expired.</Message></Error></Errors><RequestID>fault-table</RequestID></Response>"
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(400)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


Provoke = Callable[[Path], contextlib.AbstractContextManager[dict[str, str]]]


@contextlib.contextmanager
def docker_stopped(tmp: Path) -> Iterator[dict[str, str]]:
    yield {"DOCKER_HOST": f"unix://{tmp}/no-engine.sock"}


@contextlib.contextmanager
def docker_unreachable(tmp: Path) -> Iterator[dict[str, str]]:
    yield {"DOCKER_HOST": f"tcp://127.0.0.1:{closed_port()}"}


@contextlib.contextmanager
def aws_unreachable(tmp: Path) -> Iterator[dict[str, str]]:
    yield {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}


@contextlib.contextmanager
def aws_missing(tmp: Path) -> Iterator[dict[str, str]]:
    yield {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}", "AWS_PROFILE": "nosuch"}


@contextlib.contextmanager
def aws_expired(tmp: Path) -> Iterator[dict[str, str]]:
    with answering_request_expired() as endpoint:
        yield {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "AKIAEXPIREDEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "expired-secret-example",
            "AWS_SESSION_TOKEN": "expired-session-token-example",
        }


PROVOKE: dict[str, Provoke] = {
    "docker-stopped": docker_stopped,
    "docker-unreachable": docker_unreachable,
    "aws-unreachable": aws_unreachable,
    "aws-missing": aws_missing,
    "aws-expired": aws_expired,
}
"""How each row of the table is provoked (the table's `provoked by` column says it in words)."""

AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL")


def message_pattern(template: str, env: dict[str, str]) -> re.Pattern[str]:
    pattern = re.escape(template)
    pattern = pattern.replace(re.escape("{docker_host}"), re.escape(env.get("DOCKER_HOST", "")))
    pattern = pattern.replace(re.escape("{endpoint}"), re.escape(env.get("AWS_ENDPOINT_URL", "")))
    pattern = pattern.replace(re.escape("{service}"), "(EC2|CloudFormation)")
    return re.compile(pattern)


def said(stderr: str, prefix: str) -> str:
    found = re.search(rf"^{prefix}: (.*)$", stderr, re.MULTILINE)
    return found.group(1).strip() if found else ""


def same_shape(text: str) -> str:
    """A message with the AWS service it met replaced (the one part allowed to differ)."""
    return re.sub(r"EC2|CloudFormation|CLOUDFORMATION", "{service}", text)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need(subprocess.run(["git", "--version"], capture_output=True, check=False).returncode == 0, "git is missing")
    root = init_reference_service(tmp_path_factory.mktemp("faults") / "service", name="fault-table")
    return commit_all(root, "the reference service")


def test_the_table_has_the_faults_of_issue_14() -> None:
    assert {r.ident for r in ROWS} == set(PROVOKE), "every row needs a way to provoke it, and only rows do"
    for row in ROWS:
        assert len(set(row.commands)) >= 2, f"{row.ident}: met by one command only"


@pytest.mark.integration
@pytest.mark.parametrize("row", ROWS, ids=[r.ident for r in ROWS])
def test_a_fault_gives_the_same_answer_on_every_command(row: Row, reference: Path, tmp_path: Path) -> None:
    answers: dict[str, tuple[int, str, str]] = {}
    with PROVOKE[row.ident](tmp_path) as provoked:
        env = cli_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
        for key in AWS_KEYS:
            env.pop(key, None)
        env.update(provoked)
        pattern = message_pattern(row.message, provoked)
        for command in row.commands:
            result = subprocess.run(
                [sys.executable, "-m", "pipeline", *command],
                cwd=reference,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            shown = " ".join(command)
            explain = f"pipeline {shown}: exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            assert result.returncode == row.exit, explain
            message, hint = said(result.stderr, "error"), said(result.stderr, "hint")
            assert pattern.match(message), f"{row.message!r} is not what it says\n{explain}"
            assert hint, f"no hint\n{explain}"
            assert "Traceback" not in result.stderr, explain
            answers[shown] = (result.returncode, same_shape(message), same_shape(hint))
    assert len(set(answers.values())) == 1, "different answers to one fault:\n" + "\n".join(
        f"{c}: {a}" for c, a in answers.items()
    )
