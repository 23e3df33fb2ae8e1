"""Feature flags without servers: declarations and their checks, bucketing, the store's keys and
the OpenFeature provider over fakeredis (integration tests use real redis-server)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import fakeredis
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import Reason

from pipeline import CommitTest, Environment, Flag, Pipeline
from pipeline.errors import DefinitionError
from pipeline.flags.provider import RedisFlagProvider
from pipeline.flags.spec import parse_value
from pipeline.flags.state import FLAG_PREFIX, FlagState, bucket, in_rollout
from pipeline.flags.store import FlagEndpoint, FlagStore

# --- declarations ------------------------------------------------------------------------------


def build(**env_flags: object) -> object:
    with Pipeline(
        "shop",
        flags=[
            Flag(name="new-checkout", default=False),
            Flag(name="greeting", default="hi"),
            Flag(name="ratio", default=0.5),
        ],
        environments=[Environment(name="production", flags=dict(env_flags))],
    ) as p:
        CommitTest(name="unit", commands=["true"])
    return p.spec


def test_environment_values_of_declared_flags_of_the_right_type_are_accepted() -> None:
    spec = build(**{"new-checkout": True, "greeting": "hello", "ratio": 1})
    env = spec.environment("production")  # type: ignore[attr-defined]
    assert spec.flag_values(env) == {"new-checkout": True, "greeting": "hello", "ratio": 1}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"new-checkot": True}, "unknown flag 'new-checkot' (did you mean 'new-checkout'?)"),
        ({"new-checkout": "yes"}, "flag 'new-checkout' is a boolean (its default is False); 'yes' is a string"),
        ({"new-checkout": 1}, "'new-checkout' is a boolean (its default is False); 1 is a integer"),
        ({"greeting": True}, "flag 'greeting' is a string"),
    ],
)
def test_unknown_flags_and_wrong_types_are_definition_errors(values: dict[str, object], message: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        build(**values)
    assert message in str(caught.value)


def test_a_flag_declared_twice_is_a_problem() -> None:
    with (
        pytest.raises(DefinitionError, match="flag name 'x' is declared more than once"),
        Pipeline("shop", flags=[Flag(name="x"), Flag(name="x")]),
    ):
        CommitTest(name="unit", commands=["true"])


def test_validate_names_the_line_of_the_environment_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "pipelinefile.py").write_text(
        textwrap.dedent(
            """
            from pipeline import CommitTest, Environment, Flag, Pipeline

            with Pipeline(
                "shop",
                flags=[Flag(name="new-checkout", default=False)],
                environments=[
                    Environment(name="test", ephemeral=True),
                    Environment(name="production", flags={"new-checkout": "on"}),
                ],
            ):
                CommitTest(name="unit", commands=["true"])
            """
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", "--definition-only"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "COLUMNS": "200"},
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "environments[1] (production).flags['new-checkout']" in run.stderr
    assert "(pipelinefile.py:9)" in run.stderr


def test_flags_round_trip_through_json() -> None:
    from pipeline.spec import PipelineSpec

    spec = build(**{"ratio": 0.25})
    again = PipelineSpec.model_validate_json(spec.model_dump_json())  # type: ignore[attr-defined]
    assert again == spec
    assert again.flag("ratio").default == 0.5


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [("on", False, True), ("false", True, False), ("3", 1, 3), ("0.5", 0.1, 0.5), ("hello", "hi", "hello")],
)
def test_command_line_values_take_the_flags_type(text: str, default: object, expected: object) -> None:
    assert parse_value(text, Flag(name="f", default=default)) == expected  # type: ignore[arg-type]


def test_a_command_line_value_of_another_type_says_what_the_flag_takes() -> None:
    with pytest.raises(ValueError, match="is a boolean: give true/false"):
        parse_value("maybe", Flag(name="f", default=False))


# --- bucketing -----------------------------------------------------------------------------------


def test_buckets_are_stable_and_spread() -> None:
    users = [f"user-{i}" for i in range(4000)]
    assert [bucket("f", u) for u in users] == [bucket("f", u) for u in users]
    inside = sum(1 for u in users if in_rollout("f", u, 10))
    assert 300 < inside < 500  # about 10 %
    assert bucket("f", "user-1") != bucket("g", "user-1") or bucket("f", "user-2") != bucket("g", "user-2")


PINNED_BUCKETS = {
    ("new-feature", "user-0"): 3600,
    ("new-feature", "user-1"): 9152,
    ("new-feature", "ana"): 9500,
    ("greeting", "user-0"): 508,
    ("new-feature", ""): 2890,
}
"""sha256("<flag>:<key>")'s first 8 bytes mod 10 000, computed once: a user's variant must not
change with the process, the machine, the Python version or a release of this package."""


def test_buckets_are_pinned_values() -> None:
    assert {key: bucket(*key) for key in PINNED_BUCKETS} == PINNED_BUCKETS
    # the edge: user-0's bucket is 3600, so it is out at 36 % and in just above
    assert in_rollout("new-feature", "user-0", 36) is False
    assert in_rollout("new-feature", "user-0", 36.01) is True


def test_buckets_are_the_same_in_other_processes_with_other_hash_seeds() -> None:
    """Python's own hash() of a str changes with PYTHONHASHSEED; the buckets must not."""
    import json
    import os

    code = textwrap.dedent(
        """
        import json, sys
        from pipeline.flags.state import bucket
        keys = json.loads(sys.argv[1])
        print(json.dumps([[hash(f + ":" + k), bucket(f, k)] for f, k in keys]))
        """
    )
    keys = [list(key) for key in PINNED_BUCKETS] + [["f", f"user-{i}"] for i in range(200)]
    children = []
    for seed in ("1", "4242"):
        done = subprocess.run(
            [sys.executable, "-c", code, json.dumps(keys)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            check=True,
        )
        children.append(json.loads(done.stdout))
    here = [bucket(f, k) for f, k in keys]
    for child in children:
        assert [b for _, b in child] == here
    # the children really hashed differently: a bucket from hash() would not have matched
    assert [h for h, _ in children[0]] != [h for h, _ in children[1]]


def test_a_user_in_the_rollout_stays_in_as_it_grows() -> None:
    users = [f"user-{i}" for i in range(2000)]
    at = {p: {u for u in users if in_rollout("f", u, p)} for p in (10, 50, 100)}
    assert at[10] <= at[50] <= at[100] == set(users)
    assert not {u for u in users if in_rollout("f", u, 0)}


def test_without_a_targeting_key_a_partial_rollout_is_undecided() -> None:
    assert in_rollout("f", None, 50) is None
    assert in_rollout("f", None, 100) is True
    assert FlagState(True, 50, False).resolve("f", None, False) == (False, "off", True)


# --- the store and the provider over fakeredis -----------------------------------------------------


@pytest.fixture
def redis_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def store_of(server: fakeredis.FakeServer) -> FlagStore:
    client = fakeredis.FakeRedis(server=server)
    return FlagStore(FlagEndpoint(master="fake:0"), master_client=client)


def test_set_records_who_when_from_and_to_in_the_stores_history(redis_server: fakeredis.FakeServer) -> None:
    store = store_of(redis_server)
    assert store.seed({"new-checkout": False, "greeting": "hi"}) == ["new-checkout", "greeting"]
    assert store.seed({"new-checkout": True}) == []  # the store is the truth once seeded
    change = store.set("new-checkout", FlagState(True, 10, False), why="try", by="ana")
    assert change.before is not None
    assert change.before.value is False
    assert store.get("new-checkout") == FlagState(True, 10.0, False, change.at, "ana")
    latest = store.history()[0]
    assert latest["flag"] == "new-checkout"
    assert latest["by"] == "ana"
    assert latest["why"] == "try"
    assert latest["from"]["value"] is False
    assert latest["to"]["percent"] == 10
    assert set(store.all()) == {"new-checkout", "greeting"}


def test_the_alert_switches_every_rollout_in_flight_off(redis_server: fakeredis.FakeServer) -> None:
    store = store_of(redis_server)
    store.seed({"a": False, "b": False, "c": False})
    store.set("a", FlagState(True, 50, False))
    store.set("b", FlagState(True, 10, False))
    store.set("c", FlagState(True, 100, False))
    store.begin_rollout("a")
    store.begin_rollout("b")
    changes = store.raise_alert(by="monitor")
    assert sorted(c.flag for c in changes) == ["a", "b"]
    assert store.get("a").percent == 0
    assert store.get("b").percent == 0
    assert store.get("c").percent == 100  # type: ignore[union-attr]  # not in a rollout: untouched
    assert store.alert() is not None
    assert store.alert()["by"] == "monitor"


def provider_on(server: fakeredis.FakeServer) -> RedisFlagProvider:
    return RedisFlagProvider(["fake:0"], clients=[fakeredis.FakeRedis(server=server)])


def test_the_provider_serves_a_partial_rollout_by_targeting_key(redis_server: fakeredis.FakeServer) -> None:
    store_of(redis_server).set("new-checkout", FlagState(True, 30, False))
    api.set_provider(provider_on(redis_server))
    client = api.get_client()
    users = [f"u{i}" for i in range(1000)]
    first = {u: client.get_boolean_value("new-checkout", False, EvaluationContext(targeting_key=u)) for u in users}
    again = {u: client.get_boolean_value("new-checkout", False, EvaluationContext(targeting_key=u)) for u in users}
    assert first == again  # one user keeps one variant
    assert 230 < sum(first.values()) < 370
    details = client.get_boolean_details("new-checkout", False, EvaluationContext(targeting_key="u1"))
    assert details.reason == Reason.SPLIT
    assert details.variant in ("on", "off")


def test_without_a_store_every_flag_is_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = RedisFlagProvider.from_environment({})
    api.set_provider(provider)
    details = api.get_client().get_boolean_details("new-checkout", True)
    assert details.value is True
    assert details.reason == Reason.ERROR


def test_an_unreachable_store_is_asked_again_only_after_a_pause() -> None:
    provider = RedisFlagProvider(["127.0.0.1:1"], timeout=0.05, retry_seconds=60)
    assert provider.read_state("f")[1] is not None
    assert provider.read_state("f")[1] == "the flag store did not answer a moment ago"


def test_the_provider_reads_a_replica_first_chosen_by_host() -> None:
    env = {"PIPELINE_FLAGS_REPLICAS": "r1:6379,r2:6379", "PIPELINE_FLAGS_MASTER": "m:6379"}
    one = RedisFlagProvider.from_environment(env, me="web-a").addresses
    assert set(one[:2]) == {"r1:6379", "r2:6379"}
    assert one[-1] == "m:6379"


def test_a_value_of_another_type_in_the_store_gives_the_default(redis_server: fakeredis.FakeServer) -> None:
    fakeredis.FakeRedis(server=redis_server).set(FLAG_PREFIX + "n", FlagState("text").to_json())
    details = provider_on(redis_server).resolve_integer_details("n", 7)
    assert details.value == 7
    assert details.error_code is not None
