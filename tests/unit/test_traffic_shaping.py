"""Traffic shaping without Docker or AWS: the strategies as data (what is refused at validate),
the balancer's nginx text for a sticky canary, user groups and a dark launch (written and read
back), the mirror's and the groups' log lines, the per-group judge, the simulated users' client
(against a real HTTP server on 127.0.0.1), and the aws plan: parameters, steps, what the ALB
cannot express. tests/e2e/test_traffic_shaping.py runs the local engine for real, and
tests/integration/test_cloudformation_strategies.py the aws engine against moto.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.engines.aws import plans
from pipeline.engines.deploy_report import VersionStats
from pipeline.engines.docker_stack.access_log import AccessLog
from pipeline.engines.docker_stack.balancer_config import render_config, servers
from pipeline.engines.docker_stack.shaping import Shaping, mirror_set
from pipeline.engines.docker_stack.shaping_logs import ShapingLogs, parse_group_line, parse_mirror_line
from pipeline.engines.docker_stack.windows import Windows
from pipeline.engines.http_check import Hit, Verdict
from pipeline.engines.topology import Topology, load_template, topology
from pipeline.engines.user_load import User, UserLoad
from pipeline.errors import EXIT_BAD_INPUT, BadInputError
from pipeline.stages import UpdateStack
from pipeline.strategy import (
    BlueGreen,
    Canary,
    DarkLaunch,
    Group,
    Health,
    Phased,
    Pilot,
    coerce_strategy,
)

REPO = Path(__file__).resolve().parents[2]
INTERNAL = Group(name="internal", header="X-User-Group", values=("internal", "default"))
BETA = Group(name="beta", cookie="beta", values=("1",))


@pytest.fixture(scope="module")
def topo() -> Topology:
    return topology(load_template(REPO / "templates" / "web.yaml"))


# --- the strategies as data --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "g", "values": ("1",)}, "either a header or a cookie"),
        ({"name": "g", "header": "X-A", "cookie": "a", "values": ("1",)}, "either a header or a cookie"),
        ({"name": "g", "header": "X A", "values": ("1",)}, "1-40 letters, digits or '-'"),
        ({"name": "g", "header": "Cookie", "values": ("1",)}, "use cookie=... to match a cookie"),
        ({"name": "g", "header": "Host", "values": ("1",)}, "cannot name a group"),
        ({"name": "g", "cookie": "pipeline_user", "values": ("1",)}, "the balancer's own"),
        ({"name": "g", "cookie": "a-b", "values": ("1",)}, "letters, digits or '_'"),
        ({"name": "g", "header": "X-A", "values": ()}, "1 to 10 values"),
        ({"name": "g", "header": "X-A", "values": ('a"b',)}, "no wildcards, spaces or quotes"),
        ({"name": "g", "header": "X-A", "values": ("a*",)}, "no wildcards"),
        ({"name": "g", "header": "X-A", "values": ("a b",)}, "no wildcards, spaces"),
        ({"name": "Internal", "header": "X-A", "values": ("1",)}, "lower case"),
    ],
)
def test_a_group_that_cannot_be_matched_exactly_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        Group(**fields)


def test_phased_needs_distinct_groups_and_a_dark_launch_a_user_facing_strategy_after_it() -> None:
    with pytest.raises(ValidationError, match="at least one group"):
        Phased(groups=())
    with pytest.raises(ValidationError, match="must be distinct"):
        Phased(groups=(INTERNAL, INTERNAL))
    with pytest.raises(ValidationError, match="then"):
        DarkLaunch(then=Pilot())
    with pytest.raises(ValidationError, match="upper-case HTTP methods"):
        DarkLaunch(mirror_methods=("get",))
    with pytest.raises(ValidationError, match="greater than 0"):
        DarkLaunch(observe_seconds=0)
    assert DarkLaunch(then=Phased(groups=(INTERNAL,))).then.kind == "phased"
    assert DarkLaunch(then=BlueGreen()).then.kind == "blue-green"
    assert coerce_strategy("dark-launch") == DarkLaunch()
    assert DarkLaunch().then == Canary()


def test_a_stage_takes_the_shaping_strategies_as_plain_data() -> None:
    stage = UpdateStack(
        name="update-stack",
        stack="test-stack",
        image="bake",
        strategy={"kind": "dark-launch", "then": {"kind": "phased", "groups": [INTERNAL.model_dump()]}},
    )
    assert isinstance(stage.strategy, DarkLaunch)
    assert isinstance(stage.strategy.then, Phased)
    assert stage.strategy.then.groups == (INTERNAL,)
    assert UpdateStack(name="u", stack="s", image="b", strategy=Canary(sticky=True)).strategy == Canary(sticky=True)


# --- the balancer's configuration --------------------------------------------------------------------


def block(config: str, opening: str) -> list[str]:
    """The lines of the block that starts with `opening` (e.g. `upstream replicas {`)."""
    body = config.split(opening, 1)[1].split("}", 1)[0]
    return [line.strip() for line in body.strip().splitlines()]


def test_no_shaping_writes_the_configuration_as_before(topo: Topology) -> None:
    plain = render_config("web", topo, ["web-b", "web-a"], {}, log="/var/log/nginx/health.log")
    assert plain == render_config("web", topo, ["web-b", "web-a"], {}, log="/var/log/nginx/health.log", shaping=None)
    assert "proxy_pass http://replicas;" in plain
    for word in ("split_clients", "map ", "mirror", "replicas_new", "Set-Cookie"):
        assert word not in plain


def test_a_sticky_canary_splits_users_by_the_balancers_cookie(topo: Topology) -> None:
    config = render_config(
        "web", topo, ["new-a", "old-a", "old-b"], {}, shaping=Shaping(new=("new-a",), percent=25, salt="3f2a1c")
    )
    assert block(config, "upstream replicas {") == [
        "server old-a:80 max_fails=1 fail_timeout=2s;",
        "server old-b:80 max_fails=1 fail_timeout=2s;",
    ]
    assert block(config, "upstream replicas_new {") == [
        "server new-a:80 max_fails=1 fail_timeout=2s;",
        "server old-a:80 backup;",  # a request the new version refuses still gets an answer
        "server old-b:80 backup;",
    ]
    assert block(config, 'split_clients "${pipeline_user}3f2a1c" $pipeline_split {') == [
        "25% replicas_new;",
        "* replicas;",
    ]
    assert block(config, "map $cookie_pipeline_user $pipeline_user {") == [
        '"" $request_id;',
        "default $cookie_pipeline_user;",
    ]
    assert "add_header Set-Cookie $pipeline_user_cookie always;" in config
    assert '"" "pipeline_user=$request_id; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax";' in config
    assert "proxy_pass http://$pipeline_split;" in config
    assert servers(config) == ["old-a", "old-b", "new-a"]  # every user-facing replica, once


def test_groups_are_named_in_order_and_only_the_phases_go_to_the_new_version(topo: Topology) -> None:
    shaping = Shaping(new=("new-a",), groups=(INTERNAL, BETA), routed=("internal",))
    config = render_config("web", topo, ["new-a", "old-a"], {}, shaping=shaping, log="/var/log/nginx/health.log")
    # The first matching group names the request; a backslash keeps `default` a value, not a keyword.
    assert block(config, "map $http_x_user_group $pipeline_group {") == [
        "default $pipeline_group_2;",
        "\\internal internal;",
        "\\default internal;",
    ]
    assert block(config, "map $cookie_beta $pipeline_group_2 {") == ['default "";', "\\1 beta;"]
    assert block(config, "map $pipeline_group $pipeline_upstream {") == [
        "default replicas;",
        "\\internal replicas_new;",  # beta is named (and counted) but stays on the old version
    ]
    assert "proxy_pass http://$pipeline_upstream;" in config
    assert "access_log /var/log/nginx/groups.log groups;" in config
    assert "access_log /var/log/nginx/groups.log" not in render_config(
        "web", topo, ["new-a", "old-a"], {}, shaping=shaping
    )


def test_a_dark_launch_mirrors_to_a_set_nobody_is_routed_to_and_reads_it_back(topo: Topology) -> None:
    shaping = Shaping(mirror=("dark-b", "dark-a"), mirror_methods=("GET",))
    config = render_config("web", topo, ["old-a", "old-b"], {}, shaping=shaping, log="/var/log/nginx/health.log")
    assert block(config, "upstream dark {") == [
        "server dark-a:80 max_fails=1 fail_timeout=2s;",
        "server dark-b:80 max_fails=1 fail_timeout=2s;",
    ]
    assert servers(config) == ["old-a", "old-b"]  # the users' replicas only
    assert mirror_set(config) == ("dark-b", "dark-a")
    assert mirror_set(render_config("web", topo, ["old-a"], {})) == ()
    location = block(config, "location / {")
    assert "mirror /.pipeline-mirror;" in location
    assert "proxy_pass http://replicas;" in location
    mirrored = block(config, "location = /.pipeline-mirror {")
    assert mirrored[:3] == ["internal;", "log_subrequest on;", "access_log /var/log/nginx/mirror.log mirror;"]
    assert "if ($request_method !~ ^(GET)$) { return 204; }" in config  # writes are not mirrored
    assert "proxy_pass http://dark$request_uri;" in config
    quiet = render_config("web", topo, ["old-a"], {}, shaping=shaping)
    assert "access_log off;" in block(quiet, "location = /.pipeline-mirror {")


def test_the_mirror_and_groups_lines_count_each_try_for_its_version() -> None:
    versions = {"10.0.0.2:80": False, "10.0.0.3:80": True}
    assert parse_mirror_line("1700000000.500|10.0.0.3:80|500|0.004", versions) == [
        Hit(1700000000.5, True, False, 0.004)
    ]
    assert parse_mirror_line("1700000000.500|-|-|-", versions) == []  # not mirrored (a write)
    assert parse_mirror_line("garbage", versions) == []
    assert parse_group_line("1700000001.000|beta|10.0.0.3:80, 10.0.0.2:80|502, 200|0.001, 0.002", versions) == (
        "beta",
        [Hit(1700000001.0, True, False, 0.001), Hit(1700000001.0, False, True, 0.002)],
    )
    assert parse_group_line("1700000001.000||10.0.0.2:80|200|0.001", versions) == (
        "",
        [Hit(1700000001.0, False, True, 0.001)],
    )
    assert parse_group_line("1|2|3", versions) is None


class FakeLb:
    """A balancer container whose log files are strings (exec_run of `: >` and `tail -c +N`)."""

    name = "web-lb"

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def exec_run(self, cmd: list[str], demux: bool = False) -> Any:
        if cmd[0] == "/bin/sh":
            self.files[cmd[-1].split("> ", 1)[1]] = b""
            return 0, b""
        offset, path = int(cmd[2][1:]), cmd[3]
        return 0, (self.files.get(path, b"")[offset - 1 :], b"")


def test_mirrored_answers_join_the_new_versions_hits_and_groups_are_counted_apart() -> None:
    lb = FakeLb()
    log = AccessLog(lb, 80, "web-net", lambda _: None)
    log.versions.update({"10.0.0.2:80": False, "10.0.0.3:80": True})
    shaped = ShapingLogs(log)
    shaped.watch_mirror()
    shaped.watch_groups()
    lb.files["/var/log/nginx/mirror.log"] += b"100.0|10.0.0.3:80|500|0.010\n100.1|10.0.0.3:80|200|0.002\n100.2|10.0"
    lb.files["/var/log/nginx/groups.log"] += b"100.0|internal|10.0.0.3:80|200|0.001\n100.1||10.0.0.2:80|200|0.001\n"
    shaped.read()
    assert [(h.new, h.ok) for h in log.hits] == [(True, False), (True, True)]  # the partial line waits
    lb.files["/var/log/nginx/mirror.log"] += b".0.3:80|200|0.001\n"
    shaped.read()
    assert log.stats(0, new=True).requests == 3
    assert shaped.group_stats("internal", 0, new=True).requests == 1
    assert shaped.group_stats("", 0, new=False).requests == 1
    assert shaped.group_stats("beta", 0, new=True).requests == 0


def test_each_routed_group_is_judged_on_its_own() -> None:
    """The new version's whole numbers pass, but one group's requests fail: a breach naming it."""
    health = Health(min_requests=10, max_error_rate=0.05)
    windows = Windows(Phased(groups=(INTERNAL, BETA)), health, lambda _: None)
    log = AccessLog(FakeLb(), 80, "web-net", lambda _: None)
    windows.shaped = ShapingLogs(log)
    windows.shaped.group_hits = {
        "internal": [Hit(10.0, True, True, 0.001)] * 90,
        "beta": [Hit(10.0, True, False, 0.001)] * 3 + [Hit(10.0, True, True, 0.001)] * 7,
    }
    passing = Verdict("pass", VersionStats(100, 3), VersionStats(100, 0))
    judged = windows._judge_groups(passing, (INTERNAL, BETA), 0.0, VersionStats(100, 0), health)
    assert judged.state == "breach"
    assert "for group beta is above the limit 5.0%" in judged.reason
    assert windows._judge_groups(passing, (INTERNAL,), 0.0, VersionStats(100, 0), health).state == "pass"


# --- simulated users --------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # a balancer in miniature: a cookie on the first visit, echoes what it gets
        cookie = self.headers.get("Cookie") or ""
        body = f"cookie={cookie};group={self.headers.get('X-User-Group') or ''}".encode()
        self.send_response(200)
        if "pipeline_user=" not in cookie:
            self.send_header("Set-Cookie", f"pipeline_user=u{threading.get_ident()}{id(self)}; Path=/; HttpOnly")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_simulated_users_keep_their_own_cookies_and_send_their_own_headers(echo_url: str) -> None:
    users = [User("a", headers={"X-User-Group": "internal"}), User("b", cookies={"beta": "1"}), User("c")]
    with UserLoad(echo_url, users, rate=200) as load:
        while min(len(load.of(u.name)) for u in users) < 3:
            threading.Event().wait(0.01)
    for user in users:
        first, *rest = load.of(user.name)
        assert first.ok
        assert "pipeline_user" not in first.body  # the first visit has no cookie of the balancer's
        assert len({s.body for s in rest}) == 1  # then always the one it was given
        assert "pipeline_user=u" in rest[0].body
    assert "group=internal" in load.of("a")[0].body
    assert "beta=1" in load.of("b")[0].body
    assert load.jars["a"]["pipeline_user"] != load.jars["c"]["pipeline_user"]


# --- the aws plan ---------------------------------------------------------------------------------------


def test_a_sticky_canary_keeps_users_on_one_target_group_below_100_percent() -> None:
    steps = plans.slot_steps(Canary(steps=(10, 50, 100), sticky=True), 2)
    assert [(s.primary_weight, s.canary_weight, dict(s.routing)) for s in steps] == [
        (90, 10, {"CanaryStickySeconds": "86400"}),
        (50, 50, {"CanaryStickySeconds": "86400"}),
        (0, 100, {"CanaryStickySeconds": "0"}),
    ]
    assert steps[0].routes() == {"PrimaryWeight": "90", "CanaryWeight": "10", "CanaryStickySeconds": "86400"}
    assert plans.required_parameters(Canary(sticky=True))[-1] == "CanaryStickySeconds"
    assert "CanaryStickySeconds" not in plans.required_parameters(Canary())


def test_a_phased_rollout_routes_one_more_groups_header_per_phase_then_everyone() -> None:
    internal = Group(name="internal", header="X-User-Group", values=("internal", "staff"))
    beta = Group(name="beta", header="X-Beta", values=("1",))
    steps = plans.slot_steps(Phased(groups=(internal, beta)), 4)
    assert [(s.capacity, s.primary_weight, s.canary_weight, s.groups) for s in steps] == [
        (2, 100, 0, 1),  # half the fleet; the weighted rule sends nobody to the slot
        (2, 100, 0, 2),
        (4, 0, 100, 0),
    ]
    assert dict(steps[0].routing) == {
        "Group1Header": "X-User-Group",
        "Group1Values": "internal,staff",
        "Group2Header": "",
        "Group2Values": "",
    }
    assert plans.required_parameters(Phased(groups=(internal, beta)))[-4:] == (
        "Group1Header",
        "Group1Values",
        "Group2Header",
        "Group2Values",
    )
    # Interrupted in phase 2: it goes on there, never narrower.
    now = {**plans.IDLE_SLOT, "CanaryImageId": "ami-1", "CanaryCapacity": "2", **dict(steps[1].routing)}
    assert plans.resume_index(steps, now) == 1
    assert plans.slot_active(now)
    assert plans.traffic_back(now) == {
        "PrimaryWeight": "100",
        "CanaryWeight": "0",
        "Group1Header": "",
        "Group1Values": "",
        "Group2Header": "",
        "Group2Values": "",
    }


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        (DarkLaunch(), "cannot carry out dark-launch: an Application Load Balancer cannot mirror requests"),
        (DarkLaunch(then=Canary(sticky=True)), "cannot mirror"),
        (Phased(groups=(BETA,)), "group beta matches the cookie beta: an ALB listener rule"),
        (
            Phased(groups=(Group(name="many", header="X-A", values=("1", "2", "3", "4")),)),
            "group many has 4 values: an ALB listener rule condition compares at most 3",
        ),
        (
            Phased(groups=tuple(Group(name=f"g{i}", header="X-A", values=(str(i),)) for i in range(4))),
            "it lacks Group4Header, Group4Values",
        ),
    ],
)
def test_what_an_alb_cannot_express_is_refused_before_any_change(strategy: Any, message: str) -> None:
    from tests.unit.test_aws_strategies import _engine

    with pytest.raises(BadInputError) as caught:
        _engine(REPO / "templates" / "web.yaml").check_strategy(strategy, Health())
    assert message in caught.value.message
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert caught.value.hint


def test_the_reference_template_takes_a_sticky_canary_and_three_header_groups() -> None:
    from tests.unit.test_aws_strategies import WITHOUT_SLOT, _engine

    engine = _engine(REPO / "templates" / "web.yaml")
    engine.check_strategy(Canary(sticky=True), Health())
    engine.check_strategy(
        Phased(groups=tuple(Group(name=f"g{i}", header="X-A", values=(str(i),)) for i in range(3))), Health()
    )
    with pytest.raises(BadInputError, match=r"it lacks CanaryImageId.*CanaryStickySeconds"):
        _engine(WITHOUT_SLOT).check_strategy(Canary(sticky=True), Health())


def test_a_test_stack_never_copies_a_rollouts_stickiness_or_group_rules_from_production() -> None:
    from pipeline.engines.stack import DEPLOY_OWNED_PATTERN, BaseStackEngine, StackState

    parameters = {
        "ImageId": "ami-1",
        "DesiredCapacity": "3",
        "CanaryStickySeconds": "86400",
        "Group1Header": "X-User-Group",
        "Group1Values": "internal",
        "Group12Header": "X-A",
    }
    state = StackState(name="web-production", exists=True, parameters=parameters)
    assert BaseStackEngine().carried_parameters(state, "ImageId") == {"DesiredCapacity": "3"}
    assert all(DEPLOY_OWNED_PATTERN.match(name) for name in plans.shaping_idle([*parameters, "Group2Header"]))
