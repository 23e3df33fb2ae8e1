"""One `packer build` of one source for a Bake, streamed: Packer's steps go to the live view, every
line to the stage log (secrets masked), the raw machine-readable output to the stage's folder. The
manifest file and every build container Packer names are written in the bake's journal before Packer
can commit anything; the artifact id is read from the manifest post-processor's entry for this run
(`last_run_uuid`), checked against the ids Packer printed."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.engines.images.base import BakeJob
from pipeline.engines.images.template import template_path
from pipeline.engines.packer import BuildProgress, Packer, read_manifest
from pipeline.errors import CommandFailedError, PipelineError
from pipeline.secrets import Masker


@dataclass(frozen=True)
class PackerRun:
    artifact: str
    run_uuid: str
    seconds: float


def packer_build(
    job: BakeJob,
    packer: Packer,
    *,
    part: str,
    source: str,
    variables: Mapping[str, str],
    on_container: Callable[[str], None] = lambda container: None,
) -> PackerRun:
    """Build `source` with `variables` (the `manifest` variable, when the template declares one,
    must be `manifest_path(job, source)`); `part` is the engine's name in the journal. Each build
    container Packer names is written down, then given to `on_container`, before Packer goes on."""
    template = template_path(job.bake, job.root)
    manifest = manifest_path(job, source)
    raw_path = job.stage_dir / f"packer-{source}.machine-readable.log"
    job.journal.record(part, "manifests", str(manifest))
    started = time.monotonic()
    job.step(f"packer build -only={source}")
    job.log(f"$ packer build -machine-readable -only={source} {template.name}  (in {template.parent})")
    mask = Masker(job.secrets.values())
    with raw_path.open("a") as raw:

        def keep_raw(line: str) -> None:  # Packer's own output: secret values masked here too
            raw.write(mask(line) + "\n")

        def started_container(container: str) -> None:  # before Packer can commit it
            job.journal.record(part, "containers", container)
            on_container(container)

        progress = BuildProgress(
            on_step=lambda text: job.step(f"packer: {text}"),
            on_line=job.log,
            raw=keep_raw,
            name=job.stage,
            on_container=started_container,
        )
        try:
            packer.build(
                template,
                only=source,
                variables=variables,
                progress=progress,
                deadline=job.deadline,
                cancel=job.cancel,
                env={"PACKER_TMP_DIR": str(job.journal.packer_tmp)},
            )
        except CommandFailedError as exc:
            first = exc.tail.strip().splitlines()[0] if exc.tail.strip() else f"exit status {exc.returncode}"
            raise job.failed(
                f"packer build of {source} failed: {first}",
                hint=f"the full output is in {raw_path}; {exc.hint}",
                log_tail=exc.tail,
            ) from None
    seconds = time.monotonic() - started
    streamed = progress.artifact_ids(source)
    try:
        entry = read_manifest(manifest, source) if manifest.exists() or not streamed else None
    except PipelineError as exc:
        raise job.failed(str(exc), hint=exc.hint) from None
    if entry is not None:
        artifact, run_uuid = entry.artifact_id, entry.packer_run_uuid
        if streamed and artifact not in streamed:
            job.log(f"warning: the manifest says {artifact}, Packer's output said {', '.join(streamed)}")
    elif streamed:
        artifact, run_uuid = streamed[0], ""
        job.log("the template writes no manifest where the bake asked (no `manifest` variable): no run uuid")
    else:
        raise job.failed(
            f"packer build produced no artifact for {source}",
            hint=f"is {source} a source of the template's build block? Output: {raw_path}",
        )
    job.log(f"packer built {artifact} (run {run_uuid or 'unknown'}) in {seconds:.1f} s")
    return PackerRun(artifact, run_uuid, seconds)


def manifest_path(job: BakeJob, source: str) -> Path:
    """Where the bake asks the manifest post-processor to write (the `manifest` variable)."""
    return job.stage_dir / f"packer-manifest-{source}.json"
