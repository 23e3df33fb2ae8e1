"""The runner: up-to-date skipping, --force/--only/--from, failures, always-stages, retries,
secrets, branch filters, approvals, run-stage manifests, interrupts. Real subprocesses for the
Shell/CommitTest stages; fake executors where a stage kind's real executor needs Docker or AWS."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pipeline.errors import BadInputError, LockHeldError, NotImplementedStageError, StateCorruptError
from pipeline.executors.base import Executor, Outputs, PlanContext, StageContext
from pipeline.ledger import Ledger, StageResult
from pipeline.loader import Loaded, load
from pipeline.run import Runner, RunOptions, RunSummary

HEAD = "from pipeline import *\n"


class Recorder:
    """A Reporter that remembers what happened."""

    def __init__(self) -> None:
        self.finished: dict[str, StageResult] = {}
        self.lines: list[tuple[str, str]] = []
        self.notices: list[str] = []

    def run_started(self, run_id: str, stages: list[str], run_dir: Path) -> None:
        pass

    def stage_started(self, stage: str, attempt: int) -> None:
        pass

    def stage_step(self, stage: str, text: str) -> None:
        pass

    def stage_line(self, stage: str, line: str) -> None:
        self.lines.append((stage, line))

    def stage_finished(self, stage: str, result: StageResult, log_tail: str) -> None:
        self.finished[stage] = result

    def notice(self, text: str) -> None:
        self.notices.append(text)

    def run_finished(self, summary: RunSummary) -> None:
        pass


def write(root: Path, definition: str, **files: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipelinefile.py").write_text(HEAD + textwrap.dedent(definition))
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def run(
    root: Path, executors: Callable[[Any], Executor[Any]] | None = None, **options: Any
) -> tuple[RunSummary, Recorder]:
    recorder = Recorder()
    runner = Runner(
        load(root / "pipelinefile.py"), reporter=recorder, **({"executors": executors} if executors else {})
    )
    summary = runner.run_local(RunOptions(**options))
    return summary, recorder


def statuses(summary: RunSummary) -> dict[str, str]:
    return {name: r.status for name, r in summary.results.items()}


CHAIN = """
with Pipeline("demo") as p:
    unit = CommitTest(name="unit", commands=["echo unit >> ../calls"], inputs=["src"])
    build = Shell(name="build", commands=["echo build >> ../calls"], inputs=["src"])
    unit >> build
"""


def calls(root: Path) -> list[str]:
    path = root.parent / "calls"
    return path.read_text().split() if path.exists() else []


def test_a_second_run_with_nothing_changed_is_all_up_to_date(tmp_path: Path) -> None:
    root = write(tmp_path / "p", CHAIN, **{"src/a.txt": "1"})
    first, _ = run(root)
    assert statuses(first) == {"unit": "succeeded", "build": "succeeded"}
    second, _ = run(root)
    assert statuses(second) == {"unit": "up-to-date", "build": "up-to-date"}
    assert calls(root) == ["unit", "build"]
    assert first.exit_code == second.exit_code == 0


def test_force_reruns_and_a_changed_input_reruns_only_what_reads_it(tmp_path: Path) -> None:
    root = write(
        tmp_path / "p",
        """
        with Pipeline("demo") as p:
            unit = CommitTest(name="unit", commands=["echo unit >> ../calls"], inputs=["src"])
            docs = Shell(name="docs", commands=["echo docs >> ../calls"], inputs=["docs"])
            unit >> docs
        """,
        **{"src/a.txt": "1", "docs/index.md": "x"},
    )
    run(root)
    (root / "docs/index.md").write_text("changed")
    summary, _ = run(root)
    assert statuses(summary) == {"unit": "up-to-date", "docs": "succeeded"}
    summary, _ = run(root, force=True)
    assert statuses(summary) == {"unit": "succeeded", "docs": "succeeded"}
    assert calls(root) == ["unit", "docs", "docs", "unit", "docs"]


def test_a_failure_skips_what_follows_and_exits_1(tmp_path: Path) -> None:
    root = write(
        tmp_path / "p",
        """
        with Pipeline("demo") as p:
            unit = CommitTest(name="unit", commands=["echo about to fail", "exit 3"])
            other = CommitTest(name="other", commands=["true"])
            deploy = Shell(name="deploy", commands=["echo deploy >> ../calls"])
            [unit, other] >> deploy
        """,
    )
    summary, recorder = run(root)
    assert statuses(summary) == {"unit": "failed", "other": "succeeded", "deploy": "skipped"}
    assert summary.exit_code == 1
    assert "`exit 3` exited with status 3" in summary.results["unit"].message
    assert "not run: unit did not succeed" in summary.results["deploy"].message
    assert ("unit", "about to fail") in recorder.lines
    log = summary.run_dir / "stages" / "unit" / "output.log"
    assert "about to fail" in log.read_text()
    manifest = json.loads((summary.run_dir / "manifest.json").read_text())
    assert manifest["stages"]["unit"]["status"] == "failed"
    assert calls(root) == []


def test_retries_run_a_failing_stage_again(tmp_path: Path) -> None:
    root = write(
        tmp_path / "p",
        """
        with Pipeline("demo") as p:
            Shell(name="flaky", retries=2, commands=["echo x >> ../tries; test $(wc -l < ../tries) -ge 2"])
        """,
    )
    summary, recorder = run(root)
    assert statuses(summary) == {"flaky": "succeeded"}
    assert summary.results["flaky"].attempts == 2
    assert any("attempt 1 of 3 failed" in n for n in recorder.notices)


def test_junit_reports_are_kept_in_the_run_folder(tmp_path: Path) -> None:
    root = write(
        tmp_path / "p",
        """
        with Pipeline("demo") as p:
            CommitTest(name="unit", commands=["echo '<testsuite tests=\\"1\\"/>' > report.xml"], junit="report.xml")
        """,
    )
    summary, _ = run(root)
    kept = summary.run_dir / summary.results["unit"].outputs["junit"]
    assert kept.read_text().startswith("<testsuite")


def test_secret_values_are_masked_in_logs_manifest_and_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "canary-s3cr3t-value-42"
    monkeypatch.setenv("DEPLOY_TOKEN", canary)
    root = write(
        tmp_path / "p",
        """
        with Pipeline("demo") as p:
            Shell(name="deploy", secrets=["DEPLOY_TOKEN"], commands=["echo token is $DEPLOY_TOKEN", "exit 1"])
        """,
    )
    summary, recorder = run(root)
    assert summary.exit_code == 1
    assert ("deploy", "token is ***") in recorder.lines
    for path in (root / ".pipeline").rglob("*"):
        if path.is_file():
            assert canary not in path.read_text(errors="replace"), path


def test_a_missing_secret_fails_the_stage_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEPLOY_TOKEN", raising=False)
    root = write(
        tmp_path / "p",
        """
        with Pipeline("demo") as p:
            Shell(name="deploy", secrets=["DEPLOY_TOKEN"], commands=["echo should not run >> ../calls"])
        """,
    )
    summary, _ = run(root)
    assert summary.results["deploy"].status == "failed"
    assert "secret DEPLOY_TOKEN not set" in summary.results["deploy"].message
    assert calls(root) == []


def test_branch_filters_skip_stages_on_other_branches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write(
        tmp_path / "p",
        """
        with Pipeline("demo") as p:
            unit = CommitTest(name="unit", commands=["true"])
            deploy = Shell(name="deploy", branches=["main", "release/*"], commands=["echo deploy >> ../calls"])
            after = Shell(name="after", commands=["echo after >> ../calls"])
            unit >> deploy >> after
        """,
    )
    monkeypatch.setenv("PIPELINE_BRANCH", "feature/x")
    summary, _ = run(root)
    assert statuses(summary) == {"unit": "succeeded", "deploy": "skipped", "after": "skipped"}
    assert "does not match feature/x" in summary.results["deploy"].message
    assert summary.exit_code == 0
    monkeypatch.setenv("PIPELINE_BRANCH", "release/1.2")
    summary, _ = run(root)
    assert statuses(summary)["deploy"] == "succeeded"


def test_an_approval_gate_needs_yes_without_a_terminal(tmp_path: Path) -> None:
    root = write(
        tmp_path / "p",
        """
        with Pipeline("demo", environments=[Environment(name="production", approval=Approval(message="go?"))]) as p:
            Shell(name="deploy", environment="production", commands=["echo deploy >> ../calls"])
        """,
    )
    summary, _ = run(root)
    assert summary.results["deploy"].status == "failed"
    assert "waits for approval ('go?')" in summary.results["deploy"].message
    assert "--yes" in summary.results["deploy"].message
    assert calls(root) == []
    summary, _ = run(root, yes=True)
    assert summary.results["deploy"].status == "succeeded"


def test_an_approver_can_decline(tmp_path: Path) -> None:
    root = write(
        tmp_path / "p",
        """
        with Pipeline("demo") as p:
            Shell(name="deploy", approval=Approval(message="go?"), commands=["echo deploy >> ../calls"])
        """,
    )
    asked: list[str] = []

    def approver(stage: Any, approval: Any) -> bool:
        asked.append(approval.message)
        return False

    summary = Runner(load(root / "pipelinefile.py"), reporter=Recorder(), approver=approver).run_local(
        RunOptions(interactive=True)
    )
    assert asked == ["go?"]
    assert summary.results["deploy"].status == "failed"
    assert "approval declined" in summary.results["deploy"].message


def test_only_and_from_use_recorded_outputs_of_earlier_stages(tmp_path: Path) -> None:
    root = write(tmp_path / "p", CHAIN, **{"src/a.txt": "1"})
    summary, _ = run(root, only="build", force=True)
    assert list(summary.results) == ["build"]
    summary, _ = run(root, from_stage="unit", force=True)
    assert list(summary.results) == ["unit", "build"]
    with pytest.raises(BadInputError, match="cannot be combined"):
        run(root, only="unit", from_stage="unit")


def test_unknown_stage_names_list_the_available_ones(tmp_path: Path) -> None:
    root = write(tmp_path / "p", CHAIN, **{"src/a.txt": "1"})
    with pytest.raises(BadInputError, match="no stage named 'nope'") as info:
        run(root, only="nope")
    assert info.value.hint == "available stages: unit, build"


def test_a_kind_without_executor_fails_before_anything_runs(tmp_path: Path) -> None:
    """A kind (here one the definition declares itself) that names no executor can be validated and
    rendered, but a run refuses it before any stage starts."""
    root = write(
        tmp_path / "p",
        """
        from typing import Literal

        class Draft(Stage):
            kind: Literal["draft"] = "draft"

        with Pipeline("demo") as p:
            unit = CommitTest(name="unit", commands=["echo unit >> ../calls"])
            Draft(name="later", needs=[unit])
        """,
    )
    with pytest.raises(NotImplementedStageError, match=r"no local-profile executor yet for: later \(draft\)"):
        run(root)
    assert calls(root) == []
    assert not (root / ".pipeline" / "runs").exists()


def test_preflight_rejects_bad_input_before_any_stage_runs(
    tmp_path: Path, fakes: type[Fake], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.errors import TemplateError

    def refuse(self: Fake, ctx: PlanContext) -> None:
        if self.spec.kind == "promote":
            raise TemplateError("web.yaml: ImageId has no Default")

    monkeypatch.setattr(Fake, "preflight", refuse)
    root = write(tmp_path / "p", CHAIN_FULL, **FILES)
    with pytest.raises(TemplateError, match="ImageId has no Default"):
        run(root, fakes.factory, yes=True)
    assert fakes.ran == []
    assert not (root / ".pipeline" / "runs").exists()


def test_force_reaches_the_executor(tmp_path: Path, fakes: type[Fake]) -> None:
    root = write(tmp_path / "p", CHAIN_FULL, **FILES)
    seen: list[str] = []

    def bake(ctx: StageContext) -> Outputs:
        seen.append(ctx.options.get("force", ""))
        return {"image": "img", "key": "k", "packer_run_uuid": "u"}

    fakes.behaviours["bake"] = bake
    run(root, fakes.factory, yes=True, only="bake")
    run(root, fakes.factory, yes=True, only="bake", force=True)
    assert seen == ["", "1"]


def test_run_stage_reads_and_writes_a_manifest_folder(tmp_path: Path) -> None:
    root = write(
        tmp_path / "p",
        """
        with Pipeline("demo") as p:
            unit = CommitTest(name="unit", commands=["true"], junit="r.xml")
            Shell(name="report", commands=["echo junit=$PIPELINE_UNIT_JUNIT > ../seen"], needs=[unit])
        """,
        **{"r.xml": "<testsuite/>"},
    )
    loaded = load(root / "pipelinefile.py")
    folder = tmp_path / "ci-manifest"
    folder.mkdir()
    first = Runner(loaded, reporter=Recorder()).run_stage("unit", RunOptions(manifest=folder))
    assert first.exit_code == 0
    saved = json.loads((folder / "unit.json").read_text())
    assert saved["stages"]["unit"]["status"] == "succeeded"
    # A fresh machine: another ledger, only the manifest folder carries the outputs across.
    other = tmp_path / "q"
    other.mkdir()
    for name in ("pipelinefile.py", "r.xml"):
        (other / name).write_text((root / name).read_text())
    second = Runner(load(other / "pipelinefile.py"), reporter=Recorder()).run_stage(
        "report", RunOptions(manifest=folder)
    )
    assert second.exit_code == 0
    assert (tmp_path / "seen").read_text().strip() == f"junit={saved['stages']['unit']['outputs']['junit']}"
    assert sorted(p.name for p in folder.iterdir()) == ["report.json", "unit.json"]
    assert json.loads((folder / "report.json").read_text())["run_id"] == saved["run_id"]


def test_a_corrupt_ledger_file_is_named_with_the_fix(tmp_path: Path) -> None:
    root = write(tmp_path / "p", CHAIN, **{"src/a.txt": "1"})
    run(root)
    record = root / ".pipeline" / "stages" / "demo" / "local" / "unit.json"
    record.write_text("{not json")
    with pytest.raises(StateCorruptError, match=r"unit\.json is corrupt") as info:
        run(root)
    assert info.value.hint is not None
    assert "delete" in info.value.hint


# --------------------------------------------------------------------------- locks

HOLD = """
import sys, time
from pathlib import Path
from pipeline.ledger import Ledger
lock = Ledger(Path(sys.argv[1])).lock("demo", "build", purpose="holding for a test").acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_concurrent_run_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    root = write(tmp_path / "p", CHAIN, **{"src/a.txt": "1"})
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeldError, match=f"demo.build is locked by pid {holder.pid}") as info:
            run(root)
        assert "holding for a test" in str(info.value)
        assert calls(root) == []
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: its lock is taken over, and that is reported.
    summary, recorder = run(root)
    assert summary.exit_code == 0
    assert any(f"pid {holder.pid}" in n and "no longer running" in n for n in recorder.notices)


def test_different_environments_do_not_block_each_other(tmp_path: Path) -> None:
    root = write(
        tmp_path / "p",
        """
        with Pipeline("demo", environments=[Environment(name="staging")]) as p:
            Shell(name="deploy", environment="staging", commands=["true"])
        """,
    )
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        summary, _ = run(root)  # holds demo.build; this run needs demo.staging only
        assert summary.exit_code == 0
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- fake executors


class Fake(Executor[Any]):
    """Configurable stand-in for executors that need Docker or AWS."""

    behaviours: ClassVar[dict[str, Callable[[StageContext], Outputs]]] = {}
    live: ClassVar[dict[str, bool]] = {}
    ephemeral_kinds: ClassVar[set[str]] = {"test-stack", "update-stack", "simulated-rollback"}
    ran: ClassVar[list[str]] = []

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.ephemeral = spec.kind in self.ephemeral_kinds  # type: ignore[misc]

    def is_live(self, ctx: PlanContext, outputs: Mapping[str, str]) -> bool:
        return self.live.get(self.spec.name, True)

    def run(self, ctx: StageContext) -> Outputs:
        self.ran.append(self.spec.name)
        behaviour = self.behaviours.get(self.spec.name)
        outputs = type(self.spec).outputs.names()
        return behaviour(ctx) if behaviour else {k: f"{self.spec.name}-{k}-{ctx.run_id}" for k in outputs}

    @classmethod
    def factory(cls, stage: Any) -> Executor[Any]:
        """Fakes for the kinds that need Docker or AWS; the real executor for the others."""
        from pipeline.executors.registry import executor_for

        return cls(stage) if stage.kind in FAKED else executor_for(stage)


FAKED = {"bake", "test-stack", "update-stack", "simulated-rollback", "teardown", "promote"}


@pytest.fixture
def fakes() -> type[Fake]:
    Fake.behaviours, Fake.live, Fake.ran = {}, {}, []
    return Fake


CHAIN_FULL = """
with Pipeline("web", environments=[Environment(name="test", ephemeral=True),
                                   Environment(name="production", template="web.yaml")]) as p:
    bake = Bake(name="bake", template="web.pkr.hcl")
    ts = TestStack(name="test-stack", environment="test", image=bake)
    up = UpdateStack(name="update", stack=ts, image=bake)
    rb = SimulatedRollback(name="rollback", stack=ts)
    td = Teardown(name="teardown", stack=ts)
    promote = Promote(name="promote", image=bake)
    bake >> ts >> up >> rb >> td >> promote
"""
FILES = {"web.pkr.hcl": "", "web.yaml": ""}


def test_teardown_runs_after_a_failure_and_promote_does_not(tmp_path: Path, fakes: type[Fake]) -> None:
    root = write(tmp_path / "p", CHAIN_FULL, **FILES)

    def broken_update(ctx: StageContext) -> Outputs:
        from pipeline.errors import VerificationFailedError

        raise VerificationFailedError("page says Hello World 0.9")

    fakes.behaviours["update"] = broken_update
    summary, _ = run(root, fakes.factory, yes=True)
    assert statuses(summary) == {
        "bake": "succeeded",
        "test-stack": "succeeded",
        "update": "failed",
        "rollback": "skipped",
        "teardown": "succeeded",
        "promote": "skipped",
    }
    assert fakes.ran == ["bake", "test-stack", "update", "teardown"]
    assert summary.exit_code == 1


def test_teardown_sees_what_a_failed_test_stack_created(tmp_path: Path, fakes: type[Fake]) -> None:
    root = write(tmp_path / "p", CHAIN_FULL, **FILES)
    seen: dict[str, Any] = {}

    def half_created(ctx: StageContext) -> Outputs:
        ctx.partial_outputs["stack"] = "web-test-abc"
        raise RuntimeError("boom while creating")

    def teardown(ctx: StageContext) -> Outputs:
        seen.update(ctx.upstream)
        return {"deleted": "true"}

    fakes.behaviours["test-stack"] = half_created
    fakes.behaviours["teardown"] = teardown
    summary, _ = run(root, fakes.factory, yes=True)
    assert summary.results["test-stack"].status == "failed"
    assert "internal error: RuntimeError: boom while creating" in summary.results["test-stack"].message
    assert seen["test-stack"] == {"stack": "web-test-abc"}
    log = (summary.run_dir / "stages" / "test-stack" / "output.log").read_text()
    assert "Traceback" in log


def test_an_interrupt_still_tears_down_and_exits_130(tmp_path: Path, fakes: type[Fake]) -> None:
    root = write(tmp_path / "p", CHAIN_FULL, **FILES)

    def ctrl_c(ctx: StageContext) -> Outputs:
        raise KeyboardInterrupt

    fakes.behaviours["update"] = ctrl_c
    summary, _ = run(root, fakes.factory, yes=True)
    assert statuses(summary)["update"] == "interrupted"
    assert statuses(summary)["rollback"] == "skipped"
    assert statuses(summary)["teardown"] == "succeeded"
    assert statuses(summary)["promote"] == "skipped"
    assert summary.exit_code == 130


def test_ephemeral_stages_are_up_to_date_when_everything_after_them_is(tmp_path: Path, fakes: type[Fake]) -> None:
    root = write(tmp_path / "p", CHAIN_FULL, **FILES)
    run(root, fakes.factory, yes=True)
    # The test stack is gone (torn down), but the whole rehearsal is recorded as current.
    fakes.live.update({"test-stack": False, "update": False, "rollback": False})
    fakes.ran.clear()
    summary, _ = run(root, fakes.factory, yes=True)
    assert set(statuses(summary).values()) == {"up-to-date"}
    assert fakes.ran == []
    # Production drifted away from the promoted image: promote must run again; the
    # rehearsal before it is still current.
    fakes.live["promote"] = False
    summary, _ = run(root, fakes.factory, yes=True)
    assert fakes.ran == ["promote"]


def test_an_ephemeral_stage_reruns_when_a_later_stage_must(tmp_path: Path, fakes: type[Fake]) -> None:
    root = write(tmp_path / "p", CHAIN_FULL, **FILES)

    def fail(ctx: StageContext) -> Outputs:
        from pipeline.errors import VerificationFailedError

        raise VerificationFailedError("rollback did not verify")

    fakes.behaviours["rollback"] = fail
    run(root, fakes.factory, yes=True)
    fakes.behaviours.clear()
    fakes.live.update({"test-stack": False, "update": False})
    fakes.ran.clear()
    summary, _ = run(root, fakes.factory, yes=True)
    # test-stack was torn down and rollback never succeeded: the rehearsal runs again from the start.
    assert fakes.ran == ["test-stack", "update", "rollback", "teardown", "promote"]
    assert statuses(summary)["bake"] == "up-to-date"


def test_ledger_and_events_record_the_run(tmp_path: Path) -> None:
    root = write(tmp_path / "p", CHAIN, **{"src/a.txt": "1"})
    summary, _ = run(root)
    ledger = Ledger(root)
    events = [e["event"] for e in ledger.events() if e["run_id"] == summary.run_id]
    assert events[0] == "run-started"
    assert events[-1] == "run-finished"
    assert events.count("stage-succeeded") == 2
    assert ledger.runs() == [summary.run_id]
    assert (root / ".pipeline" / ".gitignore").read_text().strip().endswith("*")
    record = ledger.stage_record("demo", "local", "unit")
    assert record is not None
    assert record.run_id == summary.run_id


def test_loaded_root_is_the_definition_folder(tmp_path: Path) -> None:
    root = write(tmp_path / "p", CHAIN, **{"src/a.txt": "1"})
    loaded = load(root / "pipelinefile.py")
    assert isinstance(loaded, Loaded)
    assert loaded.root == root.resolve()
    assert os.path.basename(loaded.file) == "pipelinefile.py"


def test_a_signal_swallowed_inside_a_stage_still_stops_the_run(tmp_path: Path, fakes: type[Fake]) -> None:
    """The lost Ctrl-C: SIGINT arrives while a stage runs, and the KeyboardInterrupt it raises is
    swallowed there (as Python does when it lands in a finalizer). The signal was recorded first, so
    the stage finishes, nothing after it starts but the teardown, and the run exits 130."""
    import signal

    from pipeline import interrupts

    root = write(tmp_path / "p", CHAIN_FULL, **FILES)

    def update_that_loses_the_interrupt(ctx: StageContext) -> Outputs:
        with contextlib.suppress(KeyboardInterrupt):  # "Exception ignored in: <function ... __del__>"
            interrupts._handler(signal.SIGINT, None)
        assert ctx.cancel.is_set()  # child processes of the stage were told to stop
        return {"stack": "s", "image": "i"}

    fakes.behaviours["update"] = update_that_loses_the_interrupt
    summary, _ = run(root, fakes.factory, yes=True)
    assert statuses(summary) == {
        "bake": "succeeded",
        "test-stack": "succeeded",
        "update": "succeeded",
        "rollback": "skipped",
        "teardown": "succeeded",
        "promote": "skipped",
    }
    assert fakes.ran == ["bake", "test-stack", "update", "teardown"]
    assert summary.exit_code == 130


def test_sigterm_stops_the_run_with_143_and_a_second_signal_abandons_the_teardown(
    tmp_path: Path, fakes: type[Fake]
) -> None:
    import signal

    from pipeline import interrupts

    root = write(tmp_path / "p", CHAIN_FULL, **FILES)

    def terminated(ctx: StageContext) -> Outputs:
        interrupts._handler(signal.SIGTERM, None)
        raise AssertionError("not reached")

    def teardown_interrupted_again(ctx: StageContext) -> Outputs:
        interrupts._handler(signal.SIGINT, None)
        raise AssertionError("not reached")

    fakes.behaviours["update"] = terminated
    summary, _ = run(root, fakes.factory, yes=True)
    assert statuses(summary)["update"] == "interrupted"
    assert summary.results["update"].message == "interrupted (SIGTERM)"
    assert statuses(summary)["teardown"] == "succeeded"
    assert statuses(summary)["promote"] == "skipped"
    assert summary.exit_code == 143

    fakes.behaviours["teardown"] = teardown_interrupted_again
    fakes.ran.clear()
    summary, _ = run(root, fakes.factory, yes=True, force=True)
    assert statuses(summary)["teardown"] == "interrupted"
    assert summary.exit_code == 143


def test_a_signal_between_two_stages_starts_nothing_more(tmp_path: Path, fakes: type[Fake]) -> None:
    """Recorded while no stage runs (say while a record is written): the loop sees it first."""
    import signal

    from pipeline import interrupts

    root = write(tmp_path / "p", CHAIN_FULL, **FILES)

    def test_stack(ctx: StageContext) -> Outputs:
        interrupts.record(signal.SIGINT)  # as if it arrived just after this stage returned
        return {"stack": "s", "url": "u", "image": "i", "fresh": "false"}

    fakes.behaviours["test-stack"] = test_stack
    summary, _ = run(root, fakes.factory, yes=True)
    assert fakes.ran == ["bake", "test-stack", "teardown"]
    assert statuses(summary)["update"] == "skipped"
    assert summary.results["update"].message == "not run: interrupted"
    assert summary.exit_code == 130
