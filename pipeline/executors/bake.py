"""Runs a Bake: plans it and reports it. The image engine of the run's profile does the work
(pipeline/engines/images/: Packer, Docker or EC2, the checks, the crash journal); the stage is in
pipeline/stages/bake.py, the whole story in docs/bake.md.

The plan: the bake key (the content address of the inputs), then the image the stage records, in
this order: the one the user gave (`use_image`), one baked earlier with the same key, or a new one,
built, checked and only then kept. An engine whose images cannot be checked themselves (an AMI) has
a stand-in baked and checked first, by the same provisioning.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.engines.images.base import BakeJob, ImageEngine, packer_env_vars
from pipeline.engines.images.journal import Journal
from pipeline.executors.base import Executor, Outputs, PlanContext, StageContext
from pipeline.faults import checkpoint
from pipeline.hashing import digest, hash_paths
from pipeline.model import Profile
from pipeline.stages.bake import Bake

if TYPE_CHECKING:
    from pipeline.engines.image_checks import CheckReport
    from pipeline.engines.packer import TemplateInfo

KEY_FORMAT = 1
"""Bumped when the meaning of the bake key changes, so old images are not reused by mistake."""
PACKER_OUTPUT = "packer-manifest.json"
"""The manifest post-processor's default output file, which a build run by hand leaves behind."""
USE_IMAGE_ENV = "PIPELINE_{stage}_USE_IMAGE"
"""Environment variable naming an existing image to use instead of building (e.g. an AMI id)."""


def use_image_env(stage: str) -> str:
    return USE_IMAGE_ENV.format(stage=stage.upper().replace("-", "_"))


def bake_key(
    files: Mapping[str, str],
    variables: Mapping[str, str],
    *,
    source: str,
    repository: str,
    base_image_id: str | None,
    extra: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The content address of a bake: same inputs, same key, on any machine.

    Packer's own output (a `packer-manifest.json` left by a build run by hand) is not an input."""
    return digest(
        {
            "format": KEY_FORMAT,
            "files": {k: v for k, v in files.items() if Path(k).name != PACKER_OUTPUT},
            "variables": dict(variables),
            "source": source,
            "repository": repository,
            "base_image": base_image_id,
            "pkr_vars": packer_env_vars(environ),
            **(extra or {}),
        }
    )[:32]


@dataclass
class Baked:
    """What one engine's part of a bake gave."""

    image: str
    key: str = ""
    run_uuid: str = ""
    report: CheckReport | None = None


class BakeExecutor(Executor[Bake]):
    def __init__(self, spec: Bake) -> None:
        super().__init__(spec)
        self._running: tuple[ImageEngine, BakeJob] | None = None

    def _engine(self, ctx: PlanContext | StageContext, secrets: Mapping[str, str] | None = None) -> ImageEngine:
        """The run's profile's image engine; it sees the environment, the stage's env and secrets."""
        environ = {**os.environ, **self.spec.env, **(secrets or {})}
        return ctx.engines.image_engine(ctx.pipeline, self.spec, ctx.profile, environ=environ)

    def _use_image(self, profile: Profile) -> str | None:
        return os.environ.get(use_image_env(self.spec.name)) or self.spec.use_image.get(profile) or None

    # ------------------------------------------------------------------ plan
    def inputs(self, ctx: PlanContext) -> Mapping[str, str]:
        return {
            "pkr_vars": digest(packer_env_vars()),
            "use_image": self._use_image(ctx.profile) or "",
            **self._engine(ctx).observed(),
        }

    def is_live(self, ctx: PlanContext, outputs: Mapping[str, str]) -> bool:
        image = outputs.get("image")
        key = None if self._use_image(ctx.profile) else outputs.get("key")
        return bool(image) and self._engine(ctx).exists(str(image), key)

    def preflight(self, ctx: PlanContext) -> None:
        """The template, checked with no side effect (TemplateError, exit 2): `run` checks it again
        before it builds anything; this lets a runner reject it before any stage starts."""
        self._engine(ctx).check_template(ctx.root, remember=True)

    def ready(self, ctx: PlanContext) -> None:
        """Before a run (not `validate`): what the bake talks to answers, before anything changed."""
        from pipeline.errors import MissingSecretError
        from pipeline.secrets import resolve

        env = ctx.pipeline.environment_of(ctx.stage)
        try:  # credentials may come from the stage's secrets
            secrets = resolve([*self.spec.secrets, *(env.secrets if env else ())])
        except MissingSecretError:  # the stage fails naming the secret when it starts
            self._engine(ctx).ready(credentials=False)
        else:
            self._engine(ctx, secrets).ready()

    # ------------------------------------------------------------------ apply
    def run(self, ctx: StageContext) -> Outputs:
        engine = self._engine(ctx, ctx.secrets)
        job = self._job(ctx)
        self._running = (engine, job)
        info = engine.check_template(ctx.root, remember=True, step=ctx.step, log=ctx.log)
        stand_in = engine.stand_in
        checked = self._bake(ctx, job, stand_in, info, given=None) if stand_in is not None else None
        baked = self._bake(ctx, job, engine, info, given=self._use_image(ctx.profile), checked=checked)
        if not engine.checks_images:
            ctx.notes.append(self._stand_in_note(baked.image, engine, checked))
        outputs = {"image": baked.image, "key": baked.key, "packer_run_uuid": baked.run_uuid, **engine.outputs()}
        report = checked.report if checked is not None else baked.report
        if checked is not None:
            outputs["checked_image"] = checked.image
        if report is not None and report.junit:
            outputs["junit"] = str(report.junit.relative_to(ctx.run_dir))
        # Done: what the bake made is kept or removed. A failure keeps the journal, so the next bake
        # makes sure nothing it left remains; an interrupt closes it once its cleanup left nothing.
        job.journal.close()
        self._running = None
        return outputs

    def interrupted(self, ctx: StageContext) -> None:
        """Ctrl-C: the engine removes what this bake started and did not keep."""
        if self._running is not None:
            engine, job = self._running
            if engine.interrupted(job):
                job.journal.close()

    def _job(self, ctx: StageContext) -> BakeJob:
        return BakeJob(
            bake=self.spec,
            pipeline=ctx.pipeline.name,
            run_id=ctx.run_id,
            root=ctx.root,
            stage_dir=ctx.stage_dir,
            journal=Journal.open(ctx.ledger.dir, ctx.pipeline.name, self.spec.name, ctx.run_id),
            log=ctx.log,
            step=ctx.step,
            secrets=ctx.secrets,
            deadline=ctx.deadline,
            cancel=ctx.cancel,
            force=ctx.options.get("force", "").lower() in ("1", "true", "yes"),
        )

    def _bake(
        self,
        ctx: StageContext,
        job: BakeJob,
        engine: ImageEngine,
        info: TemplateInfo,
        *,
        given: str | None,
        checked: Baked | None = None,
    ) -> Baked:
        """One engine's part: sweep what dead bakes left, then the given image, a reused one, or a
        new one (built, checked, kept; discarded when anything fails before it is kept)."""
        ctx.notes.extend(engine.sweep(job))
        if given:
            image = engine.given(job, given, f"use_image / {use_image_env(self.spec.name)}")
            report = self._check(ctx, job, engine, image, "the given image", "the given image is left as it was")
            ctx.notes.append(f"used the given {engine.noun} {given} (not built here)" + _summary(report))
            return Baked(given, report=report)
        material = engine.key_material(job)
        key = bake_key(
            hash_paths(ctx.root, self.spec.files()),
            self.spec.variables,
            source=engine.source,
            repository=job.repository,
            base_image_id=material.base_image_id,
            extra=material.extra,
        )
        ctx.partial_outputs["key"] = key
        found = None if job.force else engine.find(job, key)
        if found is not None:
            ctx.log(f"{found.image} was baked with the same inputs (key {key}): reused")
            passed = ", checks passed then" if engine.checks_images and self.spec.checks else ""
            ctx.notes.append(f"reused {found.image}: baked earlier from the same inputs{passed}")
            return Baked(found.image, key, found.run_uuid)
        built = engine.build(job, info, key)
        try:
            report = self._check(ctx, job, engine, built.image, "the new image", "the image was removed")
            checkpoint(f"bake:{self.spec.name}:checked")
            checks = report.summary() if report else f"emulated: {checked.image}" if checked else "none"
            image = engine.keep(job, built, key, checks=checks)
        except BaseException:
            engine.discard(job, built)
            raise
        where = f" in {engine.where}" if engine.where else ""
        ctx.notes.append(f"baked {image} from {engine.source}{where} in {built.seconds:.1f} s" + _summary(report))
        return Baked(image, key, built.run_uuid, report)

    def _check(
        self, ctx: StageContext, job: BakeJob, engine: ImageEngine, image: str, what: str, aftermath: str
    ) -> CheckReport | None:
        if not engine.checks_images:
            return None
        if self.spec.checks is None:
            ctx.notes.append("no checks configured (Bake.checks): the image was not verified")
            return None
        return engine.check(job, image, what=what, aftermath=f"{aftermath}; nothing is recorded")

    def _stand_in_note(self, image: str, engine: ImageEngine, checked: Baked | None) -> str:
        """What the checks of an engine that cannot check its own images proved, and how."""
        if checked is None or engine.stand_in is None:
            why = "no checks are configured" if self.spec.checks is None else "nothing stands in for it to check"
            return f"checks: none ran for {image} ({why})"
        done = checked.report.summary() if checked.report is not None else "checks passed when it was baked"
        return (
            f"checks emulated: the testinfra checks ran against {checked.image} ({engine.stand_in.source}, built by "
            f"the same provisioner scripts; {done}), not against an instance of {image}"
            + (" (an emulator runs no instances)" if engine.emulated else "")
        )


def _summary(report: CheckReport | None) -> str:
    return f"; {report.summary()} in {report.seconds:.1f} s" if report is not None else ""
