"""`pipeline status` and flags: read only when the definition declares flags and a stack exists to
hold the store; a store that cannot be read is a note, never a failed status. (Reading a real
store: tests/integration/test_flag_cli.py.)"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass

import pytest

from pipeline.engines.stack import StackState
from pipeline.loader import Loaded, load
from pipeline.status import collect
from pipeline.testing import FakeEngines, FakeStackEngine
from tests.conftest import REPO, ProjectFactory

DEFINITION = """
from pipeline import Bake, Environment, Flag, Pipeline, Promote

with Pipeline(
    "shop",
    {flags}
    environments=[Environment(name="production", template="templates/web.yaml")],
):
    Bake(name="bake", template="images/web.pkr.hcl") >> Promote(name="promote", environment="production", image="bake")
"""


def _loaded(project: ProjectFactory, flags: str) -> Loaded:
    root = project(DEFINITION.format(flags=flags), {"images/web.pkr.hcl": "# packer\n"})
    (root / "templates").mkdir()
    shutil.copy(REPO / "templates" / "web.yaml", root / "templates" / "web.yaml")
    return load(root / "pipelinefile.py")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StoreOnAClosedPort(FakeStackEngine):
    """A stack whose flag store's master is published on a port nothing listens on."""

    store: str = ""

    def describe(self, stack: str) -> StackState:
        state = super().describe(stack)
        return StackState(stack, True, state.image, state.url, "ready", details={"flags_master": self.store})


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINE_FLAGS_URL", raising=False)


def test_no_flags_declared_reads_no_store(project: ProjectFactory) -> None:
    engine = StoreOnAClosedPort(store=f"127.0.0.1:{_closed_port()}")
    (env,) = collect(_loaded(project, ""), engines=FakeEngines(engine)).environments
    assert env.flags is None
    assert env.flags_note == ""


def test_a_stack_that_does_not_exist_has_no_store_to_read(project: ProjectFactory) -> None:
    """The environment's row already says the stack is absent; no second note about flags."""
    loaded = _loaded(project, 'flags=[Flag(name="new-checkout", default=False)],')
    (env,) = collect(loaded, engines=FakeEngines(FakeStackEngine(image=None))).environments
    assert env.state == "absent"
    assert env.flags is None
    assert env.flags_note == ""


def test_a_store_named_by_pipeline_flags_url_is_read_without_a_stack(
    project: ProjectFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The override names a store (a tunnel to ElastiCache): status asks it even when the stack
    is not observed here."""
    loaded = _loaded(project, 'flags=[Flag(name="new-checkout", default=False)],')
    address = f"127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("PIPELINE_FLAGS_URL", address)
    (env,) = collect(loaded, engines=FakeEngines(FakeStackEngine(image=None))).environments
    assert env.flags_note.startswith(f"flags not read: the flag store at {address} (PIPELINE_FLAGS_URL)")


def test_a_store_that_does_not_answer_is_a_note_and_the_rest_is_shown(project: ProjectFactory) -> None:
    loaded = _loaded(project, 'flags=[Flag(name="new-checkout", default=False)],')
    address = f"127.0.0.1:{_closed_port()}"
    (env,) = collect(loaded, engines=FakeEngines(StoreOnAClosedPort(store=address))).environments
    assert env.image == "shop:2"
    assert env.state == "ready"
    assert env.flags is None
    assert env.flags_note.startswith(f"flags not read: the flag store at {address}")
