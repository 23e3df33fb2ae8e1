"""GitLab CI: `.gitlab-ci.yml`, built as data and dumped with PyYAML.

One job per stage, `needs:` for the DAG (GitLab starts a job as soon as the jobs it needs are done),
each job in a `stages:` level one deeper than the deepest job it needs, so the stage view shows
what runs side by side. GitLab skips a job when a job it needs failed or was skipped, and runs a
`when: always` job regardless: only the teardown says `when: always`, and the jobs after it also
need what it needed (GitLab looks only at a job's own `needs`), so they stay skipped after a failure.

Run manifests are artifacts: each job keeps `.pipeline/ci/manifest/` (also on failure), the
manifests it received from the jobs it needs plus its own, so every job holds the manifests of all
the jobs before it (GitLab hands a job the artifacts of the jobs it needs, not of theirs).

Every job may get another runner and a fresh checkout, so a rehearsal on the local profile (a test
stack is containers on the runner's Docker engine) is one job, `rehearsal-<test stack>`, running its
stages in pipeline order in one shell; after a failure the later stages are skipped and the teardown
still runs (and again from `after_script` when the job is cancelled before it got there). Consecutive
stages acting on one persistent environment are one job too (`lock-<environment>`): a
`resource_group` is taken per job.

Approval gates are manual jobs that check, as their first step, that the user who started them is a
named approver (pipeline/render/gitlab_gate.py): GitLab lets anyone who may run pipelines on the branch
press "play", and keeps narrower rules outside the YAML.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from typing import Any, ClassVar

from pipeline.errors import UnsupportedFeatureError
from pipeline.graph import Graph
from pipeline.model import Approval
from pipeline.render import branch_patterns, yaml_dump
from pipeline.render.base import MANIFEST_DIR, RenderContext, RenderedFile, Support
from pipeline.render.gitlab_gate import TOKEN_VARIABLE
from pipeline.render.plan import (
    INSTALLED_MARKER,
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

TARGET = "gitlab"
CI_FILE = ".gitlab-ci.yml"
RENDER_CHECK_JOB = "render_check"
"""A job name no stage can have (stage names have no '_')."""
CHECK_STAGE = "check"
LEVEL_PREFIX = "level-"
PIP_CACHE = ".pipeline/ci/pip-cache"
"""pip's download cache, inside the project folder so that GitLab's `cache:` can keep it."""
RAN_DIR = ".pipeline/ci/ran"
"""Where a job with a teardown notes that the teardown ran (its after_script runs it otherwise)."""
MAX_NEEDS = 50
"""GitLab's limit of jobs in one job's `needs` (the default of `ci_max_needs`, and gitlab.com's)."""
PUSH_TOKEN_VARIABLE = "GIT_PUSH_TOKEN"
"""CI/CD variable with a project access token (write_repository) a promote pushes with; without it,
the job's CI_JOB_TOKEN (Settings > CI/CD > Job token permissions > Allow Git push requests)."""
AWS_ROLE_VARIABLE = "AWS_ROLE_ARN"
AWS_TOKEN_VARIABLE = "PIPELINE_AWS_ID_TOKEN"
AWS_AUDIENCE = "sts.amazonaws.com"
DEFAULT_APPROVAL_TIMEOUT = Approval.model_fields["timeout_minutes"].default
RESERVED_NAMES = frozenset(
    {
        "after_script",
        "before_script",
        "cache",
        "default",
        "false",
        "image",
        "include",
        "nil",
        "pages",
        "services",
        "spec",
        "stages",
        "true",
        "types",
        "variables",
        "workflow",
    }
)
"""Top-level keys of .gitlab-ci.yml that are no job (`pages` is a job that publishes GitLab Pages)."""
MR_EVENT = '$CI_PIPELINE_SOURCE == "merge_request_event"'
USERNAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")
GROUP_PATH = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*(/[A-Za-z0-9_.][A-Za-z0-9_.-]*)*")
_PLAIN_BRANCH = re.compile(r"[A-Za-z0-9._/-]+")


class GitLabRenderer:
    name: ClassVar[str] = TARGET
    title: ClassVar[str] = "GitLab CI"
    capabilities: ClassVar[dict[str, Support]] = {
        "stages": Support(
            "One job per stage: the job's own virtualenv `.pipeline/ci/venv/PYTHON-VERSION-run` with exactly the "
            "pinned tool (`pip install 'pipeline-as-code[run]==X.Y.Z'`, or `install=`), kept between jobs by "
            "`cache:` keyed on the Python and tool versions (rebuilt from the cached pip downloads when a runner "
            "checks out to another folder), then `pipeline run stage NAME`. A rehearsal on the local profile (a "
            "test stack, the stages on the way to its teardown, the teardown) is one job `rehearsal-STACK` running "
            "them in order in one shell: each job may get another runner, and the stack is containers on it."
        ),
        "order": Support(
            "`needs:` lists the jobs of each stage's dependencies (stages after a rehearsal need its job); the first "
            "stages need `render_check`. `stages:` are levels of the graph (`check`, `level-1`, ...), for the "
            "pipeline view only."
        ),
        "parallel": Support(
            "Jobs whose `needs` are done run at the same time on free runners (fan-out); a job with several `needs` "
            "waits for all (fan-in)."
        ),
        "render-check": Support(
            "Job `render_check` (`needs: []`, first) installs the pinned tool without the `[run]` extra and runs "
            "`pipeline render --check` (the definition's targets), or `--target gitlab --check` when it names none; "
            "every first stage needs it."
        ),
        "manifests": Support(
            "`artifacts: {when: always, paths: [.pipeline/ci/manifest/]}`: each job keeps the manifests it received "
            "from the jobs it `needs` plus its own, so every job holds those of all the jobs before it (GitLab passes "
            "only the artifacts of a job's own `needs`)."
        ),
        "approval": Support(
            "A manual job (`when: manual`, `allow_failure: false`: the pipeline waits, and nothing runs until someone "
            "presses play, also on a new repository's first push). Its first step after set-up, `pipeline ci "
            "gitlab-approval --user NAME --group PATH`, fails the job unless the user who started it "
            "(`GITLAB_USER_LOGIN`) is a named approver or a member of a named group (read with the CI/CD variable "
            "PIPELINE_GITLAB_TOKEN, `read_api`); then the command runs with `--yes`. A protected environment may "
            "narrow who can press play further (GitLab Premium).",
            native=False,
            fails="a gate with no approvers, a non-default Approval.timeout_minutes (a manual job waits without limit), "
            "approver names that are no GitLab user or group path, a gate on an always-run stage, or a gate on a "
            "stage inside a local-profile rehearsal (a gate holds a whole job)",
        ),
        "secrets": Support(
            "CI/CD variables named like the secret (Settings > CI/CD > Variables; masked, protected, optionally scoped "
            "to the job's environment), listed in the file's header by job; never a value. GitLab gives a job every "
            "project variable: protect them so that only protected branches see them.",
            native=False,
        ),
        "aws": Support(
            "OpenID Connect: `id_tokens: {PIPELINE_AWS_ID_TOKEN: {aud: sts.amazonaws.com}}`; with the CI/CD variable "
            "`AWS_ROLE_ARN` (scoped to the job's environment, or `*` for the build) the job hands the token to the AWS "
            "SDKs (`AWS_WEB_IDENTITY_TOKEN_FILE`); without it, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY variables "
            "apply. `AWS_REGION` is exported from the definition."
        ),
        "branches": Support(
            "Job `rules: - if:` on `$CI_COMMIT_BRANCH` (`==` for a name, `=~ /^...$/` for a glob) with every filter on "
            "the way to the stage, so a job is absent wherever a job it needs is; a teardown job has its stack's "
            "filters and `optional: true` needs. In a rehearsal job, filters every stage shares are the job's rule, "
            "the others a shell `case` on the branch before that stage."
        ),
        "push": Support(
            'The job checks its branch out (`git checkout -B "$CI_COMMIT_BRANCH"`: GitLab checks out a detached '
            "commit), pushes to `$CI_SERVER_URL/$CI_PROJECT_PATH.git` with the CI/CD variable GIT_PUSH_TOKEN (a "
            "project access token, `write_repository`) or else the job's CI_JOB_TOKEN (allowed in Settings > CI/CD > "
            "Job token permissions), read by a credential helper from the environment (nothing written to disk), "
            "and with the push option `ci.skip`, so the commit starts no new pipeline."
        ),
        "agents": Support(
            "`tags:` with the labels the job needs (`AgentLabels`: `docker`, `packer`, `root`, and `pipeline-local` "
            "on every local-profile job: exactly one runner may carry it; `every` on all jobs; a stage's `agent=` as "
            "given). Jobs without tags run on any runner that takes untagged jobs; every runner needs `pythonX.Y` "
            "(a shell executor, or a Docker executor whose default image has it)."
        ),
        "timeouts": Support(
            "`timeout: N minutes` on the job, N = timeout x attempts + 10 min set-up (a rehearsal job: the sum of "
            "its stages' timeout x attempts + 5, plus 10); the runner enforces the stage's own timeout per attempt. "
            "A runner's maximum timeout, if lower, wins."
        ),
        "retries": Support(
            "`pipeline run stage` itself makes 1 + retries attempts in the same job (the same code as on a laptop); "
            "no `retry:`.",
            native=False,
        ),
        "concurrency": Support(
            "`resource_group: PIPELINE-ENV` (one job at a time across pipelines) and `environment: ENV` on every job "
            "that acts on a persistent environment. Consecutive stages acting on one environment (deploy, then smoke "
            "test) are one job `lock-ENV`, which holds the group for all of them.",
            fails="stages on two persistent environments inside one job (a rehearsal, or consecutive stages): a job "
            "has one resource group",
        ),
        "always": Support(
            "`when: always` on the teardown job (in a rehearsal job: the teardown runs after its stages in the same "
            "shell, also after one failed, and from `after_script` when the job is cancelled first; the job still "
            "fails); later jobs also need what the teardown needed, so GitLab skips them after a failure."
        ),
        "trigger": Support(
            "`workflow: rules:` create a pipeline for a branch of the trigger (else `Pipeline(default_branch=...)`), "
            "and with pull requests on for a merge request into one: then only the checks (stages that act on no "
            "environment, drive neither Docker nor a cloud, wait for nobody and get no secret, after checks only) "
            'run; every other job has `rules: - if: $CI_PIPELINE_SOURCE == "merge_request_event"` `when: never`.'
        ),
        "profile": Support(
            "`--profile` in the stage's command (its environment's, else the pipeline's); `--yes` after a gate."
        ),
    }

    def outputs(self, spec: PipelineSpec) -> Sequence[str]:
        return (CI_FILE,)

    def render(self, spec: PipelineSpec, context: RenderContext) -> list[RenderedFile]:
        plan = build_plan(spec, context)
        conditions = _conditions(plan)
        needs = _needs(plan, conditions)
        levels = _levels(needs)
        names = _job_names(plan)
        jobs: dict[str, Any] = {RENDER_CHECK_JOB: self._render_check(plan)}
        for unit in plan.units:
            wanted = [_renamed(n, names) for n in needs[unit.name]]
            if isinstance(unit, StageGroup):
                jobs[names[unit.name]] = self._group_job(plan, unit, conditions, wanted, levels[unit.name])
            else:
                jobs[names[unit.name]] = self._job(plan, unit, conditions[unit.name], wanted, levels[unit.name])
        stages = [CHECK_STAGE] + [f"{LEVEL_PREFIX}{n}" for n in range(1, max(levels.values(), default=0) + 1)]
        document = {"workflow": {"rules": _workflow_rules(plan)}, "stages": stages, **jobs}
        header = [*plan.header(self.name), *_secrets_header(plan, names)]
        text = "".join(f"# {line}\n" if line else "#\n" for line in header) + "\n" + yaml_dump.dump(document)
        return [RenderedFile(CI_FILE, text)]

    # ----------------------------------------------------------------------------- jobs
    def _render_check(self, plan: CiPlan) -> dict[str, Any]:
        job: dict[str, Any] = {"stage": CHECK_STAGE, "needs": []}
        tags = list(plan.spec.agents.every)
        if tags:
            job["tags"] = tags
        job["timeout"] = f"{RENDER_CHECK_MINUTES} minutes"
        job["cache"] = _cache(plan, run_extra=False)
        job["script"] = [_setup_script(plan, run_extra=False), plan.render_command(self.name, check=True)]
        return job

    def _job(
        self, plan: CiPlan, stage: StagePlan, condition: BranchGroups, needs: list[Any], level: int
    ) -> dict[str, Any]:
        where = f"stage {stage.name!r}"
        if stage.gate is not None and stage.always:
            raise UnsupportedFeatureError(
                self.name,
                "an approval gate on an always-run stage",
                where,
                hint="a GitLab job is either manual or always-run: gate the stage after it instead",
            )
        when = "manual" if stage.gate is not None else "always" if stage.always else "on_success"
        job = _head(level, needs, _rules(plan, condition, when, stage.on_pull_requests), when)
        _tags(job, stage.agent)
        if stage.lock:
            job["environment"] = stage.lock
            job["resource_group"] = f"{plan.name}-{stage.lock}"
        job["timeout"] = f"{stage.timeout_minutes} minutes"
        job["cache"] = _cache(plan)
        if stage.aws is not None:
            job["id_tokens"] = {AWS_TOKEN_VARIABLE: {"aud": AWS_AUDIENCE}}
        script = [_setup_script(plan)]
        if stage.gate is not None:
            script.append(_approval_command(stage))
        if stage.aws is not None:
            script.append(_aws_script(stage))
        if stage.pushes:
            script.append(_push_script())
        script += [f"export {name}={shlex.quote(value)}" for name, value in stage.env]
        script.append(stage.run_command)
        job["script"] = script
        job["artifacts"] = _artifacts()
        return job

    def _group_job(
        self, plan: CiPlan, group: StageGroup, conditions: dict[str, BranchGroups], needs: list[Any], level: int
    ) -> dict[str, Any]:
        """Stages that must be one job: a local-profile rehearsal (its stages share the runner whose Docker
        engine holds the test stack), or consecutive stages holding one environment's resource group (taken
        per job). The stages run in order in one shell; after a failure the rest are skipped except the
        teardowns, and the job fails; a gate of the first stage holds the whole job."""
        check_group(group, self.name)
        where = f"job {group.name!r}"
        locks = group.locks
        if len(locks) > 1:
            raise UnsupportedFeatureError(
                self.name,
                "stages on two persistent environments inside one job",
                f"{where} ({', '.join(locks)})",
                hint="a GitLab job takes one resource group: deploy to one persistent environment per rehearsal "
                "(or per run of consecutive stages), or move the deploys after the teardown",
            )
        if group.gate is not None and any(m.always for m in group.members):
            raise UnsupportedFeatureError(
                self.name,
                "an approval gate on a job with an always-run stage",
                where,
                hint="a GitLab job is either manual or always-run: gate a stage after the teardown",
            )
        connections = {m.aws.settings.region for m in group.members if m.aws is not None}
        if len(connections) > 1:
            raise UnsupportedFeatureError(
                self.name,
                "two AWS regions inside one job of several stages",
                f"{where} ({', '.join(sorted(connections))})",
                hint="the stages share one job's credentials and region: use one AWS region per rehearsal",
            )
        shared = conditions[group.name]
        when = "manual" if group.gate is not None else "on_success"
        job = _head(level, needs, _rules(plan, shared, when, group.on_pull_requests), when)
        _tags(job, group.agent)
        if locks:
            job["environment"] = locks[0]
            job["resource_group"] = f"{plan.name}-{locks[0]}"
        job["timeout"] = f"{group.timeout_minutes} minutes"
        job["cache"] = _cache(plan)
        aws = next((m for m in group.members if m.aws is not None), None)
        if aws is not None:
            job["id_tokens"] = {AWS_TOKEN_VARIABLE: {"aud": AWS_AUDIENCE}}
        script = [_setup_script(plan)]
        if group.gate is not None:
            script.append(_approval_command(group.gate))
        if aws is not None:
            script.append(_aws_script(aws))
        if any(m.pushes for m in group.members):
            script.append(_push_script())
        script.append(_group_script(group, shared))
        job["script"] = script
        if group.teardowns:
            job["after_script"] = [_after_script(plan, group)]
        job["artifacts"] = _artifacts()
        return job


# ----------------------------------------------------------------------------- the graph


def _conditions(plan: CiPlan) -> dict[str, BranchGroups]:
    """The branch filters each job's rule holds (all must match). A job is absent on other branches,
    so it must hold at least the filters of every job it needs: a stage's are all the filters on the
    way to it; a teardown's are its stack's (it must run wherever the stack was made) and its own; a
    group's are those all its members share (the others guard each member's commands)."""
    found: dict[str, BranchGroups] = {}
    for unit in plan.units:
        if isinstance(unit, StageGroup):
            groups = unit.shared_groups
        elif unit.always:
            groups = ()
            for ref in unit.stage.references().values():
                groups += tuple(g for g in plan.by_name[ref].branch_groups if g not in groups)
            if unit.branches and unit.branches not in groups:
                groups += (unit.branches,)
        else:
            groups = unit.branch_groups
        found[unit.name] = tuple(g for g in groups if "*" not in g)  # `*` matches every branch
    return found


def _needs(plan: CiPlan, conditions: dict[str, BranchGroups]) -> dict[str, list[Any]]:
    """Each job's `needs`: the jobs of its stages' dependencies, plus (behind a teardown, which runs
    after a failure too) what the teardown needed, so that GitLab still skips it after a failure. A
    teardown job needs every job before it: it runs also when some were skipped, and reads the
    manifests of those that ran. A needed job that may be absent (a branch filter the needing job
    does not have) is `optional`."""
    found: dict[str, list[Any]] = {}
    for unit in plan.units:
        if isinstance(unit, StageGroup):
            names = [*unit.needs, *(n for m in unit.members for n in plan.guard_needs(m))]
        elif unit.always:
            names = list(unit.ancestors)
        else:
            names = [*unit.needs, *plan.guard_needs(unit)]
        jobs = [j for j in plan.jobs_of(names) if j != unit.name]
        if len(jobs) > MAX_NEEDS:
            raise UnsupportedFeatureError(
                TARGET,
                f"a job that needs {len(jobs)} jobs (GitLab's limit is {MAX_NEEDS})",
                f"job {unit.name!r}",
                hint="fan in through fewer stages (a stage that needs the many and is needed by the one)",
            )
        mine = set(conditions[unit.name])
        entries: list[Any] = []
        for job in jobs or [RENDER_CHECK_JOB]:
            if job != RENDER_CHECK_JOB and not set(conditions[job]) <= mine:
                entries.append({"job": job, "optional": True})
            else:
                entries.append(job)
        found[unit.name] = entries
    return found


def _levels(needs: dict[str, list[Any]]) -> dict[str, int]:
    """Each job's `stages:` level: one deeper than the deepest job it needs (the drift check is 0)."""
    edges = {name: [_need_name(n) for n in entries] for name, entries in needs.items()}
    level = {RENDER_CHECK_JOB: 0}
    for name in Graph({RENDER_CHECK_JOB: [], **edges}).order():
        if name != RENDER_CHECK_JOB:
            level[name] = 1 + max(level[n] for n in edges[name])
    return {name: level[name] for name in needs}


def _job_names(plan: CiPlan) -> dict[str, str]:
    """Each job's name: its stage's (or group's), unless GitLab reserves that name at the top level
    of the file (`types`, `cache`, ...: then `NAME-job`), or gives it a meaning (`pages`)."""
    taken = {unit.name for unit in plan.units} | {RENDER_CHECK_JOB}
    names: dict[str, str] = {}
    for unit in plan.units:
        name = unit.name
        if name in RESERVED_NAMES:
            name, n = f"{unit.name}-job", 1
            while name in taken:
                n += 1
                name = f"{unit.name}-job-{n}"
            taken.add(name)
        names[unit.name] = name
    return names


def _renamed(entry: Any, names: dict[str, str]) -> Any:
    if isinstance(entry, dict):
        return {**entry, "job": names[entry["job"]]}
    return names.get(entry, entry)


def _need_name(entry: Any) -> str:
    return str(entry["job"]) if isinstance(entry, dict) else str(entry)


# ----------------------------------------------------------------------------- rules


def _workflow_rules(plan: CiPlan) -> list[dict[str, str]]:
    """A pipeline for a branch of the trigger; with pull requests on, for a merge request into one."""
    rules = []
    if plan.trigger.pull_requests:
        target = _patterns_condition("$CI_MERGE_REQUEST_TARGET_BRANCH_NAME", plan.trigger_branches)
        rules.append({"if": f"{MR_EVENT} && {_parenthesized(target)}" if target else MR_EVENT})
    branch = _patterns_condition("$CI_COMMIT_BRANCH", plan.trigger_branches)
    rules.append({"if": branch or "$CI_COMMIT_BRANCH"})
    return rules


def _rules(plan: CiPlan, groups: BranchGroups, when: str, on_pull_requests: bool) -> list[dict[str, str]]:
    """The job's `rules:` (empty: the job has none and says `when:` itself)."""
    rules: list[dict[str, str]] = []
    if plan.trigger.pull_requests and not on_pull_requests:
        rules.append({"if": MR_EVENT, "when": "never"})  # nothing that deploys runs for a merge request
    condition = _groups_condition(groups)
    if not rules and not condition:
        return []
    last = {"if": condition} if condition else {}
    last["when"] = when
    rules.append(last)
    return rules


def _head(level: int, needs: list[Any], rules: list[dict[str, str]], when: str) -> dict[str, Any]:
    job: dict[str, Any] = {"stage": f"{LEVEL_PREFIX}{level}", "needs": needs}
    if rules:
        job["rules"] = rules
    elif when != "on_success":
        job["when"] = when
    if when == "manual":
        job["allow_failure"] = False  # a blocking manual job: the pipeline waits for it
    return job


def _groups_condition(groups: BranchGroups) -> str:
    terms = [_patterns_condition("$CI_COMMIT_BRANCH", g) for g in groups]
    if len(terms) == 1:
        return terms[0]
    return " && ".join(_parenthesized(t) for t in terms)


def _parenthesized(term: str) -> str:
    return f"({term})" if " || " in term else term


def _patterns_condition(variable: str, patterns: Sequence[str]) -> str:
    """Any of the glob patterns, as a GitLab `if:` expression ('' for a bare `*`: every branch)."""
    if "*" in patterns:
        return ""
    return " || ".join(_pattern_condition(variable, p) for p in patterns)


def _pattern_condition(variable: str, pattern: str) -> str:
    if _PLAIN_BRANCH.fullmatch(pattern):
        return f'{variable} == "{pattern}"'
    return f"{variable} =~ /^{glob_regex(pattern)}$/"


def glob_regex(pattern: str) -> str:
    """A branch glob (fnmatch: `*` also matches `/`) as an RE2 body inside GitLab's `/.../`:
    branch_patterns' regex, with every slash escaped and no lookahead (RE2 has none)."""
    return branch_patterns.glob_regex(pattern, literal=_literal, nothing=r"[^\s\S]")


def _literal(char: str) -> str:
    """A character outside a class: ASCII punctuation escaped (`/` included), `_` as it is."""
    return char if char == "_" else branch_patterns.punctuation_escaped(char)


# ----------------------------------------------------------------------------- scripts


def _setup_script(plan: CiPlan, *, run_extra: bool = True) -> str:
    """The job's virtualenv, ready and active (bash, `set -e`). GitLab's `cache:` brings it back into
    the same project folder on the next job; a venv's scripts hold its absolute path, so the marker file
    records it and a venv restored into another folder is made again, from pip's cached downloads."""
    venv = plan.venv(run_extra=run_extra)
    python = plan.python_command
    lines = ["set -e", f"venv={venv}", f'export PIP_CACHE_DIR="$PWD/{PIP_CACHE}"']
    if plan.spec.install:
        lines += [
            f'if [ "$(cat "$venv/{INSTALLED_MARKER}" 2>/dev/null)" != "$PWD/$venv" ]; then',
            '    rm -rf "$venv"',
            f'    {python} -m venv "$venv"',
            f'    echo "$PWD/$venv" > "$venv/{INSTALLED_MARKER}"',
            "fi",
            '. "$venv/bin/activate"',
            plan.install_command(run_extra=run_extra),  # the definition's own: every time, in the kept venv
        ]
    else:
        lines += [*plan.made_once("$PWD/$venv", python, run_extra=run_extra), '. "$venv/bin/activate"']
    return "\n".join(lines)


def _cache(plan: CiPlan, *, run_extra: bool = True) -> dict[str, Any]:
    """The venv and pip's downloads, keyed by Python and tool version (the venv's own folder name)."""
    venv = plan.venv(run_extra=run_extra)
    return {"key": f"pipeline-{venv.rsplit('/', 1)[-1]}", "paths": [f"{venv}/", f"{PIP_CACHE}/"]}


def _artifacts() -> dict[str, Any]:
    return {"when": "always", "paths": [f"{MANIFEST_DIR}/"]}


def _tags(job: dict[str, Any], needs: AgentNeeds) -> None:
    if needs.labels:
        job["tags"] = list(needs.labels)


def _approval_command(stage: StagePlan) -> str:
    """Fail closed unless the user who started this manual job is one of the gate's approvers."""
    gate = stage.gate
    assert gate is not None
    where = f"stage {stage.name!r}"
    if gate.timeout_minutes != DEFAULT_APPROVAL_TIMEOUT:
        raise UnsupportedFeatureError(
            TARGET,
            f"an approval timeout ({gate.timeout_minutes} min)",
            where,
            hint="a GitLab manual job waits without a time limit; leave Approval.timeout_minutes at its default "
            "to render for GitLab",
        )
    if not gate.approvers and not gate.groups:
        raise UnsupportedFeatureError(
            TARGET,
            "an approval gate with no approvers",
            where,
            hint="name who may approve: Approval(approvers=('user',), groups=('group/path',)) (GitLab user names and "
            "group paths); anyone who may run a pipeline could press play otherwise",
        )
    for user in gate.approvers:
        if not USERNAME.fullmatch(user):
            raise UnsupportedFeatureError(
                TARGET, f"the approver {user!r}", where, hint="a GitLab user name is letters, digits, '_', '-' and '.'"
            )
    for group in gate.groups:
        if not GROUP_PATH.fullmatch(group):
            raise UnsupportedFeatureError(
                TARGET,
                f"the approver group {group!r}",
                where,
                hint="a GitLab group is named by its path, e.g. 'ops' or 'company/ops'",
            )
    parts = ["pipeline", "ci", "gitlab-approval"]
    parts += [f"--user {u}" for u in gate.approvers] + [f"--group {g}" for g in gate.groups]
    parts.append(f"--message {shlex.quote(gate.message)}")
    return " ".join(parts)


def _aws_script(stage: StagePlan) -> str:
    """AWS credentials for the SDKs (boto3, Packer): the job's OIDC token for the role in AWS_ROLE_ARN
    when the project sets it; else whatever AWS_* variables the project sets."""
    assert stage.aws is not None
    region = shlex.quote(stage.aws.settings.region)
    return "\n".join(
        [
            f"export AWS_REGION={region} AWS_DEFAULT_REGION={region}",
            f'if [ -n "${{{AWS_ROLE_VARIABLE}:-}}" ]; then',
            '    export AWS_WEB_IDENTITY_TOKEN_FILE="$PWD/.pipeline/ci/aws-web-identity-token"',
            f'    printf %s "${AWS_TOKEN_VARIABLE}" > "$AWS_WEB_IDENTITY_TOKEN_FILE"',
            "fi",
        ]
    )


def _push_script() -> str:
    """A promote that commits and pushes: on the pipeline's branch (GitLab checks out a detached
    commit), pushing with a token read from the environment at push time, and with `ci.skip`."""
    return "\n".join(
        [
            'git checkout -B "$CI_COMMIT_BRANCH"',
            'git remote set-url --push origin "$CI_SERVER_URL/$CI_PROJECT_PATH.git"',
            "git config credential.helper "
            + shlex.quote(
                '!f() { test "$1" = get && if [ -n "${GIT_PUSH_TOKEN:-}" ]; '
                'then printf "username=oauth2\\npassword=%s\\n" "$GIT_PUSH_TOKEN"; '
                'else printf "username=gitlab-ci-token\\npassword=%s\\n" "$CI_JOB_TOKEN"; fi; }; f'
            ),
            "git config push.pushOption ci.skip",
        ]
    )


def _group_script(group: StageGroup, shared: BranchGroups) -> str:
    """The group's stages in order in one shell: a stage runs while nothing before it failed (and on
    its branches); a teardown runs regardless; each notes that it started (for `after_script`); the
    shell exits non-zero when any stage failed."""
    lines = ["failed=0", f"rm -rf {RAN_DIR} && mkdir -p {RAN_DIR}"]
    guarded = [
        (member, [g for g in group.branch_groups(member.name) if g not in shared and "*" not in g])
        for member in group.members
    ]
    if any(groups for _, groups in guarded):
        lines += [
            "on_branch() {  # PATTERN...: this pipeline's branch matches one of the glob patterns",
            '    for pattern in "$@"; do',
            '        case "${CI_COMMIT_BRANCH:-}" in $pattern) return 0 ;; esac',
            "    done",
            "    return 1",
            "}",
        ]
    for member, groups in guarded:
        tests = [] if member.always else ['[ "$failed" = 0 ]']
        tests += ["on_branch " + " ".join(shlex.quote(p) for p in g) for g in groups]
        body = [f"touch {RAN_DIR}/{member.name}", f"({_exports(member)}{member.run_command}) || failed=1"]
        lines.append(f"# {member.name}" + (": runs also after a failure" if member.always else ""))
        if tests:
            lines.append(f"if {' && '.join(tests)}; then")
            lines += [f"    {line}" for line in body]
            lines.append("fi")
        else:
            lines += body
    lines.append('exit "$failed"')
    return "\n".join(lines)


def _after_script(plan: CiPlan, group: StageGroup) -> str:
    """When the job is cancelled (or its script times out) after a test stack was started and before
    its teardown: run the teardown now."""
    lines = [f". {plan.venv()}/bin/activate || exit 0  # not set up: nothing was started"]
    for member in group.teardowns:
        stacks = [s for s in member.stage.references().values() if s in group.names]
        started = " || ".join(f"[ -f {RAN_DIR}/{s} ]" for s in stacks) or "true"
        lines.append(
            f"if [ ! -f {RAN_DIR}/{member.name} ] && {{ {started}; }}; then "
            f"({_exports(member)}{member.run_command}); fi"
        )
    return "\n".join(lines)


def _exports(stage: StagePlan) -> str:
    return "".join(f"export {name}={shlex.quote(value)}; " for name, value in stage.env)


def _secrets_header(plan: CiPlan, names: dict[str, str]) -> list[str]:
    """The CI/CD variables the jobs read, by name (never values)."""
    wanted: dict[str, list[str]] = {}
    for unit in plan.units:
        members = unit.members if isinstance(unit, StageGroup) else (unit,)
        for member in members:
            for secret in member.secrets:
                jobs = wanted.setdefault(secret.name, [])
                if names[unit.name] not in jobs:
                    jobs.append(names[unit.name])
    extra: list[str] = []
    if any(s.aws is not None for s in plan.stages):
        extra.append(f"{AWS_ROLE_VARIABLE} (optional: an IAM role for the job's OIDC token; else AWS_* key variables)")
    if any(s.pushes for s in plan.stages):
        extra.append(f"{PUSH_TOKEN_VARIABLE} (optional: a project access token that may push; else CI_JOB_TOKEN)")
    if any(s.gate is not None and s.gate.groups for s in plan.stages):
        extra.append(f"{TOKEN_VARIABLE} (a token with read_api: gates that name groups check membership with it)")
    if not wanted and not extra:
        return []
    lines = ["", "CI/CD variables (Settings > CI/CD > Variables; masked and protected):"]
    lines += [f"  {name}: read by {', '.join(jobs)}" for name, jobs in sorted(wanted.items())]
    lines += [f"  {line}" for line in extra]
    return lines
