"""The Bake stage for real: Docker engine, Packer, testinfra, and a moto server for the aws source.

One reference bake (the repo's own images/web.pkr.hcl and serverspec/) is shared by the tests of
this module; cache behaviour that needs fresh bakes uses a tiny template that builds in seconds.
Everything a test creates carries the label io.pipeline.pipeline=<a name unique to this session>,
and the module removes exactly that at the end (other people's containers and images are safe).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.executors.registry import executor_for
from pipeline.ledger import Ledger, StageResult
from tests.conftest import REPO, cli_env, need

pytestmark = pytest.mark.integration

SESSION = uuid.uuid4().hex[:8]
REFERENCE = f"bake-ref-{SESSION}"
VERSION = "1.0.0"
MOTO_AMI = "ami-1e749f67"  # an Ubuntu AMI moto ships with
"""moto has no Debian AMI for the template's default source_ami_filter: name one of its own."""
ENV = {"PKR_VAR_source_ami": MOTO_AMI}
"""Set for every run of the reference project, so the aws bake reuses the local bake's docker image."""

TINY_TEMPLATE = """\
variable "base_image" {
  type = string
}
variable "pull_base" {
  type    = bool
  default = true
}
variable "manifest" {
  type    = string
  default = "packer-manifest.json"
}
variable "message" {
  type = string
}
source "docker" "tiny" {
  image   = var.base_image
  pull    = var.pull_base
  commit  = true
  changes = ["ENTRYPOINT [\\"/bin/sleep\\"]", "CMD [\\"infinity\\"]"]
}
build {
  sources = ["source.docker.tiny"]
  provisioner "shell" {
    inline = ["echo '${var.message}' > /message"]
  }
  post-processor "manifest" {
    output = var.manifest
  }
}
"""

TINY_CHECK = """\
import os


def test_message_is_baked_in(host):
    assert host.file("/message").content_string.strip() == os.environ["PIPELINE_VAR_MESSAGE"]
"""


# --- helpers ---------------------------------------------------------------------------------------


@dataclass
class Run:
    proc: subprocess.CompletedProcess[str]
    result: StageResult
    run_dir: Path
    seconds: float

    @property
    def outputs(self) -> dict[str, str]:
        return self.result.outputs

    @property
    def text(self) -> str:
        return self.proc.stdout + self.proc.stderr


def bake(root: Path, *args: str, env: dict[str, str] | None = None) -> Run:
    """`pipeline run local --only bake` in a subprocess; the stage's result from the run manifest."""
    ledger = Ledger(root)
    before = set(ledger.runs())
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "local", "--only", "bake", *args],
        cwd=root,
        env=cli_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    seconds = time.monotonic() - started
    new = sorted(set(ledger.runs()) - before)  # run ids of the same second do not sort by time
    assert len(new) == 1, proc.stdout + proc.stderr
    manifest = ledger.manifest(new[0])
    assert manifest is not None
    return Run(proc, manifest.stages["bake"], ledger.run_dir(new[0]), seconds)


def copy_reference(root: Path) -> None:
    shutil.copytree(REPO / "images", root / "images", ignore=shutil.ignore_patterns("packer-manifest.json"))
    shutil.copytree(REPO / "serverspec", root / "serverspec", ignore=shutil.ignore_patterns("__pycache__"))


def write_definition(root: Path, pipeline: str, bake_args: str) -> None:
    (root / "pipelinefile.py").write_text(
        textwrap.dedent(
            f"""\
            from pipeline import Bake, Pipeline

            with Pipeline({pipeline!r}) as p:
                Bake(name="bake", {bake_args})
            """
        )
    )


def tiny_project(
    root: Path, pipeline: str, *, message: str = "hello", base_image: str = "pipeline-base:bookworm"
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    (root / "images" / "tiny.pkr.hcl").write_text(TINY_TEMPLATE)
    (root / "checks").mkdir(exist_ok=True)
    (root / "checks" / "test_tiny.py").write_text(TINY_CHECK)
    write_definition(
        root,
        pipeline,
        f'template="images/tiny.pkr.hcl", sources={{"local": "docker.tiny"}}, checks="checks", '
        f"variables={{'message': {message!r}}}, base_image={base_image!r}",
    )
    return root


def docker_ids(kind: str, label: str) -> list[str]:
    """Ids of containers (kind='ps -a') or images (kind='images') with a label."""
    command = ["docker", *kind.split(), "-q", "--filter", f"label={label}"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()


def image_exists(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True, check=False).returncode == 0


def container_exists(ref: str) -> bool:
    return subprocess.run(["docker", "container", "inspect", ref], capture_output=True, check=False).returncode == 0


def image_labels(ref: str) -> dict[str, str]:
    out = subprocess.run(
        ["docker", "image", "inspect", ref, "--format", "{{json .Config.Labels}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(json.loads(out) or {})


def remove_everything_of(pipeline: str) -> None:
    label = f"io.pipeline.pipeline={pipeline}"
    containers = docker_ids("ps -a", label)
    if containers:
        subprocess.run(["docker", "rm", "-f", *containers], capture_output=True, check=False)
    images = docker_ids("images", label)
    if images:
        subprocess.run(["docker", "rmi", "-f", *images], capture_output=True, check=False)


def packer_artifact(run: Run, source: str = "docker.web") -> str:
    """The image Packer built in a run, from the manifest file the bake kept in its stage folder."""
    manifest = json.loads((run.run_dir / "stages" / "bake" / f"packer-manifest-{source}.json").read_text())
    current = [b for b in manifest["builds"] if b["packer_run_uuid"] == manifest["last_run_uuid"]]
    return str(current[-1]["artifact_id"])


def packer_containers(run: Run, source: str = "docker.web") -> list[str]:
    log = (run.run_dir / "stages" / "bake" / f"packer-{source}.machine-readable.log").read_text()
    return [line.rsplit("Container ID: ", 1)[1].strip() for line in log.splitlines() if "Container ID: " in line]


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tools(docker_client: object, base_image: str) -> str:
    need(shutil.which("packer") is not None, "packer is not installed (apt-get install -y packer)")
    return base_image


@pytest.fixture(scope="module")
def cleanup() -> Iterator[list[str]]:
    """Pipelines whose containers and images are removed when the module ends."""
    names: list[str] = []
    yield names
    for name in names:
        remove_everything_of(name)


@pytest.fixture(scope="module")
def reference(tools: str, tmp_path_factory: pytest.TempPathFactory, cleanup: list[str]) -> tuple[Path, Run]:
    """The repo's reference image, baked once for the module (cold: nothing labelled with its key)."""
    root = tmp_path_factory.mktemp("reference")
    copy_reference(root)
    write_definition(
        root, REFERENCE, f'template="images/web.pkr.hcl", checks="serverspec", variables={{"version": {VERSION!r}}}'
    )
    cleanup.append(REFERENCE)
    return root, bake(root, env=ENV)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        need(False, "moto[server] is not installed")
        raise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def ec2_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


# --- the reference bake ----------------------------------------------------------------------------


def test_reference_bake_builds_checks_and_records_the_image(reference: tuple[Path, Run]) -> None:
    _, run = reference
    assert run.proc.returncode == 0, run.text
    assert run.result.status == "succeeded"
    image, key = run.outputs["image"], run.outputs["key"]
    assert image == f"{REFERENCE}-bake:{key[:12]}"
    assert image_exists(image)
    labels = image_labels(image)
    assert labels["io.pipeline.bake-key"] == key
    assert labels["io.pipeline.role"] == "bake"
    assert labels["io.pipeline.packer-run-uuid"] == run.outputs["packer_run_uuid"]
    # The run uuid is the manifest's last run (the manifest post-processor appends across runs).
    manifest = json.loads((run.run_dir / "stages" / "bake" / "packer-manifest-docker.web.json").read_text())
    assert manifest["last_run_uuid"] == run.outputs["packer_run_uuid"]
    assert "checks passed" in run.result.message


def test_the_checks_ran_and_their_junit_report_is_kept(reference: tuple[Path, Run]) -> None:
    _, run = reference
    assert run.outputs["junit"] == "stages/bake/checks.xml"
    text = (run.run_dir / run.outputs["junit"]).read_text()
    for check in (
        "test_apache_is_running",
        "test_page_says_hello_world_with_the_version",
        "test_health_endpoint_answers",
    ):
        assert check in text
    assert 'failures="0"' in text
    assert 'errors="0"' in text


def test_no_check_or_build_container_is_left(reference: tuple[Path, Run]) -> None:
    _, run = reference
    assert docker_ids("ps -a", f"io.pipeline.pipeline={REFERENCE}") == []
    for container in packer_containers(run):
        assert not container_exists(container)


def test_the_baked_image_serves_the_page_with_docker_run(reference: tuple[Path, Run]) -> None:
    _, run = reference
    container = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "-p",
            "127.0.0.1::80",
            "--label",
            f"io.pipeline.pipeline={REFERENCE}",
            run.outputs["image"],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        port = subprocess.run(
            ["docker", "port", container, "80/tcp"], capture_output=True, text=True, check=True
        ).stdout.split(":")[-1]
        body = health = ""
        for _ in range(100):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port.strip()}/", timeout=2).read().decode()
                health = urllib.request.urlopen(f"http://127.0.0.1:{port.strip()}/health", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.1)
        assert body.strip() == f"Hello World {VERSION}"
        assert health.strip() == "OK"
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


def test_a_rerun_is_a_cache_hit(reference: tuple[Path, Run]) -> None:
    root, first = reference
    again = bake(root, env=ENV)
    assert again.proc.returncode == 0, again.text
    assert again.result.status == "up-to-date"
    assert again.outputs["image"] == first.outputs["image"]
    assert not (again.run_dir / "stages" / "bake" / "packer-docker.web.machine-readable.log").exists()


def test_without_a_ledger_the_image_is_found_by_its_key(reference: tuple[Path, Run]) -> None:
    # A CI agent has no .pipeline/ of earlier runs: run() itself finds the labelled image.
    root, first = reference
    record = root / ".pipeline" / "stages" / REFERENCE / "local" / "bake.json"
    assert record.is_file()
    record.unlink()
    again = bake(root, env=ENV)
    assert again.proc.returncode == 0, again.text
    assert again.result.status == "succeeded"
    assert "reused" in again.result.message
    assert again.outputs == {k: v for k, v in first.outputs.items() if k != "junit"}
    assert not (again.run_dir / "stages" / "bake" / "packer-docker.web.machine-readable.log").exists()


# --- the aws profile against moto ----------------------------------------------------------------------


def test_the_aws_source_builds_an_ami_on_moto(reference: tuple[Path, Run], moto_endpoint: str) -> None:
    root, local = reference
    run = bake(root, "--profile", "aws", env={**ENV, "AWS_ENDPOINT_URL": moto_endpoint})
    assert run.proc.returncode == 0, run.text
    ami = run.outputs["image"]
    assert ami.startswith("ami-")
    assert run.outputs["region"] == "us-east-1"
    # The provisioning was checked through the docker source of the same template: the local image.
    assert run.outputs["checked_image"] == local.outputs["image"]
    assert "checks emulated" in run.result.message
    assert ami in run.result.message
    # The AMI is real on the server, tagged with its bake key and the Packer run.
    image = ec2_client(moto_endpoint).describe_images(ImageIds=[ami])["Images"][0]
    tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    assert tags["io.pipeline.bake-key"] == run.outputs["key"]
    assert tags["io.pipeline.packer-run-uuid"] == run.outputs["packer_run_uuid"]
    assert tags["Version"] == VERSION

    again = bake(root, "--profile", "aws", env={**ENV, "AWS_ENDPOINT_URL": moto_endpoint})
    assert again.result.status == "up-to-date", again.text
    assert again.outputs["image"] == ami


def test_an_existing_ami_can_stand_in_for_the_build(reference: tuple[Path, Run], moto_endpoint: str) -> None:
    root, _ = reference
    env = {**ENV, "AWS_ENDPOINT_URL": moto_endpoint, "PIPELINE_BAKE_USE_IMAGE": MOTO_AMI}
    run = bake(root, "--profile", "aws", env=env)
    assert run.proc.returncode == 0, run.text
    assert run.outputs["image"] == MOTO_AMI
    assert "used the given AMI" in run.result.message
    assert not (run.run_dir / "stages" / "bake" / "packer-amazon-ebs.web.machine-readable.log").exists()

    missing = bake(root, "--profile", "aws", env={**env, "PIPELINE_BAKE_USE_IMAGE": "ami-00000000"})
    assert missing.proc.returncode == 1
    assert "ami-00000000" in missing.result.message
    assert "does not exist" in missing.result.message


# --- failures ----------------------------------------------------------------------------------------


def test_a_broken_page_fails_naming_the_check_and_leaves_nothing(
    tools: str, tmp_path: Path, cleanup: list[str]
) -> None:
    name = f"bake-broken-{SESSION}"
    cleanup.append(name)
    copy_reference(tmp_path)
    script = tmp_path / "images" / "web" / "provision.sh"
    script.write_text(script.read_text().replace("Hello World %s", "Hello Wrld %s"))
    write_definition(
        tmp_path, name, f'template="images/web.pkr.hcl", checks="serverspec", variables={{"version": {VERSION!r}}}'
    )
    run = bake(tmp_path)
    assert run.proc.returncode == 1, run.text
    assert run.result.status == "failed"
    assert "test_web::test_page_says_hello_world_with_the_version" in run.result.message
    assert "test_web::test_apache_is_running" not in run.result.message  # only the failing ones
    assert "test_web::test_page_says_hello_world_with_the_version" in run.proc.stdout + run.proc.stderr
    # No image (not Packer's, not a tagged one), no container (not the check's, not Packer's).
    assert not image_exists(packer_artifact(run))
    assert docker_ids("images", f"io.pipeline.pipeline={name}") == []
    assert docker_ids("ps -a", f"io.pipeline.pipeline={name}") == []
    for container in packer_containers(run):
        assert not container_exists(container)
    # Nothing recorded: the next run bakes again instead of trusting a failed image.
    assert not (tmp_path / ".pipeline" / "stages" / name / "local" / "bake.json").exists()
    assert 'failures="1"' in (run.run_dir / "stages" / "bake" / "checks.xml").read_text()


def test_a_template_error_exits_2_before_any_build(tools: str, tmp_path: Path, cleanup: list[str]) -> None:
    """Bad input is refused in the runner's preflight: exit 2, the template's line named, and no run
    started at all (no manifest, no Packer log, no container)."""
    name = f"bake-badtpl-{SESSION}"
    cleanup.append(name)
    tiny_project(tmp_path, name)
    template = tmp_path / "images" / "tiny.pkr.hcl"
    template.write_text(template.read_text().replace("commit  = true", "commit  = tru e"))
    line = template.read_text().splitlines().index("  commit  = tru e") + 1
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "local", "--only", "bake"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    flat = " ".join(proc.stderr.split())
    assert f"tiny.pkr.hcl line {line}" in flat
    assert "packer inspect" in flat or "packer validate" in flat
    assert Ledger(tmp_path).runs() == []
    assert docker_ids("ps -a", f"io.pipeline.pipeline={name}") == []


def test_an_unknown_variable_is_a_template_error(tools: str, tmp_path: Path) -> None:
    from pipeline.errors import TemplateError
    from pipeline.executors.base import PlanContext
    from pipeline.loader import load

    tiny_project(tmp_path, f"bake-var-{SESSION}")
    definition = tmp_path / "pipelinefile.py"
    definition.write_text(definition.read_text().replace("'message': 'hello'", "'message': 'hello', 'colour': 'red'"))
    loaded = load(definition)
    stage = loaded.spec.stage("bake")
    ctx = PlanContext(loaded.spec, stage, tmp_path, "local", {}, Ledger(tmp_path))
    with pytest.raises(TemplateError, match="declares no variable colour") as caught:
        executor_for(stage).preflight(ctx)
    assert caught.value.exit_code == 2


# --- cache behaviour on a tiny template ------------------------------------------------------------


def test_deleting_the_image_forces_a_rebake(tools: str, tmp_path: Path, cleanup: list[str]) -> None:
    name = f"bake-tiny-{SESSION}"
    cleanup.append(name)
    root = tiny_project(tmp_path, name)
    first = bake(root)
    assert first.result.status == "succeeded", first.text
    assert bake(root).result.status == "up-to-date"

    subprocess.run(["docker", "rmi", "-f", first.outputs["image"]], capture_output=True, check=True)
    again = bake(root)
    assert again.result.status == "succeeded", again.text
    assert "reused" not in again.result.message
    assert again.outputs["key"] == first.outputs["key"]
    assert again.outputs["packer_run_uuid"] != first.outputs["packer_run_uuid"]
    assert image_exists(again.outputs["image"])


def test_changing_an_input_bakes_again(tools: str, tmp_path: Path, cleanup: list[str]) -> None:
    name = f"bake-tiny2-{SESSION}"
    cleanup.append(name)
    root = tiny_project(tmp_path, name, message="first")
    first = bake(root)
    assert first.result.status == "succeeded", first.text

    tiny_project(tmp_path, name, message="second")  # a variable
    second = bake(root)
    assert second.result.status == "succeeded", second.text
    assert second.outputs["key"] != first.outputs["key"]

    (root / "checks" / "test_more.py").write_text("def test_sleep_exists(host):\n    assert host.exists('sleep')\n")
    third = bake(root)  # the checks are an input too
    assert third.result.status == "succeeded", third.text
    assert third.outputs["key"] not in (first.outputs["key"], second.outputs["key"])
    assert "2/2 checks passed" in third.result.message


def test_a_missing_base_image_is_built_from_debians_mirror(tools: str, tmp_path: Path, cleanup: list[str]) -> None:
    need(shutil.which("debootstrap") is not None, "debootstrap is not installed")
    need(os.geteuid() == 0, "building a base image with debootstrap needs root")
    name = f"bake-base-{SESSION}"
    base = f"pipeline-base-test-{SESSION}:bookworm"
    cleanup.append(name)
    assert not image_exists(base)
    root = tiny_project(tmp_path, name, base_image=base)
    try:
        run = bake(root)
        assert run.proc.returncode == 0, run.text
        assert image_exists(base)
        assert image_labels(base)["io.pipeline.role"] == "base"
        log = (run.run_dir / "stages" / "bake" / "output.log").read_text()
        assert f"building the base image {base}: debootstrap" in log
        assert "I: Base system installed successfully." in log
    finally:
        remove_everything_of(name)
        subprocess.run(["docker", "rmi", "-f", base], capture_output=True, check=False)


def test_an_interrupted_bake_leaves_no_container_and_no_packer(tools: str, tmp_path: Path, cleanup: list[str]) -> None:
    """CI stops a job with SIGTERM (the CLI treats it like Ctrl-C) while Packer provisions."""
    import signal

    name = f"bake-int-{SESSION}"
    cleanup.append(name)
    copy_reference(tmp_path)
    write_definition(
        tmp_path, name, 'template="images/web.pkr.hcl", checks="serverspec", variables={"version": "0.0.1"}'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "local", "--only", "bake"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        seen.append(line)
        if "Provisioning with shell script" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    output = "".join(seen) + rest
    assert proc.returncode == 143, output  # SIGTERM: 128 + 15
    containers = [
        line.rsplit("Container ID: ", 1)[1].strip() for line in output.splitlines() if "Container ID: " in line
    ]
    assert containers, output
    for _ in range(50):  # Packer notices its container is gone and exits
        if subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, check=False).returncode != 0:
            break
        time.sleep(0.2)
    assert subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, check=False).returncode != 0
    for container in containers:
        assert not container_exists(container)
    assert docker_ids("ps -a", f"io.pipeline.pipeline={name}") == []
    assert docker_ids("images", f"io.pipeline.pipeline={name}") == []
