"""The GitLab CI renderer: `.gitlab-ci.yml` as GitLab reads it (needs, rules, stages, manual gates,
resource groups, always-run teardowns), and the shell it hands each job, run here with a stand-in
`pipeline` command so that the order of stages, the teardown after a failure and after a cancel,
and the exit status are what the job would do."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import (
    Approval,
    Bake,
    CommitTest,
    Environment,
    Pipeline,
    PipelineSpec,
    Secret,
    Shell,
    Teardown,
    TestStack,
)
from pipeline.errors import UnsupportedFeatureError
from pipeline.render import render
from pipeline.render.base import RenderContext
from pipeline.render.gitlab import RAN_DIR, glob_regex
from pipeline.render.validate import check_gitlab_ci
from tests.unit.test_render_first_push import gated_rehearsal, pr_spec, staging_spec, two_locks
from tests.unit.test_render_plan import chain_spec, fan_spec, rehearsal_spec

KEYWORDS = ("workflow", "stages")


def text_of(spec: PipelineSpec) -> str:
    files = render(spec, ["gitlab"], RenderContext())
    assert [f.path for f in files] == [".gitlab-ci.yml"]
    return files[0].content


def jobs_of(spec: PipelineSpec) -> dict[str, dict[str, Any]]:
    text = text_of(spec)
    assert check_gitlab_ci(text) == []
    data = yaml.safe_load(text)
    return {name: job for name, job in data.items() if name not in KEYWORDS}


def need_names(job: dict[str, Any]) -> list[str]:
    return [n["job"] if isinstance(n, dict) else n for n in job["needs"]]


def stage_commands(job: dict[str, Any]) -> list[str]:
    """The stages a job runs, in the order its script names them."""
    return re.findall(r"pipeline run stage (\S+)", "\n".join(job["script"]))


# ----------------------------------------------------------------------------- the graph


def test_the_reference_chain_is_one_job_per_stage_and_one_per_local_rehearsal() -> None:
    jobs = jobs_of(chain_spec())
    assert list(jobs) == ["render_check", "commit-test", "bake", "rehearsal-test-stack", "promote"]
    assert jobs["render_check"]["needs"] == []
    assert jobs["render_check"]["stage"] == "check"
    assert jobs["commit-test"]["needs"] == ["render_check"]
    assert need_names(jobs["promote"]) == ["rehearsal-test-stack", "bake"]
    assert stage_commands(jobs["rehearsal-test-stack"]) == ["test-stack", "update-stack", "rollback", "teardown"]
    assert [j["stage"] for j in jobs.values()] == ["check", "level-1", "level-2", "level-3", "level-4"]
    data = yaml.safe_load(text_of(chain_spec()))
    assert data["stages"] == ["check", "level-1", "level-2", "level-3", "level-4"]


def test_fan_out_jobs_share_a_level_and_fan_in_waits_for_all() -> None:
    jobs = jobs_of(fan_spec())
    assert {jobs[n]["stage"] for n in ("lint", "unit", "docs")} == {"level-2"}
    assert jobs["package"]["needs"] == ["lint", "unit", "docs"]
    assert jobs["package"]["stage"] == "level-3"


def test_every_stage_job_keeps_the_manifest_folder_as_an_artifact_also_on_failure() -> None:
    for name, job in jobs_of(chain_spec(profile="aws")).items():
        if name == "render_check":
            assert "artifacts" not in job
            continue
        assert job["artifacts"] == {"when": "always", "paths": [".pipeline/ci/manifest/"]}
        assert all("--manifest .pipeline/ci/manifest" in c for c in job["script"] if "pipeline run stage" in c)


def test_a_teardown_job_runs_always_needs_every_job_before_it_and_the_jobs_after_it_stay_skipped() -> None:
    jobs = jobs_of(chain_spec(profile="aws"))
    teardown = jobs["teardown"]
    assert teardown["when"] == "always"
    assert need_names(teardown) == ["commit-test", "bake", "test-stack", "update-stack", "rollback"]
    # GitLab skips a job only for its own needs: promote also needs what the teardown needed.
    assert "rollback" in need_names(jobs["promote"])
    assert "teardown" in need_names(jobs["promote"])


def test_a_stage_named_like_a_gitlab_keyword_gets_another_job_name() -> None:
    with Pipeline("reserved") as p:
        test = CommitTest(name="commit-test", commands=["true"])
        types = Shell(name="types", commands=["mypy"])
        pages = Shell(name="pages", commands=["true"])
        test >> types >> pages
    jobs = jobs_of(p.spec)
    assert list(jobs) == ["render_check", "commit-test", "types-job", "pages-job"]
    assert jobs["pages-job"]["needs"] == ["types-job"]
    assert stage_commands(jobs["types-job"]) == ["types"]


# ----------------------------------------------------------------------------- gates


def test_a_gate_is_a_blocking_manual_job_that_checks_its_approver_first() -> None:
    jobs = jobs_of(chain_spec(approval=Approval(message="Ship it?\n  (twice)", approvers=("alice",), groups=("ops",))))
    promote = jobs["promote"]
    assert promote["when"] == "manual"
    assert promote["allow_failure"] is False
    assert promote["environment"] == "production"
    assert promote["resource_group"] == "chain-production"
    script = promote["script"]
    assert "pip install" in script[0]
    assert shlex.split(script[1]) == [
        "pipeline",
        "ci",
        "gitlab-approval",
        "--user",
        "alice",
        "--group",
        "ops",
        "--message",
        "Ship it?\n  (twice)",
    ]
    assert script[-1].endswith("--yes")
    for name, job in jobs.items():
        if name != "promote":
            assert "when" not in job or job["when"] == "always", name
            assert not any("gitlab-approval" in s for s in job["script"]), name


@pytest.mark.parametrize(
    ("gate", "feature"),
    [
        (Approval(), "an approval gate with no approvers"),
        (Approval(approvers=("alice",), timeout_minutes=30), "an approval timeout (30 min)"),
        (Approval(approvers=("it's",)), 'the approver "it\'s"'),
        (Approval(groups=("ops team",)), "the approver group 'ops team'"),
    ],
)
def test_gates_gitlab_cannot_enforce_are_refused(gate: Approval, feature: str) -> None:
    with pytest.raises(UnsupportedFeatureError) as err:
        text_of(chain_spec(approval=gate))
    assert err.value.target == "gitlab"
    assert err.value.feature == feature


def test_a_gate_inside_a_local_rehearsal_is_refused() -> None:
    with pytest.raises(UnsupportedFeatureError) as err:
        text_of(gated_rehearsal("local"))
    assert "an approval gate inside a local-profile rehearsal" in err.value.feature


def test_gated_aws_stages_each_hold_their_own_gate() -> None:
    jobs = jobs_of(gated_rehearsal("aws"))
    assert {n for n, j in jobs.items() if j.get("when") == "manual"} == {"check", "other"}
    assert jobs["teardown"]["when"] == "always"


# ----------------------------------------------------------------------------- locks


def test_one_resource_group_spans_a_deploy_and_its_smoke_test() -> None:
    jobs = jobs_of(staging_spec())
    assert list(jobs) == ["render_check", "commit-test", "lock-staging", "prod"]
    assert jobs["lock-staging"]["resource_group"] == "locks-staging"
    assert jobs["lock-staging"]["environment"] == "staging"
    assert stage_commands(jobs["lock-staging"]) == ["deploy", "smoke"]
    assert jobs["prod"]["resource_group"] == "locks-production"
    gated = jobs_of(staging_spec(gate_deploy=True))["lock-staging"]
    assert gated["when"] == "manual"
    split = jobs_of(staging_spec(gate_smoke=True))
    assert list(split) == ["render_check", "commit-test", "deploy", "smoke", "prod"]
    assert split["deploy"]["resource_group"] == split["smoke"]["resource_group"] == "locks-staging"


def test_two_environments_take_two_jobs_and_one_job_never_holds_two() -> None:
    for overlap in (False, True):
        jobs = jobs_of(two_locks(overlap))
        assert jobs["lock-alpha"]["resource_group"] == "twolocks-alpha"
        assert jobs["lock-beta"]["resource_group"] == "twolocks-beta"
    with Pipeline(
        "both",
        environments=[
            Environment(name="test", ephemeral=True),
            Environment(name="production", template="templates/web.yaml"),
            Environment(name="a"),
            Environment(name="b"),
        ],
    ) as p:
        bake = Bake(name="bake", template="images/web.pkr.hcl")
        stack = TestStack(name="test-stack", environment="test", image=bake)
        one = Shell(name="one", environment="a", commands=["true"])
        two = Shell(name="two", environment="b", commands=["true"])
        down = Teardown(name="teardown", stack=stack)
        bake >> stack >> one >> two >> down
    with pytest.raises(UnsupportedFeatureError, match="stages on two persistent environments inside one job"):
        text_of(p.spec)


# ----------------------------------------------------------------------------- branches and merge requests


@pytest.mark.parametrize(
    "pattern", ["release/*", "feature/[a-z]*", "it's/*", "v1.?", "hot-fix_9", "a[!x]b", "x+y", "**/z"]
)
def test_branch_globs_become_regexes_that_match_what_fnmatch_matches(pattern: str) -> None:
    regex = re.compile(f"^{glob_regex(pattern)}$")
    assert "/" not in glob_regex(pattern).replace("\\/", "")  # GitLab's /.../ needs every slash escaped
    for branch in ["release/1", "release/a/b", "feature/abc", "feature/A", "it's/x", "v1.2", "v1x2", "hot-fix_9"]:
        assert bool(regex.match(branch)) == fnmatch.fnmatchcase(branch, pattern), (pattern, branch)
    for branch in ["axb", "ayb", "x+y", "xxy", "a/b/z", "z"]:
        assert bool(regex.match(branch)) == fnmatch.fnmatchcase(branch, pattern), (pattern, branch)


def test_a_job_holds_every_branch_filter_on_its_way_so_it_is_absent_wherever_a_job_it_needs_is() -> None:
    jobs = jobs_of(fan_spec())
    assert jobs["publish"]["rules"] == [
        {"if": '$CI_COMMIT_BRANCH == "main" || $CI_COMMIT_BRANCH =~ /^release\\/.*$/', "when": "on_success"}
    ]
    spec = chain_spec(profile="aws", test_stack_branches=("main",), update_branches=("main", "rc/*"))
    aws = jobs_of(spec)
    assert aws["test-stack"]["rules"] == [{"if": '$CI_COMMIT_BRANCH == "main"', "when": "on_success"}]
    assert aws["update-stack"]["rules"] == [
        {
            "if": '$CI_COMMIT_BRANCH == "main" && ($CI_COMMIT_BRANCH == "main" || $CI_COMMIT_BRANCH =~ /^rc\\/.*$/)',
            "when": "on_success",
        }
    ]
    # The teardown runs wherever its stack was made; jobs that may be absent there are optional.
    assert aws["teardown"]["rules"] == [{"if": '$CI_COMMIT_BRANCH == "main"', "when": "always"}]
    needs = aws["teardown"]["needs"]
    assert {"job": "commit-test", "optional": True} not in needs
    assert "commit-test" in needs
    assert {"job": "update-stack", "optional": True} in needs
    assert {"job": "rollback", "optional": True} in needs


def test_in_a_rehearsal_job_filters_not_every_stage_shares_guard_that_stage_in_the_shell() -> None:
    spec = chain_spec(test_stack_branches=("main",), update_branches=("main", "rc/*"))
    job = jobs_of(spec)["rehearsal-test-stack"]
    assert job["rules"] == [{"if": '$CI_COMMIT_BRANCH == "main"', "when": "on_success"}]
    script = job["script"][-1]
    assert "if [ \"$failed\" = 0 ] && on_branch main 'rc/*'; then" in script


def test_merge_requests_run_only_the_checks() -> None:
    data = yaml.safe_load(text_of(pr_spec()))
    assert data["workflow"]["rules"] == [
        {"if": '$CI_PIPELINE_SOURCE == "merge_request_event" && $CI_MERGE_REQUEST_TARGET_BRANCH_NAME == "main"'},
        {"if": '$CI_COMMIT_BRANCH == "main"'},
    ]
    never = {"if": '$CI_PIPELINE_SOURCE == "merge_request_event"', "when": "never"}
    for name, job in data.items():
        if name in KEYWORDS:
            continue
        if name in ("render_check", "commit-test", "lint"):
            assert "rules" not in job, name
        else:
            assert job["rules"][0] == never, name
    assert data["teardown"]["rules"] == [never, {"when": "always"}]
    everywhere = yaml.safe_load(text_of(pr_spec(branches=("*",))))
    assert everywhere["workflow"]["rules"] == [
        {"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'},
        {"if": "$CI_COMMIT_BRANCH"},
    ]


# ----------------------------------------------------------------------------- agents, secrets, AWS, push


def test_agent_needs_are_runner_tags() -> None:
    jobs = jobs_of(chain_spec())
    assert "tags" not in jobs["commit-test"]
    assert jobs["bake"]["tags"] == ["pipeline-local", "docker", "packer"]
    assert jobs["rehearsal-test-stack"]["tags"] == ["pipeline-local", "docker"]


def test_secrets_are_named_never_valued_and_aws_jobs_get_an_oidc_token() -> None:
    secret = Secret(name="DEPLOY_TOKEN", github="GH_DEPLOY")
    text = text_of(chain_spec(profile="aws", secrets=(secret,)))
    assert "#   DEPLOY_TOKEN: read by promote\n" in text
    assert "#   AWS_ROLE_ARN (optional" in text
    data = yaml.safe_load(text)
    promote = data["promote"]
    assert promote["id_tokens"] == {"PIPELINE_AWS_ID_TOKEN": {"aud": "sts.amazonaws.com"}}
    aws = next(s for s in promote["script"] if "AWS_REGION" in s)
    assert aws.startswith("export AWS_REGION=eu-central-1 AWS_DEFAULT_REGION=eu-central-1\n")
    assert "variables" not in promote  # a YAML variable would shadow nothing and leak nothing: none at all


def test_a_promote_that_pushes_puts_the_job_on_its_branch_and_skips_ci_for_its_commit() -> None:
    jobs = jobs_of(chain_spec(profile="aws"))
    push = next(s for s in jobs["promote"]["script"] if "git checkout -B" in s)
    lines = push.splitlines()
    assert lines[0] == 'git checkout -B "$CI_COMMIT_BRANCH"'
    assert lines[-1] == "git config push.pushOption ci.skip"
    assert "GIT_PUSH_TOKEN" in push
    assert "CI_JOB_TOKEN" in push
    assert not any("git checkout -B" in s for n, j in jobs.items() if n != "promote" for s in j["script"])
    assert not any("git checkout -B" in s for j in jobs_of(chain_spec()).values() for s in j["script"])


def test_the_promote_credential_helper_hands_git_the_token_from_the_environment(tmp_path: Path) -> None:
    """Run the helper the job configures the way git calls it (`helper get`), with and without a
    push token: it reads the token when git asks, so nothing secret is written to .git/config."""
    push = next(s for s in jobs_of(chain_spec(profile="aws"))["promote"]["script"] if "credential.helper" in s)
    helper = shlex.split(next(line for line in push.splitlines() if "credential.helper" in line))[-1]
    assert helper.startswith("!")
    env = {"PATH": os.environ["PATH"], "CI_JOB_TOKEN": "job-t0k3n"}
    asked = subprocess.run(
        ["sh", "-c", helper[1:] + ' "$@"', "helper", "get"], env=env, capture_output=True, text=True, check=False
    )
    assert asked.stdout == "username=gitlab-ci-token\npassword=job-t0k3n\n"
    env["GIT_PUSH_TOKEN"] = "glpat-p8sh"
    asked = subprocess.run(
        ["sh", "-c", helper[1:] + ' "$@"', "helper", "get"], env=env, capture_output=True, text=True, check=False
    )
    assert asked.stdout == "username=oauth2\npassword=glpat-p8sh\n"
    stored = subprocess.run(
        ["sh", "-c", helper[1:] + ' "$@"', "helper", "store"], env=env, capture_output=True, check=False
    )
    assert stored.stdout == b""


# ----------------------------------------------------------------------------- the shell each job runs


def stub_pipeline(folder: Path, fail: str = "", hang: str = "") -> Path:
    """A `pipeline` command that logs `run stage NAME` calls, fails for `fail`, hangs for `hang`."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "calls.log"
    script = folder / "pipeline"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$3 A=${{A:-}}" >> {shlex.quote(str(log))}\n'
        f'[ "$3" = {shlex.quote(hang)} ] && sleep 30\n'
        f'[ "$3" = {shlex.quote(fail)} ] && exit 3\n'
        "exit 0\n"
    )
    script.chmod(0o755)
    return log


def run_group(job: dict[str, Any], work: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The group's stage script (not the set-up) in bash with `set -eo pipefail`, as GitLab runs it."""
    return subprocess.run(
        ["bash", "-c", "set -eo pipefail\n" + job["script"][-1]],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def rehearsal_job(**middle: Any) -> dict[str, Any]:
    return jobs_of(rehearsal_spec(**middle))["rehearsal-test-stack"]


def test_a_rehearsal_runs_its_stages_in_order_and_each_with_its_own_variables(tmp_path: Path) -> None:
    log = stub_pipeline(tmp_path / "bin")
    job = rehearsal_job(env={"A": "it's $HOME\n  two"})
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "CI_COMMIT_BRANCH": "main"}
    done = run_group(job, tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert log.read_text() == "test-stack A=\ncheck A=it's $HOME\n  two\nteardown A=\n"


def test_after_a_failure_the_rest_is_skipped_the_teardown_runs_and_the_job_fails(tmp_path: Path) -> None:
    log = stub_pipeline(tmp_path / "bin", fail="check")
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "CI_COMMIT_BRANCH": "main"}
    done = run_group(rehearsal_job(), tmp_path, env)
    assert done.returncode == 1
    assert log.read_text() == "test-stack A=\ncheck A=\nteardown A=\n"
    first = stub_pipeline(tmp_path / "bin2", fail="test-stack")
    env["PATH"] = f"{tmp_path / 'bin2'}:{os.environ['PATH']}"
    assert run_group(rehearsal_job(), tmp_path, env).returncode == 1
    assert first.read_text() == "test-stack A=\nteardown A=\n"


def test_a_stage_off_its_branches_is_skipped_inside_the_rehearsal(tmp_path: Path) -> None:
    log = stub_pipeline(tmp_path / "bin")
    job = rehearsal_job(branches=("rc/*",))
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "CI_COMMIT_BRANCH": "main"}
    assert run_group(job, tmp_path, env).returncode == 0
    assert log.read_text() == "test-stack A=\nteardown A=\n"
    log.unlink()
    env["CI_COMMIT_BRANCH"] = "rc/2.0"
    assert run_group(job, tmp_path, env).returncode == 0
    assert log.read_text() == "test-stack A=\ncheck A=\nteardown A=\n"


def fake_venv(work: Path) -> None:
    """The job's venv as far as `after_script` uses it: its activation script."""
    bin_dir = work / ".pipeline/ci/venv/3.11-0.1.0-run/bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "activate").write_text("")


def test_a_cancelled_rehearsal_tears_its_stack_down_from_after_script(tmp_path: Path) -> None:
    """GitLab stops the script of a cancelled job and runs `after_script` (GitLab 17+): the teardown
    runs there when the stack was started and the script did not get to its teardown."""
    job = rehearsal_job()
    log = stub_pipeline(tmp_path / "bin", hang="check")
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "CI_COMMIT_BRANCH": "main"}
    fake_venv(tmp_path)
    script = subprocess.Popen(
        ["bash", "-c", "set -eo pipefail\n" + job["script"][-1]], cwd=tmp_path, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and "check" in log.read_text()):  # the event: the hanging stage started
            assert script.poll() is None, "the script ended before the stage that hangs"
            assert time.monotonic() < deadline, "the hanging stage never started"
            time.sleep(0.02)
    finally:
        os.killpg(script.pid, signal.SIGKILL)  # the runner stops the job's script
        script.wait()
    after = subprocess.run(
        ["bash", "-c", "set -eo pipefail\n" + job["after_script"][0]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        check=False,
    )
    assert after.returncode == 0, after.stderr
    assert log.read_text() == "test-stack A=\ncheck A=\nteardown A=\n"


def test_after_script_does_nothing_once_the_teardown_ran_or_before_a_stack_was_started(tmp_path: Path) -> None:
    job = rehearsal_job()
    log = stub_pipeline(tmp_path / "bin")
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "CI_COMMIT_BRANCH": "main"}
    fake_venv(tmp_path)
    assert run_group(job, tmp_path, env).returncode == 0
    subprocess.run(["bash", "-c", job["after_script"][0]], cwd=tmp_path, env=env, check=True)
    assert log.read_text().count("teardown") == 1
    for marker in (tmp_path / RAN_DIR).iterdir():
        marker.unlink()  # as if the job was cancelled during set-up
    subprocess.run(["bash", "-c", job["after_script"][0]], cwd=tmp_path, env=env, check=True)
    assert log.read_text().count("teardown") == 1
    gone = tmp_path / "elsewhere"
    gone.mkdir()
    nothing = subprocess.run(
        ["bash", "-c", job["after_script"][0]], cwd=gone, env=env, capture_output=True, check=False
    )
    assert nothing.returncode == 0  # no venv: nothing was set up, nothing to tear down
    assert log.read_text().count("teardown") == 1


def test_the_header_names_the_version_and_the_drift_check_of_its_own_target() -> None:
    text = text_of(chain_spec())
    assert text.startswith("# Generated by pipeline ")
    assert "# CI fails when this file drifts from the definition: pipeline render --target gitlab --check\n" in text
    assert jobs_of(chain_spec())["render_check"]["script"][-1] == "pipeline render --target gitlab --check"


def test_validate_reports_what_gitlab_cannot_express_when_the_definition_uses_gitlab(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.cli_inprocess import run_cli

    (tmp_path / "pipelinefile.py").write_text(
        "from pipeline import Approval, Environment, Pipeline, Shell\n"
        "with Pipeline('gated', targets=('gitlab',),\n"
        "              environments=[Environment(name='production', approval=Approval())]) as p:\n"
        "    Shell(name='deploy', environment='production', commands=['true'])\n"
    )
    result = run_cli(["validate", "--definition-only"], tmp_path, capsys)
    assert result.code == 2
    assert "gitlab cannot express an approval gate with no approvers (used by stage 'deploy')" in result.err
    assert not (tmp_path / ".gitlab-ci.yml").exists()
    rendered = run_cli(["render"], tmp_path, capsys)
    assert rendered.code == 2
    assert "gitlab cannot express an approval gate with no approvers" in rendered.err
