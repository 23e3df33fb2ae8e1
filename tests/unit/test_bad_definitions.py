"""A catalogue of bad definitions: each exits 2 with a message that names the problem and the
user's file:line (the line marked `# <-` in the definition), and no traceback."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.unit.cli_inprocess import run_cli

HEAD = """\
from pipeline import *
"""
ENVS = 'environments=[Environment(name="test", ephemeral=True), Environment(name="production", template="web.yaml")]'
FILES = {"web.yaml": "Resources: {}\n", "images/web.pkr.hcl": "# packer\n", "serverspec/test_x.py": ""}

CASES: dict[str, tuple[str, str]] = {
    "duplicate stage names": (
        """
        with Pipeline("p") as p:
            CommitTest(name="unit", commands=["true"])
            CommitTest(name="unit", commands=["true"])  # <-
        """,
        "stage name 'unit' is used more than once",
    ),
    "unknown needs with a suggestion": (
        """
        with Pipeline("p") as p:
            CommitTest(name="unit", commands=["true"])
            Shell(name="deploy", commands=["true"], needs=["unti"])  # <-
        """,
        "needs unknown stage 'unti' (did you mean 'unit'?)",
    ),
    "a stage needing itself": (
        """
        with Pipeline("p") as p:
            Shell(name="loop", commands=["true"], needs=["loop"])  # <-
        """,
        "a stage cannot need itself",
    ),
    "a cycle, in the direction of >>, at the line that closes it": (
        """
        with Pipeline("p") as p:
            a = Shell(name="a", commands=["true"], needs=["c"])
            b = Shell(name="b", commands=["true"], needs=["a"])
            c = Shell(name="c", commands=["true"], needs=["b"])  # <-
        """,
        "cycle: a >> b >> c >> a",
    ),
    "a cycle written with >>": (
        """
        with Pipeline("p") as p:
            a = Shell(name="a", commands=["true"])
            b = Shell(name="b", commands=["true"])
            c = Shell(name="c", commands=["true"])
            a >> b >> c
            c >> a  # <-
        """,
        "cycle: a >> b >> c >> a",
    ),
    "a misspelled common field": (
        """
        with Pipeline("p") as p:
            Shell(name="deploy", commands=["true"], timeout=5)  # <-
        """,
        "unknown field 'timeout' (did you mean 'timeout_minutes'?)",
    ),
    "a misspelled strategy": (
        """
        with Pipeline("p", environments=[Environment(name="production", template="web.yaml")]) as p:
            bake = Bake(name="bake", template="images/web.pkr.hcl")
            Promote(name="promote", image=bake, strategy="canery")  # <-
        """,
        "unknown strategy 'canery' (did you mean 'canary'?)",
    ),
    "commands as one string": (
        """
        with Pipeline("p") as p:
            CommitTest(name="unit", commands="pytest -q")  # <-
        """,
        "commands must be a list of strings, not a single string (write ['pytest -q'])",
    ),
    "environments that are not Environment objects": (
        """
        with Pipeline("p", environments=["production"]) as p:  # <-
            CommitTest(name="unit", commands=["true"])
        """,
        "environments must be a list of Environment objects (item [0] is the string 'production')",
    ),
    "one string among the Environment objects": (
        """
        with Pipeline("p", environments=[Environment(name="test"), "staging"]) as p:  # <-
            CommitTest(name="unit", commands=["true"])
        """,
        "environments must be a list of Environment objects (item [1] is the string 'staging')",
    ),
    "an empty pipeline": (
        """
        with Pipeline("p") as p:  # <-
            pass
        """,
        "the pipeline has no stages: add a stage",
    ),
    "a definition that calls sys.exit": (
        """
        import sys
        with Pipeline("p") as p:
            CommitTest(name="unit", commands=["true"])
        sys.exit(3)  # <-
        """,
        "the definition called sys.exit(3)",
    ),
    "a bad stage name": (
        """
        with Pipeline("p") as p:
            CommitTest(name="Commit Test", commands=["true"])  # <-
        """,
        "'Commit Test' is not a valid name",
    ),
    "a bad pipeline name": (
        """
        with Pipeline("My_Pipeline") as p:  # <-
            CommitTest(name="unit", commands=["true"])
        """,
        "'My_Pipeline' is not a valid name",
    ),
    "approval on a commit test": (
        """
        with Pipeline("p") as p:
            CommitTest(name="unit", commands=["true"], approval=Approval())  # <-
        """,
        "a commit-test stage cannot have an approval gate",
    ),
    "approval on a bake": (
        """
        with Pipeline("p") as p:
            Bake(name="bake", template="images/web.pkr.hcl", approval=Approval())  # <-
        """,
        "a bake stage cannot have an approval gate",
    ),
    "unknown environment": (
        f"""
        with Pipeline("p", {ENVS}) as p:
            bake = Bake(name="bake", template="images/web.pkr.hcl")
            Promote(name="promote", environment="prod", image=bake)  # <-
        """,
        "deploys to unknown environment 'prod' (did you mean 'production'?)",
    ),
    "a test stack in a non-ephemeral environment": (
        f"""
        with Pipeline("p", {ENVS}) as p:
            bake = Bake(name="bake", template="images/web.pkr.hcl")
            ts = TestStack(name="ts", environment="production", image=bake)  # <-
            Teardown(name="teardown", stack=ts)
        """,
        "environment 'production' is not ephemeral",
    ),
    "a test stack nobody tears down": (
        f"""
        with Pipeline("p", {ENVS}) as p:
            bake = Bake(name="bake", template="images/web.pkr.hcl")
            TestStack(name="ts", environment="test", image=bake)  # <-
        """,
        "the stack it creates is never deleted: add Teardown",
    ),
    "a teardown that can run while the stack is in use": (
        f"""
        with Pipeline("p", {ENVS}) as p:
            bake = Bake(name="bake", template="images/web.pkr.hcl")
            ts = TestStack(name="ts", environment="test", image=bake)
            UpdateStack(name="update", stack=ts, image=bake)
            Teardown(name="teardown", stack=ts)  # <-
        """,
        "could delete the stack while 'update' still uses it",
    ),
    "a reference to the wrong kind of stage": (
        f"""
        with Pipeline("p", {ENVS}) as p:
            unit = CommitTest(name="unit", commands=["true"])
            Promote(name="promote", image=unit)  # <-
        """,
        "must name a stage of kind bake, but 'unit' is a commit-test",
    ),
    "a reference to an unknown stage": (
        f"""
        with Pipeline("p", {ENVS}) as p:
            CommitTest(name="unit", commands=["true"])
            Promote(name="promote", image="bkae")  # <-
        """,
        "refers to unknown stage 'bkae'",
    ),
    "a missing packer template": (
        """
        with Pipeline("p") as p:
            Bake(name="bake", template="images/missing.pkr.hcl")  # <-
        """,
        "file 'images/missing.pkr.hcl' does not exist",
    ),
    "a missing environment template": (
        """
        with Pipeline("p", environments=[Environment(name="production", template="nope.yaml")]) as p:  # <-
            Shell(name="deploy", commands=["true"], environment="production")
        """,
        "template 'nope.yaml' does not exist",
    ),
    "a misspelled field": (
        """
        with Pipeline("p") as p:
            CommitTest(name="unit", comands=["true"])  # <-
        """,
        "comands: unknown field",
    ),
    "a missing required field": (
        """
        with Pipeline("p") as p:
            CommitTest(name="unit")  # <-
        """,
        "CommitTest(name='unit').commands: Field required",
    ),
    "an empty command list": (
        """
        with Pipeline("p") as p:
            CommitTest(name="unit", commands=[])  # <-
        """,
        "commands: Tuple should have at least 1 item",
    ),
    "a bad secret name": (
        """
        with Pipeline("p") as p:
            Shell(name="deploy", commands=["true"], secrets=["aws-key"])  # <-
        """,
        "'aws-key' is not a valid environment variable name",
    ),
    "a secret value where a TeamCity token reference belongs": (
        """
        with Pipeline("p") as p:
            Shell(name="deploy", commands=["true"], secrets=[Secret(name="TOKEN", teamcity="hunter2")])  # <-
        """,
        "never the secret value itself",
    ),
    "a reserved environment variable": (
        """
        with Pipeline("p") as p:
            Shell(name="deploy", commands=["true"], env={"PIPELINE_RUN_ID": "x"})  # <-
        """,
        "names starting with PIPELINE_ are reserved",
    ),
    "a value both secret and plain": (
        """
        with Pipeline("p") as p:
            Shell(name="deploy", commands=["true"], env={"TOKEN": "x"}, secrets=["TOKEN"])  # <-
        """,
        "'TOKEN' is both a secret and a plain env value",
    ),
    "promote to an ephemeral environment": (
        f"""
        with Pipeline("p", {ENVS}) as p:
            bake = Bake(name="bake", template="images/web.pkr.hcl")
            Promote(name="promote", environment="test", image=bake)  # <-
        """,
        "cannot promote to ephemeral environment 'test'",
    ),
    "a zero timeout": (
        """
        with Pipeline("p") as p:
            CommitTest(name="unit", commands=["true"], timeout_minutes=0)  # <-
        """,
        "timeout_minutes: Input should be greater than or equal to 1",
    ),
    "a verify path without a slash": (
        """
        with Pipeline("p") as p:
            v = Verify(path="health")  # <-
        """,
        "'health' must start with '/'",
    ),
    "a packer template that is not HCL2": (
        """
        with Pipeline("p") as p:
            Bake(name="bake", template="images/web.json")  # <-
        """,
        "must be a Packer HCL2 template ending in .pkr.hcl",
    ),
    "a path escaping the repository": (
        """
        with Pipeline("p") as p:
            Bake(name="bake", template="../elsewhere/web.pkr.hcl")  # <-
        """,
        "must be a relative path inside the repository",
    ),
    "an error raised by the user's own code": (
        """
        with Pipeline("p") as p:
            CommitTest(name="unit", commands=[COMMANDS])  # <-
        """,
        "NameError: name 'COMMANDS' is not defined",
    ),
    "a syntax error": (
        """
        with Pipeline("p") as p:
            CommitTest(name="unit", commands=["true"]  # <-
        """,
        "syntax error",
    ),
    "`>>` outside a pipeline block": (
        """
        a = CommitTest(name="a", commands=["true"])
        b = CommitTest(name="b", commands=["true"])
        a >> b  # <-
        """,
        "works inside `with Pipeline(...):`",
    ),
    "a FlagRollout of a flag the pipeline does not declare": (
        f"""
        with Pipeline("p", flags=[Flag(name="new-feature", default=False)], {ENVS}) as p:
            FlagRollout(name="release", environment="production", flag="new-featur")  # <-
        """,
        "(release).flag['new-featur']: unknown flag 'new-featur' (did you mean 'new-feature'?); "
        "declared flags: new-feature",
    ),
    "a FlagRollout in a pipeline that declares no flags": (
        f"""
        with Pipeline("p", {ENVS}) as p:
            FlagRollout(name="release", environment="production", flag="new-feature")  # <-
        """,
        "(release).flag['new-feature']: unknown flag 'new-feature'; "
        "declare it in Pipeline(flags=[Flag(name='new-feature', default=...)])",
    ),
    "a FlagRollout value of the wrong type": (
        f"""
        with Pipeline("p", flags=[Flag(name="greeting", default="hi")], {ENVS}) as p:
            FlagRollout(name="release", environment="production", flag="greeting", value=True)  # <-
        """,
        "(release).value['greeting']: flag 'greeting' is a string (its default is 'hi'); True is a boolean",
    ),
    "an ephemeral environment with an approval": (
        """
        with Pipeline("p", environments=[Environment(name="test", ephemeral=True, approval=Approval())]) as p:  # <-
            CommitTest(name="unit", commands=["true"])
        """,
        "an ephemeral environment cannot have an approval gate",
    ),
}


def _write(tmp_path: Path, body: str) -> tuple[Path, int]:
    text = HEAD + textwrap.dedent(body).lstrip("\n")
    line = next((i for i, t in enumerate(text.splitlines(), start=1) if "# <-" in t), 0)
    (tmp_path / "pipelinefile.py").write_text(text)
    for rel, content in FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(content)
    return tmp_path, line


def test_the_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_definition_exits_2_naming_the_problem_and_the_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body, message = CASES[case]
    root, line = _write(tmp_path, body)
    result = run_cli(["validate"], root, capsys)
    assert result.code == 2, result.err
    flat = " ".join(result.err.split())
    assert message in flat, result.err
    assert f"pipelinefile.py:{line}" in flat, result.err
    assert "Traceback" not in result.err


def test_every_problem_is_reported_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = _write(
        tmp_path,
        """
        with Pipeline("p") as p:
            CommitTest(name="unit", commands=["true"], needs=["nope"])
            Shell(name="deploy", commands=["true"], environment="nowhere", needs=["gone"])
        """,
    )
    result = run_cli(["validate"], root, capsys)
    assert result.code == 2
    assert "has 3 problems" in result.err
    assert "'nope'" in result.err
    assert "'gone'" in result.err
    assert "'nowhere'" in result.err


def test_every_field_error_of_every_stage_is_reported_at_once_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = _write(
        tmp_path,
        """
        with Pipeline("p") as p:
            CommitTest(name="unit", command=["pytest"])
            Shell(name="deploy", commands=["true"], timeout=5)
            Shell(name="notify", commands="./notify.sh", approval=Approval(mesage="go?"))
        """,
    )
    result = run_cli(["validate"], root, capsys)
    assert result.code == 2, result.err
    lines = [line.strip() for line in result.err.splitlines() if line.strip().startswith("- ")]
    assert lines == [
        "- CommitTest(name='unit').commands: Field required (pipelinefile.py:3)",
        "- CommitTest(name='unit').command: unknown field 'command' (did you mean 'commands'?) (pipelinefile.py:3)",
        "- Shell(name='deploy').timeout: unknown field 'timeout' (did you mean 'timeout_minutes'?) (pipelinefile.py:4)",
        "- Approval.mesage: unknown field 'mesage' (did you mean 'message'?) (pipelinefile.py:5)",
        "- Shell(name='notify').commands: commands must be a list of strings, not a single string "
        "(write ['./notify.sh']) (pipelinefile.py:5)",
    ], result.err
    assert "has 5 problems" in result.err


def test_a_duplicate_stage_name_is_not_also_a_stage_needing_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = _write(
        tmp_path,
        """
        with Pipeline("p") as p:
            a = CommitTest(name="unit", commands=["true"])
            b = CommitTest(name="unit", commands=["true"])
            a >> b
        """,
    )
    result = run_cli(["validate"], root, capsys)
    assert result.code == 2
    assert "stage name 'unit' is used more than once" in result.err
    assert "cannot need itself" not in result.err


def test_f_naming_a_folder_says_it_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "templates").mkdir()
    result = run_cli(["validate", "-f", "templates"], tmp_path, capsys)
    assert result.code == 2
    assert "'templates' is a folder, not a definition file" in result.err


def test_an_unreadable_definition_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a traceback from Python's import machinery blaming a line of it. (Root reads any file, so
    the refusal a user without permission meets is made by the file system stand-in below.)"""
    root, _ = _write(tmp_path, 'with Pipeline("p") as p:\n    CommitTest(name="unit", commands=["true"])\n')
    real_open = Path.open

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "pipelinefile.py":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    result = run_cli(["validate"], root, capsys)
    assert result.code == 2, result.err
    assert "cannot read pipelinefile.py: permission denied" in result.err
    assert "_bootstrap_external" not in result.err


def test_a_missing_definition_file_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(["validate", "-f", "nope.py"], tmp_path, capsys)
    assert result.code == 2
    assert "definition file 'nope.py' does not exist" in result.err


def test_no_definition_found_suggests_the_conventional_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pipeline.py").write_text("")
    (tmp_path / ".git").mkdir()
    result = run_cli(["validate"], tmp_path, capsys)
    assert result.code == 2
    assert "rename pipeline.py to pipelinefile.py" in " ".join(result.err.split())


def test_a_file_without_a_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pipelinefile.py").write_text("x = 1\n")
    result = run_cli(["validate"], tmp_path, capsys)
    assert result.code == 2
    assert "no pipeline is defined in pipelinefile.py" in result.err


def test_two_pipelines_in_one_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pipelinefile.py").write_text(
        HEAD
        + 'with Pipeline("a"):\n    CommitTest(name="u", commands=["true"])\n'
        + 'with Pipeline("b"):\n    CommitTest(name="u", commands=["true"])\n'
    )
    result = run_cli(["validate"], tmp_path, capsys)
    assert result.code == 2
    assert "defines 2 pipelines (a, b)" in result.err


def test_validate_refuses_a_secret_too_short_to_mask(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = _write(
        tmp_path,
        """
        with Pipeline("p") as p:
            Shell(name="deploy", commands=["true"], secrets=["DEPLOY_TOKEN"])
        """,
    )
    monkeypatch.setenv("DEPLOY_TOKEN", "abc")
    result = run_cli(["validate"], root, capsys)
    assert result.code == 2, result.err
    assert "secret DEPLOY_TOKEN is shorter than 4 characters" in result.err
    monkeypatch.setenv("DEPLOY_TOKEN", "a-real-token")
    assert run_cli(["validate"], root, capsys).code == 0
