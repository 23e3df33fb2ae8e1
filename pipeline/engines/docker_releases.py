"""An environment's release history kept in the Docker engine that runs it (the local profile).

Each release is a tag on the released image, in one repository per pipeline:

    pipeline-releases/<pipeline>:<environment>.<sequence>.<status>.<unix time>.<run id>

so every workspace and every user of that engine (a persistent CI agent's jobs, a laptop) reads the
same history with one API call, and the record lives exactly as long as the images it names. The
image a release names is the image's other tag (the bake's `<repository>:<key>`), else the release
tag itself (still a valid reference to the same image).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline.errors import PipelineError
from pipeline.ledger import Release

if TYPE_CHECKING:
    import docker

REPOSITORY = "pipeline-releases/{pipeline}"
_TAG = re.compile(
    r"^(?P<env>[a-z0-9-]+)\.(?P<seq>\d{6})\.(?P<status>live|failed|known-good)\.(?P<at>\d+)\.(?P<run>[A-Za-z0-9_.-]*)$"
)
_RUN_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class DockerReleaseStore:
    pipeline: str
    environment: str
    client: Any = None

    @property
    def repository(self) -> str:
        return REPOSITORY.format(pipeline=self.pipeline)

    @property
    def where(self) -> str:
        return f"Docker tags {self.repository}:{self.environment}.*"

    def read(self) -> list[Release] | None:
        """None when the Docker engine does not answer (the ledger speaks then)."""
        found = self._tags()
        if found is None:
            return None
        return [release for _, release in sorted(found, key=lambda item: item[0])]

    def append(self, release: Release) -> None:
        """Tag the released image with the next sequence number (the caller holds the environment's
        lock). A release of an image this engine does not have is not recorded here."""
        import docker.errors

        found = self._tags()
        if found is None:
            return
        sequence = max((seq for seq, _ in found), default=0) + 1
        at = int(datetime.fromisoformat(release.at).timestamp()) if release.at else 0
        run = _RUN_UNSAFE.sub("-", release.run_id)[:60]
        tag = f"{self.environment}.{sequence:06d}.{release.status}.{at}.{run}"
        try:
            self._client().images.get(release.image).tag(self.repository, tag)
        except (docker.errors.ImageNotFound, docker.errors.APIError):
            return

    def _tags(self) -> list[tuple[int, Release]] | None:
        import docker.errors

        try:
            images = self._client().images.list(name=self.repository)
        except (PipelineError, docker.errors.DockerException):
            return None
        found: list[tuple[int, Release]] = []
        prefix = f"{self.repository}:"
        for image in images:
            tags = list(image.tags or [])
            others = sorted(t for t in tags if not t.startswith(prefix))
            for tag in tags:
                if not tag.startswith(prefix):
                    continue
                match = _TAG.match(tag[len(prefix) :])
                if match is None or match["env"] != self.environment:
                    continue
                name = others[0] if others else tag
                at = datetime.fromtimestamp(int(match["at"]), UTC).isoformat(timespec="seconds")
                found.append((int(match["seq"]), Release(name, match["run"], at, match["status"])))
        return found

    def _client(self) -> docker.DockerClient:
        if self.client is None:
            from pipeline.engines.docker_client import shared

            self.client = shared()
        return self.client
