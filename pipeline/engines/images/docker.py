"""Runs a Bake (see stages/bake.py for the stage and docs/bake.md for the whole story)."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.executors.base import Executor, Outputs, PlanContext, StageContext
from pipeline.faults import checkpoint
from pipeline.hashing import digest, hash_paths
from pipeline.model import Profile

if TYPE_CHECKING:
    import docker

    from pipeline.engines.aws.session import AwsSession, AwsTarget
    from pipeline.engines.image_checks import CheckReport
    from pipeline.engines.packer import Packer, TemplateInfo
    from pipeline.ledger import Ledger
from pipeline.stages.bake import Bake

KEY_FORMAT = 1
"""Bumped when the meaning of the bake key changes, so old images are not reused by mistake."""
LABEL = "io.pipeline"
KEY_LABEL = f"{LABEL}.bake-key"
KEY_TAG = KEY_LABEL
"""The AMI tag that carries the bake key (aws profile)."""
SHORT_KEY = 12
PACKER_OUTPUT = "packer-manifest.json"
"""The manifest post-processor's default output file, which a build run by hand leaves behind."""
USE_IMAGE_ENV = "PIPELINE_{stage}_USE_IMAGE"
"""Environment variable naming an existing image to use instead of building (e.g. an AMI id)."""
UNKNOWN_DEFAULT = '"<unknown>"'
"""How `packer inspect` shows a variable without a default."""
WORK_DIR = "bakes"
"""Under the ledger: `bakes/<pipeline>/<stage>/<run id>/`, one folder per bake in progress. It holds
Packer's temporary folder (which Packer bind-mounts into its build container, so the container can be
traced back to the bake) and a journal of the images the bake made but has not tagged yet. The folder
goes when the bake ends; one left behind is a bake that died (SIGKILL, a lost machine), and the next
bake removes what it left (build and check containers, untagged images) before it starts."""


# --- pure helpers (unit-tested) ---------------------------------------------------------------------


def use_image_env(stage: str) -> str:
    return USE_IMAGE_ENV.format(stage=stage.upper().replace("-", "_"))


def packer_env_vars(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`PKR_VAR_*` variables: Packer reads them too, so they are part of the key."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in sorted(env.items()) if k.startswith("PKR_VAR_")}


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


def framework_variables(declared: Iterable[str], offered: Mapping[str, str], user: Mapping[str, str]) -> dict[str, str]:
    """The variables a build gets: the user's, plus those the framework offers that the template
    declares (`base_image`, `manifest`, `aws_endpoint`...). Packer rejects undeclared `-var`s."""
    names = set(declared)
    chosen = {k: v for k, v in offered.items() if k in names and k not in user}
    return {**chosen, **user}


def _binary_identity(path: str) -> list[str | int]:
    """Which packer binary this is, cheaply (no subprocess): path, size, modification time."""
    try:
        info = os.stat(path)
    except OSError:
        return [path]
    return [path, info.st_size, info.st_mtime_ns]


def _forced(ctx: StageContext) -> bool:
    """`--force` (when the runner passes it as an option): bake again even if an image has the key."""
    return ctx.options.get("force", "").lower() in ("1", "true", "yes")


@dataclass
class DockerBake:
    """The result of the docker half of a bake."""

    image: str
    key: str
    packer_run_uuid: str
    reused: bool
    report: CheckReport | None = None
    junit: str = ""


class BakeExecutor(Executor[Bake]):
    def __init__(self, spec: Bake) -> None:
        super().__init__(spec)
        self._containers: list[str] = []
        self._unrecorded_image: str | None = None
        self._client: docker.DockerClient | None = None

    # ------------------------------------------------------------------ plan
    def inputs(self, ctx: PlanContext) -> Mapping[str, str]:
        observed = {
            # The docker build is the whole bake locally, and the checked half of an aws bake; an
            # aws bake without a docker source needs no Docker engine at all.
            "base_image": self._base_image_id() if self._uses_docker(ctx.profile) else "none",
            "pkr_vars": digest(packer_env_vars()),
            "use_image": self._use_image(ctx.profile) or "",
        }
        if ctx.profile == "aws":
            target = self._aws().target("ec2")
            observed |= {"aws_region": target.region, "aws_endpoint": target.endpoint or ""}
        return observed

    def _uses_docker(self, profile: Profile) -> bool:
        return profile == "local" or ("local" in self.spec.sources and self.spec.checks is not None)

    def is_live(self, ctx: PlanContext, outputs: Mapping[str, str]) -> bool:
        image = outputs.get("image")
        if not image:
            return False
        if ctx.profile == "aws":
            return self._ami_exists(image)
        return self._docker_image_matches(image, outputs.get("key") if not self._use_image("local") else None)

    def preflight(self, ctx: PlanContext) -> None:
        """Check the template with no side effect; a TemplateError (bad input, exit 2) if it is broken.

        `run` does the same checks before it builds anything. This lets a runner reject a broken
        template before any stage of the run starts (principle 5)."""
        profile: Profile = ctx.profile
        source = self._source(profile)
        sources = [source]
        target = None
        if profile == "aws":
            target = self._aws().target("ec2")
            docker_source = self.spec.sources.get("local")
            sources += [docker_source] if docker_source else []
        template = self._template_path(ctx.root)
        self._check_template(
            self._packer(None), template, sources=sources, aws=target, root=ctx.root, ledger=ctx.ledger
        )

    def ready(self, ctx: PlanContext) -> None:
        """Before a run (not `validate`): what the bake will talk to answers. The Docker engine
        (local, and the aws profile's emulated checks); the EC2 endpoint and its credentials (aws).
        Before anything has changed: a ToolMissingError (exit 1) for what does not answer, a
        CredentialsError (exit 2) for credentials EC2 does not accept, each naming the fix."""
        if ctx.profile == "local" or self.spec.sources.get("local"):
            self._docker_ready()
        if ctx.profile == "aws":
            from pipeline.secrets import MissingSecretError, resolve

            env = ctx.pipeline.environment_of(ctx.stage)
            try:  # credentials may come from the stage's secrets
                secrets = resolve([*self.spec.secrets, *(env.secrets if env else ())])
            except MissingSecretError:
                return  # the stage fails naming the secret when it starts
            self._aws(secrets).check_access("ec2")

    def _docker_ready(self) -> None:
        from pipeline.errors import ToolMissingError

        try:
            self._docker()
        except ToolMissingError as exc:
            where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
            reason = exc.message.removeprefix("the Docker engine is not reachable ").strip("()")
            if "FileNotFoundError" in reason:
                reason = "there is no socket at that path"
            elif "refused" in reason.lower() or "NewConnectionError" in reason:
                reason = "the connection was refused"
            raise ToolMissingError(
                f"stage {self.spec.name!r} needs the Docker engine, and the one at {where} does not answer ({reason})",
                hint=(exc.hint or "start it")
                + (
                    f"; or point DOCKER_HOST (now {where}) at a running engine" if os.environ.get("DOCKER_HOST") else ""
                ),
            ) from None

    # ------------------------------------------------------------------ apply
    def run(self, ctx: StageContext) -> Outputs:
        outputs = self._run_aws(ctx) if ctx.profile == "aws" else self._run_local(ctx)
        # Done: whatever the bake made is tagged (or was reused). A failure keeps the folder, so
        # the next bake makes sure nothing it left remains; an interrupt removes it after cleanup.
        self._close_journal(ctx)
        return outputs

    def _run_local(self, ctx: StageContext) -> Outputs:
        source = self._source("local")
        template = self._template_path(ctx.root)
        packer = self._packer(ctx)
        info = self._check_template(
            packer, template, sources=[source], step=ctx.step, log=ctx.log, root=ctx.root, ledger=ctx.ledger
        )
        baked = self._bake_docker(ctx, packer, template, info, source)
        outputs = {"image": baked.image, "key": baked.key, "packer_run_uuid": baked.packer_run_uuid}
        if baked.junit:
            outputs["junit"] = baked.junit
        return outputs

    def interrupted(self, ctx: StageContext) -> None:
        """Ctrl-C: remove the containers this bake started and the image it has not recorded."""
        self._cleanup(ctx.log)
        self._close_journal(ctx)

    # ------------------------------------------------------------------ the docker half
    def _bake_docker(
        self, ctx: StageContext, packer: Packer, template: Path, info: TemplateInfo, source: str
    ) -> DockerBake:
        from pipeline.engines.base_image import ensure_base_image

        client = self._docker()
        self._sweep_dead_bakes(ctx, client)
        given = self._use_image("local") if ctx.profile == "local" else None
        if given:
            return self._use_given_docker_image(ctx, client, given)

        base_name = self.spec.variables.get("base_image", self.spec.base_image)
        ctx.step(f"base image {base_name}")
        base_id = ensure_base_image(base_name, on_line=ctx.log)
        repository = self._repository(ctx)
        key = bake_key(
            hash_paths(ctx.root, self.spec.files()),
            self.spec.variables,
            source=source,
            repository=repository,
            base_image_id=base_id,
        )
        ctx.partial_outputs["key"] = key
        ref = f"{repository}:{key[:SHORT_KEY]}"

        found = None if _forced(ctx) else self._find_baked(client, key)
        if found is not None:
            if ref not in (found.tags or []):
                found.tag(repository, key[:SHORT_KEY])
            labels = found.labels or {}
            ctx.log(f"{ref} ({found.short_id}) was baked with the same inputs (key {key}): reused")
            ctx.notes.append(f"reused {ref}: baked earlier from the same inputs, checks passed then")
            return DockerBake(ref, key, labels.get(f"{LABEL}.packer-run-uuid", ""), reused=True)

        manifest = ctx.stage_dir / f"packer-manifest-{source}.json"
        variables = framework_variables(
            info.variables,
            {"base_image": base_name, "pull_base": "false", "manifest": str(manifest)},
            self.spec.variables,
        )
        artifact, run_uuid, seconds = self._packer_build(ctx, packer, template, source, variables, manifest)
        self._unrecorded_image = artifact
        self._journal(ctx, artifact=artifact)
        checkpoint(f"bake:{ctx.stage.name}:built")
        labels = {
            f"{LABEL}.role": "bake",
            KEY_LABEL: key,
            f"{LABEL}.pipeline": ctx.pipeline.name,
            f"{LABEL}.stage": ctx.stage.name,
            f"{LABEL}.run-id": ctx.run_id,
            f"{LABEL}.source": source,
            f"{LABEL}.packer-run-uuid": run_uuid,
        }
        # The labelled image is made while the checks run (it is untagged, so nothing finds it);
        # it gets its tag, which is what makes it count, only once the checks have passed.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bake-label") as pool:
            labelling = pool.submit(self._label, artifact, labels)
            try:
                report = self._run_checks(ctx, client, artifact, source)
                checkpoint(f"bake:{ctx.stage.name}:checked")
                ctx.step(f"tagging {ref}")
                client.api.tag(labelling.result(), repository, key[:SHORT_KEY])
            except BaseException:
                self._discard(client, labelling, artifact, ctx.log)
                raise
            finally:
                self._unrecorded_image = None
        image = ref
        summary = f"baked {ref} from {source} in {seconds:.1f} s"
        if report is not None:
            summary += f"; {report.summary()} in {report.seconds:.1f} s"
        ctx.notes.append(summary)
        junit = str(report.junit.relative_to(ctx.run_dir)) if report is not None and report.junit else ""
        return DockerBake(image, key, run_uuid, reused=False, report=report, junit=junit)

    def _use_given_docker_image(self, ctx: StageContext, client: docker.DockerClient, image: str) -> DockerBake:
        import docker.errors

        try:
            found = client.images.get(image)
        except docker.errors.ImageNotFound:
            raise self._failed(
                ctx,
                f"the image {image!r} given by use_image / {use_image_env(self.spec.name)} does not exist",
                hint="build it first, or unset the override to let the stage bake",
            ) from None
        report = self._run_checks(
            ctx, client, found.id, "the given image", aftermath="the given image is left as it was; nothing is recorded"
        )
        ctx.notes.append(f"used the given image {image} (not built here)" + (f"; {report.summary()}" if report else ""))
        junit = str(report.junit.relative_to(ctx.run_dir)) if report is not None and report.junit else ""
        return DockerBake(image, "", "", reused=True, report=report, junit=junit)

    def _packer_build(
        self,
        ctx: StageContext,
        packer: Packer,
        template: Path,
        source: str,
        variables: Mapping[str, str],
        manifest: Path,
    ) -> tuple[str, str, float]:
        """Build one source; (artifact id, packer run uuid, seconds)."""
        from pipeline.engines.packer import BuildProgress, read_manifest
        from pipeline.errors import CommandFailedError, PipelineError

        raw_path = ctx.stage_dir / f"packer-{source}.machine-readable.log"
        self._journal(ctx, manifest=manifest)
        started = time.monotonic()
        ctx.step(f"packer build -only={source}")
        ctx.log(f"$ packer build -machine-readable -only={source} {template.name}  (in {template.parent})")
        with raw_path.open("a") as raw:
            from pipeline.secrets import Masker

            mask = Masker(ctx.secrets.values())

            def keep_raw(line: str) -> None:  # Packer's own output: secret values masked here too
                raw.write(mask(line) + "\n")

            progress = BuildProgress(
                on_step=lambda text: ctx.step(f"packer: {text}"), on_line=ctx.log, raw=keep_raw, name=ctx.stage.name
            )
            try:
                packer.build(
                    template,
                    only=source,
                    variables=variables,
                    progress=progress,
                    deadline=ctx.deadline,
                    cancel=ctx.cancel,
                    env={"PACKER_TMP_DIR": str(self._packer_tmp(ctx))},
                )
            except CommandFailedError as exc:
                first = exc.tail.strip().splitlines()[0] if exc.tail.strip() else f"exit status {exc.returncode}"
                raise self._failed(
                    ctx,
                    f"packer build of {source} failed: {first}",
                    hint=f"the full output is in {raw_path}; {exc.hint}",
                    log_tail=exc.tail,
                ) from None
            finally:
                self._containers.extend(c for c in progress.containers if c not in self._containers)
                self._cleanup_containers(ctx.log)
        seconds = time.monotonic() - started
        streamed = progress.artifact_ids(source)
        try:
            entry = read_manifest(manifest, source) if manifest.exists() or not streamed else None
        except PipelineError as exc:
            raise self._failed(ctx, str(exc), hint=exc.hint) from None
        if entry is not None:
            artifact, run_uuid = entry.artifact_id, entry.packer_run_uuid
            if streamed and artifact not in streamed:
                ctx.log(f"warning: the manifest says {artifact}, Packer's output said {', '.join(streamed)}")
        elif streamed:
            artifact, run_uuid = streamed[0], ""
            ctx.log("the template writes no manifest where the bake asked (no `manifest` variable): no run uuid")
        else:
            raise self._failed(
                ctx,
                f"packer build produced no artifact for {source}",
                hint=f"is {source} a source of the template's build block? Output: {raw_path}",
            )
        ctx.log(f"packer built {artifact} (run {run_uuid or 'unknown'}) in {seconds:.1f} s")
        return artifact, run_uuid, seconds

    def _run_checks(
        self,
        ctx: StageContext,
        client: docker.DockerClient,
        image: str,
        what: str,
        *,
        aftermath: str = "the image was removed and is not recorded",
    ) -> CheckReport | None:
        from pipeline.engines.image_checks import run_checks

        if self.spec.checks is None:
            ctx.notes.append("no checks configured (Bake.checks): the image was not verified")
            return None
        checks = ctx.path(self.spec.checks)
        junit = ctx.stage_dir / "checks.xml"
        ctx.step(f"checks: {self.spec.checks} against {what}")
        report = run_checks(
            image,
            checks,
            junit=junit,
            variables=self.spec.variables,
            labels={
                f"{LABEL}.pipeline": ctx.pipeline.name,
                f"{LABEL}.stage": ctx.stage.name,
                f"{LABEL}.run-id": ctx.run_id,
            },
            on_line=ctx.log,
            on_step=ctx.step,
            deadline=ctx.deadline,
            cancel=ctx.cancel,
            client=client,
            started=self._containers.append,
        )
        if not report.ok:
            for line in report.container_log.splitlines():
                ctx.log(f"container: {line}")
            failed = report.failed
            raise self._failed(
                ctx,
                f"{len(failed)} of {report.total} image checks failed:\n" + report.failure_list() + f"\n{aftermath}",
                hint=f"JUnit report: {junit}. To look by hand: docker run -d -p 127.0.0.1::80 IMAGE, then "
                f"PIPELINE_CHECK_URL=http://127.0.0.1:PORT PIPELINE_VAR_<NAME>=... "
                f"pytest {self.spec.checks} --hosts=docker://CONTAINER",
                log_tail=report.container_log,
            )
        ctx.log(f"checks: {report.summary()} against {what} in {report.seconds:.1f} s")
        return report

    def _label(self, artifact: str, labels: Mapping[str, str]) -> str:
        """A label-only layer on top of Packer's image (no tag yet); returns its id."""
        from pipeline.engines.docker_client import connect

        client = connect()  # its own connection: this runs beside the checks
        image, _ = client.images.build(
            fileobj=io.BytesIO(f"FROM {artifact}\n".encode()), labels=dict(labels), rm=True, pull=False
        )
        return str(image.id)

    def _discard(
        self, client: docker.DockerClient, labelling: Future[str], artifact: str, log: Callable[[str], None]
    ) -> None:
        """Remove an image that failed its checks: the labelled layer (once made), then Packer's."""
        try:
            labelled = labelling.result()
        except BaseException:  # the labelling failed too: only Packer's image is left
            labelled = None
        if labelled is not None:
            self._remove_image(client, labelled, log)
        self._remove_image(client, artifact, log)

    # ------------------------------------------------------------------ the aws profile
    def _run_aws(self, ctx: StageContext) -> Outputs:
        source = self._source("aws")
        docker_source = self.spec.sources.get("local")
        template = self._template_path(ctx.root)
        aws = self._aws(ctx.secrets)
        target = aws.target("ec2")
        env = aws.credentials("ec2")
        packer = self._packer(ctx, env)
        sources = [source, *([docker_source] if docker_source else [])]
        info = self._check_template(
            packer, template, sources=sources, aws=target, step=ctx.step, log=ctx.log, root=ctx.root, ledger=ctx.ledger
        )
        ec2 = aws.client("ec2")
        aws.check_access("ec2")  # before the docker half: nothing is made if AWS cannot be reached

        # 1. Check the provisioning through the docker source (same scripts), before any AMI exists.
        checked: DockerBake | None = None
        if docker_source and self.spec.checks:
            checked = self._bake_docker(ctx, packer, template, info, docker_source)
        where = f"the emulator at {target.endpoint}" if target.emulated else f"AWS {target.region}"

        # 2. The AMI: given, already baked with the same inputs, or built now.
        given = self._use_image("aws")
        key = bake_key(
            hash_paths(ctx.root, self.spec.files()),
            self.spec.variables,
            source=source,
            repository=self._repository(ctx),
            base_image_id=None,
            extra={"region": target.region, "endpoint": target.endpoint or ""},
        )
        ctx.partial_outputs["key"] = key
        run_uuid = ""
        if given:
            if not self._ami_exists(given, ec2=ec2):
                raise self._failed(
                    ctx,
                    f"the AMI {given} given by use_image / {use_image_env(self.spec.name)} does not exist in {where}",
                    hint="check the id and the region, or unset the override to let the stage bake",
                )
            ami = given
            ctx.notes.append(f"used the given AMI {ami} (not built here)")
        else:
            existing = None if _forced(ctx) else self._find_ami(ec2, key)
            if existing is not None:
                ami, run_uuid = existing
                ctx.log(f"{ami} was baked with the same inputs (key {key}): reused")
                ctx.notes.append(f"reused {ami}: baked earlier from the same inputs")
            else:
                ami, run_uuid = self._build_ami(ctx, packer, template, info, source, target, ec2, key, checked)
                ctx.notes.append(f"built {ami} with Packer ({source}) in {where}")
        ctx.notes.append(self._emulation_note(ami, checked, docker_source, target))
        outputs = {"image": ami, "key": key, "packer_run_uuid": run_uuid, "region": target.region}
        if checked is not None:
            outputs["checked_image"] = checked.image
            if checked.junit:
                outputs["junit"] = checked.junit
        return outputs

    def _build_ami(
        self,
        ctx: StageContext,
        packer: Packer,
        template: Path,
        info: TemplateInfo,
        source: str,
        target: AwsTarget,
        ec2: Any,
        key: str,
        checked: DockerBake | None,
    ) -> tuple[str, str]:
        from pipeline.engines.packer import split_ami_artifact

        manifest = ctx.stage_dir / f"packer-manifest-{source}.json"
        offered = {"manifest": str(manifest), "aws_region": target.region, "aws_endpoint": target.endpoint or ""}
        variables = framework_variables(info.variables, offered, self.spec.variables)
        artifact, run_uuid, _ = self._packer_build(ctx, packer, template, source, variables, manifest)
        _, ami = split_ami_artifact(artifact, target.region)
        tags = {
            KEY_TAG: key,
            f"{LABEL}.pipeline": ctx.pipeline.name,
            f"{LABEL}.stage": ctx.stage.name,
            f"{LABEL}.run-id": ctx.run_id,
            f"{LABEL}.packer-run-uuid": run_uuid,
            f"{LABEL}.checks": f"emulated: {checked.image}" if checked is not None else "none",
        }
        ec2.create_tags(Resources=[ami], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        ctx.log(f"tagged {ami} with {KEY_TAG}={key}")
        return ami, run_uuid

    @staticmethod
    def _emulation_note(ami: str, checked: DockerBake | None, docker_source: str | None, target: AwsTarget) -> str:
        if checked is None:
            why = "the template has no docker source" if not docker_source else "no checks are configured"
            return f"checks: none ran for {ami} ({why})"
        done = checked.report.summary() if checked.report is not None else "checks passed when it was baked"
        return (
            f"checks emulated: the testinfra checks ran against {checked.image} ({docker_source}, built by the "
            f"same provisioner scripts; {done}), not against an instance of {ami}"
            + (" (an emulator runs no instances)" if target.emulated else "")
        )

    # ------------------------------------------------------------------ shared pieces
    def _check_template(
        self,
        packer: Packer,
        template: Path,
        *,
        sources: list[str],
        root: Path,
        ledger: Ledger | None = None,
        aws: AwsTarget | None = None,
        step: Callable[[str], None] = lambda text: None,
        log: Callable[[str], None] = lambda line: None,
    ) -> TemplateInfo:
        """Everything about the template that can be known before a side effect (TemplateError).

        What Packer said is remembered under the ledger, keyed by everything it depends on
        (template folder, variables, sources, the packer binary), so an unchanged template is not
        inspected and validated again on every run (that would be most of a cache hit's time)."""
        from pipeline.engines.packer import TemplateInfo

        remembered = None
        if ledger is not None:
            fingerprint = digest(
                {
                    "files": hash_paths(root, self.spec.files()),
                    "variables": self.spec.variables,
                    "base_image": self.spec.base_image,
                    "sources": sources,
                    "aws": [aws.region, aws.endpoint] if aws else None,
                    "packer": _binary_identity(packer.binary),
                    "pkr_vars": packer_env_vars(),
                }
            )
            remembered = ledger.dir / "cache" / "packer-validated" / f"{fingerprint[:32]}.json"
            try:
                data = json.loads(remembered.read_text())
                log(f"{self.spec.template} is unchanged since Packer last validated it")
                return TemplateInfo(dict(data["variables"]), tuple(data["sources"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass
        info = self._validate_template(packer, template, sources=sources, aws=aws, step=step, log=log)
        if remembered is not None:
            with contextlib.suppress(OSError):
                remembered.parent.mkdir(parents=True, exist_ok=True)
                # Which variables have a default, not the defaults: one may come from env("SECRET").
                variables = {k: v if v == UNKNOWN_DEFAULT else "<default>" for k, v in info.variables.items()}
                remembered.write_text(json.dumps({"variables": variables, "sources": list(info.sources)}))
        return info

    def _validate_template(
        self,
        packer: Packer,
        template: Path,
        *,
        sources: list[str],
        aws: AwsTarget | None,
        step: Callable[[str], None],
        log: Callable[[str], None],
    ) -> TemplateInfo:
        from pipeline.engines.packer import format_version
        from pipeline.errors import TemplateError

        step("packer validate")
        version = packer.version()
        log(f"packer {format_version(version)} ({packer.binary})")
        if packer.prepare(template, on_line=log):
            log("packer init: plugins installed")
        info = packer.inspect(template)
        rel = self.spec.template
        missing = [s for s in sources if info.sources and s not in info.sources]
        if missing:
            raise TemplateError(
                f"{rel} has no source {', '.join(missing)} (its builds use: {', '.join(info.sources)})",
                hint="set Bake(sources={'local': 'docker.NAME', 'aws': 'amazon-ebs.NAME'}) or add the source",
            )
        undeclared = sorted(set(self.spec.variables) - set(info.variables))
        if undeclared:
            raise TemplateError(
                f"{rel} declares no variable {', '.join(undeclared)} (given in Bake.variables)",
                hint=f'declare it in the template: variable "{undeclared[0]}" {{ type = string }}',
            )
        offered = {
            "base_image": self.spec.variables.get("base_image", self.spec.base_image),
            "pull_base": "false",
            "manifest": "packer-manifest.json",
        }
        if aws is not None:
            offered |= {"aws_region": aws.region, "aws_endpoint": aws.endpoint or ""}
        variables = framework_variables(info.variables, offered, self.spec.variables)
        unset = [name for name in info.required() if name not in variables]
        if unset:
            raise TemplateError(
                f"{rel} needs a value for variable {', '.join(unset)}",
                hint=f'set it in the stage: Bake(..., variables={{"{unset[0]}": "..."}})',
            )
        for source in sources:
            packer.validate(template, variables, only=source)
        return info

    def _packer(self, ctx: StageContext | None, env: Mapping[str, str] | None = None) -> Packer:
        from pipeline.engines.packer import Packer

        stage_env = {**ctx.stage.env, **ctx.secrets} if ctx is not None else dict(self.spec.env)
        return Packer(env={**stage_env, **(env or {})})

    def _template_path(self, root: Path) -> Path:
        from pipeline.errors import TemplateError

        path = (root / self.spec.template).resolve()
        if not path.is_file():
            raise TemplateError(
                f"the Packer template {self.spec.template} does not exist (looked in {root})",
                hint="fix Bake.template (a path relative to the definition file)",
            )
        return path

    def _source(self, profile: Profile) -> str:
        from pipeline.errors import TemplateError

        source = self.spec.sources.get(profile)
        if not source:
            raise TemplateError(
                f"stage {self.spec.name!r} names no Packer source for the {profile} profile",
                hint=f"add it: Bake(sources={{'{profile}': 'TYPE.NAME', ...}})",
            )
        return source

    def _repository(self, ctx: StageContext | PlanContext) -> str:
        return self.spec.image_name or f"{ctx.pipeline.name}-{self.spec.name}"

    def _use_image(self, profile: Profile) -> str | None:
        return os.environ.get(use_image_env(self.spec.name)) or self.spec.use_image.get(profile) or None

    def _failed(self, ctx: StageContext, message: str, *, hint: str | None = None, log_tail: str = "") -> Exception:
        from pipeline.errors import StageFailedError

        return StageFailedError(ctx.stage.name, message, hint=hint, log_tail=log_tail)

    # --- docker ---
    def _docker(self) -> docker.DockerClient:
        from pipeline.engines.docker_client import shared

        if self._client is None:
            self._client = shared()
        return self._client

    def _base_image_id(self) -> str:
        import docker.errors

        name = self.spec.variables.get("base_image", self.spec.base_image)
        try:
            return str(self._docker().api.inspect_image(name)["Id"])
        except docker.errors.ImageNotFound:
            return "missing"

    def _docker_image_matches(self, image: str, key: str | None) -> bool:
        import docker.errors

        try:
            attrs = self._docker().api.inspect_image(image)
        except docker.errors.ImageNotFound:
            return False
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        return key is None or labels.get(KEY_LABEL) == key

    @staticmethod
    def _find_baked(client: docker.DockerClient, key: str) -> Any:
        # Tagged ones only: a labelled image gets its tag after its checks passed.
        found = client.images.list(filters={"label": f"{KEY_LABEL}={key}", "dangling": False})
        return found[0] if found else None

    def _remove_image(self, client: docker.DockerClient, image: str, log: Callable[[str], None]) -> None:
        import docker.errors

        try:
            client.images.remove(image, force=True, noprune=False)
            log(f"removed the image {image[:19]}")
        except docker.errors.ImageNotFound:
            return
        except docker.errors.APIError as exc:
            log(f"could not remove the image {image[:19]}: {exc}")

    def _cleanup_containers(self, log: Callable[[str], None]) -> None:
        """Remove the containers this bake started or saw Packer start (a build stopped by a deadline
        or Ctrl-C may leave Packer's build container behind); those already gone are skipped."""
        if not self._containers:
            return
        from pipeline.engines.image_checks import remove_container

        client = self._docker()
        for container in list(self._containers):
            try:
                remove_container(client, container)
            except Exception as exc:  # best effort; say so
                log(f"could not remove container {container[:12]}: {exc}")
            else:
                self._containers.remove(container)

    def _cleanup(self, log: Callable[[str], None]) -> None:
        self._cleanup_containers(log)
        if self._unrecorded_image:
            self._remove_image(self._docker(), self._unrecorded_image, log)
            self._unrecorded_image = None

    # --- what a bake killed half-way leaves behind ---
    @staticmethod
    def _work_root(ctx: StageContext) -> Path:
        return ctx.ledger.dir / WORK_DIR / ctx.pipeline.name / ctx.stage.name

    def _packer_tmp(self, ctx: StageContext) -> Path:
        path = self._work_root(ctx) / ctx.run_id / "packer-tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _journal(self, ctx: StageContext, *, manifest: Path | None = None, artifact: str | None = None) -> None:
        """Write down, before relying on it, what this bake may leave behind if it dies now."""
        from pipeline.ledger import read_json, write_json

        path = self._work_root(ctx) / ctx.run_id / "journal.json"
        data = read_json(path) or {"run_id": ctx.run_id, "manifests": [], "artifacts": []}
        if manifest is not None and str(manifest) not in data["manifests"]:
            data["manifests"].append(str(manifest))
        if artifact is not None and artifact not in data["artifacts"]:
            data["artifacts"].append(artifact)
        write_json(path, data)

    def _close_journal(self, ctx: StageContext) -> None:
        shutil.rmtree(self._work_root(ctx) / ctx.run_id, ignore_errors=True)

    def _sweep_dead_bakes(self, ctx: StageContext, client: docker.DockerClient) -> None:
        """Remove what earlier bakes of this stage left when they died (their folder is still there).

        This run holds the pipeline's build lock, so no other bake of this stage is alive."""
        root = self._work_root(ctx)
        if not root.is_dir():
            return
        dead = sorted(p for p in root.iterdir() if p.is_dir() and p.name != ctx.run_id)
        for folder in dead:
            removed = self._remove_leftovers(ctx, client, folder)
            shutil.rmtree(folder, ignore_errors=True)
            if removed:
                ctx.notes.append(f"removed what a bake killed in run {folder.name} left: {', '.join(removed)}")

    def _remove_leftovers(self, ctx: StageContext, client: docker.DockerClient, folder: Path) -> list[str]:
        import docker.errors

        from pipeline.engines.image_checks import CHECK_ROLE, ROLE_LABEL, remove_container
        from pipeline.engines.packer import read_manifest
        from pipeline.errors import PipelineError
        from pipeline.ledger import read_json

        run_id = folder.name
        removed: list[str] = []
        # Packer's build container bind-mounts Packer's temporary folder, which was in `folder`.
        inside = str(folder.resolve()) + "/"
        for container in client.containers.list(all=True, filters={"volume": "/packer-files"}):
            sources = [str(m.get("Source", "")) for m in container.attrs.get("Mounts") or []]
            if any(source.startswith(inside) for source in sources):
                ctx.log(f"removing Packer's build container {container.short_id} (run {run_id} died while baking)")
                remove_container(client, container.id)
                removed.append(f"build container {container.short_id}")
        labels = [
            f"{LABEL}.pipeline={ctx.pipeline.name}",
            f"{LABEL}.stage={ctx.stage.name}",
            f"{LABEL}.run-id={run_id}",
        ]
        for container in client.containers.list(all=True, filters={"label": [*labels, f"{ROLE_LABEL}={CHECK_ROLE}"]}):
            ctx.log(f"removing check container {container.short_id} (run {run_id} died while checking)")
            remove_container(client, container.id)
            removed.append(f"check container {container.short_id}")
        # Images: the labelled layer made while the checks ran (never tagged), then Packer's own.
        images = [str(i.id) for i in client.images.list(filters={"label": labels, "dangling": True})]
        journal = read_json(folder / "journal.json") or {}
        images += [str(a) for a in journal.get("artifacts", [])]
        for manifest in journal.get("manifests", []):
            with contextlib.suppress(PipelineError, OSError, ValueError):
                images.append(read_manifest(Path(manifest)).artifact_id)
        for image in dict.fromkeys(images):
            try:
                attrs = client.api.inspect_image(image)
            except docker.errors.NotFound:
                continue
            if attrs.get("RepoTags"):
                continue  # tagged: it counts (a bake that died after tagging it)
            try:  # no force: an image another one is built on, or a container uses, stays
                client.images.remove(image, force=False, noprune=False)
            except docker.errors.APIError as exc:
                ctx.log(f"kept {image[:19]} left by run {run_id}: {exc.explanation or exc}")
                continue
            ctx.log(f"removed image {image[:19]} (run {run_id} died before tagging it)")
            removed.append(f"image {image[:19]}")
        return removed

    # --- aws ---
    def _aws(self, secrets: Mapping[str, str] | None = None) -> AwsSession:
        """Region, EC2 endpoint, credentials and clients: the stage's `aws` settings over the
        environment, the stage's env and its secrets (pipeline/engines/aws/session.py)."""
        from pipeline.engines.aws.session import AwsSession

        return AwsSession(self.spec.aws, {**os.environ, **self.spec.env, **(secrets or {})})

    def _ami_exists(self, ami: str, *, ec2: Any = None) -> bool:
        errors = importlib.import_module("botocore.exceptions")

        client = ec2 or self._aws().client("ec2", probe=True)  # a check: give up after a few attempts
        try:
            images = client.describe_images(ImageIds=[ami])["Images"]
        except errors.ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "").startswith("InvalidAMIID"):
                return False
            raise
        return any(image.get("State") in ("available", "pending") for image in images)

    @staticmethod
    def _find_ami(ec2: Any, key: str) -> tuple[str, str] | None:
        images = ec2.describe_images(Owners=["self"], Filters=[{"Name": f"tag:{KEY_TAG}", "Values": [key]}])["Images"]
        ready = [i for i in images if i.get("State") == "available"]
        if not ready:
            return None
        newest = sorted(ready, key=lambda i: i.get("CreationDate", ""))[-1]
        tags = {t["Key"]: t["Value"] for t in newest.get("Tags", [])}
        return str(newest["ImageId"]), tags.get(f"{LABEL}.packer-run-uuid", "")
