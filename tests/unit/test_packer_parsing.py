"""Parsing Packer's machine-readable output, `packer inspect`, versions and the manifest file.

The sample lines are real Packer 1.6.6 output (a docker bake and an amazon-ebs bake against moto).
"""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

from pipeline.engines.packer import (
    BuildProgress,
    Packer,
    Record,
    parse_inspect,
    parse_line,
    parse_version,
    read_manifest,
    split_ami_artifact,
    step_text,
    unescape,
)
from pipeline.errors import CommandFailedError, PipelineError, TemplateError

DOCKER_BUILD = r"""1795474655,,ui,say,==> docker.web: Creating a temporary directory for sharing data...
1795474655,,ui,say,==> docker.web: Starting docker container...
1795474655,,ui,message,    docker.web: Run command: docker run -v /root/.packer.d/tmp1950485863:/packer-files -d -i -t --entrypoint=/bin/sh -- pipeline-base:bookworm
1795474656,,ui,message,    docker.web: Container ID: 3bf00026492c7b1bca202a03bb4a22d3d8c6e4f21960efec519074b00429277f
1795474656,,ui,say,==> docker.web: Provisioning with shell script: ./web/provision.sh
1795474658,,ui,error,==> docker.web: debconf: delaying package configuration%!(PACKER_COMMA) since apt-utils is not installed
1795474661,,ui,say,==> docker.web: Committing the container
1795474663,,ui,say,Build 'docker.web' finished after 7 seconds 211 milliseconds.
1795474663,,ui,say,\n==> Builds finished. The artifacts of successful builds are:
1795474663,docker.web,artifact-count,2
1795474663,docker.web,artifact,0,builder-id,packer.post-processor.docker-import
1795474663,docker.web,artifact,0,id,sha256:bfc099246fcbecbe17655f86e8aa80120dc16a448c38571e81328ab06c9a000d
1795474663,docker.web,artifact,0,string,Imported Docker image: sha256:bfc099246fcbecbe17655f86e8aa80120dc16a448c38571e81328ab06c9a000d
1795474663,docker.web,artifact,0,files-count,0
1795474663,docker.web,artifact,0,end
1795474663,,ui,say,--> docker.web: Imported Docker image: sha256:bfc099246fcbecbe17655f86e8aa80120dc16a448c38571e81328ab06c9a000d
1795474663,docker.web,artifact,1,builder-id,packer.post-processor.docker-import
1795474663,docker.web,artifact,1,id,sha256:bfc099246fcbecbe17655f86e8aa80120dc16a448c38571e81328ab06c9a000d
1795474663,docker.web,artifact,1,end
"""

FAILED_BUILD = r"""1795474997,,ui,say,==> amazon-ebs.web: Provisioning step had errors: Running the cleanup provisioner%!(PACKER_COMMA) if present...
1795474998,,ui,error,Build 'amazon-ebs.web' errored after 5 minutes 414 milliseconds: Error uploading script: Upload is not implemented when communicator = 'none'
1795474998,,error-count,1
1795474998,,ui,error,\n==> Some builds didn't complete successfully and had errors:
1795474998,amazon-ebs.web,error,Error uploading script: Upload is not implemented when communicator = 'none'
1795474998,,ui,say,\n==> Builds finished but no artifacts were created.
"""

AMI_ARTIFACT = r"""1795475005,amazon-ebs.web,artifact-count,2
1795475005,amazon-ebs.web,artifact,0,builder-id,mitchellh.amazonebs
1795475005,amazon-ebs.web,artifact,0,id,us-east-1:ami-b4be55672784fe615
1795475005,amazon-ebs.web,artifact,0,string,AMIs were created:\nus-east-1: ami-b4be55672784fe615\n
"""

INSPECT = """Packer Inspect: HCL2 mode

> input-variables:

var.aws_endpoint: ""
var.base_image: "pipeline-base:bookworm"
var.pull_base: "true"
var.version: "<unknown>"

> local-variables:

local.emulated_aws: "false"

> builds:

  > <unnamed build 0>:

    sources:

      docker.web

      amazon-ebs.web

    provisioners:

      shell

    post-processors:

      0:
        manifest

"""


# --- records -------------------------------------------------------------------------------------


def test_unescape_restores_commas_and_newlines() -> None:
    assert unescape("a%!(PACKER_COMMA) b\\nc") == "a, b\nc"


def test_parse_line_splits_fields_and_unescapes_data() -> None:
    record = parse_line("1795474658,,ui,error,==> docker.web: a%!(PACKER_COMMA) b")
    assert record == Record(1795474658, "", "ui", ("error", "==> docker.web: a, b"))


def test_parse_line_keeps_artifact_fields_apart() -> None:
    record = parse_line("1795474663,docker.web,artifact,0,id,sha256:abc")
    assert record == Record(1795474663, "docker.web", "artifact", ("0", "id", "sha256:abc"))


@pytest.mark.parametrize("line", ["", "plain text from a plugin", "abc,def,ghi", "12"])
def test_non_machine_readable_lines_are_not_records(line: str) -> None:
    assert parse_line(line) is None


def test_a_record_without_data_has_an_empty_tuple() -> None:
    assert parse_line("1795474998,,error-count") == Record(1795474998, "", "error-count", ())


# --- following a build ---------------------------------------------------------------------------


def _feed(text: str) -> tuple[BuildProgress, list[str], list[str]]:
    steps: list[str] = []
    lines: list[str] = []
    progress = BuildProgress(on_step=steps.append, on_line=lines.append)
    for line in text.splitlines():
        progress.feed(line)
    return progress, steps, lines


def test_steps_are_the_arrow_messages_without_the_arrow() -> None:
    _, steps, _ = _feed(DOCKER_BUILD)
    assert steps[:3] == [
        "docker.web: Creating a temporary directory for sharing data...",
        "docker.web: Starting docker container...",
        "docker.web: Provisioning with shell script: ./web/provision.sh",
    ]
    assert "Builds finished. The artifacts of successful builds are:" in steps
    # `-->` lines repeat the artifacts: not steps. Indented messages are log lines only.
    assert not any(s.startswith("docker.web: Imported") for s in steps)
    assert not any("Run command" in s for s in steps)


def test_every_message_reaches_the_log_unescaped() -> None:
    _, _, lines = _feed(DOCKER_BUILD)
    assert "==> docker.web: debconf: delaying package configuration, since apt-utils is not installed" in lines
    assert "    docker.web: Container ID: 3bf00026492c7b1bca202a03bb4a22d3d8c6e4f21960efec519074b00429277f" in lines
    assert "==> Builds finished. The artifacts of successful builds are:" in lines  # literal \n split off


def test_artifacts_are_collected_per_target() -> None:
    progress, _, _ = _feed(DOCKER_BUILD)
    image = "sha256:bfc099246fcbecbe17655f86e8aa80120dc16a448c38571e81328ab06c9a000d"
    assert progress.artifact_ids("docker.web") == [image, image]
    assert progress.artifacts["docker.web"][0].builder_id == "packer.post-processor.docker-import"
    assert progress.artifact_ids("amazon-ebs.web") == []


def test_the_build_container_is_remembered_for_cleanup() -> None:
    progress, _, _ = _feed(DOCKER_BUILD)
    assert progress.containers == ["3bf00026492c7b1bca202a03bb4a22d3d8c6e4f21960efec519074b00429277f"]


def test_errors_of_a_failed_build_are_kept() -> None:
    progress, _, _ = _feed(FAILED_BUILD)
    assert progress.errors == ["Error uploading script: Upload is not implemented when communicator = 'none'"]
    assert progress.error_count == 1


def test_multiline_artifact_strings_are_unescaped() -> None:
    progress, _, _ = _feed(AMI_ARTIFACT)
    artifact = progress.artifacts["amazon-ebs.web"][0]
    assert artifact.id == "us-east-1:ami-b4be55672784fe615"
    assert artifact.string == "AMIs were created:\nus-east-1: ami-b4be55672784fe615\n"


def test_stray_lines_are_logged_as_they_are() -> None:
    _, steps, lines = _feed("panic: something odd\n")
    assert lines == ["panic: something odd"]
    assert steps == []


def test_long_steps_are_shortened() -> None:
    text = step_text("==> docker.web: " + "x" * 300)
    assert text is not None
    assert len(text) == 100
    assert text.endswith("...")
    assert step_text("    docker.web: indented output") is None


# --- inspect, version --------------------------------------------------------------------------


def test_inspect_gives_variables_sources_and_required_ones() -> None:
    info = parse_inspect(INSPECT)
    assert info.sources == ("docker.web", "amazon-ebs.web")
    assert set(info.variables) == {"aws_endpoint", "base_image", "pull_base", "version"}
    assert info.required() == ["version"]


def test_inspect_of_a_template_without_builds() -> None:
    info = parse_inspect('Packer Inspect: HCL2 mode\n\n> input-variables:\n\nvar.x: "1"\n')
    assert info.sources == ()
    assert info.required() == []


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("1795475009,,version,1.6.6\n1795475009,,version-prelease,\n1795475009,,ui,say,Packer v1.6.6\n", (1, 6, 6)),
        ("1700000000,,version,1.11.2\n", (1, 11, 2)),
        ("Packer v1.9.4\n\nYour version of Packer is out of date!", (1, 9, 4)),
        ("no version here", None),
    ],
)
def test_version(text: str, version: tuple[int, int, int] | None) -> None:
    assert parse_version(text) == version


# --- the manifest --------------------------------------------------------------------------------


def _manifest(path: Path, builds: list[dict[str, object]], last: str) -> Path:
    path.write_text(json.dumps({"builds": builds, "last_run_uuid": last}))
    return path


def _build(name: str, kind: str, artifact: str, uuid: str) -> dict[str, object]:
    return {
        "name": name,
        "builder_type": kind,
        "build_time": 1,
        "files": None,
        "artifact_id": artifact,
        "packer_run_uuid": uuid,
        "custom_data": None,
    }


def test_the_manifest_entry_of_the_last_run_wins_even_when_it_is_not_last(tmp_path: Path) -> None:
    # The file appends across runs; an older run's entry may follow in odd orders (CMSgov/bfd#70).
    path = _manifest(
        tmp_path / "m.json",
        [
            _build("web", "docker", "sha256:old", "run-1"),
            _build("web", "docker", "sha256:new", "run-2"),
            _build("web", "docker", "sha256:older", "run-0"),
        ],
        "run-2",
    )
    entry = read_manifest(path, "docker.web")
    assert entry.artifact_id == "sha256:new"
    assert entry.packer_run_uuid == "run-2"
    assert entry.source == "docker.web"


def test_the_manifest_entry_is_chosen_by_source(tmp_path: Path) -> None:
    path = _manifest(
        tmp_path / "m.json",
        [_build("web", "docker", "sha256:x", "r"), _build("web", "amazon-ebs", "us-east-1:ami-1", "r")],
        "r",
    )
    assert read_manifest(path, "amazon-ebs.web").artifact_id == "us-east-1:ami-1"
    assert read_manifest(path).artifact_id == "us-east-1:ami-1"


def test_a_missing_manifest_says_how_to_add_one(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="no manifest") as caught:
        read_manifest(tmp_path / "absent.json")
    assert caught.value.hint is not None
    assert 'post-processor "manifest"' in caught.value.hint


def test_a_manifest_without_the_source_in_its_last_run_is_an_error(tmp_path: Path) -> None:
    path = _manifest(tmp_path / "m.json", [_build("web", "docker", "sha256:x", "old")], "new")
    with pytest.raises(PipelineError, match=r"no build for docker\.web"):
        read_manifest(path, "docker.web")


def test_a_corrupt_manifest_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text("{not json")
    with pytest.raises(PipelineError, match="cannot read"):
        read_manifest(path)


@pytest.mark.parametrize(
    ("artifact", "region", "expected"),
    [
        ("us-east-1:ami-0123", None, ("us-east-1", "ami-0123")),
        ("us-east-1:ami-1,eu-west-1:ami-2", "eu-west-1", ("eu-west-1", "ami-2")),
        ("us-east-1:ami-1,eu-west-1:ami-2", "ap-south-1", ("us-east-1", "ami-1")),
    ],
)
def test_ami_artifacts(artifact: str, region: str | None, expected: tuple[str, str]) -> None:
    assert split_ami_artifact(artifact, region) == expected


def test_an_unexpected_ami_artifact_is_an_error() -> None:
    with pytest.raises(PipelineError, match="unexpected amazon-ebs artifact"):
        split_ami_artifact("sha256:abc")


# --- a fake packer binary: version dispatch and error mapping ----------------------------------


def _fake_packer(tmp_path: Path, version: str, *, validate_fails: bool = False, build_fails: bool = False) -> Path:
    """A shell script standing in for packer: records its calls, answers like Packer does."""
    calls = tmp_path / "calls.log"
    script = tmp_path / "packer"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            echo "$*" >> {calls}
            case "$1" in
              version) echo "1700000000,,version,{version}"; echo "1700000000,,ui,say,Packer v{version}" ;;
              init) echo "Installed plugin github.com/hashicorp/docker" ;;
              inspect) printf '%s\\n' '1700000000,,ui,say,> input-variables:\\n\\nvar.version: "<unknown>"\\n'
                       printf '%s\\n' '1700000000,,ui,say,> builds:\\n\\n  > <unnamed build 0>:\\n\\n    sources:\\n\\n      docker.web\\n' ;;
              validate) {"echo 'Error: Unsupported argument'; echo '  on web.pkr.hcl line 3:'; exit 1" if validate_fails else "exit 0"} ;;
              build) {"echo '1700000000,docker.web,error,Script exited with non-zero exit status: 100'; exit 1" if build_fails else "exit 0"} ;;
            esac
            """
        )
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def _template(tmp_path: Path, *, plugins: bool) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    template = folder / "web.pkr.hcl"
    template.write_text('variable "version" { type = string }\n')
    if plugins:
        (folder / "plugins.pkr.hcl").write_text("packer { required_plugins {} }\n")
    return template


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def test_packer_1_6_6_is_never_asked_to_init(tmp_path: Path) -> None:
    packer = Packer(str(_fake_packer(tmp_path, "1.6.6")))
    assert packer.version() == (1, 6, 6)
    assert packer.prepare(_template(tmp_path, plugins=True)) is False
    assert not any(c.startswith("init") for c in _calls(tmp_path))


def test_packer_1_9_runs_init_on_the_plugins_file(tmp_path: Path) -> None:
    packer = Packer(str(_fake_packer(tmp_path, "1.9.4")))
    assert packer.prepare(_template(tmp_path, plugins=True)) is True
    assert "init plugins.pkr.hcl" in _calls(tmp_path)


def test_packer_1_11_without_plugins_file_needs_no_init(tmp_path: Path) -> None:
    packer = Packer(str(_fake_packer(tmp_path, "1.11.2")))
    assert packer.prepare(_template(tmp_path, plugins=False)) is False


def test_inspect_through_the_binary(tmp_path: Path) -> None:
    packer = Packer(str(_fake_packer(tmp_path, "1.6.6")))
    info = packer.inspect(_template(tmp_path, plugins=False))
    assert info.sources == ("docker.web",)
    assert info.required() == ["version"]


def test_a_failed_validate_is_a_template_error_with_the_line(tmp_path: Path) -> None:
    packer = Packer(str(_fake_packer(tmp_path, "1.6.6", validate_fails=True)))
    with pytest.raises(TemplateError, match="line 3") as caught:
        packer.validate(_template(tmp_path, plugins=False), {"version": "1"}, only="docker.web")
    assert caught.value.exit_code == 2
    assert caught.value.hint is not None
    assert "packer validate -only=docker.web -var version=1 web.pkr.hcl" in caught.value.hint


def test_a_failed_build_reports_packers_own_error(tmp_path: Path) -> None:
    packer = Packer(str(_fake_packer(tmp_path, "1.6.6", build_fails=True)))
    with pytest.raises(CommandFailedError) as caught:
        packer.build(_template(tmp_path, plugins=False), only="docker.web", variables={}, progress=BuildProgress())
    assert caught.value.tail == "Script exited with non-zero exit status: 100"
    assert "-only=docker.web" in caught.value.command


def test_checkpoint_is_disabled_for_packer(tmp_path: Path) -> None:
    packer = Packer(str(_fake_packer(tmp_path, "1.6.6")))
    assert packer.env["CHECKPOINT_DISABLE"] == "1"


def test_no_packer_is_a_tool_missing_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.errors import ToolMissingError

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("PIPELINE_PACKER", raising=False)
    with pytest.raises(ToolMissingError, match="packer is not installed") as caught:
        Packer()
    assert caught.value.hint is not None
    assert "apt-get install -y packer" in caught.value.hint
    assert os.environ["PATH"] == str(tmp_path)
