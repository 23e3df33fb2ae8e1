"""PipelineSpec: the whole definition as one frozen, validated, JSON-round-trippable object."""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Self, get_args

from pydantic import BaseModel, Field, SerializeAsAny, field_validator, model_validator

from pipeline.authoring import did_you_mean
from pipeline.errors import DefinitionError, Problem, ProfileCannotError
from pipeline.flags.spec import Flag, check_flag_values, check_flags
from pipeline.graph import Graph
from pipeline.kinds import stage_from_data
from pipeline.model import AgentLabels, Approval, Database, Environment, Name, Profile, Spec, Stage

SCHEMA_VERSION: Literal[1] = 1
RESERVED_ENV_PREFIX = "PIPELINE_"
_PYTHON_VERSION_RE = re.compile(r"^3\.[0-9]{1,2}(?:\.[0-9]{1,3})?$")
_TARGET_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")


class Trigger(Spec):
    """When CI starts the pipeline."""

    branches: tuple[str, ...] = ()
    """Pushes to these branches start a run (glob patterns); empty: the pipeline's default branch."""
    pull_requests: bool = False
    """Also run on pull requests. A pull request runs only the checks: stages that neither act on an
    environment nor drive Docker or a cloud nor receive secrets (the commit test, linters), and
    nothing after a stage that is not a check. Nothing deploys from a pull request."""

    @field_validator("branches", mode="before")
    @classmethod
    def _branches_from_str(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value


class PipelineSpec(Spec):
    """A pipeline: named stages in a DAG, the environments they deploy to, and CI triggers."""

    schema_version: Literal[1] = SCHEMA_VERSION
    """Version of this data format (a spec read back from JSON must carry 1)."""
    name: Name
    """The pipeline's name: the lock names, stack names (`<pipeline>-<environment>`), the GitHub workflow's
    file name and TeamCity's composite build derive from it."""
    stages: tuple[SerializeAsAny[Stage], ...] = Field(min_length=1)
    """Stage objects of any registered kind (built-in or a plugin's); from JSON, each entry's
    `kind` picks its class (pipeline/kinds.py)."""
    environments: tuple[Environment, ...] = ()
    """Where stages deploy: each `Environment` a stage names in `environment=` (or `like=`)."""
    flags: tuple[Flag, ...] = ()
    """Feature flags the service reads (pipeline.flags): each environment's flag store serves them,
    `pipeline flag set` and FlagRollout stages move them without a deploy."""
    trigger: Trigger = Trigger()
    """When CI starts the pipeline: pushes to which branches, and pull requests."""
    profile: Profile = "local"
    """The profile CI runs stages with: `local` (Docker on the agent) or `aws` (CloudFormation). An
    environment may set its own. `pipeline run local` uses `--profile` (default: local) for all."""
    python: str = "3.11"
    """Python version CI sets up to run `pipeline run stage` (a version only, e.g. '3.12')."""
    install: str | None = None
    """How CI installs this tool before each stage. Default: exactly the version that rendered the
    files (`pip install 'pipeline-as-code[run]==X.Y.Z'`); set it to install another way (e.g.
    'pip install -e .[run]' in this tool's own repository)."""
    targets: tuple[str, ...] = ()
    """The CI targets this repository uses, e.g. ("teamcity",). `pipeline render` (and its drift
    check, the first job of every rendered config) covers exactly these, and `pipeline validate`
    reports what one of them cannot express. Empty: `render` writes every target, and each file's
    drift check covers only its own target."""
    default_branch: str = "main"
    """The repository's default branch: what `Trigger()` starts runs on when it names no branches."""
    agents: AgentLabels = AgentLabels()
    """The labels CI agents are chosen by, per need (Docker, Packer, root, the local profile's machine)."""

    @field_validator("stages", mode="before")
    @classmethod
    def _stages_by_kind(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(stage_from_data(item) for item in value)
        return value

    @field_validator("python")
    @classmethod
    def _python_version(cls, value: str) -> str:
        if not _PYTHON_VERSION_RE.match(value):
            raise ValueError(
                f"{value!r} is not a Python version: give the version only, e.g. '3.11' or '3.12.4' "
                "(CI sets up that Python; the install command is `install=`)"
            )
        return value

    @field_validator("targets", mode="before")
    @classmethod
    def _targets_from_str(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(t.strip() for t in value.split(",") if t.strip())
        return value

    @field_validator("targets")
    @classmethod
    def _target_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for target in value:
            if target == "all" or not _TARGET_RE.match(target):
                raise ValueError(
                    f"{target!r} is not a target name: name each CI target, e.g. targets=('jenkins', 'teamcity')"
                )
        duplicates = sorted({t for t in value if value.count(t) > 1})
        if duplicates:
            raise ValueError(f"{', '.join(map(repr, duplicates))} is listed more than once")
        return value

    @field_validator("default_branch")
    @classmethod
    def _default_branch(cls, value: str) -> str:
        problem = branch_pattern_problem(value) or (
            "is a pattern: the default branch is one branch name" if any(c in value for c in "*?[") else None
        )
        if problem:
            raise ValueError(f"{value!r} {problem}")
        return value

    @property
    def trigger_branches(self) -> tuple[str, ...]:
        """The branches a push starts a run on: the trigger's, else the default branch."""
        return self.trigger.branches or (self.default_branch,)

    @model_validator(mode="after")
    def _whole_tree_is_sound(self) -> Self:
        problems = check_spec(self)
        if problems:
            raise DefinitionError(problems)
        return self

    # --- lookups ---
    @cached_property
    def graph(self) -> Graph:
        return Graph({s.name: s.needs for s in self.stages})

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        from pipeline.errors import UnknownStageError

        raise UnknownStageError(name, [s.name for s in self.stages])

    def environment(self, name: str) -> Environment:
        for env in self.environments:
            if env.name == name:
                return env
        raise KeyError(name)

    def flag(self, name: str) -> Flag:
        for flag in self.flags:
            if flag.name == name:
                return flag
        raise KeyError(name)

    def flag_values(self, env: Environment) -> dict[str, object]:
        """What `env`'s flag store starts with: its own values over the flags' defaults."""
        return {flag.name: env.flags.get(flag.name, flag.default) for flag in self.flags}

    def ordered(self) -> list[Stage]:
        return [self.stage(name) for name in self.graph.order()]

    def environment_of(self, stage: Stage) -> Environment | None:
        """The environment a stage acts on, following references (update-stack -> test-stack)."""
        name = stage.environment_name()
        follows = type(stage).follows_environment_of
        if name is None and follows is not None:
            name = self.stage(getattr(stage, follows)).environment_name()
        return self.environment(name) if name else None

    def template_of(self, env: Environment) -> str | None:
        """The environment's template; an ephemeral one without its own uses the template of the
        environment a stage copies into it (a test stack's `like`)."""
        if env.template is not None:
            return env.template
        for stage in self.stages:
            copies = type(stage).copies_environment
            if copies is not None and stage.environment_name() == env.name:
                return self.environment(getattr(stage, copies)).template
        return None

    def database_of(self, env: Environment) -> Database | None:
        """The environment's database declaration; an ephemeral one without its own uses the
        declaration of the environment a stage copies into it (a test stack's `like`)."""
        if env.database is not None or not env.ephemeral:
            return env.database
        for stage in self.stages:
            copies = type(stage).copies_environment
            if copies is not None and stage.environment_name() == env.name:
                return self.environment(getattr(stage, copies)).database
        return None

    def profile_of(self, stage: Stage) -> Profile:
        """The profile CI runs `stage` with: its environment's, else the pipeline's."""
        env = self.environment_of(stage)
        return self.profile_of_environment(env) if env is not None else self.profile

    def profile_of_environment(self, env: Environment) -> Profile:
        return env.profile or self.profile

    def check_profiles(self, profile: Profile | None = None, stages: Iterable[str] | None = None) -> None:
        """Refuse (ProfileCannotError, exit 2, naming every one) the stages whose kind cannot be
        carried out on the profile they would run with: `profile` for every stage (a run's or
        `validate`'s --profile, which overrides the definition's), else each stage's own
        (`profile_of`: what CI runs it with). `stages`: only these (default: all). No tool, no side
        effect."""
        refused: list[ProfileCannotError] = []
        for stage in self.ordered():
            if stages is not None and stage.name not in stages:
                continue
            chosen = profile or self.profile_of(stage)
            why = type(stage).cannot_run_on.get(chosen)
            if why is None:
                continue
            can = [p for p in get_args(Profile) if p not in type(stage).cannot_run_on]
            env = self.environment_of(stage)
            if profile is not None:
                hint = f"run {stage.name!r} with --profile {' or '.join(can)}, or leave it out (--only/--from)"
            elif env is not None:
                hint = (
                    f"CI runs it with the profile of environment {env.name!r}: set its Environment(profile=...) to "
                    f"{' or '.join(can)}, or remove the stage"
                )
            else:
                hint = f"set Pipeline(profile=...) to {' or '.join(can)}, or remove the stage"
            refused.append(ProfileCannotError(chosen, f"{stage.kind} (stage {stage.name!r})", why, hint=hint))
        if refused:
            first, *more = refused
            raise ProfileCannotError(first.profile, first.what, first.why, hint=first.hint, more=more)

    def approval_of(self, stage: Stage) -> Approval | None:
        """The gate before a stage: its own, or its environment's (for stages that may have one)."""
        if stage.approval is not None:
            return stage.approval
        env = self.environment_of(stage)
        if env is not None and env.approval is not None and type(stage).approvable and not env.ephemeral:
            return env.approval
        return None


def check_spec(spec: PipelineSpec) -> list[Problem]:
    """Every whole-tree problem at once, each naming the stage (the builder adds file:line)."""
    problems: list[Problem] = []
    names = [s.name for s in spec.stages]
    by_name = {s.name: s for s in spec.stages}
    env_names = [e.name for e in spec.environments]
    envs = {e.name: e for e in spec.environments}

    def add(message: str, path: str, stage: str | None = None) -> None:
        problems.append(Problem(message=message, path=path, stage=stage))

    for dup in sorted({n for n in names if names.count(n) > 1}):
        add(f"stage name {dup!r} is used more than once; stage names must be unique", "stages", dup)
    for dup in sorted({n for n in env_names if env_names.count(n) > 1}):
        add(f"environment name {dup!r} is used more than once", "environments")

    for i, stage in enumerate(spec.stages):
        where = f"stages[{i}] ({stage.name})"
        for dep in stage.needs:
            if dep == stage.name:
                if names.count(dep) == 1:  # a duplicate name is reported as such, not as a self-need
                    add("a stage cannot need itself", f"{where}.needs", stage.name)
            elif dep not in by_name:
                add(f"needs unknown stage {dep!r}{did_you_mean(dep, names)}", f"{where}.needs", stage.name)
        for field, ref in stage.references().items():
            target = by_name.get(ref)
            if target is None:
                add(f"refers to unknown stage {ref!r}{did_you_mean(ref, names)}", f"{where}.{field}", stage.name)
                continue
            allowed = stage.reference_kinds().get(field, ())
            if allowed and target.kind not in allowed:
                add(
                    f"must name a stage of kind {' or '.join(allowed)}, but {ref!r} is a {target.kind}",
                    f"{where}.{field}",
                    stage.name,
                )
        if stage.approval is not None and not type(stage).approvable:
            add(
                f"a {stage.kind} stage cannot have an approval gate; put the gate on the stage that deploys "
                "(promote, update-stack or shell)",
                f"{where}.approval",
                stage.name,
            )
        env_name = stage.environment_name()
        if env_name is not None and env_name not in envs:
            add(
                f"deploys to unknown environment {env_name!r}{did_you_mean(env_name, env_names)}; "
                f"declare it in Pipeline(environments=[Environment(name={env_name!r})])",
                f"{where}.environment",
                stage.name,
            )
        for key in stage.env:
            if key.startswith(RESERVED_ENV_PREFIX):
                add(f"{key!r}: names starting with {RESERVED_ENV_PREFIX} are reserved", f"{where}.env", stage.name)
        secret_names = [s.name for s in stage.secrets]
        for dup in sorted({n for n in secret_names if secret_names.count(n) > 1}):
            add(f"secret {dup!r} is listed more than once", f"{where}.secrets", stage.name)
        for key in sorted(set(secret_names) & set(stage.env)):
            add(f"{key!r} is both a secret and a plain env value; keep it only in secrets", f"{where}.env", stage.name)
        for pattern in stage.branches:
            if not pattern.strip() or pattern != pattern.strip():
                add(f"branch pattern {pattern!r} is empty or has surrounding spaces", f"{where}.branches", stage.name)
            elif problem := branch_pattern_problem(pattern):
                add(f"branch pattern {pattern!r} {problem}", f"{where}.branches", stage.name)
        problems += stage.check(spec, where)

    for pattern in spec.trigger.branches:
        if problem := branch_pattern_problem(pattern):
            add(f"branch pattern {pattern!r} {problem}", "trigger.branches")
    problems += _control_characters(spec) + _flag_problems(spec)

    for i, env in enumerate(spec.environments):
        if env.ephemeral and env.approval is not None:
            add("an ephemeral environment cannot have an approval gate", f"environments[{i}] ({env.name}).approval")

    if not problems:
        cycle = spec.graph.find_cycle()
        if cycle:
            forward = tuple(reversed(cycle))  # find_cycle reads "a needs b"; `>>` reads "b runs before a"
            problems.append(
                Problem(
                    f"stages depend on each other in a cycle: {' >> '.join(forward)}",
                    "stages",
                    stage=forward[-1],
                    cycle=forward,
                )
            )
    if not problems:
        problems += _reference_order(spec)
    return problems


def _flag_problems(spec: PipelineSpec) -> list[Problem]:
    """The flags declared twice, and environments' values of unknown flags or of the wrong type."""
    problems = check_flags(spec.flags)
    for i, env in enumerate(spec.environments):
        problems += check_flag_values(env.flags, spec.flags, f"environments[{i}] ({env.name}).flags")
    return problems


def _reference_order(spec: PipelineSpec) -> list[Problem]:
    """A stage may only use outputs of stages it runs after; a teardown runs after every user."""
    problems: list[Problem] = []
    graph = spec.graph
    for i, stage in enumerate(spec.stages):
        where = f"stages[{i}] ({stage.name})"
        ancestors = graph.ancestors(stage.name)
        for field, ref in stage.references().items():
            if ref not in ancestors:
                problems.append(
                    Problem(
                        f"uses {ref!r} but does not run after it: add {ref!r} to needs (or write {ref} >> {stage.name})",
                        f"{where}.{field}",
                        stage=stage.name,
                    )
                )
        deletes = type(stage).deletes
        if deletes is not None:
            stack = getattr(stage, deletes)
            users = [
                s.name for s in spec.stages if s.name not in (stage.name, stack) and stack in s.references().values()
            ]
            for user in users:
                if user not in ancestors:
                    problems.append(
                        Problem(
                            f"could delete the stack while {user!r} still uses it: make it run after {user!r}",
                            f"{where}.needs",
                            stage=stage.name,
                        )
                    )
    return problems


def branch_pattern_problem(pattern: str) -> str | None:
    """Why git (check-ref-format) or a CI target would reject this branch name or glob pattern,
    or None. `*`, `?` and `[...]` are glob characters here."""
    if not pattern or pattern != pattern.strip():
        return "is empty or has surrounding spaces"
    if any(unicodedata.category(c) == "Cc" or c == " " for c in pattern):
        return "has a space or a control character, which git does not allow in a branch name"
    for char in "~^:\\":
        if char in pattern:
            return f"has {char!r}, which git does not allow in a branch name"
    if "${{" in pattern:
        return "has '${{', which GitHub would evaluate as an expression (and `if:` conditions would always hold)"
    if ".." in pattern or "@{" in pattern or "//" in pattern or pattern == "@":
        return "has '..', '@{' or '//' (or is '@'), which git does not allow in a branch name"
    if pattern.startswith(("/", "-", "!")) or pattern.endswith(("/", ".")):
        return "starts with '/', '-' or '!', or ends with '/' or '.': git (or a CI filter) reads it otherwise"
    for part in pattern.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            return f"has a part {part!r} starting with '.' or ending with '.lock', which git does not allow"
    return None


_ALLOWED_CONTROLS = frozenset("\n\t")


def _control_characters(spec: PipelineSpec) -> list[Problem]:
    """Text that reaches CI files and shells must not carry control characters (other than newline
    and tab) or Unicode line separators: targets would escape, drop or reinterpret them."""
    problems: list[Problem] = []
    for path, stage, text in _strings(spec, ""):
        bad = next(
            (c for c in text if c not in _ALLOWED_CONTROLS and unicodedata.category(c) in ("Cc", "Zl", "Zp")), None
        )
        if bad is not None:
            problems.append(
                Problem(
                    f"contains the control character U+{ord(bad):04X}: CI files cannot carry it exactly; "
                    "remove it (newlines and tabs are fine)",
                    path,
                    stage=stage,
                )
            )
    return problems


def _strings(value: Any, path: str, stage: str | None = None) -> Iterator[tuple[str, str | None, str]]:
    """Every string inside a spec object, with its field path (and the stage it belongs to)."""
    if isinstance(value, str):
        yield path, stage, value
    elif isinstance(value, BaseModel):
        for field in type(value).model_fields:
            yield from _strings(getattr(value, field), f"{path}.{field}" if path else field, stage)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key, f"{path} (a key)", stage)
            yield from _strings(item, f"{path}.{key}", stage)
    elif isinstance(value, tuple | list):
        for i, item in enumerate(value):
            name = getattr(item, "name", None) if isinstance(item, BaseModel) else None
            label = f"{path}[{i}]" + (f" ({name})" if isinstance(name, str) else "")
            inner = name if path == "stages" and isinstance(name, str) else stage
            yield from _strings(item, label, inner)


def branch_matches(patterns: tuple[str, ...], branch: str | None) -> bool:
    """Empty patterns match every branch; an unknown branch (detached HEAD) matches none."""
    if not patterns:
        return True
    if branch is None:
        return False
    return any(fnmatch.fnmatchcase(branch, p) for p in patterns)


def missing_files(spec: PipelineSpec, root: Path) -> list[Problem]:
    """Files the stages and environments refer to that do not exist under `root`."""
    problems: list[Problem] = []
    for i, stage in enumerate(spec.stages):
        for rel in stage.files():
            if not (root / rel).exists():
                problems.append(
                    Problem(
                        f"file {rel!r} does not exist (looked in {root})",
                        f"stages[{i}] ({stage.name})",
                        stage=stage.name,
                    )
                )
    for i, env in enumerate(spec.environments):
        if env.template and not (root / env.template).is_file():
            problems.append(
                Problem(
                    f"template {env.template!r} does not exist (looked in {root})",
                    f"environments[{i}] ({env.name}).template",
                )
            )
    return problems
