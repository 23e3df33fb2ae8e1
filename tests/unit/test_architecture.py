"""The shape of the house, kept true: no import cycle among the package's modules, rendering loads
no runtime module, and a stage kind is a spec module, an executor module and one registry line (a
test-only plugin kind installed through the `pipeline.stages` entry point proves it)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "pipeline"


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (pipeline/stages is the repo's stages/ folder)."""
    found: dict[str, Path] = {}
    files = [Path(d) / f for d, _, names in os.walk(PACKAGE, followlinks=True) for f in names if f.endswith(".py")]
    for path in sorted(files):  # followlinks: pipeline/stages is a symlink to the repo's stages/
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if "_bundled" not in parts:
            found[name] = path
    return found


def _imports(tree: ast.Module, name: str, is_package: bool, *, every: bool = False) -> set[str]:
    """Names imported when the module is imported: not under TYPE_CHECKING, not inside functions
    (`every`: those too, every import the module's text names)."""
    out: set[str] = set()

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if not every and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                walk(node.orelse)
                continue
            if not every and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            if isinstance(node, ast.Import):
                out.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if is_package else name.split(".")[:-1]
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join([*parts, *([base] if base else [])])
                out.add(base)
                out.update(f"{base}.{alias.name}" for alias in node.names)
            for field in ("body", "orelse", "finalbody"):
                sub = getattr(node, field, None)
                if isinstance(sub, list):
                    walk([s for s in sub if isinstance(s, ast.stmt)])
            for handler in getattr(node, "handlers", []):
                walk(handler.body)

    walk(tree.body)
    return out


def import_graph(*, every: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules it imports at module level (`every`: anywhere, type-only too)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        tree = ast.parse(path.read_text())
        for imported in _imports(tree, name, path.name == "__init__.py", every=every):
            target = imported
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # importing a.b.c runs a/__init__ and a/b/__init__ first: those are edges too
            while target:
                if target != name and not name.startswith(target + "."):
                    deps.add(target)
                target = target.rpartition(".")[0]
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_whole_package() -> None:
    graph = import_graph()
    assert "pipeline.stages.bake" in graph
    assert "pipeline.executors.bake" in graph
    assert "pipeline.stages.bake" in graph["pipeline.executors.bake"]
    assert len(graph) > 60


def test_no_import_cycle_among_the_package_modules() -> None:
    assert cycles(import_graph()) == []


def test_not_even_a_deferred_or_type_only_import_closes_a_cycle() -> None:
    """Imports inside functions and under TYPE_CHECKING too: a stage registering in its `with
    Pipeline()` block, `>>`, an error's did-you-mean go down to pipeline/authoring.py, never up to
    the builder; a stage kind's `check` names `model.Definition`, not `spec.PipelineSpec`."""
    assert cycles(import_graph(every=True)) == []


def test_a_cycle_would_be_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


DECLARATIVE_PACKAGES = ("pipeline.stages", "pipeline.render")
DECLARATIVE_MODULES = (
    "pipeline.model",
    "pipeline.strategy",
    "pipeline.spec",
    "pipeline.kinds",
    "pipeline.builder",
    "pipeline.authoring",
    "pipeline.loader",
    "pipeline.graph",
    "pipeline.errors",
    "pipeline.flags",  # the package's __init__ only: store.py and locate.py are runtime
    "pipeline.flags.spec",
)
"""The declarative layer: stage kinds, model, spec, builder, loader, graph, render, and what they load."""
RUNTIME = ("pipeline.executors", "pipeline.engines", "pipeline.ledger", "pipeline.run", "pipeline.rollback")
"""Packages and modules of the runtime layer (a name covers its submodules)."""


def _within(module: str, names: tuple[str, ...]) -> bool:
    """`module` is one of `names` or inside one of them (pipeline.run covers pipeline.run.plan,
    not a pipeline.runner)."""
    return any(module == name or module.startswith(name + ".") for name in names)


def _declarative(graph: dict[str, set[str]]) -> list[str]:
    return [m for m in graph if _within(m, DECLARATIVE_PACKAGES) or m in DECLARATIVE_MODULES]


def test_the_layer_lists_name_real_modules_once() -> None:
    graph = import_graph()
    for names in (DECLARATIVE_PACKAGES, DECLARATIVE_MODULES, RUNTIME):
        assert len(set(names)) == len(names), f"named twice in {names}"
        assert [n for n in names if n not in graph] == []
    assert [n for n in DECLARATIVE_MODULES if _within(n, RUNTIME)] == []


def test_the_declarative_list_holds_everything_it_loads() -> None:
    """A module the declarative layer imports is declarative too: were it left off the list, the
    check below would not look at what it imports."""
    graph = import_graph()
    declarative = set(_declarative(graph))
    missing = sorted({d for m in declarative for d in graph[m] if d.startswith("pipeline")} - declarative)
    assert missing == [], f"imported by the declarative layer but not on its list: {missing}"


def test_specs_never_import_executors_engines_or_the_runner() -> None:
    """The declarative layer is loadable without any runtime module: layers point one way."""
    graph = import_graph()
    for module in _declarative(graph):
        bad = sorted(d for d in graph[module] if _within(d, RUNTIME))
        assert bad == [], f"{module} imports {bad}"


def test_rendering_loads_no_executor_engine_ledger_or_runner() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from pipeline.loader import load
        from pipeline.render import available, render
        loaded = load(Path(sys.argv[1]))
        files = render(loaded.spec, available())
        assert files
        print(json.dumps(sorted(sys.modules)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "pipelinefile.py")], capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out)
    runtime = (
        "pipeline.executors",
        "pipeline.engines",
        "pipeline.ledger",
        "pipeline.run",
        "pipeline.run.",
        "pipeline.rollback",
        "docker",
        "boto3",
        "botocore",
        "testinfra",
        "git",
    )
    assert [m for m in loaded if m.startswith(runtime) or m == "pipeline.run"] == []
    assert "pipeline.render.jenkins" in loaded


# --- a stage kind from a plugin ------------------------------------------------------------------------

PLUGIN_SPEC = '''
"""A test-only stage kind: writes a greeting file. Spec module."""
from typing import ClassVar, Literal

from pipeline import Stage, StageOutputs


class GreetingOutputs(StageOutputs):
    greeting: str


class Greet(Stage):
    kind: Literal["greet"] = "greet"
    whom: str = "world"

    executor: ClassVar[str] = "greet_kind.executor:GreetExecutor"
    outputs: ClassVar[type[StageOutputs]] = GreetingOutputs
'''

PLUGIN_EXECUTOR = '''
"""The test-only kind's executor module."""
from pipeline.executors.base import Executor, Outputs, StageContext

from greet_kind import Greet


class GreetExecutor(Executor[Greet]):
    def run(self, ctx: StageContext) -> Outputs:
        text = f"hello {self.spec.whom}"
        (ctx.root / "greeting.txt").write_text(text)
        return {"greeting": text}
'''


def install_plugin(site: Path, kind: str = "greet", value: str = "greet_kind:Greet") -> None:
    """An installed distribution as importlib.metadata finds one: a package plus its dist-info with
    the entry point (what `pip install` of the plugin would leave in site-packages)."""
    (site / "greet_kind").mkdir(parents=True, exist_ok=True)
    (site / "greet_kind" / "__init__.py").write_text(PLUGIN_SPEC)
    (site / "greet_kind" / "executor.py").write_text(PLUGIN_EXECUTOR)
    info = site / "greet_kind-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: greet-kind\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[pipeline.stages]\n{kind} = {value}\n")


def plugin_env(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{site}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.update({"CI": "1", "NO_COLOR": "1"})
    return env


def test_a_plugin_stage_kind_runs_through_the_registry(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_plugin(site)
    project = tmp_path / "project"
    project.mkdir()
    (project / "pipelinefile.py").write_text(
        "from pipeline import CommitTest, Pipeline\nfrom greet_kind import Greet\n\n"
        "with Pipeline('plugged') as p:\n"
        "    CommitTest(name='unit', commands=['true']) >> Greet(name='hello', whom='plugins')\n"
    )
    env = plugin_env(site)
    run = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "local"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert (project / "greeting.txt").read_text() == "hello plugins"
    # The spec round-trips through JSON: the kind name finds the plugin's class by its entry point.
    code = (
        "import sys; from pathlib import Path; from pipeline.loader import load; from pipeline import PipelineSpec; "
        "spec = load(Path('pipelinefile.py')).spec; "
        "sys.modules.pop('greet_kind'); "
        "again = PipelineSpec.model_validate_json(spec.model_dump_json()); "
        "print(type(again.stage('hello')).__module__, again.model_dump_json() == spec.model_dump_json())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["greet_kind", "True"]


def test_a_plugin_may_not_take_a_built_in_kind(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_plugin(site, kind="bake")
    code = (
        "from pipeline import PipelineSpec\n"
        "try:\n"
        "    PipelineSpec.model_validate({'name': 'p', 'stages': [{'kind': 'nope', 'name': 'a'}]})\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=plugin_env(site), capture_output=True, text=True, check=False
    )
    assert "the stage kind 'bake' is built in" in out.stdout, out.stdout + out.stderr


def test_an_unknown_kind_in_data_names_the_known_ones() -> None:
    from pipeline.errors import StageKindRegistryError
    from pipeline.kinds import spec_class

    with pytest.raises(
        StageKindRegistryError, match="unknown stage kind 'bakery'; known kinds: commit-test, shell, bake"
    ):
        spec_class("bakery")


def test_the_runner_refuses_outputs_a_kind_does_not_declare() -> None:
    from pipeline import CommitTest
    from pipeline.executors.base import UndeclaredOutputError, check_outputs

    stage = CommitTest(name="unit", commands=["true"])
    assert check_outputs(stage, {"junit": "r.xml"}) == {"junit": "r.xml"}
    with pytest.raises(UndeclaredOutputError, match=r"\(undeclared report\); declared: junit"):
        check_outputs(stage, {"report": "r.xml"})
