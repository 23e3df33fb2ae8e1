"""Every error the library raises on purpose, with a fixed exit code per class.

A message says what happened, why, and what to do. Library code raises these; only the CLI prints
them. Exit codes (the CLI contract): 0 ok, 1 a stage or check failed, 2 bad input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from pipeline.engines.commit_info import CommitInfo
    from pipeline.engines.deploy_report import DeployReport

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class PipelineError(Exception):
    """Base of every expected failure. `hint` says what to do about it."""

    exit_code: ClassVar[int] = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


# --- bad input: exit 2 --------------------------------------------------------------------------


class BadInputError(PipelineError):
    """The user gave us something we cannot use; nothing was changed."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition: where (field path, file:line) and what."""

    message: str
    path: str = ""
    file: str | None = None
    line: int | None = None
    stage: str | None = None
    """The stage the problem is about, so the builder can point at the line that made it."""
    cycle: tuple[str, ...] = ()
    """For a dependency cycle: its stages in the direction of `>>` (first == last), so the builder
    can point at the line that closes it."""

    def location(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}"
        return self.file or ""

    def __str__(self) -> str:
        head = f"{self.path}: " if self.path else ""
        where = self.location()
        tail = f" ({where})" if where else ""
        return f"{head}{self.message}{tail}"


class DefinitionError(BadInputError):
    """The pipeline definition is invalid. Carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem], *, source: str | None = None, hint: str | None = None) -> None:
        self.problems = tuple(problems)
        self.source = source
        count = len(self.problems)
        where = f" in {source}" if source else ""
        lines = [f"the pipeline definition{where} has {count} problem{'s' if count != 1 else ''}:"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines), hint=hint or "fix the definition, then run `pipeline validate`")


class DefinitionNotFoundError(BadInputError):
    """No definition file where we looked."""


class UserCodeError(BadInputError):
    """The user's definition file raised while it was being imported."""


class UnknownStageError(BadInputError):
    def __init__(self, name: str, available: Sequence[str]) -> None:
        super().__init__(
            f"no stage named {name!r} in this pipeline",
            hint=f"available stages: {', '.join(available) or '(none)'}",
        )


class UnknownTargetError(BadInputError):
    def __init__(self, target: str, available: Sequence[str], *, where: str = "") -> None:
        super().__init__(
            f"no renderer for target {target!r}" + (f" (named in {where})" if where else ""),
            hint=f"available targets: {', '.join(available)} (or `all`; several: jenkins,teamcity)",
        )


class UndeclaredTargetError(BadInputError):
    """A target to render is not among the definition's `targets`: its drift check would not cover it."""

    def __init__(self, targets: Sequence[str], declared: Sequence[str]) -> None:
        super().__init__(
            f"the definition's targets are {', '.join(declared)}; {', '.join(targets)} is not one of them "
            "(the drift check in every rendered file covers exactly the definition's targets)",
            hint=f"add it: Pipeline(..., targets=({', '.join(repr(t) for t in (*declared, *targets))})), "
            "or render without --target",
        )


class UnsupportedTargetsError(BadInputError):
    """Targets the definition uses cannot express some of its features (`pipeline validate`)."""

    def __init__(self, problems: Sequence[UnsupportedFeatureError]) -> None:
        self.problems = tuple(problems)
        lines = [f"{len(self.problems)} target(s) this definition uses cannot express it:"]
        lines += [f"  - {p.message}" + (f" ({p.hint})" if p.hint else "") for p in self.problems]
        super().__init__(
            "\n".join(lines),
            hint="change the definition (each line says how), or drop that target from Pipeline(targets=...)",
        )


class RendererRegistryError(BadInputError):
    """Two renderers claim the same name, or a plugin is registered under the wrong name."""


class StageKindRegistryError(BadInputError):
    """A stage kind (or its executor) cannot be found or loaded, or two plugins claim one kind."""


class UnsupportedFeatureError(BadInputError):
    """A CI target cannot express a feature the definition uses."""

    def __init__(self, target: str, feature: str, where: str, hint: str | None = None) -> None:
        super().__init__(f"{target} cannot express {feature} (used by {where})", hint=hint)
        self.target = target
        self.feature = feature


class ProfileCannotError(BadInputError):
    """A profile has no means to carry out something the definition asks for (a dark launch on the
    ALB, a FlagRollout on aws); refused before anything changes (validate, run, render)."""

    def __init__(
        self, profile: str, what: str, why: str, *, hint: str | None = None, more: Sequence[ProfileCannotError] = ()
    ) -> None:
        """`more`: the other refusals found in the same check, so one run of validate names them all."""
        message = f"the {profile} profile cannot carry out {what}: {why}"
        message += "".join(f"\n  - and {other.args[0]}" for other in more)
        hints = [h for h in dict.fromkeys([hint, *(other.hint for other in more)]) if h]
        super().__init__(message, hint="; ".join(hints) or None)
        self.profile = profile
        self.what = what
        self.why = why
        self.more = tuple(more)


class NotImplementedStageError(BadInputError):
    """A stage kind whose executor does not exist (yet) for the chosen profile."""


class TemplateError(BadInputError):
    """A Packer or CloudFormation template is invalid; raised before any side effect."""


class ApprovalRequiredError(BadInputError):
    """A gate needs a human answer and there is nobody to ask."""


class StateCorruptError(BadInputError):
    """A ledger file under .pipeline/ cannot be read."""


class CredentialsError(BadInputError):
    """Credentials for a service (AWS) are missing, expired or refused; nothing was changed."""


class MigrationLintError(BadInputError):
    """A migration is unsafe (it locks a table, or an expand drops or renames): found in its SQL
    before anything ran. `findings` name the file and line of each."""


class MissingSecretError(BadInputError):
    """A secret a stage needs is not set in the environment, or is too short to mask."""


class GitStateError(BadInputError):
    """The repository is not in a state promote can commit to (dirty, detached, ...); nothing changed."""


# --- failures: exit 1 ----------------------------------------------------------------------------


class SchemaError(PipelineError):
    """A migration could not run (the database refused it, Alembic's scripts are inconsistent),
    or a contract was refused because replicas of an older release still run."""


class StageFailedError(PipelineError):
    """A stage ran and failed (a command exited non-zero, a check failed, verification failed)."""

    def __init__(self, stage: str, message: str, *, hint: str | None = None, log_tail: str = "") -> None:
        super().__init__(f"stage {stage!r} failed: {message}", hint=hint)
        self.stage = stage
        self.log_tail = log_tail


class CommandFailedError(PipelineError):
    """A subprocess failed: reason first, then the stderr tail, then the command to reproduce."""

    def __init__(self, command: Sequence[str] | str, returncode: int, tail: str, *, cwd: str | None = None) -> None:
        self.command = command if isinstance(command, str) else " ".join(_shell_quote(c) for c in command)
        self.returncode = returncode
        self.tail = tail
        where = f" (in {cwd})" if cwd else ""
        msg = f"command exited with status {returncode}{where}"
        if tail.strip():
            indented = "\n".join("    " + line for line in tail.rstrip().splitlines())
            msg += f"\n{indented}"
        super().__init__(msg, hint=f"reproduce with: {self.command}")


class CommandTimeoutError(PipelineError):
    def __init__(self, command: str, seconds: float) -> None:
        super().__init__(
            f"command did not finish within {seconds:g} s: {command}",
            hint="raise the stage's timeout_minutes, or find out why the command hangs",
        )


class VerificationFailedError(PipelineError):
    """HTTP verification of an environment failed."""


class ToolMissingError(PipelineError):
    """A tool a stage needs (docker engine, packer, git, AWS endpoint) is not available."""


class LockHeldError(PipelineError):
    """Another live process holds a lock (a run of this pipeline and environment, a deploy of a
    stack). `holder` is what the lock file says about it, when it says anything."""

    def __init__(self, message: str, *, hint: str | None = None, holder: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.holder = dict(holder) if holder else None


class GateNotProtectedError(PipelineError):
    """A CI gate's approvers are not in force on the server (a GitHub environment without required
    reviewers): the gated job stops before it deploys (exit 1)."""


class GateNotApprovedError(PipelineError):
    """A CI gate was passed by someone who is not one of its approvers, or who approved cannot be
    established (a GitLab manual job started by another user): the gated job stops before it deploys
    (exit 1)."""


class RenderDriftError(PipelineError):
    """`render --check` found committed CI files that differ from a fresh render."""

    def __init__(self, diff: str, paths: Sequence[str]) -> None:
        super().__init__(
            f"committed CI files differ from a fresh render: {', '.join(paths)}\n{diff}",
            hint="run `pipeline render` and commit the result",
        )
        self.diff = diff
        self.paths = tuple(paths)


class TemplateBugError(PipelineError):
    """A template printed a value without an escaping filter (a bug in the renderer)."""


class StateUnwritableError(PipelineError):
    """The state folder cannot be written (read-only file system, disk full, permissions)."""


class GitOperationError(PipelineError):
    """A git command failed while promoting (commit hook, revert conflict, ...)."""


class PushFailedError(GitOperationError):
    """The promote commit could not be pushed; it has been reverted locally with a new commit."""

    def __init__(self, message: str, *, hint: str | None = None, commit: CommitInfo, revert: CommitInfo | None) -> None:
        super().__init__(message, hint=hint)
        self.commit = commit
        self.revert = revert


class FlagStoreError(PipelineError):
    """The flag store cannot be reached or refused a change."""


class NoFlagStoreError(PipelineError):
    """The environment has no flag store to talk to (no stack, or its template declares none)."""


class StackOperationError(PipelineError):
    """A stack create/update/delete failed in the real world (names the resource and reason)."""


class HealthBreachError(StackOperationError):
    """The new version broke a health threshold while it took traffic; the engine has already
    rolled the stack back to the old image. The message shows the numbers that caused it (the
    new version's error rate and requests, its p99 against the old version's, the threshold);
    `report` has all of them."""

    def __init__(self, message: str, *, hint: str | None = None, report: DeployReport | None = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report


class CloudFormationError(StackOperationError):
    """A stack operation ended badly; says which resource failed, why, and where the stack is now."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        stack: str = "",
        status: str = "",
        resource: str | None = None,
        reason: str | None = None,
        deleted: bool = False,
    ) -> None:
        super().__init__(message, hint=hint)
        self.stack = stack
        self.status = status
        self.resource = resource
        """Logical id (and type) of the first resource that failed, when known."""
        self.reason = reason
        self.deleted = deleted
        """The engine deleted the stack afterwards (a failed create left it in ROLLBACK_COMPLETE)."""


# --- interrupted: 130 (SIGINT) / 143 (SIGTERM) ------------------------------------------------------


class Interrupted(PipelineError):
    """The run was interrupted (Ctrl-C); cleanup has been done."""

    exit_code = 130


def _shell_quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
