"""The rendered CI files the Jenkins and TeamCity checks run on, and the definitions they implement.

- every example's committed golden file, and a fresh render of every example;
- the repository's own pipelinefile.py, rendered fresh, and its committed CI files;
- definitions made to be hard to render: quotes, `$`, backslashes, `${{`, `%`, unicode, leading
  and trailing spaces, multi-line and empty values, branch globs, gates in parallel, pull
  requests, rehearsals, nested and twin teardowns, gates among the stages a teardown protects,
  lock spans (the stress specs of the unit tests).

A case names its file and its definition; `materialise` renders it when needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path

from pipeline import Approval, Bake, CommitTest, Environment, Pipeline, Secret, Shell, Teardown, TestStack, Trigger
from pipeline.loader import load
from pipeline.model import Stage
from pipeline.render import render, write
from pipeline.render.base import RenderContext
from pipeline.spec import PipelineSpec
from tests.ci_grammar.jenkins_trace import Branch

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.name for p in (REPO / "examples").iterdir() if (p / "pipelinefile.py").is_file())
OUTPUTS = {"jenkins": "Jenkinsfile", "teamcity": ".teamcity/settings.kts"}


@dataclass(frozen=True)
class Case:
    id: str
    spec: Callable[[], PipelineSpec]
    committed: Path | None = None
    """A file in the repository (golden or the repo's own); None: render the spec fresh."""
    extra_branches: tuple[Branch, ...] = ()
    """Branches to check besides spec_facts.sample_branches (e.g. where glob dialects differ)."""
    tags: frozenset[str] = field(default_factory=frozenset)
    context: RenderContext = field(default_factory=RenderContext)
    """Where the definition is, relative to the repository root (`-f FILE` in every command)."""

    def file(self, target: str, tmp: Path) -> Path:
        """The file to check: the committed one, or a fresh render under tmp."""
        if self.committed is not None:
            return self.committed
        out = tmp / target / self.id.replace(":", "-").replace("/", "-")
        write(render(self.spec(), [target], self.context), out)
        return out / OUTPUTS[target]


@cache
def example_spec(name: str) -> PipelineSpec:
    return load(REPO / "examples" / name / "pipelinefile.py").spec


@cache
def repo_spec() -> PipelineSpec:
    return load(REPO / "pipelinefile.py").spec


# ----------------------------------------------------------------------------- tricky definitions

ODD_VALUES = {
    "QUOTES": "q'uo\"te `tick` ''' \"\"\"",
    "DOLLARS": "$HOME ${HOME} $(id) ${{ github.sha }} \\$ $",
    "BACKSLASHES": "a\\b\\\\c \\n \\t \\u00e9 \\' \\\" \\",
    "PERCENT": "100% %env.HOME% %% %teamcity.build.id% %",
    "KOTLIN": '${\'$\'}{x} \\${y} """.trimIndent()',
    "GROOVY": "${1+1} $x \\${y} ''' ' \"",
    "UNICODE": "é ✓ 中文 emoji 🎉 nbsp\u00a0here",
    "SPACES": "  leading and trailing  ",
    "TAB": "a\tb",
    "BLANK": " ",
}
MULTILINE_VALUES = {
    "MULTI": "line one\n  indented two\nthree",
    "TRAILING": "trailing spaces  \nand a tab\t\nend",
    "NEWLINE_AT_END": "value\n",
    "INDENTED": "    all\n    indented",
}
MULTILINE_INSTALL = "pip install pipeline-as-code[run] && python -c 'import sys\nprint(sys.version)'"
MULTILINE_MESSAGE = "Deploy to production?\n  Check the dashboard first.  "
ODD_SECRET = Secret(
    name="ODD_SECRET", jenkins="it's-id \\ $x", teamcity="credentialsJSON:1-2%3-$x", github="ODD_SECRET_1"
)


def tricky_values_spec() -> PipelineSpec:
    """Odd single-line values everywhere a value goes: variables, secrets, gate, install."""
    with Pipeline(
        "tricky-values",
        environments=[
            Environment(name="staging", secrets=("STAGING_TOKEN",)),
            Environment(
                name="production",
                approval=Approval(
                    message="Go? 'yes' \"no\" $x ${y} 100% \\ é ✓",
                    approvers=("o'neil", "bob"),
                    groups=("ops",),
                    timeout_minutes=30,
                ),
            ),
        ],
        trigger=Trigger(branches=("main", "release/*")),
        install="pip install \"a[b]\" 'c' ${PIP_X:-y} 100% \\\\ '''x''' \"\"\"y\"\"\" é",
    ) as p:
        test = CommitTest(name="commit-test", commands=["true"], env=dict(ODD_VALUES))
        staging = Shell(
            name="deploy-staging", environment="staging", commands=["true"], secrets=[ODD_SECRET], env={"X": "1"}
        )
        production = Shell(name="deploy-production", environment="production", commands=["true"], secrets=[ODD_SECRET])
        notify = Shell(name="notify", commands=["true"], branches=("main", "hotfix/*"), secrets=["CHAT_WEBHOOK"])
        smoke = Shell(name="smoke-staging", environment="staging", commands=["true"])
        test >> [staging, production, notify]
        staging >> smoke
    return p.spec


def multiline_values_spec() -> PipelineSpec:
    """Multi-line values with indentation and trailing spaces, a multi-line gate message, and an
    install command with a quoted multi-line argument."""
    with Pipeline(
        "multiline-values",
        environments=[
            Environment(name="production", approval=Approval(message=MULTILINE_MESSAGE, approvers=("alice",)))
        ],
        install=MULTILINE_INSTALL,
    ) as p:
        test = CommitTest(name="commit-test", commands=["true"], env=dict(MULTILINE_VALUES))
        deploy = Shell(name="deploy", environment="production", commands=["true"])
        test >> deploy
    return p.spec


def empty_value_spec() -> PipelineSpec:
    with Pipeline("empty-value") as p:
        CommitTest(name="commit-test", commands=["true"], env={"EMPTY": "", "FULL": "x"})
    return p.spec


def carriage_return_spec() -> PipelineSpec:
    """Refused at validate (a carriage return cannot reach every CI shell exactly)."""
    with Pipeline("carriage-return") as p:
        CommitTest(name="commit-test", commands=["true"], env={"CR": "a\rb", "CRLF": "c\r\nd"})
    return p.spec


def twin_teardowns_spec() -> PipelineSpec:
    """Two teardowns of the same stages (two stacks made in parallel, used together): each must run
    whatever the other does, and what follows them runs only when both succeeded."""
    with Pipeline(
        "twin-teardowns",
        environments=[
            Environment(name="a", ephemeral=True),
            Environment(name="b", ephemeral=True),
            Environment(name="production", template="templates/web.yaml"),
        ],
    ) as p:
        bake = Bake(name="bake", template="images/web.pkr.hcl")
        stack_a = TestStack(name="stack-a", environment="a", image=bake)
        stack_b = TestStack(name="stack-b", environment="b", image=bake)
        use = Shell(name="use", commands=["true"], env={"EMPTY": "", "FULL": "x"})
        down_a = Teardown(name="down-a", stack=stack_a)
        down_b = Teardown(name="down-b", stack=stack_b)
        after = Shell(name="after", commands=["true"])
        bake >> [stack_a, stack_b]
        stacks: list[Stage] = [stack_a, stack_b]  # list is invariant: list[TestStack] is no list[Stage]
        stacks >> use
        use >> [down_a, down_b]
        teardowns: list[Stage] = [down_a, down_b]
        teardowns >> after
    return p.spec


def branch_globs_spec() -> PipelineSpec:
    """Filters whose meaning differs between glob dialects: `*` across `/`, and letter case."""
    with Pipeline("branch-globs", trigger=Trigger(branches=("main", "release/*"))) as p:
        test = CommitTest(name="commit-test", commands=["true"])
        publish = Shell(name="publish", commands=["true"], branches=("release/*",))
        test >> publish
    return p.spec


def filtered_first_spec() -> PipelineSpec:
    """The first stage filtered to main while CI also builds release/*: on release/* nothing runs."""
    with Pipeline("filtered-first", trigger=Trigger(branches=("main", "release/*"))) as p:
        docs = CommitTest(name="build-docs", commands=["true"], branches=("main",))
        publish = Shell(name="publish-docs", commands=["true"])
        docs >> publish
    return p.spec


GLOB_BRANCHES = (Branch("release/1.0/hotfix"), Branch("Main"), Branch("RELEASE/1"))


def pull_requests_spec() -> PipelineSpec:
    """Pull requests build everything but the filtered deploy (Jenkins only: TeamCity refuses)."""
    with Pipeline(
        "pull-requests",
        environments=[Environment(name="production")],
        trigger=Trigger(branches=("main",), pull_requests=True),
    ) as p:
        test = CommitTest(name="commit-test", commands=["true"])
        deploy = Shell(name="deploy", environment="production", commands=["true"], branches=("main",))
        test >> deploy
    return p.spec


def stress_specs() -> dict[str, Callable[[], PipelineSpec]]:
    """The unit tests' stress shapes: rehearsals with filters, aws, nested teardowns, fan-out."""
    from tests.unit.test_render_first_push import gated_rehearsal, staging_spec, two_locks
    from tests.unit.test_render_plan import chain_spec, fan_spec, rehearsal_spec, two_stacks

    return {
        # issue 11's shapes: gates among the stages a teardown protects, lock spans (with a gate at the
        # start or in the middle), two environments' spans over the same Jenkins levels
        "gated-rehearsal-aws": lambda: gated_rehearsal("aws"),
        "lock-span": staging_spec,
        "lock-span-gated": lambda: staging_spec(gate_deploy=True),
        "lock-span-split-by-a-gate": lambda: staging_spec(gate_smoke=True),
        "two-locks": lambda: two_locks(False),
        "two-locks-overlap": lambda: two_locks(True),
        "twin-teardowns": twin_teardowns_spec,
        "chain-aws": lambda: chain_spec(profile="aws", test_stack_branches=("main",), name="chain-aws"),
        "chain-local-filtered": lambda: chain_spec(
            test_stack_branches=("main",), update_branches=("main", "rc/*"), name="chain-local"
        ),
        "fan": fan_spec,
        "nested-teardowns": lambda: two_stacks("nested"),
        # a trigger for rc/* too, so that the filtered stage runs on some branch CI builds
        "rehearsal-secrets": lambda: rehearsal_spec(
            secrets=[ODD_SECRET],
            env={"A": "q'uo\"te $X 5%", "B": "${{ x }}"},
            environment="staging",
            branches=("rc/*",),
        ).model_copy(update={"trigger": Trigger(branches=("main", "rc/*"))}),
    }


# ----------------------------------------------------------------------------- the catalogue


def _examples(target: str) -> list[Case]:
    out = []
    for name in EXAMPLES:
        golden = REPO / "examples" / name / "golden" / target / OUTPUTS[target]
        spec = partial(example_spec, name)
        out.append(Case(f"golden:{name}", spec, committed=golden))
        out.append(Case(f"render:{name}", spec))
    out.append(Case("render:repo", repo_spec))
    out.append(Case("committed:repo", repo_spec, committed=REPO / OUTPUTS[target]))
    return out


def _tricky(target: str) -> list[Case]:
    out = [
        Case("tricky:values", tricky_values_spec),
        Case("tricky:multiline", multiline_values_spec, tags=frozenset({"multiline"})),
        Case("tricky:empty-value", empty_value_spec, tags=frozenset({"empty"})),
        Case("tricky:branch-globs", branch_globs_spec, extra_branches=GLOB_BRANCHES, tags=frozenset({"globs"})),
        Case("tricky:filtered-first", filtered_first_spec),
        # `-f` with a space and a quote: shlex-quoted by the plan, then escaped by each target
        Case("tricky:definition-path", partial(example_spec, "linear"), context=RenderContext("ci/it's a pipeline.py")),
    ]
    if target == "jenkins":
        out.append(Case("tricky:pull-requests", pull_requests_spec))
    out += [Case(f"stress:{name}", factory) for name, factory in stress_specs().items()]
    if target == "jenkins":  # TeamCity and GitHub refuse a gate inside a local rehearsal (one job)
        from tests.unit.test_render_first_push import gated_rehearsal

        out.append(Case("stress:gated-rehearsal-local", lambda: gated_rehearsal("local")))
    return out


def cases(target: str) -> list[Case]:
    return _examples(target) + _tricky(target)
