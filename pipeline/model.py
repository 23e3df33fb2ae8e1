"""The building blocks of the declarative spec: frozen pydantic objects that renderers and runners read.

Everything here is plain data (no I/O, no engines) and round-trips through JSON losslessly.
Stage kinds (`pipeline.stages`, one module each) subclass `Stage`; the pipeline itself
(`PipelineSpec`, in `pipeline.spec`) holds stages of any registered kind (`pipeline.kinds`).
Layers point one way: model <- stages <- spec <- builder/loader <- render; executors and engines
build on the spec and are never imported by it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.authoring import (
    caller_location,
    current_builder,
    display_path,
    problems_from_validation,
    register_stage,
    remember_location,
)
from pipeline.errors import Problem

if TYPE_CHECKING:
    from pipeline.graph import Graph

_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_ENV_VAR_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
NAME_MAX = 48
DEFAULT_BASE_IMAGE = "pipeline-base:bookworm"
"""The base image local images start from. Where a registry is reachable it is derived from the
registry's image of the same Debian suite; otherwise it is built with debootstrap, as root
(pipeline.engines.base_image). Any other `pipeline-*` name is only ever built with debootstrap."""


def check_name(value: str) -> str:
    """Stage and environment names become job ids on every CI target, so they are strict."""
    if not _NAME_RE.match(value) or len(value) > NAME_MAX:
        raise ValueError(
            f"{value!r} is not a valid name: use lowercase letters, digits and single hyphens, "
            f"start with a letter, at most {NAME_MAX} characters (e.g. 'commit-test')"
        )
    return value


def check_env_var(value: str) -> str:
    if not _ENV_VAR_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid environment variable name: use A-Z, 0-9 and _, "
            "not starting with a digit (e.g. 'AWS_SECRET_ACCESS_KEY')"
        )
    return value


def check_relative_path(value: str) -> str:
    """Paths in a definition are relative to the definition's folder, written with '/'."""
    if not value or value.startswith("/") or "\\" in value or ".." in value.split("/"):
        raise ValueError(
            f"{value!r} must be a relative path inside the repository, written with '/' (e.g. 'images/web.pkr.hcl')"
        )
    return value


Name = Annotated[str, AfterValidator(check_name)]
"""A stage or environment name: lowercase letters, digits and single hyphens, starting with a letter, at most
48 characters (it becomes a job id on every CI target), e.g. 'commit-test'."""
EnvVar = Annotated[str, AfterValidator(check_env_var)]
"""An environment variable name: A-Z, 0-9 and '_', not starting with a digit, e.g. 'AWS_SECRET_ACCESS_KEY'."""
RelPath = Annotated[str, AfterValidator(check_relative_path)]
"""A path inside the repository, relative to the definition's folder and written with '/' (no leading '/', no
'..'), e.g. 'images/web.pkr.hcl'."""
Profile = Literal["local", "aws"]
"""What carries out the stages that deploy or build images: 'local' (Docker on this machine or CI agent, nginx
in front) or 'aws' (CloudFormation, Packer's amazon-ebs builder)."""
PROFILES: tuple[Profile, ...] = ("local", "aws")
PROFILE_ENV = "PIPELINE_PROFILE"
FlagValue = StrictBool | StrictInt | StrictFloat | StrictStr
"""What a feature flag may hold: a boolean, a whole number, a number or a string (pipeline.flags)."""
IMAGE_PARAMETER = "ImageId"
"""The template parameter that carries the machine image, unless Environment(image_parameter=...) says."""


def default_profile() -> Profile:
    """The profile a command uses without --profile: $PIPELINE_PROFILE, else local.

    The spec's profiles say what CI uses, and rendered CI configs pass --profile explicitly; on a
    laptop every command (run, status, rollback) works on Docker unless told otherwise."""
    import os

    value = os.environ.get(PROFILE_ENV, "local")
    if value not in PROFILES:
        from pipeline.errors import BadInputError

        raise BadInputError(f"{PROFILE_ENV}={value!r} is not a profile", hint="use local or aws")
    return value


_deferred: ContextVar[list[Problem] | None] = ContextVar("deferred_definition_problems", default=None)
_constructing_placeholder: ContextVar[bool] = ContextVar("constructing_placeholder", default=False)


@contextmanager
def collecting_problems() -> Iterator[list[Problem]]:
    """While a definition is loaded: an object built with bad fields records its problems here
    (at the user's line) and stands in as an unchecked placeholder, so the rest of the definition
    still runs and every problem of every stage is reported at once."""
    found: list[Problem] = []
    token = _deferred.set(found)
    try:
        yield found
    finally:
        _deferred.reset(token)


def deferred_problems() -> list[Problem] | None:
    """The problems collected so far while loading a definition (None: not loading one)."""
    return _deferred.get()


class Spec(BaseModel):
    """Base for everything a user authors: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            collected = _deferred.get()
            if collected is None:
                raise
            self._stand_in(data, exc, collected)

    def _stand_in(self, data: Mapping[str, Any], exc: ValidationError, collected: list[Problem]) -> None:
        """Record `exc` at the user's line and become an unchecked placeholder of this class."""
        where = caller_location()
        name = data.get("name")
        label = f"{type(self).__name__}(name={name!r})" if isinstance(name, str) else type(self).__name__
        for problem in problems_from_validation(exc, model=type(self)):
            collected.append(
                Problem(
                    problem.message,
                    f"{label}.{problem.path}" if problem.path else label,
                    display_path(where[0]) if where else None,
                    where[1] if where else None,
                    stage=name if isinstance(name, str) else None,
                )
            )
        known = {k: v for k, v in data.items() if k in type(self).model_fields}
        token = _constructing_placeholder.set(True)
        try:
            placeholder = type(self).model_construct(**known)
        finally:
            _constructing_placeholder.reset(token)
        for attribute in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__"):
            object.__setattr__(self, attribute, getattr(placeholder, attribute))
        self.model_post_init(None)


class Secret(Spec):
    """A secret the stage receives as an environment variable. Only names live here, never values.

    Each CI target maps it to its own store: Jenkins `credentials('<jenkins>')`, TeamCity a password
    parameter (`<teamcity>` is a `credentialsJSON:` token reference, never a value), GitHub
    `secrets.<github>`. Locally the value is read from the environment variable `name`.
    """

    name: EnvVar
    """Environment variable the stage reads, e.g. AWS_SECRET_ACCESS_KEY."""
    jenkins: str | None = None
    """Jenkins credentials id; default: `name` in lowercase with hyphens."""
    teamcity: str | None = None
    """TeamCity secure value reference (`credentialsJSON:<uuid>`); default: a password parameter to fill in."""
    github: EnvVar | None = None
    """GitHub secret name; default: `name`."""

    @field_validator("teamcity")
    @classmethod
    def _teamcity_is_reference(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("credentialsJSON:"):
            raise ValueError(
                "must be a TeamCity secure token reference like 'credentialsJSON:1b2c...', "
                "never the secret value itself"
            )
        return value

    @property
    def jenkins_id(self) -> str:
        return self.jenkins or self.name.lower().replace("_", "-")

    @property
    def github_name(self) -> str:
        return self.github or self.name


class Approval(Spec):
    """A manual gate before the stage runs (Jenkins `input`, TeamCity approval, GitHub environment)."""

    message: str = "Deploy?"
    """What the approver is asked: the Jenkins `input` message, the prompt of `pipeline run local` (TeamCity's
    approval and GitHub's review show no message)."""
    approvers: tuple[str, ...] = ()
    """User names allowed to approve (Jenkins submitter, TeamCity `user:`, GitHub reviewers)."""
    groups: tuple[str, ...] = ()
    """Group or team names allowed to approve (TeamCity `group:`, GitHub team reviewers)."""
    timeout_minutes: int = Field(default=1440, ge=1, le=43200)
    """How long the gate waits before the run is aborted."""


class AwsSettings(Spec):
    """Where the aws profile talks to. Credentials come from the usual boto3 chain or `secrets`."""

    region: str = "us-east-1"
    """AWS region of the stacks (and, on GitHub, the `aws-region` of the credentials step)."""
    endpoint_url: str | None = None
    """Override for emulators (moto, MiniStack, LocalStack); `AWS_ENDPOINT_URL` also works."""


class Sensitive(Spec):
    """A column whose values never leave production as they are: a test stack seeded from a
    snapshot of production's database gets `mask` (an SQL expression over the row) instead."""

    column: str
    """`table.column` (or `schema.table.column`), e.g. 'visits.agent'."""
    mask: str = "NULL"
    """SQL expression the column is set to, e.g. "'user-' || id" or "md5(email)"."""

    @field_validator("column")
    @classmethod
    def _qualified(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) not in (2, 3) or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
            raise ValueError(f"{value!r} must be 'table.column' (or 'schema.table.column'), e.g. 'visits.agent'")
        return value


class Database(Spec):
    """The environment's PostgreSQL database (the template's AWS::RDS::DBInstance; a PostgreSQL
    container on the local profile), migrated by Migrate stages with Alembic (docs/schema.md)."""

    migrations: RelPath = "migrations"
    """Alembic's script folder (env.py, versions/), with an `expand` and a `contract` branch."""
    sensitive: tuple[Sensitive, ...] = ()
    """Columns masked when a test stack is seeded from a snapshot of this database."""
    password_secret: EnvVar = "DATABASE_PASSWORD"
    """aws profile: the environment variable (a secret on CI) with the master user's password,
    passed to the template's `DatabasePassword` parameter. The local profile makes its own."""

    @field_validator("sensitive", mode="before")
    @classmethod
    def _sensitive_from_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = (value,)
        if isinstance(value, list | tuple):
            return tuple(Sensitive(column=v) if isinstance(v, str) else v for v in value)
        return value


class Environment(Spec):
    """A place the service runs: a stack built from a template, on the local or aws profile."""

    name: Name
    """The environment's name: what stages name in `environment=` (and the CI lock, credentials and GitHub
    environment names derive from it)."""
    profile: Profile | None = None
    """The profile CI uses for this environment; default: the pipeline's profile.
    `pipeline run local --profile` overrides both."""
    ephemeral: bool = False
    """Created per run and deleted at the end (test stacks)."""
    approval: Approval | None = None
    """Gate every stage that deploys here."""
    template: RelPath | None = None
    """CloudFormation template of the stack (also the topology of the local profile)."""
    stack: str | None = None
    """Stack name; default `<pipeline>-<environment>` (ephemeral ones get a per-run suffix)."""
    image_parameter: str = IMAGE_PARAMETER
    """Template parameter that carries the machine image."""
    aws: AwsSettings = AwsSettings()
    """Region and endpoint of the aws profile for this environment."""
    secrets: tuple[Secret, ...] = ()
    """Secrets every stage deploying here receives (e.g. AWS credentials)."""
    database: Database | None = None
    """The stack's database, when its template declares one (an ephemeral environment without
    one uses the database declaration of the environment it copies)."""
    alert_secret: EnvVar | None = None
    """The environment variable holding the alert route's token. With one, the environment's
    balancer serves `POST /.pipeline/alert` (Authorization: Bearer <token>): every request to the
    stable version and every flag of a rollout in flight off, at once (docs/flags.md). Without
    one there is no alert route. CI binds the variable (as a secret, by name) into every job acting
    here, and a deploy refuses to start while it is unset (it would rebuild the balancer without the route)."""
    flags: dict[Name, FlagValue] = Field(default_factory=dict)
    """Values of the pipeline's flags (`Pipeline(flags=[Flag(...)])`) this environment's flag store
    starts with; a flag not named here starts at its default. Later changes (`pipeline flag set`,
    FlagRollout) live in the store, not in the definition."""

    @field_validator("secrets", mode="before")
    @classmethod
    def _secrets_from_names(cls, value: Any) -> Any:
        return coerce_secrets(value)

    def model_post_init(self, context: Any, /) -> None:
        remember_location(self)

    def stack_name(self, pipeline: str) -> str:
        return self.stack or f"{pipeline}-{self.name}"

    @property
    def bound_secrets(self) -> tuple[Secret, ...]:
        """What every stage acting here receives on CI: `secrets`, then the alert route's token by
        name (`alert_secret`, unless `secrets` lists it with its own mapping). A deploy rebuilds the
        balancer, and a balancer rebuilt without the token has no alert route, so CI must bind it."""
        if self.alert_secret is None or any(s.name == self.alert_secret for s in self.secrets):
            return self.secrets
        return (*self.secrets, Secret(name=self.alert_secret))


class AgentLabels(Spec):
    """The labels CI agents are chosen by, for each thing a stage may need from its agent.

    A stage's CI job asks for the labels of what it needs: `docker` (it drives a Docker engine),
    `packer` (it bakes), `root` (it may have to build the base image with debootstrap), `local`
    (the local profile: images and containers live on one Docker engine, so every such job must
    run on the same persistent machine). Jenkins renders them as `agent { label 'a && b' }`,
    TeamCity as agent requirements (`exists("pipeline.label.NAME")`), GitHub as `runs-on` labels
    of a self-hosted runner (GitHub-hosted runners have Docker and Packer, so only `local` and
    `root` jobs leave them). `Stage(agent=...)` replaces a stage's labels outright.
    """

    docker: tuple[str, ...] = ("docker",)
    """Labels of agents with a Docker engine the job may use (the local profile's stages, a bake's image
    checks)."""
    packer: tuple[str, ...] = ("packer",)
    """Labels of agents with Packer (bake stages)."""
    root: tuple[str, ...] = ("root",)
    """An agent where the stage may run as root (debootstrap builds a base image no registry has)."""
    local: tuple[str, ...] = ("pipeline-local",)
    """The one persistent machine that runs the local profile on CI (exactly one agent may carry it)."""
    every: tuple[str, ...] = ()
    """Labels every job asks for, e.g. ("linux",). On GitHub they make every job self-hosted."""
    hosted: str = "ubuntu-latest"
    """GitHub: the `runs-on` of jobs that need no labelled agent (a GitHub-hosted runner image)."""

    @field_validator("docker", "packer", "root", "local", "every", mode="before")
    @classmethod
    def _labels_from_str(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("docker", "packer", "root", "local", "every")
    @classmethod
    def _labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for label in value:
            check_label(label)
        return value

    @field_validator("hosted")
    @classmethod
    def _hosted(cls, value: str) -> str:
        return check_label(value)


_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_label(value: str) -> str:
    """Agent labels end up in Jenkins label expressions, TeamCity parameter names and GitHub
    `runs-on`: letters, digits, '.', '_' and '-' keep them valid (and unambiguous) on all three."""
    if not _LABEL_RE.match(value) or len(value) > 64:
        raise ValueError(
            f"{value!r} is not a valid agent label: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 64 characters (e.g. 'docker')"
        )
    return value


class Verify(Spec):
    """How to tell an environment behaves: HTTP requests through its load balancer."""

    path: str = "/"
    """URL path requested through the load balancer; starts with '/'."""
    expect_status: int = Field(default=200, ge=100, le=599)
    """HTTP status every response must have."""
    expect_text: str | None = None
    """Text every response body must contain, e.g. 'Hello World 1.2.0'."""
    requests: int = Field(default=10, ge=1, le=10000)
    """Consecutive requests that must all pass."""
    wait_seconds: float = Field(default=60.0, gt=0, le=3600)
    """How long to wait for the first good answer before failing."""

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must start with '/' (e.g. '/health')")
        return value


class StageOutputs(BaseModel):
    """What a stage kind writes to the run manifest: string values under declared names.

    Each kind declares its own subclass; the runner validates every executor's result against it
    (an undeclared or missing name is the executor's bug, not the user's), and readers of another
    stage's outputs can only ask for names its kind declares."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(cls.model_fields)


class NoOutputs(StageOutputs):
    """A kind that writes nothing to the manifest."""


def coerce_secrets(value: Any) -> Any:
    """Let users write secrets=["AWS_KEY"] as well as secrets=[Secret(name="AWS_KEY", ...)]."""
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, list | tuple):
        return tuple(Secret(name=v) if isinstance(v, str) else v for v in value)
    return value


def stage_ref(value: Any) -> Any:
    """Accept a stage object wherever a stage name is expected."""
    name = getattr(value, "name", None)
    if isinstance(value, Stage) and isinstance(name, str):
        return name
    return value


class Stage(Spec):
    """Fields every stage kind shares. Subclasses add a literal `kind` and their own fields."""

    kind: str
    """The kind's name, fixed by each kind (e.g. 'commit-test'); in a spec read from JSON it picks the class."""
    name: Name
    """Unique in the pipeline; the job id on every CI target."""
    needs: tuple[Name, ...] = ()
    """Stages that must finish first (the builder's `a >> b` adds to this)."""
    branches: tuple[str, ...] = ()
    """Run only on these branches (glob patterns like 'main' or 'release/*'); empty means all."""
    timeout_minutes: int = Field(default=60, ge=1, le=10080)
    """Limit of one attempt, in minutes (the runner stops the attempt there); the rendered CI job's own limit
    leaves room for every attempt and the set-up."""
    retries: int = Field(default=0, ge=0, le=10)
    """Extra attempts after a failure."""
    env: dict[EnvVar, str] = Field(default_factory=dict)
    """Plain (non-secret) environment variables for the stage."""
    secrets: tuple[Secret, ...] = ()
    """Secrets the stage receives as environment variables: names, or `Secret` objects for per-target ids. A
    stage acting on an environment also receives that environment's secrets. Locally each value is read
    from the environment variable of its name (a missing one stops the stage)."""
    approval: Approval | None = None
    """A manual gate before the stage; only stages that deploy may have one."""
    description: str = ""
    """Free text for people reading the rendered CI config: a comment above the Jenkins stage, the TeamCity
    build configuration's description."""
    agent: tuple[str, ...] | None = None
    """Labels of the CI agent this stage runs on, replacing the ones derived from what it needs
    (see `AgentLabels`): Jenkins `agent { label }`, TeamCity requirements, GitHub `runs-on` (as
    given: include `self-hosted` for your own runners)."""

    # --- class-level facts about a kind (not part of the data) ---
    executor: ClassVar[str] = ""
    """The kind's executor as 'module:Class', imported only when a run needs it (the registry in
    pipeline/executors/registry.py); empty: the kind can be rendered for CI but not run."""
    extras: ClassVar[tuple[str, ...]] = ()
    """Extras of pipeline-as-code the kind's executor needs on CI besides `run` (e.g. ("schema",)):
    the rendered install step brings them, pinned like the rest."""
    approvable: ClassVar[bool] = False
    """Whether a manual gate makes sense before this kind (deployments, generic shell steps)."""
    outputs: ClassVar[type[StageOutputs]] = NoOutputs
    """What the stage writes to the run manifest; the runner checks an executor's result against it."""
    always: ClassVar[bool] = False
    """Runs even when a stage it needs failed (teardown)."""
    uses_profile: ClassVar[bool] = False
    """Whether the profile changes what the kind does (it drives Docker or AWS); only these get
    `--profile` and cloud credentials on CI."""
    refers_to: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    """Fields naming an upstream stage, and the kinds each may name, e.g. {"image": ("bake",)}.
    A stage object is accepted wherever such a field takes a name."""
    follows_environment_of: ClassVar[str | None] = None
    """A field naming an upstream stage whose environment this one acts on (update-stack and
    teardown act on the environment of the test stack they name)."""
    copies_environment: ClassVar[str | None] = None
    """A field naming the environment this kind copies (a test stack's `like`): an ephemeral
    environment without a template of its own uses that environment's template."""
    deletes: ClassVar[str | None] = None
    """A field naming the stage whose resources this one deletes (a teardown's `stack`): it must
    run after every stage that uses that stage's outputs."""
    runs_packer: ClassVar[bool] = False
    """Builds with Packer: its CI job runs on an agent labelled for Packer (`AgentLabels.packer`)."""
    cannot_run_on: ClassVar[Mapping[Profile, str]] = {}
    """Profiles the kind cannot be carried out on, each with why (e.g. {"aws": "..."}): `validate
    --profile` and a run refuse such a stage, and so does `render` when the profile CI would run it
    with (its environment's, else the pipeline's) is one of them (exit 2, before CI)."""
    own_job: ClassVar[bool] = False
    """Always a CI job of its own, never merged into the job of the stages that hold its
    environment's lock (a flag flip: a release that is not a deploy, gated by itself)."""

    @model_validator(mode="before")
    @classmethod
    def _references_from_stages(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.refers_to:
            return {key: stage_ref(value) if key in cls.refers_to else value for key, value in data.items()}
        return data

    @field_validator("needs", mode="before")
    @classmethod
    def _needs_from_stages(cls, value: Any) -> Any:
        if isinstance(value, str | Stage):
            value = (value,)
        if isinstance(value, list | tuple):
            return tuple(dict.fromkeys(stage_ref(v) for v in value))
        return value

    @field_validator("secrets", mode="before")
    @classmethod
    def _secrets_from_names(cls, value: Any) -> Any:
        return coerce_secrets(value)

    @field_validator("branches", mode="before")
    @classmethod
    def _branches_from_str(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("agent", mode="before")
    @classmethod
    def _agent_from_str(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("agent")
    @classmethod
    def _agent_labels(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            if not value:
                raise ValueError("give at least one label, or leave `agent` unset for the derived ones")
            for label in value:
                check_label(label)
        return value

    # --- what a kind refers to ---
    def files(self) -> tuple[str, ...]:
        """Paths (relative to the definition) that must exist and feed the idempotency key."""
        return ()

    def references(self) -> Mapping[str, str]:
        """Fields naming other stages: {field: stage name}. Each must be an upstream stage."""
        return {field: getattr(self, field) for field in self.refers_to}

    def reference_kinds(self) -> Mapping[str, tuple[str, ...]]:
        """For each field in `references`, the stage kinds it may name."""
        return dict(self.refers_to)

    def environment_name(self) -> str | None:
        """The environment this stage deploys to or acts on, if any."""
        return None

    def check(self, spec: Definition, where: str) -> list[Problem]:
        """Rules particular to this kind, checked against the whole pipeline (each Problem names
        `where`, e.g. 'stages[3] (test-stack)'); the base has none."""
        return []

    # --- what a stage's CI job needs, beyond its kind's class-level facts (the CI plan reads these) ---
    def checks_in_docker(self) -> bool:
        """Runs checks in a Docker container whatever the profile (a bake checks its image, or the
        AMI's docker stand-in): its CI job needs Docker also off the local profile."""
        return False

    def docker_base_image(self) -> str | None:
        """The Docker base image its build starts from, when it builds one: on an agent other than
        the local profile's machine, a base image no registry has is built there (needs root)."""
        return None

    def commits_and_pushes(self) -> bool:
        """Commits into the repository and pushes when it acts on an aws-profile environment with a
        template (a promote recording its image): its CI job needs a branch and push credentials."""
        return False

    def build_aws_settings(self) -> AwsSettings | None:
        """Region and endpoint it builds with on the aws profile when it acts on no environment
        (the CI job binds the build credentials); None: the defaults."""
        return None

    # --- builder sugar: `a >> b` and `a >> [b, c]` record edges in the active Pipeline ---
    def __rshift__(self, other: Stage | list[Stage]) -> Any:
        current_builder(">>").depend(other, on=self)
        return other

    def __rrshift__(self, other: Stage | list[Stage]) -> Stage:
        current_builder(">>").depend(self, on=other)
        return self

    def model_post_init(self, context: Any, /) -> None:
        if _constructing_placeholder.get():
            return
        register_stage(self)


class DeclaredFlag(Protocol):
    """A flag as a stage's check sees it (`pipeline.flags.spec.Flag` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def default(self) -> FlagValue: ...

    @property
    def type_name(self) -> str: ...


class Definition(Protocol):
    """What a stage kind's `check(spec, where)` may read of the whole definition, to refuse a
    stage that does not fit it (an environment it names is missing, its place in the DAG is
    wrong). `PipelineSpec` is the one there is; a plugin kind annotates `spec: Definition`."""

    @property
    def stages(self) -> tuple[Stage, ...]:
        """Every stage, in the order the definition made them."""
        ...

    @property
    def environments(self) -> tuple[Environment, ...]:
        """Every environment, persistent and ephemeral."""
        ...

    @property
    def flags(self) -> tuple[DeclaredFlag, ...]:
        """The feature flags the pipeline declares."""
        ...

    @property
    def graph(self) -> Graph:
        """The stage DAG: order, dependencies, ancestry."""
        ...

    def database_of(self, env: Environment) -> Database | None:
        """The database the environment's stack holds, if it declares one."""
        ...
