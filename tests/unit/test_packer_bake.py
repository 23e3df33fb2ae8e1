"""The bake's pure parts: its content key, the variables it passes to Packer, the aws target, and
the reading of a checks report. (The real thing runs in tests/integration/test_bake.py.)"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.engines.aws.session import AwsSession, AwsTarget
from pipeline.engines.image_checks import check_env, check_name, parse_junit
from pipeline.engines.images.base import framework_variables, packer_env_vars
from pipeline.executors.bake import BakeExecutor, bake_key, use_image_env
from pipeline.executors.registry import executor_for
from pipeline.model import AwsSettings
from pipeline.stages.bake import Bake

FILES = {"images/web.pkr.hcl": "a1", "images/web/provision.sh": "b2", "serverspec/test_web.py": "c3"}


def _key(**changes: Any) -> str:
    args: dict[str, Any] = {
        "files": FILES,
        "variables": {"version": "1.0.0"},
        "source": "docker.web",
        "repository": "hello-web-bake",
        "base_image_id": "sha256:base",
        "environ": {},
        **changes,
    }
    return bake_key(args.pop("files"), args.pop("variables"), **args)


def test_the_key_is_stable() -> None:
    assert _key() == _key()
    assert _key(files=dict(reversed(list(FILES.items())))) == _key()
    assert len(_key()) == 32


@pytest.mark.parametrize(
    "change",
    [
        {"files": {**FILES, "images/web/provision.sh": "changed"}},
        {"files": {**FILES, "serverspec/test_web.py": "changed"}},
        {"files": {**FILES, "images/web/new.sh": "added"}},
        {"variables": {"version": "1.0.1"}},
        {"source": "amazon-ebs.web"},
        {"repository": "other"},
        {"base_image_id": "sha256:rebuilt"},
        {"environ": {"PKR_VAR_version": "2"}},
    ],
    ids=["script", "checks", "new-file", "variable", "source", "repository", "base-image", "pkr-var-env"],
)
def test_every_input_changes_the_key(change: dict[str, object]) -> None:
    assert _key(**change) != _key()


def test_a_manifest_left_by_a_manual_packer_build_is_not_an_input() -> None:
    assert _key(files={**FILES, "images/packer-manifest.json": "x"}) == _key()


def test_unrelated_environment_does_not_change_the_key() -> None:
    assert _key(environ={"HOME": "/elsewhere", "CI": "1"}) == _key()


def test_packer_env_vars_are_only_pkr_vars() -> None:
    assert packer_env_vars({"PKR_VAR_a": "1", "PATH": "/bin", "PKR_VARX": "2"}) == {"PKR_VAR_a": "1"}


def test_framework_variables_go_only_to_templates_that_declare_them() -> None:
    declared = ["version", "base_image", "manifest"]
    offered = {"base_image": "pipeline-base:bookworm", "pull_base": "false", "manifest": "/m.json"}
    chosen = framework_variables(declared, offered, {"version": "1.0.0"})
    assert chosen == {"version": "1.0.0", "base_image": "pipeline-base:bookworm", "manifest": "/m.json"}


def test_the_users_variables_win_over_offered_ones() -> None:
    chosen = framework_variables(["base_image"], {"base_image": "ours"}, {"base_image": "theirs"})
    assert chosen == {"base_image": "theirs"}


def test_use_image_env_name() -> None:
    assert use_image_env("bake") == "PIPELINE_BAKE_USE_IMAGE"
    assert use_image_env("bake-web") == "PIPELINE_BAKE_WEB_USE_IMAGE"


# --- aws target -----------------------------------------------------------------------------------


def _bake(**fields: Any) -> Bake:
    return Bake(name="bake", template="images/web.pkr.hcl", **fields)


def aws_target(bake: Bake, environ: dict[str, str]) -> AwsTarget:
    """Where the bake's AMI half talks to: its session's EC2 target."""
    return AwsSession(bake.aws, environ).target("ec2")


def test_aws_endpoint_and_region_come_from_the_environment_by_default() -> None:
    target = aws_target(_bake(), {"AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "AWS_REGION": "eu-west-1"})
    assert target.endpoint == "http://127.0.0.1:5000"
    assert target.region == "eu-west-1"
    assert target.emulated


def test_the_ec2_specific_endpoint_wins() -> None:
    env = {"AWS_ENDPOINT_URL": "http://a", "AWS_ENDPOINT_URL_EC2": "http://ec2"}
    assert aws_target(_bake(), env).endpoint == "http://ec2"


def test_the_stages_aws_settings_win_over_the_environment() -> None:
    bake = _bake(aws=AwsSettings(region="ap-south-1", endpoint_url="http://moto:5000"))
    target = aws_target(bake, {"AWS_ENDPOINT_URL": "http://other", "AWS_REGION": "eu-west-1"})
    assert (target.region, target.endpoint) == ("ap-south-1", "http://moto:5000")


def test_real_aws_is_not_emulated() -> None:
    target = aws_target(_bake(), {})
    assert target.endpoint is None
    assert target.region == "us-east-1"
    assert not target.emulated


def test_an_aws_endpoint_override_is_not_an_emulator() -> None:
    target = aws_target(_bake(), {"AWS_ENDPOINT_URL_EC2": "https://ec2-fips.us-east-1.amazonaws.com"})
    assert target.endpoint == "https://ec2-fips.us-east-1.amazonaws.com"
    assert not target.emulated  # no dummy keys for it: real AWS behind a FIPS endpoint


# --- the spec --------------------------------------------------------------------------------------


def test_bake_runs_on_both_profiles() -> None:
    executor = executor_for(_bake())
    assert isinstance(executor, BakeExecutor)
    assert not Bake.cannot_run_on  # no profile refuses the kind (a FlagRollout's refuses aws)


def test_new_fields_round_trip_through_json() -> None:
    bake = _bake(use_image={"aws": "ami-0123"}, aws=AwsSettings(region="eu-west-1"), image_name="hello-web")
    again = Bake.model_validate_json(bake.model_dump_json())
    assert again == bake


@pytest.mark.parametrize("name", ["Hello", "web:1", "-web", "a//b"])
def test_image_name_must_be_a_docker_repository(name: str) -> None:
    with pytest.raises(ValidationError, match="Docker repository name"):
        _bake(image_name=name)


def test_files_cover_template_folder_and_checks() -> None:
    assert _bake(checks="serverspec").files() == ("images/web.pkr.hcl", "images", "serverspec")


# --- the checks' report ----------------------------------------------------------------------------

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest"
errors="0" failures="1" skipped="1" tests="4"><testcase classname="test_web" name="test_apache_is_installed[docker://0123abcd]"
time="0.1" /><testcase classname="test_web" name="test_page_says_hello_world_with_the_version[docker://0123abcd]"
time="0.1"><failure message="AssertionError: assert 'Hello Wrld 1.0.0' == 'Hello World 1.0.0'&#10;  - Hello World">
details</failure></testcase><testcase classname="test_web" name="test_no_build_or_test_tool_left[docker://0123abcd-curl]"
time="0.1"><skipped message="no" /></testcase><testcase classname="test_web" name="test_port[docker://0123abcd-80]"
time="0.1"><error message="fixture 'x' not found">e</error></testcase></testsuite></testsuites>"""


def test_junit_report_names_failed_checks_without_the_host(tmp_path: Path) -> None:
    path = tmp_path / "checks.xml"
    path.write_text(JUNIT)
    total, skipped, failed, passed = parse_junit(path)
    assert (total, skipped) == (4, 1)
    assert passed == ["test_web::test_apache_is_installed"]
    assert [f.name for f in failed] == [
        "test_web::test_page_says_hello_world_with_the_version",
        "test_web::test_port[80]",
    ]
    assert failed[0].message == "AssertionError: assert 'Hello Wrld 1.0.0' == 'Hello World 1.0.0'"
    assert str(failed[1]) == "test_web::test_port[80]: fixture 'x' not found"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("test_a[docker://0123]", "m::test_a"),
        ("test_a[docker://0123-curl]", "m::test_a[curl]"),
        ("test_a[curl-docker://0123]", "m::test_a[curl]"),
        ("test_a", "m::test_a"),
    ],
)
def test_check_names(name: str, expected: str) -> None:
    assert check_name("m", name) == expected


def test_checks_get_the_url_ports_and_variables() -> None:
    env = check_env("c0ffee", {80: 32768, 443: 32769}, {"version": "1.0.0", "base-image": "x"})
    assert env["PIPELINE_CHECK_URL"] == "http://127.0.0.1:32768"
    assert env["PIPELINE_CHECK_PORT_443"] == "32769"
    assert env["PIPELINE_CHECK_CONTAINER"] == "c0ffee"
    assert env["PIPELINE_VAR_VERSION"] == "1.0.0"
    assert env["PIPELINE_VAR_BASE_IMAGE"] == "x"


def test_without_port_80_the_first_port_is_the_url() -> None:
    assert check_env("c", {8080: 1, 9090: 2}, {})["PIPELINE_CHECK_URL"] == "http://127.0.0.1:1"
    assert "PIPELINE_CHECK_URL" not in check_env("c", {}, {})


def test_heavy_libraries_are_not_imported_by_the_spec() -> None:
    # `pipeline render` must not pay for docker, boto3 or testinfra (principle 1).
    import subprocess

    code = "import pipeline.stages.bake, pipeline.engines.packer, pipeline.doctor, sys; " + (
        "print(sorted(m for m in ('docker', 'boto3', 'testinfra', 'botocore') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_aws_bake_without_a_docker_source_needs_no_docker_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its key must be computable where no Docker engine answers (a CI agent with only AWS access)."""
    from pipeline import Bake, Pipeline
    from pipeline.executors.base import PlanContext
    from pipeline.ledger import Ledger

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker-here.sock")
    (tmp_path / "web.pkr.hcl").write_text("")
    with Pipeline("ami-only") as p:
        bake = Bake(name="bake", template="web.pkr.hcl", sources={"aws": "amazon-ebs.web"})
    ctx = PlanContext(p.spec, bake, tmp_path, "aws", {}, Ledger(tmp_path))
    observed = executor_for(bake).inputs(ctx)
    assert observed["base_image"] == "none"
