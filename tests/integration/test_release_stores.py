"""Release history that outlives a CI job's workspace: the template's git history (aws profile) and
tags in the Docker engine (local profile), read by a checkout or ledger that never saw the release."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.git_promote import record_image, revert
from pipeline.engines.git_releases import GitReleaseStore, parse_trailers
from pipeline.ledger import Ledger, Release
from pipeline.stages.promote import DEFAULT_AUTHOR
from tests.conftest import need

pytestmark = pytest.mark.integration

TEMPLATE = "templates/web.yaml"
TEXT = """\
Parameters:
  ImageId:
    Type: AWS::EC2::Image::Id
    Default: ami-00000000000000001
Resources: {}
"""


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    need(shutil.which("git") is not None, "git is not installed")
    root = tmp_path / "repo"
    (root / "templates").mkdir(parents=True)
    (root / TEMPLATE).write_text(TEXT)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "-c", "user.name=T", "-c", "user.email=t@example.invalid", "commit", "-qm", "initial")
    return root


def promote(root: Path, image: str, run: str, *, env: str = "production", **options: Any) -> Any:
    return record_image(
        root,
        Path(TEMPLATE),
        "ImageId",
        image,
        pipeline="shop",
        run_id=run,
        environment=env,
        default_author=DEFAULT_AUTHOR,
        **options,
    )


def test_trailers_are_the_last_paragraph_of_key_value_lines() -> None:
    assert parse_trailers("subject\n\nbody text\n\nPipeline: shop\nImage: ami-1\n") == {
        "Pipeline": "shop",
        "Image": "ami-1",
    }
    assert parse_trailers("subject\n\nnot: a trailer block because\nthis line has none\n") == {}
    assert parse_trailers("just a subject") == {}


def test_the_template_history_is_the_release_record(repo: Path) -> None:
    """Promotes go live; a reverted promote failed (the image before it is live again); a rollback
    withdraws the image it replaces."""
    store = GitReleaseStore(root=repo, template=TEMPLATE, pipeline="shop", environment="production")
    assert store.read() == []
    promote(repo, "ami-00000000000000002", "r1")
    promote(repo, "ami-00000000000000003", "r2")
    bad = promote(repo, "ami-00000000000000004", "r3")
    revert(repo, bad, pipeline="shop", run_id="r3", reason="verification failed", default_author=DEFAULT_AUTHOR)
    promote(repo, "ami-00000000000000002", "rollback-r4", release="rollback")

    releases = store.read()
    assert releases is not None
    assert [(r.image[-2:], r.status, r.run_id) for r in releases] == [
        ("02", "known-good", "r1"),
        ("03", "known-good", "r2"),
        ("04", "failed", "r3"),
        ("03", "known-good", "r3"),
        ("03", "failed", "rollback-r4"),
        ("02", "live", "rollback-r4"),
    ]
    history = Ledger(repo).history("shop", "production", store)
    assert history.source == "git history of templates/web.yaml"
    assert history.live() == "ami-00000000000000002"
    assert history.candidates() == ["ami-00000000000000002"]
    assert history.withdrawn("ami-00000000000000003")
    assert history.withdrawn("ami-00000000000000004")


def test_other_environments_and_pipelines_are_not_mixed_in() -> None:
    from pipeline.engines.git_releases import _Commit, releases_from_commits

    def commit(sha: str, **trailers: str) -> _Commit:
        return _Commit(sha, "2026-12-05T00:00:00+00:00", {k.replace("_", "-"): v for k, v in trailers.items()})

    commits = [
        commit("a", Pipeline="shop", Environment="production", Image="ami-1", Run="r1"),
        commit("b", Pipeline="shop", Environment="staging", Image="ami-2", Run="r2"),
        commit("c", Pipeline="other", Environment="production", Image="ami-3", Run="r3"),
        commit("d", Pipeline="shop", Environment="staging", Image="ami-4", Previous_Image="ami-2", Run="r4"),
        commit("e", Pipeline="shop", Reverts="d", Run="r4"),
    ]
    assert [(r.image, r.status) for r in releases_from_commits(commits, "shop", "production")] == [("ami-1", "live")]
    assert [(r.image, r.status) for r in releases_from_commits(commits, "shop", "staging")] == [
        ("ami-2", "known-good"),
        ("ami-4", "failed"),
        ("ami-2", "live"),
    ]


def test_a_fresh_clone_reads_the_same_history_and_a_shallow_one_says_it_is_partial(repo: Path, tmp_path: Path) -> None:
    promote(repo, "ami-00000000000000002", "r1")
    promote(repo, "ami-00000000000000003", "r2")
    clone = tmp_path / "laptop"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    store = GitReleaseStore(root=clone, template=TEMPLATE, pipeline="shop", environment="production")
    assert Ledger(clone).history("shop", "production", store).candidates() == [
        "ami-00000000000000003",
        "ami-00000000000000002",
    ]
    shallow = tmp_path / "ci"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow))
    partial = GitReleaseStore(root=shallow, template=TEMPLATE, pipeline="shop", environment="production")
    assert partial.where.endswith("(a shallow clone: older releases missing)")
    assert [r.image for r in partial.read() or []] == ["ami-00000000000000003"]


def test_outside_a_git_checkout_the_ledger_speaks(tmp_path: Path) -> None:
    store = GitReleaseStore(root=tmp_path, template=TEMPLATE, pipeline="shop", environment="production")
    assert store.read() is None
    ledger = Ledger(tmp_path)
    ledger.record_release("shop", "production", "ami-1", "r1", "live", store=store)
    history = ledger.history("shop", "production", store)
    assert (history.source, history.live()) == ("ledger", "ami-1")


# --- the local profile: tags in the Docker engine -------------------------------------------------------


@pytest.fixture
def images(docker_client: Any) -> Iterator[list[str]]:
    """Two small images of our own (label-only layers on the base image), removed afterwards."""
    from pipeline.engines.base_image import DEFAULT_BASE_IMAGE

    need(any(DEFAULT_BASE_IMAGE in (i.tags or []) for i in docker_client.images.list()), "no base image")
    suffix = uuid.uuid4().hex[:8]
    made = []
    for n in (1, 2):
        image, _ = docker_client.images.build(
            fileobj=io.BytesIO(f"FROM {DEFAULT_BASE_IMAGE}\nLABEL test.release={suffix}-{n}\n".encode()), rm=True
        )
        image.tag(f"release-store-{suffix}", f"v{n}")
        made.append(f"release-store-{suffix}:v{n}")
    yield made
    import docker.errors

    for image in docker_client.images.list(name=f"pipeline-releases/store-{suffix}"):
        for tag in image.tags:
            if tag.startswith("pipeline-releases/"):
                docker_client.images.remove(tag)
    for name in made:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(name, force=True)


def test_release_tags_in_the_docker_engine_are_shared_by_every_workspace(
    images: list[str], docker_client: Any, tmp_path: Path
) -> None:
    from pipeline.engines.docker_releases import DockerReleaseStore

    pipeline = "store-" + images[0].split("-")[-1].split(":")[0]
    ci_job = Ledger(tmp_path / "ci-job-workspace")
    store = DockerReleaseStore(pipeline=pipeline, environment="production", client=docker_client)
    assert store.read() == []
    ci_job.record_release(pipeline, "production", images[0], "r1", "live", store=store)
    ci_job.record_release(pipeline, "production", images[1], "r2", "live", store=store)
    ci_job.record_release(pipeline, "production", images[1], "rollback-r3", "failed", store=store)
    ci_job.record_release(pipeline, "production", images[0], "rollback-r3", "live", store=store)
    DockerReleaseStore(pipeline=pipeline, environment="staging", client=docker_client).append(
        Release(images[1], "r9", "2026-12-05T00:00:00+00:00", "live")
    )

    laptop = Ledger(tmp_path / "laptop-checkout")
    fresh = DockerReleaseStore(pipeline=pipeline, environment="production", client=docker_client)
    history = laptop.history(pipeline, "production", fresh)
    assert history.source == f"Docker tags pipeline-releases/{pipeline}:production.*"
    assert [(r.image, r.status, r.run_id) for r in history.releases] == [
        (images[0], "live", "r1"),
        (images[1], "live", "r2"),
        (images[1], "failed", "rollback-r3"),
        (images[0], "live", "rollback-r3"),
    ]
    assert history.live() == images[0]
    assert history.candidates() == [images[0]]
    assert laptop.releases(pipeline, "production") == []  # nothing came from the CI job's ledger


def test_an_unreachable_docker_engine_leaves_the_ledger_to_speak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.engines.docker_releases import DockerReleaseStore

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker-here.sock")
    store = DockerReleaseStore(pipeline="shop", environment="production")
    assert store.read() is None
    ledger = Ledger(tmp_path)
    ledger.record_release("shop", "production", "shop:1", "r1", "live", store=store)
    assert ledger.history("shop", "production", store).live() == "shop:1"
