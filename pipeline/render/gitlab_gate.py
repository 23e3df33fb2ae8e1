"""The GitLab half of an approval gate that runs on the server: from inside the gated job, check that
the person who started it is one of the gate's approvers, and fail closed otherwise.

A GitLab gate is a manual job (`when: manual`, `allow_failure: false`): nothing runs until someone
presses "play", also on the first push of a new repository. GitLab lets anyone who may run
pipelines on the branch press it, and keeps any narrower list (protected environments) outside the
YAML and in paid tiers only. So the job's first step after set-up runs `pipeline ci gitlab-approval`,
which reads who pressed it (`GITLAB_USER_LOGIN` and `GITLAB_USER_ID`: in a manual job, the user who
started the job) and stops the job unless that user is a named approver, or a member of a named
group. Group membership is read through the REST API (`GET /groups/:path/members/all/:user_id`)
with a token the project provides as the CI/CD variable PIPELINE_GITLAB_TOKEN (scope `read_api`);
the job's own CI_JOB_TOKEN cannot read members. Anything else (no user, no token, no answer, not
a member) fails the job: closed, never open.

Only the standard library (urllib): this runs in every gated job.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.errors import GateNotApprovedError

if TYPE_CHECKING:  # urllib.request brings http.client and ssl: only the gate check itself needs them
    import urllib.request

TOKEN_VARIABLE = "PIPELINE_GITLAB_TOKEN"
"""The CI/CD variable holding a token that may read group members (a group or project access token
with the `read_api` scope): needed only by gates that name groups."""
TIMEOUT_SECONDS = 30

Opener = Callable[["urllib.request.Request"], Any]


def _open(request: urllib.request.Request) -> Any:
    import urllib.request

    return urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)


def check_approver(
    users: Sequence[str],
    groups: Sequence[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    opener: Opener = _open,
) -> str:
    """Who approved (`user` or `user (member of group)`); GateNotApprovedError when the user who
    started this job is neither a named approver nor a member of a named group, or when that cannot
    be established."""
    env = os.environ if environ is None else environ
    login = env.get("GITLAB_USER_LOGIN", "")
    allowed = ", ".join([*users, *(f"members of {g}" for g in groups)]) or "nobody"
    if not login:
        raise GateNotApprovedError(
            "cannot tell who started this job (GITLAB_USER_LOGIN is not set): the gate stays closed",
            hint="this check runs inside a GitLab CI job, where GitLab sets GITLAB_USER_LOGIN",
        )
    if login.casefold() in {u.casefold() for u in users}:
        return login
    if groups:
        user_id = env.get("GITLAB_USER_ID", "")
        token = env.get(TOKEN_VARIABLE, "")
        api = env.get("CI_API_V4_URL", "").rstrip("/")
        if not (user_id and token and api):
            raise GateNotApprovedError(
                f"{login} is not one of the approvers ({allowed}), and group membership cannot be checked: "
                f"the CI/CD variable {TOKEN_VARIABLE} is not set",
                hint=f"add {TOKEN_VARIABLE} (a group or project access token with the read_api scope; masked, "
                "protected) in Settings > CI/CD > Variables, or let a named approver run the job",
            )
        for group in groups:
            if _is_member(api, group, user_id, token, opener):
                return f"{login} (member of {group})"
    raise GateNotApprovedError(
        f"{login} started this gated job but is not one of its approvers ({allowed}): nothing was deployed",
        hint="ask one of them to run the job again (Retry), or change Approval(approvers=..., groups=...) in the definition",
    )


def _is_member(api: str, group: str, user_id: str, token: str, opener: Opener) -> bool:
    """Whether the user is a member of the group (directly, or through a parent group)."""
    import urllib.error
    import urllib.request

    path = urllib.parse.quote(group, safe="")
    url = f"{api}/groups/{path}/members/all/{urllib.parse.quote(user_id, safe='')}"
    request = urllib.request.Request(url, headers={"PRIVATE-TOKEN": token, "User-Agent": "pipeline-as-code"})
    try:
        with opener(request) as response:
            data = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False  # no such member (or no such group: either way, not an approver)
        raise GateNotApprovedError(
            f"cannot read the members of group {group!r} (HTTP {exc.code}): the gate cannot be verified, so the "
            "job stops",
            hint=f"{TOKEN_VARIABLE} needs the read_api scope and access to the group"
            if exc.code in (401, 403)
            else "re-run the job",
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise GateNotApprovedError(
            f"cannot read the members of group {group!r} ({exc}): the gate cannot be verified, so the job stops",
            hint="re-run the job",
        ) from None
    return isinstance(data, dict) and data.get("state", "active") == "active"
