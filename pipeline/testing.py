"""Test doubles for the engine contracts, shared by this project's tests and by plugin authors:
a stack engine and an image engine that keep their stacks and images in memory, and the engines
provider that hands them out.

    engine = FakeStackEngine(image="shop:2")
    Runner(loaded, engines=FakeEngines(engine))      # or rollback(..., engines=...), collect(...)
    Runner(loaded, engines=FakeEngines(engine, images=FakeImageEngine(failing={"web-1"})))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.engines.image_checks import CheckReport
from pipeline.engines.images.base import BakeJob, Built, Found, ImageEngine, KeyMaterial
from pipeline.engines.packer import TemplateInfo
from pipeline.engines.stack import BaseStackEngine, OnEvent, StackEngine, StackState, VerifyReport
from pipeline.ledger import Release, ReleaseStore
from pipeline.model import Environment, Profile, Verify
from pipeline.spec import PipelineSpec
from pipeline.stages.bake import Bake
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
class FakeImageEngine:
    """Images in memory. `build` makes `<source>-<n>`; `check` fails for the images in `failing`;
    `kept` maps each kept image to its key (what `find` finds); `leftovers` are what dead bakes left,
    by run id (what `sweep` removes). `calls` records every call, in order, for the tests to read."""

    source: str = "fake.web"
    checks_images: bool = True
    stand_in: ImageEngine | None = None
    where: str = ""
    emulated: bool = False
    part: str = "fake"
    noun: str = "image"
    present: set[str] = field(default_factory=set)
    """Images that exist (given ones, kept ones, built and not discarded)."""
    kept: dict[str, str] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    leftovers: dict[str, list[str]] = field(default_factory=dict)
    base_image_id: str | None = "sha256:base"
    extra_outputs: dict[str, str] = field(default_factory=dict)
    reachable: bool = True
    calls: list[str] = field(default_factory=list)
    built: int = 0

    def observed(self) -> dict[str, str]:
        return {"base_image": self.base_image_id or "none"}

    def ready(self, *, credentials: bool = True) -> None:
        self.calls.append(f"ready credentials={credentials}")
        if not self.reachable:
            from pipeline.errors import ToolMissingError

            raise ToolMissingError("the fake image engine does not answer", hint="set reachable=True")

    def check_template(
        self,
        root: Path,
        *,
        remember: bool,
        step: Callable[[str], None] = _ignore,
        log: Callable[[str], None] = _ignore,
    ) -> TemplateInfo:
        self.calls.append("check_template")
        return TemplateInfo({}, (self.source,))

    def exists(self, image: str, key: str | None = None) -> bool:
        return image in self.present and (key is None or self.kept.get(image) == key)

    def given(self, job: BakeJob, image: str, origin: str) -> str:
        self.calls.append(f"given {image}")
        if image not in self.present:
            raise job.failed(f"the {self.noun} {image!r} given by {origin} does not exist")
        return image

    def key_material(self, job: BakeJob) -> KeyMaterial:
        return KeyMaterial(base_image_id=self.base_image_id)

    def find(self, job: BakeJob, key: str) -> Found | None:
        self.calls.append("find")
        image = next((i for i, k in self.kept.items() if k == key), None)
        return Found(image, f"uuid-of-{image}") if image is not None else None

    def sweep(self, job: BakeJob) -> list[str]:
        self.calls.append("sweep")
        notes = [
            f"removed what a bake killed in run {run} left: {', '.join(left)}" for run, left in self.leftovers.items()
        ]
        self.leftovers.clear()
        return notes

    def build(self, job: BakeJob, info: TemplateInfo, key: str) -> Built:
        self.built += 1
        image = f"{self.source}-{self.built}"
        self.calls.append(f"build {image}")
        self.present.add(image)
        return Built(image, image, f"uuid-{self.built}", 1.0)

    def check(self, job: BakeJob, image: str, *, what: str, aftermath: str) -> CheckReport:
        self.calls.append(f"check {image}")
        if image in self.failing:
            raise job.failed(f"1 of 1 image checks failed:\n  - test_fake::test_page\n{aftermath}")
        return CheckReport(image, total=1, seconds=0.5)

    def keep(self, job: BakeJob, built: Built, key: str, *, checks: str) -> str:
        self.calls.append(f"keep {built.image} checks={checks}")
        self.kept[built.image] = key
        return built.image

    def discard(self, job: BakeJob, built: Built) -> None:
        self.calls.append(f"discard {built.image}")
        self.present.discard(built.image)

    def outputs(self) -> dict[str, str]:
        return dict(self.extra_outputs)

    def interrupted(self, job: BakeJob) -> bool:
        self.calls.append("interrupted")
        return True


@dataclass
class FakeEngines:
    """An engines provider that gives `engine` for every environment and profile, `store` (if any)
    as every environment's durable release record, and `images` for every bake."""

    engine: StackEngine
    store: ReleaseStore | None = None
    images: ImageEngine = field(default_factory=FakeImageEngine)

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

    def image_engine(
        self, spec: PipelineSpec, bake: Bake, profile_name: Profile, *, environ: Mapping[str, str] | None = None
    ) -> ImageEngine:
        return self.images


if TYPE_CHECKING:
    from pipeline.profiles.base import Engines

    _engines: Engines = FakeEngines(FakeStackEngine())
    _images: ImageEngine = FakeImageEngine()
