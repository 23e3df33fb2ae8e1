"""Secret values never leak: canaries given through the environment appear in no file the pipeline
writes, no output it prints, no label it sets, no CI file it renders.

One copy of the reference service declares three secrets and really uses them:

- `BAKE_TOKEN`, a secret of the bake stage, reaches the Packer build the way a user would pass a
  private repository token: the template reads it with `env("BAKE_TOKEN")` into a variable, the
  provisioner gets it in its environment and prints it (so Packer's own output carries it, and
  `packer inspect` shows it as the variable's default);
- `RELEASE_TOKEN`, a secret of two Shell stages: `announce` prints it and writes it to a file
  outside the project (proof that the real value reached the command), and `audit`, the last
  stage, fails with an error output that contains it;
- `DEPLOY_TOKEN`, a secret of the production environment (resolved for promote);
- `SIGNING_KEY`, a multi-line secret (a PEM-like key) that `announce` prints: every line of it must
  be masked on its own, as GitHub Actions does.

After `pipeline run local --yes` (which fails at `audit`, exit 1) and `pipeline run stage audit`
(CI's way, failing again), the canaries must not occur anywhere under `.pipeline/` (logs, Packer's
raw machine-readable log, events, manifests, stage records, caches, the run's JUnit files), in
the CLI's output and errors, in `pipeline status`, in the labels and configuration of the
containers and images the pipeline made, or in the CI configuration `pipeline render --target all`
writes with the canaries in its environment. The masked form (`***`) must appear where the values
were printed, so the test fails if the secrets were simply never used.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import ProjectMaker
from tests.reliability.harness import V1, Project, explain, inventory, report

pytestmark = pytest.mark.e2e

CANARIES = {
    "BAKE_TOKEN": f"canary-bake-{secrets.token_hex(8)}",
    "RELEASE_TOKEN": f"canary-release-{secrets.token_hex(8)}",
    "DEPLOY_TOKEN": f"canary-deploy-{secrets.token_hex(8)}",
    # A multi-line secret (a PEM key): a command prints it line by line, so each line must be masked.
    "SIGNING_KEY": "-----BEGIN CANARY PRIVATE KEY-----\n"
    + "\n".join(f"canarykey{secrets.token_hex(24)}" for _ in range(3))
    + "\n-----END CANARY PRIVATE KEY-----",
}
CANARY_LINES = {
    f"SIGNING_KEY line {n}": line
    for n, line in enumerate(CANARIES["SIGNING_KEY"].splitlines(), start=1)
    if line.startswith("canarykey")
}

STAGES = """
    announce = Shell(
        name="announce",
        secrets=["RELEASE_TOKEN", "SIGNING_KEY"],
        commands=[
            "echo release token is $RELEASE_TOKEN",
            "echo $RELEASE_TOKEN > ../token-used",
            'printf "signing with:\\n%s\\n" "$SIGNING_KEY"',
        ],
    )
    audit = Shell(
        name="audit",
        secrets=["RELEASE_TOKEN"],
        commands=['echo "error: token $RELEASE_TOKEN was rejected by the audit service" >&2; exit 3'],
    )
    bake >> announce
    promote >> audit
"""


def _with_secrets(project: Project) -> None:
    project.edit("pipelinefile.py", "    Promote,\n", "    Promote,\n    Shell,\n", commit=False)
    project.edit(
        "pipelinefile.py",
        'approval=Approval(message="Promote the new image to production?", approvers=("release-manager",)),',
        'approval=Approval(message="Promote the new image to production?", approvers=("release-manager",)),\n'
        '            secrets=["DEPLOY_TOKEN"],',
        commit=False,
    )
    project.edit(
        "pipelinefile.py", 'checks="serverspec",', 'checks="serverspec", secrets=["BAKE_TOKEN"],', commit=False
    )
    definition = project.root / "pipelinefile.py"
    definition.write_text(definition.read_text().rstrip("\n") + "\n" + STAGES)
    project.edit(
        "images/web.pkr.hcl",
        'variable "base_image" {',
        'variable "bake_token" {\n  type    = string\n  default = env("BAKE_TOKEN")\n}\n\nvariable "base_image" {',
        commit=False,
    )
    project.edit(
        "images/web.pkr.hcl",
        'environment_vars = ["VERSION=${var.version}",',
        'environment_vars = ["VERSION=${var.version}", "BAKE_TOKEN=${var.bake_token}",',
        commit=False,
    )
    project.edit(
        "images/web/provision.sh",
        "export DEBIAN_FRONTEND=noninteractive\n",
        'export DEBIAN_FRONTEND=noninteractive\necho "provisioning with the bake token ${BAKE_TOKEN:-none}"\n',
        commit=False,
    )
    project.git("commit", "-qam", "secrets")


def _leaks(text: str) -> list[str]:
    return [name for name, value in {**CANARIES, **CANARY_LINES}.items() if value in text]


def _files_with_canaries(folder: Path) -> dict[str, list[str]]:
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            leaks = _leaks(path.read_bytes().decode("utf-8", errors="replace"))
            if leaks:
                found[str(path.relative_to(folder))] = leaks
    return found


def test_canary_secrets_appear_nowhere(make: ProjectMaker, baked: dict[str, str], docker_tools: Any) -> None:
    client = docker_tools
    project = make("secrets", V1)
    _with_secrets(project)
    env = dict(CANARIES)

    run = project.run("run", "local", "--yes", **env)
    assert run.returncode == 1, explain(run)
    statuses = {n: r.status for n, r in project.last_run().stages.items()}
    assert statuses.pop("audit") == "failed", statuses
    assert set(statuses.values()) == {"succeeded"}, statuses
    ci = project.run("run", "stage", "audit", "--profile", "local", **env)
    assert ci.returncode == 1, explain(ci)
    status = project.run("status", "--profile", "local", **env)
    assert status.returncode == 0, explain(status)
    rendered = project.root.parent / "secrets-rendered"
    render = project.run("render", "--target", "all", "--out", str(rendered), **env)
    assert render.returncode == 0, explain(render)

    # The values were really used: the user's own command wrote one outside the project, and
    # where they were printed, the masked form is there instead.
    assert (project.root.parent / "token-used").read_text().strip() == CANARIES["RELEASE_TOKEN"]
    log_dir = project.ledger.run_dir(project.last_run().run_id) / "stages"
    announced = (log_dir / "announce" / "output.log").read_text()
    assert "release token is ***" in announced
    assert "signing with:\n***\n***\n***\n***\n***\n" in announced, announced  # every line, as GitHub does
    assert "error: token *** was rejected" in (log_dir / "audit" / "output.log").read_text()
    assert "error: token *** was rejected" in run.stdout
    raw = next((log_dir / "bake").glob("packer-*.machine-readable.log")).read_text()
    assert "provisioning with the bake token ***" in raw
    assert "provisioning with the bake token ***" in (log_dir / "bake" / "output.log").read_text()
    assert "${{ secrets.RELEASE_TOKEN }}" in (rendered / ".github" / "workflows" / f"{project.name}.yml").read_text()

    where: dict[str, list[str]] = {}
    where |= {f".pipeline/{k}": v for k, v in _files_with_canaries(project.root / ".pipeline").items()}
    where |= {f"rendered/{k}": v for k, v in _files_with_canaries(rendered).items()}
    for label, result in (("run", run), ("run stage", ci), ("status", status), ("render", render)):
        for stream_name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
            if _leaks(text):
                where[f"{label} {stream_name}"] = _leaks(text)
    made = inventory(client, project.name)
    for thing in [*made.containers, *made.networks, *made.images]:
        leaks = _leaks(json.dumps(thing.attrs))
        if leaks:
            where[f"docker {getattr(thing, 'name', None) or thing.short_id}"] = leaks
    baked_image = project.last_run().stages["bake"].outputs["image"]
    history = subprocess.run(
        ["docker", "history", "--no-trunc", baked_image], capture_output=True, text=True, check=False
    )
    if _leaks(history.stdout + json.dumps(client.images.get(baked_image).attrs)):
        where[f"image {baked_image}"] = _leaks(history.stdout)
    files = sum(1 for p in (project.root / ".pipeline").rglob("*") if p.is_file())
    report(
        "secrets: canaries given through the environment",
        searched=f"{files} ledger files (logs, Packer raw log, events, manifests, records, caches), CLI output of "
        f"run/run stage/status/render, {len(made.containers)} containers and {len(made.images)} images, "
        "rendered Jenkinsfile/TeamCity/GitHub files",
        found=", ".join(f"{k}: {v}" for k, v in where.items()) or "no canary anywhere; *** where they were printed",
    )
    assert where == {}, f"secret values leaked into: {where}"
