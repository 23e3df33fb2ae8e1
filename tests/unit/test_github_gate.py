"""`pipeline ci github-reviewers ENV`, the first step of a gated GitHub job, against a local stand-in
for GitHub's REST API (a real HTTP server on 127.0.0.1): it passes only when the environment has
required reviewers, and fails closed on everything else."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.unit.cli_inprocess import run_cli

REVIEWED = {
    "name": "production",
    "protection_rules": [
        {"type": "wait_timer", "wait_timer": 0},
        {
            "type": "required_reviewers",
            "prevent_self_review": False,
            "reviewers": [
                {"type": "User", "reviewer": {"login": "alice", "id": 1}},
                {"type": "Team", "reviewer": {"slug": "ops", "id": 2}},
            ],
        },
    ],
}
UNPROTECTED = {"name": "production", "protection_rules": []}
BRANCH_RULE_ONLY = {"name": "production", "protection_rules": [{"type": "branch_policy"}]}


class FakeGitHub:
    def __init__(self) -> None:
        self.status = 200
        self.body: object = REVIEWED
        self.requests: list[tuple[str, dict[str, str]]] = []


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    fake = FakeGitHub()

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
    monkeypatch.setenv("GITHUB_API_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/web")
    monkeypatch.setenv("GH_TOKEN", "t0ken")
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], environment: str = "production") -> object:
    return run_cli(["ci", "github-reviewers", environment, "--script", ".github/web-environments.sh"], tmp_path, capsys)


def test_an_environment_with_required_reviewers_passes(
    github: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = check(tmp_path, capsys)
    assert result.code == 0, result.err  # type: ignore[attr-defined]
    assert "requires a review by one of: User:alice, Team:ops" in result.out  # type: ignore[attr-defined]
    path, headers = github.requests[0]
    sent = {k.lower(): v for k, v in headers.items()}
    assert path == "/repos/acme/web/environments/production"
    assert sent["authorization"] == "Bearer t0ken"
    assert sent["x-github-api-version"] == "2022-11-28"


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, UNPROTECTED, "environment 'production' has no required reviewers"),
        (200, BRANCH_RULE_ONLY, "environment 'production' has no required reviewers"),
        (200, {"protection_rules": [{"type": "required_reviewers", "reviewers": []}]}, "no required reviewers"),
        (404, {"message": "Not Found"}, "environment 'production' does not exist in acme/web"),
        (403, {"message": "Resource not accessible"}, "(HTTP 403): the gate cannot be verified"),
        (500, {"message": "boom"}, "(HTTP 500)"),
        (200, ["not", "an", "object"], "no required reviewers"),
    ],
)
def test_anything_but_required_reviewers_fails_the_job_closed(
    github: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int, body: object, message: str
) -> None:
    github.status, github.body = status, body
    result = check(tmp_path, capsys)
    assert result.code == 1  # type: ignore[attr-defined]
    assert message in result.err  # type: ignore[attr-defined]
    assert "Traceback" not in result.err  # type: ignore[attr-defined]
    if status in (200, 404):
        assert "GH_REPO=acme/web sh .github/web-environments.sh" in result.err  # type: ignore[attr-defined]


def test_an_unreachable_api_fails_closed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("GITHUB_API_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/web")
    monkeypatch.setenv("GH_TOKEN", "t")
    result = check(tmp_path, capsys)
    assert result.code == 1  # type: ignore[attr-defined]
    assert "the gate cannot be verified, so the job stops" in result.err  # type: ignore[attr-defined]


def test_without_a_token_or_repository_nothing_is_assumed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("GITHUB_REPOSITORY", "GH_TOKEN", "GITHUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    result = check(tmp_path, capsys)
    assert result.code == 1  # type: ignore[attr-defined]
    assert "GITHUB_REPOSITORY and GH_TOKEN must be set" in result.err  # type: ignore[attr-defined]


def test_environment_names_are_quoted_in_the_url(
    github: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(tmp_path, capsys, "production-promote").code == 0  # type: ignore[attr-defined]
    assert github.requests[-1][0] == "/repos/acme/web/environments/production-promote"
