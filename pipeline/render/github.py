"""GitHub Actions: `.github/workflows/<pipeline>.yml`, built as data and dumped with PyYAML.

One job per stage, `needs` for the DAG (GitHub runs ready jobs in parallel). A job is skipped when
any job before it failed or was skipped (GitHub's default `success()` looks at the whole chain),
so only the teardown says `if: always()`, and the stages after a teardown stay skipped after a
failure. Run manifests are artifacts: each job uploads `manifest-<stage>` (also on failure) and
downloads every `manifest-*` of the run. Approval gates are GitHub environments; protection rules
live outside the YAML, so a script that sets them through the REST API is generated next to it.

Every job gets a fresh runner, so a rehearsal on the local profile (a test stack is containers on
the runner's Docker engine) is one job, `rehearsal-<test stack>`: one step per stage in pipeline
order, each with its own `timeout-minutes`, secrets and branch `if:`, the teardown's step
`if: always()`, and one upload of the stages' manifests at the end. Later jobs need that job. On
the aws profile the stack lives in AWS and each stage keeps its own job.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any, ClassVar

from pipeline.errors import UnsupportedFeatureError
from pipeline.graph import Graph
from pipeline.model import Approval
from pipeline.render import yaml_dump
from pipeline.render.base import MANIFEST_DIR, RenderContext, RenderedFile, Support
from pipeline.render.plan import (
    RENDER_CHECK_MINUTES,
    AgentNeeds,
    BranchGroups,
    CiPlan,
    StageGroup,
    StagePlan,
    build_plan,
    check_group,
)
from pipeline.spec import PipelineSpec

SELF_HOSTED = "self-hosted"
RENDER_CHECK_JOB = "render_check"
"""A job id no stage can have (stage names have no '_')."""
CHECKOUT = "actions/checkout@v4"
SETUP_PYTHON = "actions/setup-python@v5"
CACHE = "actions/cache@v6"
VENV_STEP = "venv"
"""The id of the step that says whether the runner already has the job's venv (`outputs.made`)."""
VENV_CACHE_FOLDER = "pipeline-venv"
"""The jobs' virtualenvs live in the runner's tool cache (`runner.tool_cache`, where setup-python keeps
its Pythons): one path for every job of a runner, unlike the workspace (under act each job has its own),
so a venv actions/cache restores is at the path its scripts name."""
UPLOAD = "actions/upload-artifact@v4"
DOWNLOAD = "actions/download-artifact@v4"
AWS_CREDENTIALS = "aws-actions/configure-aws-credentials@v4"
AWS_ROLE_SECRET = "AWS_ROLE_ARN"
MAX_REVIEWERS = 6
DEFAULT_APPROVAL_TIMEOUT = Approval.model_fields["timeout_minutes"].default


class GitHubRenderer:
    name: ClassVar[str] = "github"
    title: ClassVar[str] = "GitHub Actions"
    capabilities: ClassVar[dict[str, Support]] = {
        "stages": Support(
            "One job per stage: checkout, `actions/setup-python`, exactly the pinned tool (`pip install 'pipeline-as-code[run]==X.Y.Z'`) in "
            "the job's own virtualenv under the runner's tool cache, which `actions/cache@v6` restores and saves "
            "(key: runner OS, full Python version, tool version and extras; a venv whose marker names another path "
            "is made again; a runner whose tool cache already has the venv, e.g. a self-hosted one, skips the "
            "restore), or `install=` in a workspace virtualenv every time (with setup-python's `cache: pip` keyed on "
            "this workflow file); then `pipeline run stage NAME`. "
            "A rehearsal on the local profile (a test stack, the stages on the way to its teardown, the teardown) "
            "is one job `rehearsal-STACK` with one step per stage in order: every job gets a fresh runner, and "
            "the stack is containers on it."
        ),
        "order": Support(
            "`needs:` lists each stage's dependencies (stages after a rehearsal need its job); the first stages "
            "need `render_check`."
        ),
        "parallel": Support(
            "Jobs whose `needs` are done run in parallel (fan-out); a job with several `needs` waits for all (fan-in)."
        ),
        "render-check": Support(
            "Job `render_check` installs the pinned tool without the `[run]` extra and runs `pipeline render --check` "
            "(the definition's targets), or `--target github --check` when it names none; every other job depends on it."
        ),
        "manifests": Support(
            "`actions/upload-artifact@v4` (`if: always()`, unique name `manifest-STAGE`, hidden files included; a "
            "rehearsal job uploads its stages' manifests once, at the end, as `manifest-rehearsal-STACK`) and "
            "`actions/download-artifact@v4` with `pattern: manifest-*`, `merge-multiple: true`."
        ),
        "approval": Support(
            "`environment: NAME` on the job. Its required reviewers are a protection rule of that environment, which "
            "the YAML cannot hold: the generated `.github/PIPELINE-environments.sh` sets them through the REST API, "
            "and the job's first step after set-up (`pipeline ci github-reviewers NAME`, job permission "
            "`actions: read`) fails the job unless the environment has required reviewers: closed, also on the first "
            "push of a new repository, where GitHub creates the environment unprotected.",
            native=False,
            fails="a non-default Approval.timeout_minutes (GitHub waits up to 30 days), more than 6 approvers and "
            "groups, or a gate on a stage inside a local-profile rehearsal (a gate holds a whole job)",
        ),
        "secrets": Support(
            "`env: {NAME: ${{ secrets.GITHUB_NAME }}}` on the step that runs the stage only (repository or environment secrets)."
        ),
        "aws": Support(
            "`aws-actions/configure-aws-credentials@v4` with `role-to-assume: ${{ secrets.AWS_ROLE_ARN }}` (OIDC, job `permissions: id-token: write`)."
        ),
        "branches": Support(
            "Job `if:` on `github.ref` (`==` for a name, `startsWith` for `prefix*`); jobs after a skipped job are "
            "skipped by GitHub. In a rehearsal job, filters every stage shares are the job's `if:`, the others "
            "step `if:`s (a step also carries the filters of the stages before it in the job); jobs after it "
            "repeat the step filters, since a skipped step leaves the job green.",
            fails="branch patterns other than a name or `prefix*` (GitHub expressions have no glob match), or a "
            "branch filter on the teardown of a local-profile rehearsal: put it on the test stack",
        ),
        "push": Support(
            "`permissions: contents: write` on that job only: actions/checkout checks a push out on its branch and "
            "keeps the job's token for `git push` (a push with that token starts no new workflow run)."
        ),
        "agents": Support(
            "`runs-on: ubuntu-latest` (`AgentLabels.hosted`): GitHub-hosted runners have Docker, Packer and sudo (a "
            "bake on the default base image derives it from the pulled `debian:bookworm-slim`; one on another "
            "`pipeline-*` base image, which no registry has, first builds it with debootstrap under sudo). A "
            "local-profile job runs on `[self-hosted, "
            "pipeline-local, ...]`, never a fresh hosted VM; `AgentLabels.every` makes every job self-hosted; a "
            "stage's `agent=` is its `runs-on` as given.",
            fails="a local-profile stage whose `agent=` does not include `self-hosted`",
        ),
        "timeouts": Support(
            "`timeout-minutes: N` on the job, N = timeout x attempts + 10 min set-up; in a rehearsal job each "
            "step has `timeout-minutes` (timeout x attempts + 5) and the job their sum + 10. The runner enforces "
            "the stage's own timeout per attempt."
        ),
        "retries": Support(
            "`pipeline run stage` itself makes 1 + retries attempts in the same job (the same code as on a laptop).",
            native=False,
        ),
        "concurrency": Support(
            "`concurrency: {group: PIPELINE-ENV, cancel-in-progress: false}` on every job that acts on a persistent "
            "environment (GitHub keeps one run waiting per group: a newer waiting run replaces an older one). "
            "Consecutive stages acting on one environment (deploy, then smoke test) are one job `lock-ENV` with a "
            "step per stage, which holds the group for all of them, so no other run deploys between them.",
            fails="stages on two persistent environments inside one job (a rehearsal, or consecutive stages): a job "
            "has one concurrency group",
        ),
        "always": Support(
            "`if: always()` on the teardown job (in a rehearsal job: on the teardown's step, after its stages' "
            "steps; the job still fails); later jobs keep GitHub's default `success()`, which fails when any "
            "earlier job in the chain failed."
        ),
        "trigger": Support(
            "`on: push: branches: [...]` (the trigger branches, else `Pipeline(default_branch=...)`), plus "
            "`pull_request` when enabled: then only the checks (stages that act on no environment, drive neither Docker "
            "nor a cloud, wait for nobody and get no secret, after checks only) run for a pull request; every other "
            "job has `if: github.event_name != 'pull_request'`."
        ),
        "profile": Support(
            "`--profile` in the stage's command (its environment's, else the pipeline's); `--yes` after a gate."
        ),
    }

    def outputs(self, spec: PipelineSpec) -> Sequence[str]:
        paths = [f".github/workflows/{spec.name}.yml"]
        if any(spec.approval_of(s) is not None for s in spec.stages):
            paths.append(f".github/{spec.name}-environments.sh")
        return paths

    def render(self, spec: PipelineSpec, context: RenderContext) -> list[RenderedFile]:
        plan = build_plan(spec, context)
        filters = _job_filters(plan)
        jobs: dict[str, Any] = {RENDER_CHECK_JOB: self._render_check(plan)}
        for unit in plan.units:
            if isinstance(unit, StageGroup):
                jobs[unit.name] = self._group_job(plan, unit, filters)
            else:
                jobs[unit.name] = self._job(plan, unit, filters)
        on: dict[str, Any] = {"push": {"branches": list(plan.trigger_branches)}}
        if plan.trigger.pull_requests:
            on["pull_request"] = {"branches": list(plan.trigger_branches)}
        workflow = {"name": plan.name, "on": on, "permissions": {"contents": "read"}, "jobs": jobs}
        header = "".join(f"# {line}\n" for line in plan.header(self.name))
        files = [RenderedFile(_workflow_path(plan), header + "\n" + yaml_dump.dump(workflow))]
        environments = _gate_environments(plan)
        if environments:
            files.append(
                RenderedFile(
                    f".github/{plan.name}-environments.sh",
                    _environments_script(plan, context, environments),
                    executable=True,
                )
            )
        return files

    # ----------------------------------------------------------------------------- jobs
    def _render_check(self, plan: CiPlan) -> dict[str, Any]:
        return {
            "runs-on": _runs_on(plan, AgentNeeds(labels=plan.spec.agents.every), "the drift check"),
            "timeout-minutes": RENDER_CHECK_MINUTES,
            "steps": [
                *_setup_steps(plan, run_extra=False),
                {"name": "Check rendered CI files", "run": _expr_safe(plan.render_command(self.name, check=True))},
            ],
        }

    def _job(self, plan: CiPlan, stage: StagePlan, filters: dict[str, BranchGroups]) -> dict[str, Any]:
        job: dict[str, Any] = {"needs": list(plan.jobs_of(stage.needs)) or [RENDER_CHECK_JOB]}
        if stage.always:
            condition = self._condition(stage)
        else:
            condition = _groups_condition(filters[stage.name], f"stage {stage.name!r}")
        condition = _and(condition, _push_only(plan, stage.on_pull_requests))
        if condition:
            job["if"] = condition
        job["runs-on"] = _runs_on(plan, stage.agent, f"stage {stage.name!r}")
        environment = _job_environment(stage)
        if environment:
            job["environment"] = environment
        if stage.lock:
            job["concurrency"] = {"group": f"{plan.name}-{stage.lock}", "cancel-in-progress": False}
        permissions = _permissions([stage])
        if permissions:
            job["permissions"] = permissions
        job["timeout-minutes"] = stage.timeout_minutes
        steps = _setup_steps(plan)
        if stage.gate is not None:
            steps.append(_verify_gate_step(plan, environment))
        if stage.ancestors:
            steps.append(_download_step())
        if stage.agent.base_image and not _self_hosted(plan, stage.agent):
            steps.append(_base_image_step(stage.agent.base_image))
        if stage.aws is not None:
            steps.append(_aws_step(stage))
        steps.append(_run_step(stage))
        steps.append(_upload_step(stage.name, [stage.name]))
        job["steps"] = steps
        return job

    def _group_job(self, plan: CiPlan, group: StageGroup, filters: dict[str, BranchGroups]) -> dict[str, Any]:
        """Stages that must be one job: a local-profile rehearsal (its stages share the runner whose
        Docker engine holds the test stack), or consecutive stages holding one environment's lock (a
        concurrency group is taken per job). One step per stage in order; a teardown step runs
        `if: always()`; a gate of the first stage holds the whole job."""
        check_group(group, self.name)
        locks = group.locks
        if len(locks) > 1:
            raise UnsupportedFeatureError(
                self.name,
                "stages on two persistent environments inside one job",
                f"job {group.name!r} ({', '.join(locks)})",
                hint="a GitHub job takes one concurrency group: deploy to one persistent environment "
                "per rehearsal (or per run of consecutive stages), or move the deploys after the teardown",
            )
        shared = filters[group.name]
        enforced = _enforced(plan, filters, group.ancestors)
        job: dict[str, Any] = {"needs": list(plan.jobs_of(group.needs)) or [RENDER_CHECK_JOB]}
        condition = _and(
            _groups_condition(shared, f"job {group.name!r}") if shared else "",
            _push_only(plan, group.on_pull_requests),
        )
        if condition:
            job["if"] = condition
        job["runs-on"] = _runs_on(plan, group.agent, f"job {group.name!r}")
        gated = group.gate
        environment = _gate_environment(gated) if gated is not None else (locks[0] if locks else "")
        if environment:
            job["environment"] = environment
        if locks:
            job["concurrency"] = {"group": f"{plan.name}-{locks[0]}", "cancel-in-progress": False}
        permissions = _permissions(group.members)
        if permissions:
            job["permissions"] = permissions
        job["timeout-minutes"] = group.timeout_minutes
        steps = _setup_steps(plan)
        if gated is not None:
            steps.append(_verify_gate_step(plan, environment))
        if group.ancestors:
            steps.append(_download_step())
        for member in group.members:
            own = [g for g in group.branch_groups(member.name) if g not in shared and g not in enforced]
            condition = _groups_condition(own, f"stage {member.name!r}", always=member.always)
            if member.aws is not None:
                steps.append(_conditional(_aws_step(member), condition))
            run = _conditional({"name": f"Run stage {member.name}"}, condition)
            run["timeout-minutes"] = member.step_minutes
            run.update(_run_step(member))
            steps.append(run)
        steps.append(_upload_step(group.name, list(group.names)))
        job["steps"] = steps
        return job

    def _condition(self, stage: StagePlan) -> str:
        branches = _patterns_condition(stage.branches, f"stage {stage.name!r}") if stage.branches else ""
        if stage.always:
            return f"always() && ({branches})" if branches else "always()"
        return branches


def _job_filters(plan: CiPlan) -> dict[str, BranchGroups]:
    """The branch filters on each job's `if:`. GitHub skips every job after a skipped one, so a filter
    on a job's `if:` holds for all that follow; a filter on a step of a rehearsal job does not (the job
    still succeeds), so the jobs after it repeat it. A teardown job keeps only its own filter."""
    needs: dict[str, list[str]] = {}
    for unit in plan.units:
        names = unit.needs
        needs[unit.name] = [j for j in plan.jobs_of(names) if j != unit.name]
    filters: dict[str, BranchGroups] = {}
    for job in Graph(needs).order():
        group = next((g for g in plan.groups if g.name == job), None)
        if group is not None:
            before = _enforced(plan, filters, group.ancestors)
            filters[job] = tuple(g for g in group.shared_groups if g not in before)
            continue
        stage = plan.by_name[job]
        own = (stage.branches,) if stage.branches else ()
        if stage.always:
            filters[job] = own
            continue
        before = _enforced(plan, filters, stage.ancestors)
        filters[job] = own + tuple(g for g in stage.branch_groups if g not in before and g not in own)
    return filters


def _enforced(plan: CiPlan, filters: dict[str, BranchGroups], ancestors: Sequence[str]) -> set[tuple[str, ...]]:
    """The filters some job before these stages has on its `if:`."""
    return {g for job in plan.jobs_of(ancestors) for g in filters[job]}


def _setup_steps(plan: CiPlan, *, run_extra: bool = True) -> list[dict[str, Any]]:
    """Checkout, Python, and the job's own virtualenv on PATH.

    A pinned install's virtualenv is restored and saved whole by actions/cache (see `_venv_steps`):
    a job that restores it installs nothing, so setup-python's pip cache would only add a download
    and upload to every job. An `install=` of the definition's own runs every time in a workspace
    venv (it may install the work tree), so there setup-python keeps pip's cache, keyed on this
    workflow file (setup-python fails without a dependency file to hash)."""
    python: dict[str, Any] = {"id": "python", "uses": SETUP_PYTHON, "with": {"python-version": plan.python}}
    steps: list[dict[str, Any]] = [{"uses": CHECKOUT}, python]
    if plan.spec.install:
        python["with"] |= {"cache": "pip", "cache-dependency-path": _workflow_path(plan)}
        script = plan.setup_script("python", run_extra=run_extra)
        install = {
            "name": "Install pipeline",
            "run": _expr_safe(script + '\necho "$PWD/$venv/bin" >> "$GITHUB_PATH"\n'),
        }
        return [*steps, install]
    return [*steps, *_venv_steps(plan, run_extra=run_extra)]


def _venv_steps(plan: CiPlan, *, run_extra: bool) -> list[dict[str, Any]]:
    """actions/cache restores the job's virtualenv (and saves it after a job that made it), keyed on
    the runner's OS, setup-python's full Python version, and the venv's own name (Python, tool
    version, extras: the drift check's plain install has its own). The install step trusts a venv
    only when its marker records this very path and its interpreter runs: a cache restored elsewhere,
    a half-made venv or one whose base Python is gone is made again. Self-hosted
    runners on one machine may share a tool cache, so the check and the install hold a lock.

    A runner whose tool cache already holds that venv, made there (a self-hosted runner's persists
    across jobs and runs), skips the restore (and so the save): unpacking the whole venv again would
    cost seconds every job and overwrite files a concurrent job on that machine may be running."""
    key = plan.venv(run_extra=run_extra).rsplit("/", 1)[-1]
    folder = f"{VENV_CACHE_FOLDER}/{key}"
    find = {
        "id": VENV_STEP,
        "name": "Find the pipeline virtualenv",
        "run": _expr_safe(
            f'venv="$RUNNER_TOOL_CACHE/{folder}"\n'
            f'if {plan.venv_made("$venv")}; then echo "made=true" >> "$GITHUB_OUTPUT"; fi\n'
        ),
    }
    restore = {
        "name": "Restore the pipeline virtualenv",
        "if": f"steps.{VENV_STEP}.outputs.made != 'true'",
        "uses": CACHE,
        "with": {
            "path": f"${{{{ runner.tool_cache }}}}/{folder}",
            "key": f"{VENV_CACHE_FOLDER}-${{{{ runner.os }}}}-${{{{ steps.python.outputs.python-version }}}}-{key}",
        },
    }
    script = "\n".join(
        [
            "set -e",
            f'venv="$RUNNER_TOOL_CACHE/{folder}"',
            'mkdir -p "${venv%/*}"',
            "# Runners sharing one tool cache make a venv one at a time (flock: Linux runners).",
            'if command -v flock >/dev/null; then exec 9>"$venv.lock"; flock 9; fi',
            *plan.made_once("$venv", "python", run_extra=run_extra, runs=True),
            'echo "$venv/bin" >> "$GITHUB_PATH"',
            "",
        ]
    )
    return [find, restore, {"name": "Install pipeline", "run": _expr_safe(script)}]


def _workflow_path(plan: CiPlan) -> str:
    return f".github/workflows/{plan.name}.yml"


def _push_only(plan: CiPlan, on_pull_requests: bool) -> str:
    """With pull requests on, a job that is not a check runs for pushes only: nothing deploys (or
    gets a secret) from a pull request. (A teardown's `always()` ignores skipped jobs, so every
    such job says it, not only the first.)"""
    if plan.trigger.pull_requests and not on_pull_requests:
        return "github.event_name != 'pull_request'"
    return ""


def _and(*terms: str) -> str:
    """Conditions that must all hold (an `||` term in parentheses; `always()` stays first)."""
    present = [t for t in terms if t]
    if len(present) == 1:
        return present[0]
    return " && ".join(f"({t})" if " || " in t and not t.startswith("always()") else t for t in present)


def _self_hosted(plan: CiPlan, needs: AgentNeeds) -> bool:
    return (SELF_HOSTED in needs.labels) if needs.override else (needs.persistent or bool(plan.spec.agents.every))


def _runs_on(plan: CiPlan, needs: AgentNeeds, where: str) -> str | list[str]:
    """A GitHub-hosted runner (it has Docker, Packer and sudo) unless the job needs one machine that
    persists (the local profile: `[self-hosted, LOCAL LABEL, ...]`), the pipeline asks every job for
    labels, or the stage names its own (`agent=`, used as given)."""
    if needs.override:
        if needs.persistent and SELF_HOSTED not in needs.labels:
            raise UnsupportedFeatureError(
                "github",
                "a local-profile job on a GitHub-hosted runner",
                where,
                hint="the local profile keeps images and containers on one Docker engine, and a hosted runner "
                f"is a fresh machine per job: include {SELF_HOSTED!r} and your machine's label in agent=(...), "
                "or leave agent= unset for the pipeline's local label",
            )
        return needs.labels[0] if len(needs.labels) == 1 else list(needs.labels)
    if _self_hosted(plan, needs):
        return [SELF_HOSTED, *needs.labels]
    return plan.spec.agents.hosted


def _base_image_step(image: str) -> dict[str, Any]:
    """A GitHub-hosted runner gives root through sudo: build a base image no registry has (a
    `pipeline-*` name other than the default, which the bake derives from a pulled Debian image)
    with debootstrap before the bake (about a minute)."""
    return {
        "name": "Build the base image (debootstrap, as root)",
        "run": "sudo apt-get update -q && sudo apt-get install -y -q debootstrap\n"
        f'sudo "$(command -v pipeline)" image base --tag {shlex.quote(image)}\n',
    }


def _permissions(stages: Sequence[StagePlan]) -> dict[str, str]:
    """The job's token: read the code (the workflow's default), write it only in a job that pushes a
    promote commit (actions/checkout keeps the token for `git push`); OIDC for AWS; `actions: read`
    for a gate's reviewer check. Empty: the workflow-level `contents: read` applies."""
    extra: dict[str, str] = {}
    pushes = any(s.pushes for s in stages)  # a promote commits the image into the template and pushes
    if any(s.gate is not None for s in stages):
        extra["actions"] = "read"
    if any(s.aws is not None for s in stages):
        extra["id-token"] = "write"
    return {"contents": "write" if pushes else "read", **extra} if extra or pushes else {}


def _verify_gate_step(plan: CiPlan, environment: str) -> dict[str, Any]:
    """Fail closed: GitHub runs a job whose environment has no protection rule at once, so the job's
    first step after set-up proves the environment has required reviewers (else stops, exit 1)."""
    script = shlex.quote(f".github/{plan.name}-environments.sh")
    return {
        "name": "Verify the approval gate",
        "env": {"GH_TOKEN": "${{ github.token }}"},
        "run": f"pipeline ci github-reviewers {shlex.quote(environment)} --script {script}",
    }


def _download_step() -> dict[str, Any]:
    return {
        "name": "Download run manifests",
        "uses": DOWNLOAD,
        "with": {"pattern": "manifest-*", "path": MANIFEST_DIR, "merge-multiple": True},
    }


def _aws_step(stage: StagePlan) -> dict[str, Any]:
    assert stage.aws is not None
    return {
        "name": "AWS credentials",
        "uses": AWS_CREDENTIALS,
        "with": {
            "role-to-assume": f"${{{{ secrets.{AWS_ROLE_SECRET} }}}}",
            "aws-region": stage.aws.settings.region,
        },
    }


def _run_step(stage: StagePlan) -> dict[str, Any]:
    """`pipeline run stage NAME`, with the stage's secrets and plain variables on this step only."""
    run: dict[str, Any] = {"name": f"Run stage {stage.name}", "run": _expr_safe(stage.run_command)}
    env = {s.name: f"${{{{ secrets.{s.github_name} }}}}" for s in stage.secrets}
    env.update({k: _expr_safe(v) for k, v in stage.env})
    if env:
        run["env"] = env
    return run


def _upload_step(job: str, stages: list[str]) -> dict[str, Any]:
    """The manifests the job's stages wrote, as artifact `manifest-JOB` (also after a failure)."""
    paths = [f"{MANIFEST_DIR}/{name}.json" for name in stages]
    return {
        "name": "Upload run manifest" if len(paths) == 1 else "Upload run manifests",
        "if": "always()",
        "uses": UPLOAD,
        "with": {
            "name": f"manifest-{job}",
            "path": paths[0] if len(paths) == 1 else "".join(f"{p}\n" for p in paths),
            "if-no-files-found": "ignore",
            "include-hidden-files": True,
            "overwrite": True,
        },
    }


def _conditional(step: dict[str, Any], condition: str) -> dict[str, Any]:
    """The step with `if:` right after its name."""
    if not condition:
        return step
    name = {"name": step["name"]} if "name" in step else {}
    return {**name, "if": condition, **{k: v for k, v in step.items() if k != "name"}}


def _groups_condition(groups: Sequence[tuple[str, ...]], where: str, *, always: bool = False) -> str:
    """Every branch filter must match (each: any of its patterns); `always()` first for a teardown."""
    terms = (["always()"] if always else []) + [_patterns_condition(g, where) for g in groups]
    if len(terms) == 1:
        return terms[0]
    return " && ".join(t if t == "always()" else f"({t})" for t in terms)


def _patterns_condition(patterns: Sequence[str], where: str) -> str:
    parts = []
    for pattern in patterns:
        body = pattern[:-1] if pattern.endswith("*") else pattern
        if any(c in body for c in "*?[]"):
            raise UnsupportedFeatureError(
                "github",
                f"the branch pattern {pattern!r}",
                where,
                hint="GitHub job conditions compare github.ref; use a branch name or a 'prefix*' pattern",
            )
        literal = _expr_string("refs/heads/" + body)
        parts.append(f"startsWith(github.ref, {literal})" if pattern.endswith("*") else f"github.ref == {literal}")
    return " || ".join(parts)


def _expr_string(text: str) -> str:
    """A string literal inside a GitHub expression."""
    return "'" + text.replace("'", "''") + "'"


def _expr_safe(text: str) -> str:
    """Text GitHub must not evaluate: a literal `${{` becomes an expression producing it."""
    return text.replace("${{", "${{ '${{' }}")


def _gate_environment(stage: StagePlan) -> str:
    """The GitHub environment whose protection rule is this stage's gate."""
    env = stage.environment
    if env is not None and stage.stage.approval is None:
        return env.name  # the environment's own gate: every stage deploying there shares it
    if env is not None:
        return f"{env.name}-{stage.name}"
    return stage.name


def _job_environment(stage: StagePlan) -> str:
    if stage.gate is not None:
        return _gate_environment(stage)
    return stage.lock or ""


def _gate_environments(plan: CiPlan) -> dict[str, tuple[Approval, list[str]]]:
    """GitHub environment name -> (its gate, the jobs that use it), checking GitHub's limits."""
    found: dict[str, tuple[Approval, list[str]]] = {}
    for stage in plan.gated:
        gate = stage.gate
        assert gate is not None
        if gate.timeout_minutes != DEFAULT_APPROVAL_TIMEOUT:
            raise UnsupportedFeatureError(
                "github",
                f"an approval timeout ({gate.timeout_minutes} min)",
                f"stage {stage.name!r}",
                hint="GitHub keeps a deployment waiting for review for up to 30 days and has no timeout "
                "setting; leave Approval.timeout_minutes at its default to render for GitHub",
            )
        if len(gate.approvers) + len(gate.groups) > MAX_REVIEWERS:
            raise UnsupportedFeatureError(
                "github",
                f"more than {MAX_REVIEWERS} approvers and groups",
                f"stage {stage.name!r}",
                hint="a GitHub environment takes at most 6 required reviewers: use a team (Approval.groups)",
            )
        name = _gate_environment(stage)
        found.setdefault(name, (gate, []))[1].append(stage.name)
    return found


def _environments_script(
    plan: CiPlan, context: RenderContext, environments: dict[str, tuple[Approval, list[str]]]
) -> str:
    lines = ["#!/bin/sh"]
    lines += [f"# {line}" for line in plan.header("github")]
    lines += [
        "#",
        "# GitHub keeps approval gates outside the workflow YAML, as protection rules of environments.",
        "# This script creates each environment the workflow uses for a gate and sets its required",
        "# reviewers through the REST API. Run it once per repository (again after changing approvers):",
        "#",
        f"#     GH_REPO=OWNER/REPO sh .github/{plan.name}-environments.sh",
        "#",
        "# Needs the GitHub CLI (`gh`), logged in as a repository admin. Reviewers come from the",
        "# definition; override them per environment with the variables named below (space-separated",
        "# user logins, team slugs). Required reviewers need a public repository, or GitHub",
        "# Enterprise for a private or internal one.",
        "set -eu",
        "",
        'repo="${GH_REPO:?set GH_REPO=owner/name}"',
        'owner="${repo%%/*}"',
        "",
        "protect() {  # ENVIRONMENT USERS TEAMS",
        '    reviewers=""',
        "    for user in $2; do",
        '        reviewers="$reviewers{\\"type\\":\\"User\\",\\"id\\":$(gh api "users/$user" --jq .id)},"',
        "    done",
        "    for team in $3; do",
        '        reviewers="$reviewers{\\"type\\":\\"Team\\",\\"id\\":$(gh api "orgs/$owner/teams/$team" --jq .id)},"',
        "    done",
        '    if [ -z "$reviewers" ]; then',
        '        echo "error: no reviewers for environment $1: set them in the definition (Approval(approvers=...))" >&2',
        '        echo "       or in the variables named in this script" >&2',
        "        exit 2",
        "    fi",
        '    printf \'{"reviewers":[%s]}\' "${reviewers%,}" |',
        '        gh api --method PUT "repos/$repo/environments/$1" --input - >/dev/null',
        '    echo "environment $1: required reviewers set"',
        "}",
    ]
    for name, (gate, jobs) in sorted(environments.items()):
        var = "PIPELINE_" + name.upper().replace("-", "_")
        users = _dq(" ".join(gate.approvers))
        teams = _dq(" ".join(gate.groups))
        lines += [
            "",
            f"# {name}: gate of job {', '.join(jobs)} ({' '.join(gate.message.split())})",
            f'protect {shlex.quote(name)} "${{{var}_APPROVERS-{users}}}" "${{{var}_TEAMS-{teams}}}"',
        ]
    return "\n".join(lines) + "\n"


def _dq(word: str) -> str:
    """Text as the default of a "${VAR-default}" expansion (inside double quotes)."""
    for char in ("\\", '"', "$", "`", "}"):
        word = word.replace(char, "\\" + char)
    return word
