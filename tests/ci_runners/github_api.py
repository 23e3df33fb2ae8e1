"""A stand-in for the part of GitHub's REST API that rendered workflows call, served on 127.0.0.1
for jobs that act runs (act.py points the workflow's `GITHUB_API_URL` at it).

What the rendered workflows call: a gated job's first step after set-up runs `pipeline ci
github-reviewers ENV` (pipeline/render/github_gate.py), which reads the environment with
`GET {GITHUB_API_URL}/repos/{owner}/{repo}/environments/{environment_name}` and the job's token,
and fails closed unless a `required_reviewers` protection rule names someone.

Does, as GitHub documents it ("REST API endpoints for deployment environments", API version
2022-11-28):
- `GET /repos/{owner}/{repo}/environments/{environment_name}`: 200 with the environment object
  (`id`, `node_id`, `name`, `url`, `html_url`, `created_at`, `updated_at`, `can_admins_bypass`,
  `protection_rules`, `deployment_branch_policy`); each rule has `id`, `node_id` and `type`
  (`wait_timer` with `wait_timer`, `required_reviewers` with `prevent_self_review` and `reviewers`
  of `{"type": "User"|"Team", "reviewer": {...login or slug...}}`, `branch_policy`). An environment
  configured with no rules has `protection_rules: []`, as one GitHub created when a job first named
  it. 404 `{"message": "Not Found", ...}` for an environment (or repository) that does not exist.
- `GET /repos/{owner}/{repo}/environments`: `{"total_count": N, "environments": [...]}`.
- Authentication: `Authorization: Bearer TOKEN` or `token TOKEN` with the token the test gave act
  as `secrets.GITHUB_TOKEN` (what `github.token` is in the job); a missing or other token gets
  401 `{"message": "Bad credentials", ...}`, a token that is `forbidden` 403 "Resource not
  accessible by integration" (a job without `actions: read`).
- Owner and repository names are matched case-insensitively, as GitHub does.
- Every request is recorded (method, path, headers) so that a test can assert the gate asked.

Does not: any other endpoint (404), pagination (`per_page`/`page` are ignored), environment secrets
and variables, custom deployment protection rules, rate limits and their headers, ETags, the
`X-GitHub-Request-Id` header, writes (PUT/POST/DELETE answer 405: the environments script
.github/<name>-environments.sh that sets reviewers through `gh api` is not run here).
"""

from __future__ import annotations

import json
import secrets
import threading
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DOCS = "https://docs.github.com/rest/deployments/environments#get-an-environment"


@dataclass(frozen=True)
class Reviewer:
    """A required reviewer: a user (by login) or a team (by slug)."""

    name: str
    kind: str = "User"


@dataclass(frozen=True)
class EnvironmentRules:
    """What one environment is configured with in the repository's settings."""

    reviewers: Sequence[Reviewer] = ()
    wait_timer: int | None = None
    branch_policy: bool = False


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]


@dataclass
class GitHubApi:
    """The stand-in's state: one repository and its environments. `url` is set once it serves."""

    repository: str = "acme/hello-web"
    environments: dict[str, EnvironmentRules] = field(default_factory=dict)
    token: str = field(default_factory=lambda: f"ghs_{secrets.token_hex(18)}")
    forbidden_token: bool = False
    """Answer every authenticated request 403, as for a job token without `actions: read`."""
    url: str = ""
    requests: list[Request] = field(default_factory=list)

    def environment_requests(self, name: str) -> list[Request]:
        owner, repo = self.repository.split("/")
        wanted = f"/repos/{owner}/{repo}/environments/{urllib.parse.quote(name, safe='')}".lower()
        return [r for r in self.requests if r.path.lower() == wanted]

    # --- what GitHub answers ---------------------------------------------------------------------
    def answer(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        self.requests.append(Request(method, path, dict(headers)))
        route = urllib.parse.urlsplit(path).path.rstrip("/")
        parts = [urllib.parse.unquote(p) for p in route.split("/")[1:]]
        if len(parts) < 4 or parts[0] != "repos" or parts[3] != "environments" or len(parts) > 5:
            return 404, _error("Not Found", "https://docs.github.com/rest")
        if method != "GET":
            return 405, _error("Method not allowed by this stand-in", DOCS)
        authorization = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() not in ("bearer", "token") or not secrets.compare_digest(given.strip(), self.token):
            return 401, _error("Bad credentials", "https://docs.github.com/rest")
        if self.forbidden_token:
            return 403, _error("Resource not accessible by integration", DOCS)
        if f"{parts[1]}/{parts[2]}".lower() != self.repository.lower():
            return 404, _error("Not Found", DOCS)
        if len(parts) == 4:
            listed = [self._environment(name, rules) for name, rules in self.environments.items()]
            return 200, {"total_count": len(listed), "environments": listed}
        wanted = parts[4]
        for name, rules in self.environments.items():
            if name.lower() == wanted.lower():
                return 200, self._environment(name, rules)
        return 404, _error("Not Found", DOCS)

    def _environment(self, name: str, rules: EnvironmentRules) -> dict[str, Any]:
        number = 161088068 + sorted(self.environments).index(name)
        protection: list[dict[str, Any]] = []
        if rules.wait_timer is not None:
            protection.append(
                {"id": 3736, "node_id": "MDQ6R2F0ZTM3MzY=", "type": "wait_timer", "wait_timer": rules.wait_timer}
            )
        if rules.reviewers:
            protection.append(
                {
                    "id": 3755,
                    "node_id": "MDQ6R2F0ZTM3NTU=",
                    "prevent_self_review": False,
                    "type": "required_reviewers",
                    "reviewers": [_reviewer(r, index) for index, r in enumerate(rules.reviewers, start=1)],
                }
            )
        if rules.branch_policy:
            protection.append({"id": 3756, "node_id": "MDQ6R2F0ZTM3NTY=", "type": "branch_policy"})
        quoted = urllib.parse.quote(name, safe="")
        return {
            "id": number,
            "node_id": f"EN_{number}",
            "name": name,
            "url": f"{self.url}/repos/{self.repository}/environments/{quoted}",
            "html_url": f"https://github.com/{self.repository}/deployments/activity_log?environments_filter={quoted}",
            "created_at": "2020-11-23T22:00:40Z",
            "updated_at": "2020-11-23T22:00:40Z",
            "can_admins_bypass": True,
            "protection_rules": protection,
            "deployment_branch_policy": {"protected_branches": False, "custom_branch_policies": True}
            if rules.branch_policy
            else None,
        }


def _reviewer(reviewer: Reviewer, index: int) -> dict[str, Any]:
    if reviewer.kind == "Team":
        body: dict[str, Any] = {"id": index, "node_id": f"T_{index}", "name": reviewer.name, "slug": reviewer.name}
    else:
        body = {"login": reviewer.name, "id": index, "node_id": f"U_{index}", "type": "User", "site_admin": False}
    return {"type": reviewer.kind, "reviewer": body}


def _error(message: str, documentation: str) -> dict[str, Any]:
    return {"message": message, "documentation_url": documentation}


@contextmanager
def serving(api: GitHubApi) -> Iterator[GitHubApi]:
    """Serve `api` on 127.0.0.1 (a free port) in a thread until the block ends; sets `api.url`."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            status, body = api.answer(self.command, self.path, dict(self.headers))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-GitHub-Api-Version-Selected", "2022-11-28")
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _reply

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
