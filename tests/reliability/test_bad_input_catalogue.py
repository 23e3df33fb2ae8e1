"""Bad input, nothing half-applied: a catalogue of ways to get it wrong, each through the real CLI.

Every case starts from the same copy of the reference service, with production running release 1
on this machine's Docker, then breaks one thing (the definition, the Packer template, the
CloudFormation template, the tools, the Docker engine, the AWS endpoint or credentials, a name
the stack needs, the git tree, the arguments, the ledger, the state folder) and runs a command.
Each case requires:

- exit 1 (a stage or a tool failed) or 2 (bad input), as the case says;
- a message that names the thing (file and line, field, resource, tool, endpoint, path) and a
  fix (`hint: ...`), and no traceback;
- nothing changed: the pipeline's containers, networks and images, Packer containers, git HEAD
  and working tree, and the ledger's durable state (stage records, release history, locks, bake
  journals) are as before. A case that fails before any stage starts leaves `.pipeline/` exactly
  as it was; one where a stage fails (`recorded`) may add that run's own log and manifest.

The full-disk cases use the kernel, not chmod (we run as root, so permissions would not stop a
write): a read-only bind mount of `.pipeline` (EROFS) and a tiny tmpfs filled up (ENOSPC). Where
mounting is not permitted, they fall back to a file where the ledger needs a folder (ENOTDIR)
and say so in the table. The definition-error cases here are a few representative ones: 33 more
are in tests/unit/test_bad_definitions.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.reliability.conftest import ProjectMaker
from tests.reliability.harness import (
    IMAGE_NAME,
    V1,
    Project,
    env_without,
    explain,
    inventory,
    packer_containers,
    report,
)

pytestmark = pytest.mark.e2e

TABLE = "bad input: a clear error and nothing half-applied"

Setup = Callable[[Project, Path], contextlib.AbstractContextManager[dict[str, str]]]


@dataclass(frozen=True)
class Case:
    ident: str
    group: str
    title: str
    args: tuple[str, ...]
    exit: int
    says: tuple[str, ...]
    """Regular expressions the output must match (whitespace-normalized): the thing and the fix."""
    setup: Setup | None = None
    recorded: bool = False
    """A stage ran and failed: the run's own records (runs/, events.jsonl) may be added."""
    hint: bool = True
    """The output has a `hint:` line (typer's own usage errors have their own form)."""
    fresh: bool = False
    """Needs a project of its own (no production yet) instead of the shared one."""
    env: dict[str, str] = field(default_factory=dict)


RUN = ("run", "local", "--yes")
RUN_AWS = ("run", "local", "--yes", "--profile", "aws", "--only", "bake")
RUN_PROMOTE = ("run", "local", "--yes", "--profile", "aws", "--only", "promote")


# ------------------------------------------------------------------------------------------- setups


def edit(rel: str, old: str, new: str) -> Setup:
    """Change one file of the project (restored from git after the case)."""

    @contextlib.contextmanager
    def apply(project: Project, tmp: Path) -> Iterator[dict[str, str]]:
        path = project.root / rel
        text = path.read_text()
        assert old in text, f"{old!r} not in {rel}"
        path.write_text(text.replace(old, new, 1))
        yield {}

    return apply


def write(rel: str, text: str) -> Setup:
    @contextlib.contextmanager
    def apply(project: Project, tmp: Path) -> Iterator[dict[str, str]]:
        path = project.root / rel
        backup = path.read_bytes() if path.exists() else None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        try:
            yield {}
        finally:
            if backup is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(backup)

    return apply


def ledger_file(rel: str, text: str) -> Setup:
    """Overwrite a ledger file (under `.pipeline/`, relative; `{name}` is the pipeline)."""

    @contextlib.contextmanager
    def apply(project: Project, tmp: Path) -> Iterator[dict[str, str]]:
        with write(".pipeline/" + rel.format(name=project.name), text)(project, tmp) as env:
            yield env

    return apply


def combined(*setups: Setup) -> Setup:
    @contextlib.contextmanager
    def apply(project: Project, tmp: Path) -> Iterator[dict[str, str]]:
        env: dict[str, str] = {}
        with contextlib.ExitStack() as stack:
            for setup in setups:
                env |= stack.enter_context(setup(project, tmp))
            yield env

    return apply


def environ(**values: str) -> Setup:
    @contextlib.contextmanager
    def apply(project: Project, tmp: Path) -> Iterator[dict[str, str]]:
        yield {k: v.format(tmp=tmp) for k, v in values.items()}

    return apply


def without_tool(tool: str) -> Setup:
    @contextlib.contextmanager
    def apply(project: Project, tmp: Path) -> Iterator[dict[str, str]]:
        yield {"PATH": env_without(tool, tmp)}

    return apply


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _unreachable_aws(project: Project, tmp: Path) -> Iterator[dict[str, str]]:
    yield {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}


def aws_answering(code: str, message: str, status: int = 400) -> Setup:
    """An endpoint on 127.0.0.1 that answers every EC2 call with an AWS error, e.g. the
    `RequestExpired` AWS gives for an expired session token (EC2's XML error format)."""
    body = (
        f"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>{code}</Code>"
        f"<Message>{message}</Message></Error></Errors><RequestID>reliability</RequestID></Response>"
    ).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    @contextlib.contextmanager
    def apply(project: Project, tmp: Path) -> Iterator[dict[str, str]]:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield {
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_address[1]}",
                "AWS_ACCESS_KEY_ID": "AKIAEXPIREDEXAMPLE",
                "AWS_SECRET_ACCESS_KEY": "expired-secret-example",
                "AWS_SESSION_TOKEN": "expired-session-token-example",
            }
        finally:
            server.shutdown()
            server.server_close()

    return apply


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


_MOUNT_OK: list[bool] = []


def can_mount(tmp: Path) -> bool:
    """Whether this machine lets us mount (root with CAP_SYS_ADMIN): checked once."""
    if not _MOUNT_OK:
        probe = tmp / "mount-probe"
        probe.mkdir(exist_ok=True)
        ok = _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe))
        if ok:
            subprocess.run(["umount", str(probe)], check=True)
        _MOUNT_OK.append(ok)
    return _MOUNT_OK[0]


@contextlib.contextmanager
def _file_where_folder_expected(project: Project) -> Iterator[dict[str, str]]:
    locks = project.root / ".pipeline" / "locks"
    moved = locks.with_name("locks.moved")
    locks.rename(moved)
    locks.write_text("a file where the ledger needs its locks folder\n")
    try:
        yield {}
    finally:
        locks.unlink()
        moved.rename(locks)


@contextlib.contextmanager
def _read_only_state(project: Project, tmp: Path) -> Iterator[dict[str, str]]:
    state = str(project.root / ".pipeline")
    if not can_mount(tmp):
        with _file_where_folder_expected(project) as env:
            yield env
        return
    assert _mount("--bind", state, state)
    try:
        assert _mount("-o", "remount,ro,bind", state)
        yield {}
    finally:
        subprocess.run(["umount", state], check=True)


@contextlib.contextmanager
def _full_disk(project: Project, tmp: Path) -> Iterator[dict[str, str]]:
    state = project.root / ".pipeline"
    if not can_mount(tmp):
        with _file_where_folder_expected(project) as env:
            yield env
        return
    saved = tmp / "state-saved"
    shutil.copytree(state, saved, symlinks=True)
    size = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file()) + (4 << 20)
    assert _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(state))
    try:
        shutil.copytree(saved, state, symlinks=True, dirs_exist_ok=True)
        with contextlib.suppress(OSError), (state / "filler").open("wb") as fh:
            while True:
                fh.write(b"\0" * (1 << 16))
        # Take the lock files too: a full disk refuses even the few bytes of a lock holder.
        yield {}
    finally:
        subprocess.run(["umount", str(state)], check=True)


@contextlib.contextmanager
def _locks_is_a_file(project: Project, tmp: Path) -> Iterator[dict[str, str]]:
    with _file_where_folder_expected(project) as env:
        yield env


@contextlib.contextmanager
def _foreign_container(project: Project, tmp: Path) -> Iterator[dict[str, str]]:
    """A container outside the pipeline holding the name production's balancer will need."""
    import docker

    client = docker.from_env()
    container = client.containers.run(
        "pipeline-base:bookworm", ["/bin/sleep", "600"], name=f"{project.production}-lb", detach=True
    )
    try:
        yield {}
    finally:
        container.remove(force=True)


@contextlib.contextmanager
def _dirty_tree(project: Project, tmp: Path) -> Iterator[dict[str, str]]:
    path = project.root / "images" / "web" / "cleanup.sh"
    path.write_text(path.read_text() + "# a change nobody committed\n")
    yield {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}


@contextlib.contextmanager
def _bad_manifest(project: Project, tmp: Path) -> Iterator[dict[str, str]]:
    (tmp / "bad.json").write_text("this is not json\n")
    yield {}


@contextlib.contextmanager
def _foreign_manifest(project: Project, tmp: Path) -> Iterator[dict[str, str]]:
    manifest = {"schema": 1, "pipeline": "another-pipeline", "run_id": "x", "profile": "local", "stages": {}}
    (tmp / "other.json").write_text(json.dumps(manifest))
    yield {}


# ------------------------------------------------------------------------------------------- the cases

PIPELINEFILE = "pipelinefile.py"
PACKER = "images/web.pkr.hcl"
CFN = "templates/web.yaml"

CASES = [
    # --- the definition (more in tests/unit/test_bad_definitions.py)
    Case("d01", "definition", "syntax error", RUN, 2, (r"pipelinefile\.py:\d+: syntax error", r"hint: fix the syntax"),
         edit(PIPELINEFILE, "with Pipeline(", "with Pipeline((")),
    Case("d02", "definition", "misspelled field", RUN, 2, (r"chekcs", r"pipelinefile\.py:\d+", r"hint:"),
         edit(PIPELINEFILE, 'checks="serverspec",', 'chekcs="serverspec",')),
    Case("d03", "definition", "a cycle", RUN, 2, (r"cycle", r"promote", r"hint:"),
         edit(PIPELINEFILE, "teardown >> promote", "teardown >> promote >> commit_test")),
    Case("d04", "definition", "unknown environment", RUN, 2, (r"'staging'", r"pipelinefile\.py:\d+"),
         edit(PIPELINEFILE, 'environment="test", like=', 'environment="staging", like=')),
    Case("d05", "definition", "missing Packer template file", RUN, 2, (r"images/nope\.pkr\.hcl", r"hint:"),
         edit(PIPELINEFILE, 'template="images/web.pkr.hcl"', 'template="images/nope.pkr.hcl"')),
    Case("d06", "definition", "two stages with one name", RUN, 2, (r"update-stack", r"pipelinefile\.py:\d+"),
         edit(PIPELINEFILE, 'name="rollback"', 'name="update-stack"')),
    Case("d07", "definition", "verify path without /", RUN, 2, (r"'health' must start with '/'",),
         edit(PIPELINEFILE, 'Verify(path="/health"', 'Verify(path="health"')),
    Case("d08", "definition", "-f names no file", ("run", "local", "-f", "nope.py"), 2,
         (r"'nope\.py' does not exist", r"hint: pass the path")),
    Case("d09", "definition", "invalid image name", RUN, 2, (r"'Hello_Web' is not a valid Docker repository name",),
         edit(PIPELINEFILE, f'image_name="{IMAGE_NAME}"', 'image_name="Hello_Web"')),
    # issue 14: every problem at once, in the user's words
    Case("d10", "definition", "three stages, three mistakes: all reported at once", RUN, 2,
         (r"has 3 problems", r"'chekcs' \(did you mean 'checks'\?\)", r"'timeout' \(did you mean 'timeout_minutes'\?\)",
          r"'canery' \(did you mean 'canary'\?\)", r"hint:"),
         combined(edit(PIPELINEFILE, 'checks="serverspec",', 'chekcs="serverspec",'),
                  edit(PIPELINEFILE, 'inputs=("templates", "images"),', 'inputs=("templates", "images"), timeout=5,'),
                  edit(PIPELINEFILE, 'environment="production", image=bake, verify=page)',
                       'environment="production", image=bake, verify=page, strategy="canery")'))),
    Case("d11", "definition", "misspelled field (timeout)", RUN, 2,
         (r"CommitTest\(name='commit-test'\)\.timeout: unknown field 'timeout' \(did you mean 'timeout_minutes'\?\)",
          r"pipelinefile\.py:\d+"),
         edit(PIPELINEFILE, 'inputs=("templates", "images"),', 'inputs=("templates", "images"), timeout=5,')),
    Case("d12", "definition", "misspelled strategy (canery)", RUN, 2,
         (r"unknown strategy 'canery' \(did you mean 'canary'\?\)", r"pipelinefile\.py:\d+"),
         edit(PIPELINEFILE, 'environment="production", image=bake, verify=page)',
              'environment="production", image=bake, verify=page, strategy="canery")')),
    Case("d13", "definition", "commands as one string", RUN, 2,
         (r"commands must be a list of strings, not a single string", r"pipelinefile\.py:\d+"),
         edit(PIPELINEFILE, 'commands=["cfn-lint templates/web.yaml", "packer validate -syntax-only images/web.pkr.hcl"],',
              'commands="cfn-lint templates/web.yaml",')),
    Case("d14", "definition", "an environment given as a string", RUN, 2,
         (r"environments must be a list of Environment objects", r"pipelinefile\.py:\d+"),
         edit(PIPELINEFILE, "environments=[", 'environments=["staging", ')),
    Case("d15", "definition", "a cycle closed by a later >>", RUN, 2,
         (r"cycle: test-stack >> update-stack >> rollback >> teardown >> promote >> test-stack", r"pipelinefile\.py:\d+"),
         edit(PIPELINEFILE, "teardown >> promote\n", "teardown >> promote\n    promote >> test_stack\n")),
    Case("d16", "definition", "two stages with one name, and no stage needing itself", RUN, 2,
         (r"stage name 'update-stack' is used more than once", r"^(?!.*cannot need itself)"),
         edit(PIPELINEFILE, 'name="rollback"', 'name="update-stack"')),
    Case("d17", "definition", "the definition calls sys.exit(3)", RUN, 2,
         (r"pipelinefile\.py:\d+: the definition called sys\.exit\(3\)", r"hint: a definition only declares"),
         edit(PIPELINEFILE, "\nRELEASE = ", "\nimport sys\nsys.exit(3)\nRELEASE = ")),
    Case("d18", "definition", "a pipeline with no stages", RUN, 2, (r"add a stage",),
         write(PIPELINEFILE, 'from pipeline import Pipeline\n\nwith Pipeline("empty"):\n    pass\n')),
    Case("d19", "definition", "-f names a folder", ("run", "local", "-f", "templates"), 2,
         (r"'templates' is a folder, not a definition file",)),
    # --- the Packer template
    Case("p01", "packer", "HCL syntax error", RUN, 2, (r"images/web\.pkr\.hcl", r"hint: fix the template"),
         edit(PACKER, 'variable "version" {', 'variable "version" {{')),
    Case("p02", "packer", "unknown builder argument", RUN, 2, (r"pulll", r"web\.pkr\.hcl", r"hint: fix the template"),
         edit(PACKER, "  pull   = var.pull_base", "  pulll  = var.pull_base")),
    Case("p03", "packer", "provisioner script missing", RUN, 2, (r"nope\.sh", r"hint: fix the template"),
         edit(PACKER, '"${path.root}/web/cleanup.sh",', '"${path.root}/web/nope.sh",')),
    Case("p04", "packer", "variable the template does not declare", RUN, 2,
         (r"declares no variable colour", r'hint: declare it in the template: variable "colour"'),
         edit(PIPELINEFILE, 'variables={"version": RELEASE}', 'variables={"version": RELEASE, "colour": "red"}')),
    Case("p05", "packer", "required variable without a value", RUN, 2,
         (r"needs a value for variable version", r"hint: set it in the stage"),
         edit(PIPELINEFILE, 'variables={"version": RELEASE}', "variables={}")),
    Case("p06", "packer", "source the template lacks", RUN, 2, (r"has no source docker\.nothere", r"hint:"),
         edit(PIPELINEFILE, 'checks="serverspec",', 'checks="serverspec", sources={"local": "docker.nothere"},')),
    Case("p07", "packer", "unknown post-processor", RUN, 2, (r"manifestt", r"hint: fix the template"),
         edit(PACKER, 'post-processor "manifest" {', 'post-processor "manifestt" {')),
    Case("p08", "packer", "not HCL at all", RUN, 2, (r"web\.pkr\.hcl", r"hint: fix the template"),
         write(PACKER, '{"builders": [{"type": "docker"}]}\n')),
    # --- the CloudFormation template (the local engine's topology; cfn-lint)
    Case("c01", "cloudformation", "YAML syntax error", RUN, 2, (r"web\.yaml", r"\d+", r"hint:"),
         edit(CFN, "Resources:\n", "Resources: [\n")),
    Case("c02", "cloudformation", "no AutoScaling group", RUN, 2,
         (r"exactly one AWS::AutoScaling::AutoScalingGroup", r"hint:"),
         edit(CFN, "Type: AWS::AutoScaling::AutoScalingGroup", "Type: AWS::AutoScaling::WarmPool")),
    Case("c03", "cloudformation", "DesiredCapacity above MaxSize", RUN, 2, (r"DesiredCapacity \(9\)", r"MaxSize \(4\)"),
         edit(CFN, "  DesiredCapacity:\n    Type: Number\n    Default: 2", "  DesiredCapacity:\n    Type: Number\n    Default: 9")),
    Case("c04", "cloudformation", "!Ref to a parameter that does not exist", RUN, 2, (r"WebPort", r"hint:"),
         edit(CFN, "      Port: 80\n      TargetType", "      Port: !Ref WebPort\n      TargetType")),
    Case("c05", "cloudformation", "health checks disabled", RUN, 2, (r"disables health checks",),
         edit(CFN, "      HealthCheckPath: /health\n", "      HealthCheckPath: /health\n      HealthCheckEnabled: false\n")),
    Case("c06", "cloudformation", "cfn-lint: unknown resource type (commit-test)", RUN, 1,
         (r"commit-test", r"InternetGatewayy", r"hint: reproduce with: cd \S+ && cfn-lint templates/web\.yaml"),
         edit(CFN, "Type: AWS::EC2::InternetGateway\n", "Type: AWS::EC2::InternetGatewayy\n"), recorded=True),
    Case("c07", "cloudformation", "cfn-lint: unknown resource type (validate --profile aws)",
         ("validate", "--profile", "aws"), 2, (r"cfn-lint error", r"InternetGatewayy", r"hint:"),
         edit(CFN, "Type: AWS::EC2::InternetGateway\n", "Type: AWS::EC2::InternetGatewayy\n")),
    # --- tools and services
    Case("t01", "tools", "packer not on PATH", RUN, 1, (r"packer is not installed", r"hint: install Packer"),
         without_tool("packer")),
    Case("t02", "tools", "PIPELINE_PACKER names no binary", RUN, 1,
         (r"PIPELINE_PACKER names '/nonexistent/packer'", r"hint: point PIPELINE_PACKER"),
         environ(PIPELINE_PACKER="/nonexistent/packer")),
    Case("t03", "tools", "Docker engine down (no socket)", RUN, 1,
         (r"needs the Docker engine", r"unix://\S+/nothing\.sock", r"no socket", r"hint: start it", r"DOCKER_HOST"),
         environ(DOCKER_HOST="unix://{tmp}/nothing.sock")),
    Case("t04", "tools", "Docker engine down (port closed)", RUN, 1,
         (r"needs the Docker engine", r"tcp://127\.0\.0\.1:\d+", r"refused", r"hint: start it")),
    # --- AWS
    Case("a01", "aws", "EC2 endpoint unreachable (bake)", RUN_AWS, 1,
         (r"cannot reach the EC2 endpoint http://127\.0\.0\.1:\d+", r"hint: check AWS_ENDPOINT_URL"), _unreachable_aws),
    Case("a02", "aws", "endpoint unreachable (whole chain)", ("run", "local", "--yes", "--profile", "aws"), 1,
         (r"cannot reach the EC2 endpoint http://127\.0\.0\.1:\d+", r"hint:"), _unreachable_aws),
    Case("a03", "aws", "credentials: AWS_PROFILE names no profile", RUN_AWS, 2,
         (r"config profile \(nosuch\) could not be found", r"hint: export AWS_ACCESS_KEY_ID"),
         combined(_unreachable_aws, environ(AWS_PROFILE="nosuch"))),
    Case("a04", "aws", "credentials: expired session token", RUN_AWS, 2,
         (r"refused the AWS credentials: RequestExpired", r"hint: get fresh credentials"),
         aws_answering("RequestExpired", "Request has expired.")),
    Case("a05", "aws", "credentials: not accepted", RUN_AWS, 2,
         (r"refused the AWS credentials: AuthFailure", r"hint: get fresh credentials"),
         aws_answering("AuthFailure", "AWS was not able to validate the provided access credentials", 401)),
    # the same faults met first by promote's CloudFormation check: the same answer as the bake's
    Case("a06", "aws", "credentials: expired session token (--only promote)", RUN_PROMOTE, 2,
         (r"the CloudFormation endpoint http://127\.0\.0\.1:\d+ refused the AWS credentials: RequestExpired",
          r"hint: get fresh credentials"),
         aws_answering("RequestExpired", "Request has expired.")),
    Case("a07", "aws", "endpoint unreachable (--only promote)", RUN_PROMOTE, 1,
         (r"cannot reach the CloudFormation endpoint http://127\.0\.0\.1:\d+", r"hint: check AWS_ENDPOINT_URL"),
         _unreachable_aws),
    Case("g01", "aws", "dirty git tree at promote", RUN_PROMOTE, 2,
         (r"cleanup\.sh", r"(uncommitted|not clean|clean)", r"hint:"), _dirty_tree),
    # --- names and arguments
    Case("n01", "in use", "a foreign container holds production's balancer name", RUN, 1,
         (r"a container named \S+-production-lb already exists", r"nothing was changed", r"hint: remove or rename it"),
         _foreign_container, recorded=True, fresh=True),
    Case("u01", "arguments", "unknown --target", ("render", "--target", "nope"), 2,
         (r"no renderer for target 'nope'", r"hint: available targets: .*github")),
    Case("u02", "arguments", "unknown stage (run stage)", ("run", "stage", "nope"), 2,
         (r"no stage named 'nope'", r"hint: available stages: commit-test")),
    Case("u03", "arguments", "unknown stage (--only)", ("run", "local", "--only", "nope"), 2, (r"no stage named 'nope'", r"hint:")),
    Case("u04", "arguments", "unknown stage (--from)", ("run", "local", "--from", "nope"), 2, (r"no stage named 'nope'", r"hint:")),
    Case("u05", "arguments", "--only with --from", ("run", "local", "--only", "bake", "--from", "bake"), 2,
         (r"--only and --from cannot be combined", r"hint: use one of them")),
    Case("u06", "arguments", "unknown profile", ("run", "local", "--profile", "gcp"), 2,
         (r"--profile", r"'gcp'"), hint=False),
    Case("u07", "arguments", "unknown environment (rollback)", ("rollback", "staging"), 2, (r"no environment named 'staging'", r"hint:")),
    Case("u08", "arguments", "ephemeral environment (rollback)", ("rollback", "test"), 2, (r"ephemeral", r"hint:")),
    Case("u09", "arguments", "a manifest of another pipeline", ("run", "stage", "promote", "--profile", "local", "--manifest", "{tmp}/other.json"), 2,
         (r"belongs to pipeline 'another-pipeline'", r"hint: pass this pipeline's manifest"), _foreign_manifest),
    # --- the ledger
    Case("l01", "ledger", "corrupt stage record", RUN, 2,
         (r"ledger file \S+/bake\.json is corrupt", r"hint: delete \S+/bake\.json"),
         ledger_file("stages/{name}/local/bake.json", '{"key": "abc", "outp')),
    Case("l02", "ledger", "stage record missing fields", RUN, 2, (r"\S+/test-stack\.json is missing fields", r"hint: delete"),
         ledger_file("stages/{name}/local/test-stack.json", "{}\n")),
    Case("l03", "ledger", "corrupt release history", RUN, 2, (r"production\.json", r"hint: delete"),
         ledger_file("environments/{name}/production.json", "[[[\n")),
    Case("l04", "ledger", "corrupt manifest given with --manifest", ("run", "stage", "promote", "--profile", "local", "--manifest", "{tmp}/bad.json"), 2,
         (r"bad\.json is corrupt", r"hint: delete"), _bad_manifest),
    # --- the state folder
    Case("s01", "state", "read-only state folder (read-only bind mount)", RUN, 1,
         (r"cannot write the ledger at \S+", r"the file system is read-only", r"hint: make \S+ writable"),
         _read_only_state),
    Case("s02", "state", "full disk (a tiny tmpfs, filled)", RUN, 1,
         (r"cannot write the ledger at \S+", r"the disk is full", r"hint: make \S+ writable \(or free disk space\)"),
         _full_disk),
    Case("s03", "state", "a file where the ledger needs a folder", RUN, 1,
         (r"cannot write the ledger at \S+locks", r"Not a directory|File exists", r"hint: make \S+ writable"), _locks_is_a_file),
]  # fmt: skip


# ------------------------------------------------------------------------------------------- the test


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def ledger_state(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(durable ledger files, run records) as {relative path: digest}; caches left out."""
    durable: dict[str, str] = {}
    runs: dict[str, str] = {}
    state = root / ".pipeline"
    for path in sorted(state.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(state).as_posix()
        if rel.startswith("cache/") or rel == "filler":
            continue  # what Packer said about a template: a cache, rebuilt at will (or the full disk's filler)
        (runs if rel.startswith("runs/") or rel == "events.jsonl" else durable)[rel] = _digest(path)
    return durable, runs


def world(project: Project, client: Any) -> dict[str, Any]:
    found = inventory(client, project.name)
    return {
        "containers": sorted((c.id, c.status, c.attrs.get("RestartCount")) for c in found.containers),
        "networks": sorted(n.id for n in found.networks),
        "images": sorted(i.id for i in found.images),
        "shared images": sorted(str(i.id) for i in client.images.list(name=IMAGE_NAME)),
        "packer containers": sorted(c.id for c in packer_containers(client, project.root)),
        "git HEAD": project.git("rev-parse", "HEAD").strip(),
        "git status": project.git("status", "--porcelain"),
    }


FALLBACK_SAYS = (r"cannot write the ledger at \S+locks", r"Not a directory|File exists", r"hint: make \S+ writable")
"""What s01/s02 say where mounting is not permitted (they then put a file where a folder goes)."""


def _message(output: str, root: Path, tmp: Path) -> str:
    """The error line (paths shortened) and its hint, for the table."""
    lines = [" ".join(line.strip(" │╭╮╰╯─").split()) for line in output.splitlines()]
    lines = [line for line in lines if line]
    at = next((i for i, line in enumerate(lines) if re.search(r"(^|\] )error:|Invalid value", line)), None)
    error = lines[at] if at is not None else ""
    if error.endswith(":") and at is not None and at + 1 < len(lines):
        error += " " + lines[at + 1]  # the first problem of a definition, or the tool's first line
    hint = next((line for line in lines if re.search(r"(^|\] )hint:", line)), "")
    text = f"{error} / {hint}" if hint else error
    return text.replace(str(root) + "/", "").replace(str(tmp), "<tmp>").replace(str(root), ".")


def _case_id(case: Case) -> str:
    return f"{case.ident}-{case.title.replace(' ', '-')[:40]}"


@pytest.fixture(scope="module")
def production(make: ProjectMaker, baked: dict[str, str], docker_tools: Any) -> Project:
    """The shared project: the reference service with production running release 1."""
    project = make("cat", V1)
    result = project.run("run", "local", "--yes")
    assert result.returncode == 0, explain(result)
    return project


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_is_refused_clearly_and_changes_nothing(
    case: Case, production: Project, make: ProjectMaker, docker_tools: Any, tmp_path: Path
) -> None:
    client = docker_tools
    if case.group == "cloudformation" and "cfn-lint" in case.title:
        need(shutil.which("cfn-lint") is not None, "cfn-lint is not installed")
    project = make(case.ident, V1) if case.fresh else production
    args = tuple(a.format(tmp=tmp_path) for a in case.args)
    extra = dict(case.env)
    if case.ident == "t04":
        extra["DOCKER_HOST"] = f"tcp://127.0.0.1:{closed_port()}"
    try:
        with contextlib.ExitStack() as stack:
            if case.setup is not None:
                extra |= stack.enter_context(case.setup(project, tmp_path))
            before = world(project, client)
            ledger_before = ledger_state(project.root)
            result = project.run(*args, timeout=600, **extra)
            after = world(project, client)
            ledger_after = ledger_state(project.root)
            fallback = case.ident in ("s01", "s02") and not can_mount(tmp_path)
    finally:
        project.git("checkout", "--", ".")
        project.git("clean", "-fdq")

    output = " ".join((result.stdout + "\n" + result.stderr).split())
    says = FALLBACK_SAYS if fallback else case.says
    report(
        TABLE,
        case=f"{case.ident} {case.group}: {case.title}" + (" (fallback: no mount here)" if fallback else ""),
        exit=result.returncode,
        message=_message(result.stderr + "\n" + result.stdout, project.root, tmp_path),
    )
    assert result.returncode == case.exit, explain(result)
    assert "Traceback" not in output, explain(result)
    assert "internal error" not in output, explain(result)
    for pattern in says:
        assert re.search(pattern, output), f"{pattern!r} not in the output\n{explain(result)}"
    if case.hint:
        assert "hint:" in output, explain(result)
    for what in before:
        assert after[what] == before[what], f"{what} changed"
    if case.fresh:
        return  # a first run makes its ledger: what must not change is the world (checked above)
    assert ledger_after[0] == ledger_before[0], "the ledger's durable state changed"
    if not case.recorded:
        assert ledger_after[1] == ledger_before[1], "a run was recorded although nothing should have started"


def test_the_catalogue_is_large_enough() -> None:
    groups = {c.group for c in CASES}
    assert len(CASES) >= 40
    assert {
        "definition",
        "packer",
        "cloudformation",
        "tools",
        "aws",
        "in use",
        "arguments",
        "ledger",
        "state",
    } <= groups
    assert len({c.ident for c in CASES}) == len(CASES)
    assert os.environ.get("PIPELINE_FAULT") is None
