"""Run the Declarative Pipeline stand-in on Jenkinsfiles (one JVM for all of them) and read its traces.

The stand-in (DeclarativeStandIn.groovy, whose header says what it models) evaluates each file with
Groovy 2.4 and records every directive and step with the values Groovy computed. This module only
transports: it writes the request, runs `groovy`, and turns the JSON into typed objects.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAND_IN = Path(__file__).with_name("DeclarativeStandIn.groovy")
ANT_JARS = (Path("/usr/share/java/ant.jar"), Path("/usr/share/groovy/lib/ant.jar"))


@dataclass(frozen=True)
class Branch:
    """A build the stand-in evaluates `when` conditions for: a branch, or a change request (PR-7)."""

    name: str
    change_request: bool = False


@dataclass
class Condition:
    kind: str
    args: dict[str, Any]
    results: dict[str, bool | None]
    """Per requested branch; None where the stand-in cannot tell (changeset, triggeredBy...)."""
    children: list[Condition] = field(default_factory=list)


@dataclass
class When:
    before_agent: bool
    before_input: bool
    before_options: bool
    conditions: list[Condition]

    def passes(self, branch: str) -> bool:
        results = [c.results.get(branch) for c in self.conditions]
        unknown = [c.kind for c, r in zip(self.conditions, results, strict=True) if r is None]
        if unknown:
            raise ModelError(f"when condition(s) {unknown} cannot be evaluated for branch {branch!r}")
        return all(results)


@dataclass
class Step:
    step: str
    args: dict[str, Any]
    body: list[Step] | None = None
    branches: dict[str, list[Step]] | None = None
    """Scripted `parallel` only."""


@dataclass
class Option:
    name: str
    args: dict[str, Any]


@dataclass
class EnvEntry:
    name: str
    value: str | None = None
    credentials: str | None = None


@dataclass
class Stage:
    name: str
    agent: dict[str, Any] | None
    when: When | None
    options: list[Option]
    input: dict[str, Any] | None
    environment: list[EnvEntry]
    steps: list[Step] | None
    stages: list[Stage] | None
    parallel: list[Stage] | None
    fail_fast: bool
    post: dict[str, list[Step]]

    def walk(self) -> list[Stage]:
        out = [self]
        for child in (self.stages or []) + (self.parallel or []):
            out += child.walk()
        return out


@dataclass
class Pipeline:
    agent: dict[str, Any] | None
    options: list[Option]
    environment: list[EnvEntry]
    stages: list[Stage]
    post: dict[str, list[Step]]

    def walk(self) -> list[Stage]:
        return [s for top in self.stages for s in top.walk()]


@dataclass
class Trace:
    path: Path
    branches: tuple[Branch, ...]
    pipeline: Pipeline | None
    errors: list[str]


class ModelError(AssertionError):
    """The trace uses something the model does not know: the test must fail, not guess."""


class StandInError(RuntimeError):
    pass


def java_home() -> str | None:
    """JAVA_HOME as tools/ci-validators and tests/integration/test_ci_validators.py derive it."""
    if os.environ.get("JAVA_HOME") and Path(os.environ["JAVA_HOME"], "bin", "java").exists():
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    return str(Path(os.path.realpath(java)).parent.parent) if java else None


def ant_jar() -> Path | None:
    """Apache Ant's jar: Jenkins matches `when { branch }` globs with Ant's SelectorUtils, and so
    does the stand-in (Debian's `groovy` links it from /usr/share/groovy/lib; package `ant`)."""
    for path in ANT_JARS:
        if path.exists():
            return path.resolve()
    return None


def missing_tool() -> str | None:
    """Why the stand-in cannot run here, or None."""
    if shutil.which("groovy") is None:
        return "Groovy is not installed (apt-get install groovy; see .ci/install-validators.sh)"
    if java_home() is None:
        return "no JDK found for Groovy (apt-get install default-jdk-headless)"
    if ant_jar() is None:
        return "Apache Ant's jar is missing (apt-get install ant; see .ci/install-validators.sh)"
    return None


def run_stand_in(files: Sequence[tuple[Path, Sequence[Branch]]], timeout: float = 300) -> dict[Path, Trace]:
    """Evaluate every file in one JVM; each file's `when` conditions for its own branches."""
    reason = missing_tool()
    if reason:
        raise StandInError(reason)
    with tempfile.TemporaryDirectory(prefix="standin-") as tmp:
        request = Path(tmp, "request.json")
        out = Path(tmp, "out.json")
        request.write_text(
            json.dumps(
                {
                    "files": [
                        {
                            "path": str(path),
                            "branches": [{"name": b.name, "change_request": b.change_request} for b in branches],
                        }
                        for path, branches in files
                    ]
                }
            ),
            encoding="utf-8",
        )
        env = {**os.environ, "JAVA_HOME": str(java_home())}
        proc = subprocess.run(
            ["groovy", "-cp", str(ant_jar()), str(STAND_IN), str(request), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0 or not out.exists():
            raise StandInError(f"the stand-in failed (exit {proc.returncode}):\n{proc.stderr}{proc.stdout}")
        data = json.loads(out.read_text(encoding="utf-8"))
    traces: dict[Path, Trace] = {}
    for path, branches in files:
        raw = data[str(path)]
        pipeline = _pipeline(raw["pipeline"]) if raw["pipeline"] is not None else None
        traces[path] = Trace(path, tuple(branches), pipeline, list(raw["errors"]))
    return traces


# ----------------------------------------------------------------------------- JSON -> objects


def _pipeline(raw: dict[str, Any]) -> Pipeline:
    return Pipeline(
        agent=raw["agent"],
        options=[Option(o["name"], o["args"]) for o in raw["options"]],
        environment=[_env(e) for e in raw["environment"]],
        stages=[_stage(s) for s in raw["stages"]],
        post={k: _steps(v) for k, v in raw["post"].items()},
    )


def _stage(raw: dict[str, Any]) -> Stage:
    when = raw["when"]
    return Stage(
        name=raw["name"],
        agent=raw["agent"],
        when=None
        if when is None
        else When(
            before_agent=bool(when["beforeAgent"]),
            before_input=bool(when["beforeInput"]),
            before_options=bool(when["beforeOptions"]),
            conditions=[_condition(c) for c in when["conditions"]],
        ),
        options=[Option(o["name"], o["args"]) for o in raw["options"]],
        input=raw["input"],
        environment=[_env(e) for e in raw["environment"]],
        steps=None if raw["steps"] is None else _steps(raw["steps"]),
        stages=None if raw["stages"] is None else [_stage(s) for s in raw["stages"]],
        parallel=None if raw["parallel"] is None else [_stage(s) for s in raw["parallel"]],
        fail_fast=bool(raw["failFast"]),
        post={k: _steps(v) for k, v in raw["post"].items()},
    )


def _condition(raw: dict[str, Any]) -> Condition:
    return Condition(raw["kind"], raw["args"], raw["results"], [_condition(c) for c in raw["children"]])


def _env(raw: dict[str, Any]) -> EnvEntry:
    return EnvEntry(raw["name"], raw.get("value"), raw.get("credentials"))


def _steps(raw: list[dict[str, Any]]) -> list[Step]:
    return [
        Step(
            r["step"],
            r["args"],
            None if r.get("body") is None else _steps(r["body"]),
            None if r.get("branches") is None else {k: _steps(v) for k, v in r["branches"].items()},
        )
        for r in raw
    ]


def main(argv: Sequence[str]) -> int:
    """`python -m tests.ci_grammar.jenkins_trace JENKINSFILE... [--branch NAME]...`: print the raw
    traces (JSON), for reading what the stand-in recorded."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--branch", action="append", default=[])
    args = parser.parse_args(argv)
    branches = [Branch(b) for b in args.branch] or [Branch("main")]
    traces = run_stand_in([(f.resolve(), branches) for f in args.files])
    print(json.dumps({str(k): _plain(v) for k, v in traces.items()}, indent=2, ensure_ascii=False))
    return 0


def _plain(value: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
