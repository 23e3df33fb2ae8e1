"""Structural checks of rendered CI files, in pure Python (the tests also run the real parsers).

- Jenkins: the declarative grammar of the Jenkins syntax reference (pipeline/agent/stages/stage/
  steps|stages|parallel/post rules, unique stage names, an agent wherever commands run).
- TeamCity: `version` set, one `project`, every build configuration registered and every
  registered one declared, IDs valid by TeamCity's rules, dependencies acyclic and known, shared
  resources declared, `$` and `%` escaped in scripts.
- GitHub Actions: jobs, `needs` known and acyclic, unique artifact names, no YAML anchors,
  aliases or merge keys.
- GitLab CI: jobs in declared stages with a script, `needs` known, in earlier stages and acyclic,
  no `when` beside `rules`, no reserved job names, no YAML anchors, aliases or merge keys.

Each function returns a list of problems (empty when the file is sound). The block reader
understands the brace-structured subset both Groovy and Kotlin DSL files are written in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any

import yaml

# ----------------------------------------------------------------------------- a block reader


@dataclass
class Node:
    """A statement; `children` holds the statements of its `{ ... }` block, if it has one."""

    header: str
    """The statement text, string literals replaced by "S"."""
    strings: list[str]
    """The string literals of the statement, decoded, in order."""
    line: int
    children: list[Node] = field(default_factory=list)
    block: bool = False
    raws: list[str] = field(default_factory=list)
    """The same literals as written in the file (between the quotes, escapes not decoded)."""

    @property
    def name(self) -> str:
        match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_.]*)", self.header)
        return match.group(1) if match else ""

    @property
    def rest(self) -> str:
        return self.header.strip()[len(self.name) :].strip()

    def find(self, name: str) -> list[Node]:
        return [c for c in self.children if c.name == name]

    def walk(self) -> Iterator[Node]:
        for child in self.children:
            yield child
            yield from child.walk()


class ReadError(ValueError):
    pass


def read_blocks(text: str) -> Node:
    """Statements and `{}` blocks of a Groovy or Kotlin file (strings and comments understood)."""
    return _Reader(text).read()


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.root = Node("", [], 0, block=True)
        self.stack = [self.root]
        self.header: list[str] = []
        self.strings: list[str] = []
        self.raws: list[str] = []
        self.depth = 0  # () and [] nesting: newlines inside do not end a statement
        self.depths: list[int] = []
        self.line = 1
        self.start_line = 1

    def read(self) -> Node:
        text, i = self.text, 0
        while i < len(text):
            i = self._skip_comment(i)
            if i >= len(text):
                break
            quote = next((q for q in ('"""', "'''", '"', "'") if text.startswith(q, i)), None)
            if quote is not None:
                value, end = _read_string(text, i, quote, self.line)
                self._mark_start()
                self.line += text.count("\n", i, end)
                self.strings.append(value)
                self.raws.append(text[i + len(quote) : end - len(quote)])
                self.header.append("S")
                i = end
                continue
            self._char(text[i])
            i += 1
        self._flush()
        if len(self.stack) != 1:
            raise ReadError(f"{len(self.stack) - 1} block(s) not closed at the end of the file")
        return self.root

    def _skip_comment(self, i: int) -> int:
        text = self.text
        while True:
            if text.startswith("//", i):
                end = text.find("\n", i)
                i = len(text) if end < 0 else end
            elif text.startswith("/*", i):
                end = text.find("*/", i + 2)
                if end < 0:
                    raise ReadError(f"line {self.line}: unterminated block comment")
                self.line += text.count("\n", i, end)
                i = end + 2
            else:
                return i

    def _char(self, char: str) -> None:
        if char == "\n":
            self.line += 1
            if self.depth == 0:
                self._flush()
                self.start_line = self.line
            else:
                self.header.append(" ")
        elif char == "{":
            node = Node("".join(self.header).strip(), self.strings, self.start_line, block=True, raws=self.raws)
            self.stack[-1].children.append(node)
            self.stack.append(node)
            self.header, self.strings, self.raws = [], [], []
            self.depths.append(self.depth)
            self.depth = 0
        elif char == "}":
            self._flush()
            if len(self.stack) == 1:
                raise ReadError(f"line {self.line}: '}}' without a matching '{{'")
            self.stack.pop()
            self.depth = self.depths.pop()
        else:
            if char in "([":
                self.depth += 1
            elif char in ")]":
                self.depth = max(0, self.depth - 1)
            elif not char.isspace():
                self._mark_start()
            self.header.append(char)

    def _mark_start(self) -> None:
        if not "".join(self.header).strip():
            self.start_line = self.line

    def _flush(self) -> None:
        stmt = "".join(self.header).strip()
        if stmt and stmt.strip("()[],;"):
            self.stack[-1].children.append(Node(stmt, self.strings, self.start_line, raws=self.raws))
        self.header, self.strings, self.raws = [], [], []


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


def _read_string(text: str, i: int, quote: str, line: int) -> tuple[str, int]:
    j = i + len(quote)
    out: list[str] = []
    raw = quote == '"""'  # Kotlin raw strings have no escapes
    while j < len(text):
        if text.startswith(quote, j) and not (quote == '"""' and text.startswith('""""', j)):
            return "".join(out), j + len(quote)
        char = text[j]
        if char == "\\" and not raw and j + 1 < len(text):
            if text[j + 1] == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[j + 2 : j + 6]):
                out.append(chr(int(text[j + 2 : j + 6], 16)))
                j += 6
                continue
            out.append(_ESCAPES.get(text[j + 1], text[j + 1]))
            j += 2
            continue
        if char == "\n" and len(quote) == 1:
            raise ReadError(f"line {line}: newline in a {quote}-quoted string")
        out.append(char)
        j += 1
    raise ReadError(f"line {line}: unterminated string")


# ----------------------------------------------------------------------------- Jenkins

PIPELINE_SECTIONS = {
    "agent",
    "environment",
    "options",
    "parameters",
    "triggers",
    "tools",
    "stages",
    "post",
    "libraries",
}
STAGE_SECTIONS = {
    "agent",
    "environment",
    "input",
    "options",
    "when",
    "tools",
    "steps",
    "stages",
    "parallel",
    "matrix",
    "post",
    "failFast",
}
STAGE_BODIES = {"steps", "stages", "parallel", "matrix"}
POST_CONDITIONS = {
    "always",
    "changed",
    "fixed",
    "regression",
    "aborted",
    "failure",
    "success",
    "unstable",
    "unsuccessful",
    "cleanup",
}
WHEN_CONDITIONS = {
    "branch", "buildingTag", "changelog", "changeset", "changeRequest", "environment", "equals", "expression",
    "tag", "not", "allOf", "anyOf", "triggeredBy", "beforeAgent", "beforeInput", "beforeOptions",
}  # fmt: skip
STAGE_OPTIONS = {"timeout", "retry", "timestamps", "skipDefaultCheckout", "lock", "quietPeriod", "preserveStashes"}
INPUT_FIELDS = {"message", "id", "ok", "submitter", "submitterParameter", "parameters"}
BLOCKED_STEPS = {"node", "properties", "stage", "parallel"}
NODELESS_STEPS = {"echo", "input", "sleep", "error", "milestone"}


def check_jenkinsfile(text: str) -> list[str]:
    try:
        root = read_blocks(text)
    except ReadError as exc:
        return [f"unreadable: {exc}"]
    return check_declarative(root)


def check_declarative(root: Node) -> list[str]:
    """Declarative Pipeline rules on a statement tree (from `read_blocks` or Groovy's own AST)."""
    problems: list[str] = []
    pipelines = [c for c in root.children if c.name == "pipeline"]
    if len(pipelines) != 1 or not pipelines[0].block:
        return [f"expected exactly one `pipeline {{ }}` block, found {len(pipelines)}"]
    pipeline = pipelines[0]
    for child in pipeline.children:
        if child.name not in PIPELINE_SECTIONS:
            problems.append(f"line {child.line}: `{child.name}` is not allowed directly in pipeline")
    agents = pipeline.find("agent")
    if len(agents) != 1:
        problems.append("pipeline needs exactly one `agent`")
    stages = pipeline.find("stages")
    if len(stages) != 1:
        return [*problems, "pipeline needs exactly one `stages` section"]
    top_agent = agents[0].rest if agents else "none"
    names: dict[str, int] = {}
    _check_stages(stages[0], problems, names, agent=top_agent, in_parallel=False)
    for post in pipeline.find("post"):
        _check_post(post, problems)
    return problems


def _check_stages(block: Node, problems: list[str], names: dict[str, int], agent: str, in_parallel: bool) -> None:
    stage_nodes = [c for c in block.children if c.name == "stage"]
    if not stage_nodes:
        problems.append(f"line {block.line}: `{block.name}` has no stage")
    for other in block.children:
        if other.name not in ("stage", "failFast"):
            problems.append(f"line {other.line}: only stages belong in `{block.name}`, not `{other.name}`")
    for stage in stage_nodes:
        _check_stage(stage, problems, names, agent, in_parallel)


def _check_stage(stage: Node, problems: list[str], names: dict[str, int], agent: str, in_parallel: bool) -> None:
    label = stage.strings[0] if stage.strings else "?"
    where = f"line {stage.line}: stage {label!r}"
    if not stage.strings:
        problems.append(f"{where} has no name")
    if label in names:
        problems.append(f"{where} repeats the name of the stage on line {names[label]}")
    names[label] = stage.line
    for child in stage.children:
        if child.name not in STAGE_SECTIONS:
            problems.append(f"{where}: `{child.name}` is not allowed in a stage")
    for section in STAGE_SECTIONS:
        if len(stage.find(section)) > 1:
            problems.append(f"{where}: `{section}` appears more than once")
    bodies = [c for c in stage.children if c.name in STAGE_BODIES]
    if len(bodies) != 1:
        problems.append(f"{where} needs exactly one of steps, stages, parallel or matrix (has {len(bodies)})")
        return
    body = bodies[0]
    agents = stage.find("agent")
    own_agent = agents[0].rest if agents else None
    effective = own_agent if own_agent is not None else agent
    if body.name == "parallel":
        if in_parallel:
            problems.append(f"{where}: a parallel block cannot sit inside another parallel block")
        if agents or stage.find("tools"):
            problems.append(f"{where}: a stage with `parallel` cannot have `agent` or `tools`")
        _check_stages(body, problems, names, agent=effective, in_parallel=True)
    elif body.name == "stages":
        _check_stages(body, problems, names, agent=effective, in_parallel=in_parallel)
    elif body.name == "steps":
        _check_steps(body, problems, where, needs_node=effective == "none")
    for when in stage.find("when"):
        _check_when(when, problems, where)
    for options in stage.find("options"):
        for option in options.children:
            if option.name not in STAGE_OPTIONS:
                problems.append(f"{where}: `{option.name}` is not a stage option")
    for input_ in stage.find("input"):
        fields = {c.name for c in input_.children}
        if "message" not in fields:
            problems.append(f"{where}: `input` needs a message")
        for name in fields - INPUT_FIELDS:
            problems.append(f"{where}: `{name}` is not an input field")
    for env in stage.find("environment"):
        for entry in env.children:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*\s*=\s*.+", entry.header):
                problems.append(f"{where}: environment entry `{entry.header}` is not NAME = value")
    for post in stage.find("post"):
        _check_post(post, problems)


def _check_steps(steps: Node, problems: list[str], where: str, needs_node: bool) -> None:
    if not steps.children:
        problems.append(f"{where}: `steps` is empty")
    for step in steps.walk():
        if step.name in BLOCKED_STEPS:
            problems.append(f"{where}: `{step.name}` cannot be used directly in steps")
    if needs_node:
        for step in steps.children:
            if step.name not in NODELESS_STEPS:
                problems.append(f"{where}: `{step.name}` needs an agent, but the stage runs with `agent none`")


def _check_when(when: Node, problems: list[str], where: str) -> None:
    conditions = [c for c in when.children if c.name not in ("beforeAgent", "beforeInput", "beforeOptions")]
    if not conditions:
        problems.append(f"{where}: `when` has no condition")
    for node in when.walk():
        if node.name not in WHEN_CONDITIONS:
            problems.append(f"{where}: `{node.name}` is not a when condition")
        if node.name in ("anyOf", "allOf", "not") and not node.children:
            problems.append(f"{where}: `{node.name}` has no condition")


def _check_post(post: Node, problems: list[str]) -> None:
    for condition in post.children:
        if condition.name not in POST_CONDITIONS:
            problems.append(f"line {condition.line}: `{condition.name}` is not a post condition")
        elif not condition.children:
            problems.append(f"line {condition.line}: post `{condition.name}` is empty")


# ----------------------------------------------------------------------------- TeamCity

TEAMCITY_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,224}")
RESOURCE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}")
_OBJECT = re.compile(r"object\s+([A-Za-z_][A-Za-z0-9_]*)\s*:\s*BuildType\s*\(")


def check_teamcity_settings(text: str) -> list[str]:
    try:
        root = read_blocks(text)
    except ReadError as exc:
        return [f"unreadable: {exc}"]
    problems: list[str] = []
    versions = [c for c in root.children if re.fullmatch(r"version\s*=\s*S", c.header)]
    if len(versions) != 1 or not re.fullmatch(r"\d{4}\.\d{1,2}(\.\d+)?", versions[0].strings[0]):
        problems.append('`version = "YYYY.MM"` must be set once at the top level')
    projects = [c for c in root.children if c.name == "project" and c.block]
    if len(projects) != 1:
        return [*problems, f"expected one `project {{ }}` block, found {len(projects)}"]
    project = projects[0]
    objects: dict[str, Node] = {}
    for node in root.children:
        match = _OBJECT.fullmatch(node.header)
        if match:
            if match.group(1) in objects:
                problems.append(f"line {node.line}: object {match.group(1)} is declared twice")
            objects[match.group(1)] = node
    registered = [re.fullmatch(r"buildType\((\w+)\)", c.header) for c in project.children if c.name == "buildType"]
    names = [m.group(1) for m in registered if m]
    for name in names:
        if name not in objects:
            problems.append(f"project registers buildType({name}), which is not declared")
    for name in objects:
        if name not in names:
            problems.append(f"build configuration {name} is declared but not registered in the project")
    if len(set(names)) != len(names):
        problems.append("a build configuration is registered twice")
    resources = {
        n.strings[0]
        for f in project.find("features")
        for r in f.find("sharedResource")
        for n in r.children
        if re.fullmatch(r"name\s*=\s*S", n.header)
    }
    for resource in sorted(resources):
        if not RESOURCE_NAME.fullmatch(resource):
            problems.append(f"shared resource name {resource!r} is not valid (letters, digits, _; 80 at most)")
    ids: dict[str, str] = {}
    edges: dict[str, list[str]] = {}
    for name, node in objects.items():
        problems += _check_build_type(name, node, objects, resources, ids)
        edges[name] = _dependencies(node)
    try:
        TopologicalSorter(edges).prepare()
    except CycleError as exc:
        problems.append(f"dependency cycle between build configurations: {' -> '.join(exc.args[1])}")
    return problems


def _check_build_type(
    name: str, node: Node, objects: Mapping[str, Node], resources: set[str], ids: dict[str, str]
) -> list[str]:
    problems: list[str] = []
    where = f"build configuration {name}"
    id_nodes = [c for c in node.children if re.fullmatch(r"id\(S\)", c.header)]
    if len(id_nodes) != 1:
        problems.append(f"{where}: needs exactly one id(...)")
    else:
        bt_id = id_nodes[0].strings[0]
        if not TEAMCITY_ID.fullmatch(bt_id):
            problems.append(f"{where}: id {bt_id!r} is not a valid TeamCity ID (a letter, then letters, digits, _)")
        if bt_id.lower() in ids:
            problems.append(f"{where}: id {bt_id!r} is also used by {ids[bt_id.lower()]}")
        ids[bt_id.lower()] = name
    if not [c for c in node.children if re.fullmatch(r"name\s*=\s*S", c.header)]:
        problems.append(f"{where}: has no name")
    for dep in _dependencies(node):
        if dep not in objects:
            problems.append(f"{where}: depends on {dep}, which is not declared")
    for lock in node.walk():
        if lock.name == "writeLock" and lock.strings and lock.strings[0] not in resources:
            problems.append(f"{where}: locks shared resource {lock.strings[0]!r}, which the project does not define")
    for step in node.walk():
        if re.fullmatch(r"scriptContent\s*=\s*S", step.header):
            written = re.sub(r"\\.", "", step.raws[0]).replace("%%", "")  # escapes and doubled % are fine
            if "$" in written:
                problems.append(f"{where}: script has a `$` not written as \\$ (Kotlin would interpolate it)")
            if "%" in written:
                problems.append(f"{where}: script has a `%` not written as %% (TeamCity would read a parameter)")
        elif step.header.startswith("scriptContent"):
            problems.append(
                f'{where}: scriptContent must be one "..." literal (its text then reaches the agent exactly)'
            )
    return problems


def _dependencies(node: Node) -> list[str]:
    deps: list[str] = []
    for block in node.find("dependencies"):
        for dep in block.children:
            match = re.fullmatch(r"(?:snapshot|dependency)\((\w+)\)", dep.header)
            if match:
                deps.append(match.group(1))
    return deps


# ----------------------------------------------------------------------------- GitHub Actions

JOB_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def check_workflow(text: str) -> list[str]:
    try:
        data, problems = _read_expanded(
            text,
            anchors="the workflow uses YAML anchors or aliases (GitHub's support is recent; keep it expanded)",
            merge_key="the workflow uses a YAML merge key (`<<`), which GitHub does not support",
        )
    except yaml.YAMLError as exc:
        return [f"not valid YAML: {exc}"]
    if not isinstance(data, dict):
        return [*problems, "a workflow must be a mapping"]
    if "on" not in data:
        problems.append("the workflow has no `on` key (an unquoted `on` parses as true in YAML 1.1 readers: quote it)")
    jobs = data.get("jobs")
    if not isinstance(jobs, dict) or not jobs:
        return [*problems, "the workflow has no jobs"]
    edges: dict[str, list[str]] = {}
    artifacts: dict[str, str] = {}
    for job_id, job in jobs.items():
        if not JOB_ID.fullmatch(str(job_id)):
            problems.append(f"job id {job_id!r} is not valid")
        if not isinstance(job, dict):
            problems.append(f"job {job_id}: must be a mapping")
            continue
        needs = job.get("needs", [])
        needs = [needs] if isinstance(needs, str) else list(needs)
        for need in needs:
            if need not in jobs:
                problems.append(f"job {job_id}: needs unknown job {need!r}")
        edges[job_id] = needs
        if "runs-on" not in job or not job.get("steps"):
            problems.append(f"job {job_id}: needs `runs-on` and `steps`")
        for step in job.get("steps", []):
            uses = str(step.get("uses", ""))
            if uses.startswith("actions/upload-artifact"):
                name = str(step.get("with", {}).get("name", ""))
                if name in artifacts:
                    problems.append(f"jobs {artifacts[name]} and {job_id} both upload artifact {name!r}")
                artifacts[name] = job_id
            if ("uses" in step) == ("run" in step):
                problems.append(f"job {job_id}: a step has both or neither of `uses` and `run`")
    try:
        TopologicalSorter(edges).prepare()
    except CycleError as exc:
        problems.append(f"jobs need each other in a cycle: {' -> '.join(exc.args[1])}")
    return problems


def _read_expanded(text: str, *, anchors: str, merge_key: str) -> tuple[Any, list[str]]:
    """`text` as YAML, for a CI server that wants it written out: the data, and `anchors` if it uses
    anchors or aliases, `merge_key` if it uses a merge key. Raises yaml.YAMLError."""
    problems: list[str] = []
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            problems.append(anchors)
            break
    tree = yaml.compose(text, Loader=yaml.SafeLoader)
    data: Any = yaml.safe_load(text)
    if tree is not None and _has_merge_key(tree):
        problems.append(merge_key)
    return data, problems


def _has_merge_key(node: yaml.Node) -> bool:
    if isinstance(node, yaml.MappingNode):
        return any(k.tag == "tag:yaml.org,2002:merge" or _has_merge_key(v) for k, v in node.value)
    if isinstance(node, yaml.SequenceNode):
        return any(_has_merge_key(item) for item in node.value)
    return False


# ----------------------------------------------------------------------------- GitLab CI

GITLAB_KEYWORDS = frozenset(
    {"after_script", "before_script", "cache", "default", "image", "include", "services", "spec", "stages"}
    | {"types", "variables", "workflow", "pages", "true", "false", "nil"}
)


def check_gitlab_ci(text: str) -> list[str]:
    """A .gitlab-ci.yml as GitLab reads it: jobs with a `stage` from `stages` and a `script`, `needs`
    naming known jobs in the same or an earlier stage and no cycle, no job-level `when` next to
    `rules`, no YAML anchors, aliases or merge keys (the renderer writes everything out)."""
    try:
        data, problems = _read_expanded(
            text,
            anchors="the file uses YAML anchors or aliases (keep it expanded)",
            merge_key="the file uses a YAML merge key (`<<`)",
        )
    except yaml.YAMLError as exc:
        return [f"not valid YAML: {exc}"]
    if not isinstance(data, dict):
        return [*problems, "a .gitlab-ci.yml must be a mapping"]
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        return [*problems, "the file has no `stages` list"]
    jobs = {name: job for name, job in data.items() if name not in GITLAB_KEYWORDS}
    if not jobs:
        return [*problems, "the file has no jobs"]
    if "pages" in data:
        problems.append("a job named `pages` publishes GitLab Pages")
    edges: dict[str, list[str]] = {}
    for name, job in jobs.items():
        if not isinstance(job, dict):
            problems.append(f"job {name}: must be a mapping")
            continue
        if str(name).startswith("."):
            problems.append(f"job {name}: a name starting with '.' is a hidden job that never runs")
        if job.get("stage") not in stages:
            problems.append(f"job {name}: stage {job.get('stage')!r} is not in `stages`")
        if not job.get("script"):
            problems.append(f"job {name}: has no `script`")
        if "rules" in job and "when" in job:
            problems.append(f"job {name}: `when` may not be used together with `rules` (put it in the rules)")
        needs = [n["job"] if isinstance(n, dict) else n for n in job.get("needs", [])]
        for need in needs:
            if need not in jobs:
                problems.append(f"job {name}: needs unknown job {need!r}")
            elif _stage_index(stages, jobs[need]) > _stage_index(stages, job):
                problems.append(f"job {name}: needs {need!r}, which is in a later stage")
        edges[str(name)] = [str(n) for n in needs]
    try:
        TopologicalSorter(edges).prepare()
    except CycleError as exc:
        problems.append(f"jobs need each other in a cycle: {' -> '.join(exc.args[1])}")
    return problems


def _stage_index(stages: list[Any], job: Any) -> int:
    stage = job.get("stage") if isinstance(job, dict) else None
    return stages.index(stage) if stage in stages else -1


def check(path: str, text: str) -> list[str]:
    """Problems of one rendered file, chosen by its path."""
    if path.endswith("Jenkinsfile"):
        return check_jenkinsfile(text)
    if path.endswith(".kts"):
        return check_teamcity_settings(text)
    if path.endswith((".yml", ".yaml")) and "/workflows/" in f"/{path}":
        return check_workflow(text)
    if path.endswith(".gitlab-ci.yml"):
        return check_gitlab_ci(text)
    return []
