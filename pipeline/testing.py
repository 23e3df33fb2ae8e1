"""Test doubles for the engine contracts, shared by this project's tests and by plugin authors:
a stack engine that keeps its stacks in memory, and the engines provider that hands it out.

    engine = FakeStackEngine(image="shop:2")
    Runner(loaded, engines=FakeEngines(engine))      # or rollback(..., engines=...), collect(...)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.engines.stack import BaseStackEngine, OnEvent, StackEngine, StackState, VerifyReport
from pipeline.ledger import Release, ReleaseStore
from pipeline.model import Environment, Profile, Verify
from pipeline.spec import PipelineSpec
from pipeline.strategy import Health, Strategy


def _ignore(text: str) -> None:
    pass


@dataclass
class FakeStackEngine(BaseStackEngine):
    """Stacks in memory: `deploy` moves a stack to an image (creating it), `verify` fails for the
    images in `broken`. With `image` set, every stack name starts out existing on that image
    (one environment's stack); `stacks_by_name` tracks stacks deployed since."""

    image: str | None = "shop:2"
    broken: set[str] = field(default_factory=set)
    deployed: list[str] = field(default_factory=list)
    """Every image deployed, in order."""
    checks: list[Verify] = field(default_factory=list)
    """Every check `verify` was asked to make."""
    deleted: list[str] = field(default_factory=list)
    profile: Profile = "local"
    stacks_by_name: dict[str, str] = field(default_factory=dict)
    url: str = "http://127.0.0.1:1/"

    def describe(self, stack: str) -> StackState:
        image = self.stacks_by_name.get(stack, self.image)
        if image is None or (stack in self.deleted and stack not in self.stacks_by_name):
            return StackState(name=stack, exists=False)
        return StackState(name=stack, exists=True, image=image, url=self.url, status="ready")

    def deploy(
        self,
        stack: str,
        image: str,
        *,
        parameters: Mapping[str, str] | None = None,
        on_event: OnEvent = _ignore,
        strategy: Strategy | None = None,
        health: Health | None = None,
    ) -> StackState:
        self.deployed.append(image)
        self.image = image
        self.stacks_by_name[stack] = image
        return self.describe(stack)

    def verify(self, state: StackState, check: Verify, *, on_event: OnEvent = _ignore) -> VerifyReport:
        self.checks.append(check)
        ok = state.image not in self.broken
        return VerifyReport(ok=ok, requests=check.requests, failures=0 if ok else 1, detail="fake")

    def delete(self, stack: str, *, on_event: OnEvent = _ignore) -> None:
        self.deleted.append(stack)
        self.stacks_by_name.pop(stack, None)
        if not self.stacks_by_name:
            self.image = None

    def stacks(self) -> list[str]:
        return sorted(self.stacks_by_name)


@dataclass
class FakeReleaseStore:
    """A durable release record in memory (`readable=False`: as if it could not be reached)."""

    releases: list[Release] = field(default_factory=list)
    readable: bool = True
    where: str = "a fake store"

    def read(self) -> list[Release] | None:
        return list(self.releases) if self.readable else None

    def append(self, release: Release) -> None:
        self.releases.append(release)


@dataclass
class FakeEngines:
    """An engines provider that gives `engine` for every environment and profile, and `store` (if
    any) as every environment's durable release record."""

    engine: StackEngine
    store: ReleaseStore | None = None

    def stack_engine(
        self,
        spec: PipelineSpec,
        env: Environment,
        profile_name: Profile,
        root: Path,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> StackEngine:
        return self.engine

    def release_store(
        self, spec: PipelineSpec, env: Environment, profile_name: Profile, root: Path
    ) -> ReleaseStore | None:
        return self.store
