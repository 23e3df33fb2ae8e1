"""`pipeline ci gitlab-approval`, the first step of a gated GitLab job (a manual job), against a
local stand-in for GitLab's REST API (a real HTTP server on 127.0.0.1): it passes only when the user
who started the job is a named approver or a member of a named group, and fails closed otherwise."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.unit.cli_inprocess import Result, run_cli

MEMBER = {"id": 42, "username": "carol", "state": "active", "access_level": 30}


class FakeGitLab:
    def __init__(self) -> None:
        self.status = 200
        self.body: object = MEMBER
        self.requests: list[tuple[str, dict[str, str]]] = []


@pytest.fixture
def gitlab(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitLab]:
    fake = FakeGitLab()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake.requests.append((self.path, dict(self.headers)))
            data = json.dumps(fake.body).encode()
            self.send_response(fake.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    monkeypatch.setenv("CI_API_V4_URL", f"http://127.0.0.1:{server.server_address[1]}/api/v4")
    monkeypatch.setenv("GITLAB_USER_LOGIN", "carol")
    monkeypatch.setenv("GITLAB_USER_ID", "42")
    monkeypatch.setenv("PIPELINE_GITLAB_TOKEN", "glpat-t0ken")
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def approve(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    return run_cli(["ci", "gitlab-approval", *args], tmp_path, capsys)


def test_a_named_approver_passes_without_asking_the_api(
    gitlab: FakeGitLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = approve(tmp_path, capsys, "--user", "alice", "--user", "Carol", "--message", "Ship [it]?\n  really")
    assert result.code == 0, result.err
    assert "approved by carol" in result.out
    assert "Ship [it]?\n  really" in result.out  # printed as given (no markup)
    assert gitlab.requests == []


def test_a_member_of_a_named_group_passes(
    gitlab: FakeGitLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = approve(tmp_path, capsys, "--user", "alice", "--group", "acme/ops")
    assert result.code == 0, result.err
    assert "approved by carol (member of acme/ops)" in result.out
    path, headers = gitlab.requests[0]
    assert path == "/api/v4/groups/acme%2Fops/members/all/42"
    assert {k.lower(): v for k, v in headers.items()}["private-token"] == "glpat-t0ken"


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (404, {"message": "404 Not found"}, "carol started this gated job but is not one of its approvers"),
        (200, {**MEMBER, "state": "blocked"}, "is not one of its approvers"),
        (200, ["not", "a", "member"], "is not one of its approvers"),
        (403, {"message": "403 Forbidden"}, "(HTTP 403): the gate cannot be verified"),
        (500, {"message": "boom"}, "(HTTP 500)"),
    ],
)
def test_anything_but_an_approver_fails_the_job_closed(
    gitlab: FakeGitLab, tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int, body: object, message: str
) -> None:
    gitlab.status, gitlab.body = status, body
    result = approve(tmp_path, capsys, "--user", "alice", "--group", "ops")
    assert result.code == 1
    assert message in result.err
    assert "Traceback" not in result.err


def test_someone_else_is_refused_and_told_who_may_approve(
    gitlab: FakeGitLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = approve(tmp_path, capsys, "--user", "alice", "--user", "bob")
    assert result.code == 1
    assert "carol started this gated job but is not one of its approvers (alice, bob): nothing was deployed" in (
        result.err
    )
    assert gitlab.requests == []  # no group named: no API call


def test_groups_without_a_token_fail_closed(
    gitlab: FakeGitLab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PIPELINE_GITLAB_TOKEN")
    result = approve(tmp_path, capsys, "--group", "ops")
    assert result.code == 1
    assert "group membership cannot be checked: the CI/CD variable PIPELINE_GITLAB_TOKEN is not set" in result.err
    assert gitlab.requests == []


def test_without_a_user_nothing_is_assumed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GITLAB_USER_LOGIN", raising=False)
    result = approve(tmp_path, capsys, "--user", "alice")
    assert result.code == 1
    assert "GITLAB_USER_LOGIN is not set" in result.err
    nobody = approve(tmp_path, capsys)
    assert nobody.code == 1


def test_an_unreachable_api_fails_closed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("CI_API_V4_URL", f"http://127.0.0.1:{port}/api/v4")
    monkeypatch.setenv("GITLAB_USER_LOGIN", "carol")
    monkeypatch.setenv("GITLAB_USER_ID", "42")
    monkeypatch.setenv("PIPELINE_GITLAB_TOKEN", "t")
    result = approve(tmp_path, capsys, "--group", "ops")
    assert result.code == 1
    assert "the gate cannot be verified, so the job stops" in result.err
