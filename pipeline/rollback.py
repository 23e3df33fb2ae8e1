"""`pipeline rollback ENV [--to IMAGE]`: a thin use case over the release history.

The history (`Ledger.history`: the environment's durable store when it answers, else this machine's
ledger) says which images are known-good; a rollback moves the stack to the newest one before what
runs, with the same update every deploy uses, verifies it through the load balancer, and records
both facts (on aws, as a commit of the template: the template says what runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import BadInputError, PipelineError, VerificationFailedError
from pipeline.ledger import Ledger, new_run_id
from pipeline.model import Environment, Profile, Verify, default_profile
from pipeline.profiles import ProfileEngines
from pipeline.stages.promote import DEFAULT_AUTHOR, Promote

if TYPE_CHECKING:
    from pipeline.engines.commit_info import CommitInfo
    from pipeline.engines.stack import VerifyReport
    from pipeline.loader import Loaded
    from pipeline.profiles.base import Engines
    from pipeline.spec import PipelineSpec

ROLLBACK_RUN_PREFIX = "rollback-"
"""Run ids of releases recorded by `pipeline rollback` (not by a pipeline run)."""


def _ignore(text: str) -> None:
    pass


def promote_to(spec: PipelineSpec, env: Environment) -> Promote | None:
    """The stage that promotes to `env`, if any."""
    return next((s for s in spec.stages if isinstance(s, Promote) and s.environment == env.name), None)


def restore_check(spec: PipelineSpec, env: Environment) -> Verify:
    """How to verify an environment after going back to an older image: its promote stage's
    `restore_check()`, else a plain `GET /` expecting 200."""
    promote = promote_to(spec, env)
    return promote.restore_check() if promote is not None else Verify()


@dataclass(frozen=True)
class RollbackResult:
    environment: str
    stack: str
    from_image: str | None
    to_image: str
    url: str | None
    report: VerifyReport
    seconds: float
    """From the start of the update to a verified answer: the time to restore."""
    known_good: bool
    """Whether the target was a known-good image of this environment in the ledger."""
    commit: str | None = None
    """aws profile: the commit that records the target in the template (None: nothing committed,
    e.g. the template already named it, or the local profile)."""
    pushed_to: str | None = None


def rollback(
    loaded: Loaded,
    environment: str,
    *,
    to: str | None = None,
    profile: Profile | None = None,
    on_event: Callable[[str], None] = _ignore,
    engines: Engines | None = None,
) -> RollbackResult:
    """Move `environment` back to the previous known-good image (or `to`), verify, record.

    Raises BadInputError (exit 2) when there is nothing to go back to, VerificationFailedError
    (exit 1) when the image it went back to does not verify (the release history then says so)."""
    spec = loaded.spec
    env = _environment(spec, environment)
    ledger = Ledger(loaded.root)
    use = profile or default_profile()
    provider = engines or ProfileEngines()
    engine = provider.stack_engine(spec, env, use, loaded.root)
    store = provider.release_store(spec, env, use, loaded.root)
    stack = env.stack_name(spec.name)
    git = git_settings(spec, env, use)
    ledger.ensure()
    with ledger.lock(spec.name, env.name, purpose=f"pipeline rollback {env.name}"):
        if git is not None:
            # Refused (dirty tree, detached HEAD...) before the stack changes, like promote.
            from pipeline.engines.git_promote import check_can_record

            check_can_record(loaded.root, git.template, env.image_parameter, pipeline=spec.name, push=git.push)
        state = engine.describe(stack)
        if not state.exists:
            raise BadInputError(
                f"environment {env.name!r} has no stack ({stack} does not exist), so there is nothing to roll back",
                hint="promote a release first (pipeline run local)",
            )
        releases = ledger.history(spec.name, env.name, store)
        current = state.image or releases.live()
        candidates = releases.candidates()
        target = to or next((image for image in candidates if image != current), None)
        if target is None:
            where = "the ledger" if releases.source == "ledger" else f"the {releases.source}"
            raise BadInputError(
                f"{where} has no known-good image of {env.name!r} other than the one it runs ({current})",
                hint=f"name one: pipeline rollback {env.name} --to IMAGE",
            )
        if target == current:
            on_event(f"{env.name} already runs {target}: verifying it")
        else:
            on_event(f"rolling {env.name} ({stack}) back from {current} to {target}")
        started = time.monotonic()
        moved = engine.deploy(
            stack, target, parameters=engine.carried_parameters(state, env.image_parameter), on_event=on_event
        )
        report = engine.verify(moved, restore_check(spec, env), on_event=on_event)
        seconds = time.monotonic() - started
        for check in report.emulated:
            on_event(f"emulated check: {check}")
        run_id = ROLLBACK_RUN_PREFIX + new_run_id()
        event: Mapping[str, object] = {
            "pipeline": spec.name,
            "run_id": run_id,
            "stage": None,
            "event": "rollback",
            "environment": env.name,
            "from": current,
            "to": target,
            "ok": report.ok,
            "seconds": round(seconds, 3),
        }
        ledger.append_event(event)
        if not report.ok:
            ledger.record_release(spec.name, env.name, target, run_id, "failed", store=store)
            others = [c for c in candidates if c not in (target, current)]
            raise VerificationFailedError(
                f"{env.name} now runs {target}, but it does not verify: {report.detail}",
                hint=(f"go back further: pipeline rollback {env.name} --to {others[0]}" if others else None),
            )
        if current and current != target:
            ledger.record_release(spec.name, env.name, current, run_id, "failed", store=store)
        if current != target or ledger.history(spec.name, env.name, store).live() != target:
            ledger.record_release(spec.name, env.name, target, run_id, "live", store=store)
        commit = None
        if git is not None:
            commit = _record_in_git(loaded, env, git, target, current, run_id, on_event)
        return RollbackResult(
            environment=env.name,
            stack=stack,
            from_image=current,
            to_image=target,
            url=moved.url,
            report=report,
            seconds=seconds,
            known_good=target in candidates,
            commit=commit.sha if commit is not None else None,
            pushed_to=commit.pushed_to if commit is not None else None,
        )


@dataclass(frozen=True)
class GitSettings:
    """How `pipeline rollback` records the image in git: the promote stage's settings."""

    template: Path
    push: bool
    author: str


def git_settings(spec: PipelineSpec, env: Environment, profile: Profile) -> GitSettings | None:
    """aws profile: the template says what runs, so a rollback is committed like a promote, with
    the settings of the environment's Promote stage (none: commit and push, default author).
    None when nothing is recorded: the local profile, no template, or `Promote(commit=False)`."""
    if profile != "aws" or env.template is None:
        return None
    promote = promote_to(spec, env)
    if promote is None:
        return GitSettings(template=Path(env.template), push=True, author=DEFAULT_AUTHOR)
    if not promote.commit:
        return None
    return GitSettings(template=Path(env.template), push=promote.push, author=promote.author)


def _record_in_git(
    loaded: Loaded,
    env: Environment,
    git: GitSettings,
    target: str,
    current: str | None,
    run_id: str,
    on_event: Callable[[str], None],
) -> CommitInfo | None:
    from pipeline.engines.git_promote import record_image
    from pipeline.errors import GitOperationError

    spec = loaded.spec
    try:
        return record_image(
            loaded.root,
            loaded.root / git.template,
            env.image_parameter,
            target,
            pipeline=spec.name,
            run_id=run_id,
            environment=env.name,
            default_author=git.author,
            push=git.push,
            subject=f"{spec.name}: roll {env.name} back to {target}"
            + (f" (from {current})" if current and current != target else ""),
            release="rollback",
            on_event=on_event,
        )
    except PipelineError as exc:
        raise GitOperationError(
            f"{env.name} runs {target} and verifies, but recording it in {git.template} failed: {exc.message}",
            hint=f"{exc.hint + '; then ' if exc.hint else ''}re-run `pipeline rollback {env.name} --to {target} "
            "--profile aws` (the stack is already there: it only records the image)",
        ) from exc


def _environment(spec: PipelineSpec, name: str) -> Environment:
    durable = [e.name for e in spec.environments if not e.ephemeral]
    try:
        env = spec.environment(name)
    except KeyError:
        raise BadInputError(
            f"no environment named {name!r}", hint=f"environments: {', '.join(durable) or '(none)'}"
        ) from None
    if env.ephemeral:
        raise BadInputError(
            f"environment {name!r} is ephemeral (test stacks are rebuilt every run): there is nothing to roll back",
            hint=f"environments you can roll back: {', '.join(durable) or '(none)'}",
        )
    return env


__all__ = [
    "ROLLBACK_RUN_PREFIX",
    "GitSettings",
    "RollbackResult",
    "git_settings",
    "restore_check",
    "rollback",
]
