"""The GitHub half of an approval gate that runs on the server: verify, from inside the gated job,
that its environment really has required reviewers, and fail closed when it has none.

GitHub keeps reviewers outside the workflow, as a protection rule of the environment, and creates
an environment without any rule the first time a job names it. A gate rendered as `environment:`
alone would therefore let the first push of a new repository deploy with no review. The gated
job's first step after set-up runs `pipeline ci github-reviewers ENV`, which reads the environment
through the REST API (`GET /repos/{repo}/environments/{env}`, readable with the job's token and
`actions: read`) and stops the job unless a `required_reviewers` rule names someone. Anything
else (no rule, no environment, no permission, no answer) fails the job: closed, never open.

Only the standard library (urllib): this runs in every gated job.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.errors import GateNotProtectedError

DEFAULT_API = "https://api.github.com"
TIMEOUT_SECONDS = 30


Opener = Callable[[urllib.request.Request], Any]


def _open(request: urllib.request.Request) -> Any:
    return urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)


def required_reviewers(
    environment: str,
    *,
    environ: Mapping[str, str] | None = None,
    opener: Opener = _open,
    script: str = "",
) -> list[str]:
    """The required reviewers of `environment` in this run's repository; GateNotProtectedError when
    there are none or they cannot be read. `script` names the generated script that sets them."""
    env = os.environ if environ is None else environ
    repository = env.get("GITHUB_REPOSITORY", "")
    token = env.get("GH_TOKEN") or env.get("GITHUB_TOKEN") or ""
    api = (env.get("GITHUB_API_URL") or DEFAULT_API).rstrip("/")
    fix = (
        f"set its required reviewers: GH_REPO={repository or 'OWNER/REPO'} sh {script}"
        if script
        else "set its required reviewers in the repository's Settings > Environments"
    )
    if not repository or not token:
        raise GateNotProtectedError(
            f"cannot check the reviewers of environment {environment!r}: GITHUB_REPOSITORY and GH_TOKEN must be set",
            hint="the rendered workflow sets them (GH_TOKEN: ${{ github.token }}); this check runs on GitHub Actions",
        )
    url = f"{api}/repos/{repository}/environments/{urllib.parse.quote(environment, safe='')}"
    request = urllib.request.Request(
        url,
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "pipeline-as-code",
        },
    )
    try:
        with opener(request) as response:
            data = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise GateNotProtectedError(
                f"environment {environment!r} does not exist in {repository}: nothing would stop this deployment",
                hint=fix,
            ) from None
        raise GateNotProtectedError(
            f"cannot read environment {environment!r} of {repository} (HTTP {exc.code}): "
            "the gate cannot be verified, so the job stops",
            hint="the job needs `permissions: actions: read` (the rendered workflow grants it)"
            if exc.code in (401, 403)
            else "re-run the job",
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise GateNotProtectedError(
            f"cannot read environment {environment!r} of {repository} ({exc}): the gate cannot be verified, "
            "so the job stops",
            hint="re-run the job",
        ) from None
    reviewers = _reviewers(data)
    if not reviewers:
        raise GateNotProtectedError(
            f"environment {environment!r} has no required reviewers: GitHub would run this job without anyone's "
            "approval, so it stops here (nothing was deployed)",
            hint=fix
            + " (required reviewers need a public repository, or GitHub Enterprise for a private or internal one)",
        )
    return reviewers


def _reviewers(data: Any) -> list[str]:
    found: list[str] = []
    rules = data.get("protection_rules") if isinstance(data, dict) else None
    for rule in rules if isinstance(rules, list) else []:
        if not isinstance(rule, dict) or rule.get("type") != "required_reviewers":
            continue
        for entry in rule.get("reviewers") or []:
            reviewer = entry.get("reviewer") if isinstance(entry, dict) else None
            if isinstance(reviewer, dict):
                name = reviewer.get("login") or reviewer.get("slug") or reviewer.get("name") or reviewer.get("id")
                found.append(f"{entry.get('type', 'User')}:{name}")
    return found
