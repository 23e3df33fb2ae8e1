"""The Docker stack's balancer without Docker: its nginx.conf as written and read back
(pipeline/engines/docker_stack/balancer_config.py), canary weights, and what the engine reads from
the container (worker processes, the published port), plus a graceful reload against a fake nginx
container. tests/integration/test_docker_stack.py runs the real one."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.docker_stack.balancer import CONFIG_PATH, Balancer, lb_port, workers
from pipeline.engines.docker_stack.balancer_config import (
    canary_weights,
    config_parameters,
    render_config,
    servers,
    warm_set,
)
from pipeline.engines.docker_stack.labels import StackId
from pipeline.engines.topology import Topology, load_template, topology
from pipeline.errors import StackOperationError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def topo() -> Topology:
    return topology(load_template(REPO / "templates" / "web.yaml"))


def upstream(config: str) -> list[str]:
    """The lines of the `upstream replicas` block."""
    block = config.split("upstream replicas {", 1)[1].split("}", 1)[0]
    return [line.strip() for line in block.strip().splitlines()]


# --- the configuration as written ------------------------------------------------------------------


def test_the_upstream_lists_every_server_once_in_name_order_on_the_target_port(topo: Topology) -> None:
    config = render_config("web", replace(topo, target_port=8000), ["web-b", "web-a", "web-c"], {})
    assert upstream(config) == [
        "server web-a:8000 max_fails=1 fail_timeout=2s;",
        "server web-b:8000 max_fails=1 fail_timeout=2s;",
        "server web-c:8000 max_fails=1 fail_timeout=2s;",
    ]


def test_listener_and_drain_come_from_the_template(topo: Topology) -> None:
    config = render_config("web", replace(topo, listener_port=8080, deregistration_delay=2.7), ["web-a"], {})
    assert "listen 8080;" in config
    assert "worker_shutdown_timeout 2s;" in config
    assert "worker_shutdown_timeout 1s;" in render_config(
        "web", replace(topo, deregistration_delay=0.0), ["web-a"], {}
    ), "never 0 s: nginx would cut every request in flight"


def test_canary_weights_are_written_per_server(topo: Topology) -> None:
    weights = canary_weights(["web-new"], ["web-a", "web-b"], 10)
    config = render_config("web", topo, ["web-new", "web-a", "web-b"], {}, weights=weights)
    assert upstream(config) == [
        "server web-a:80 weight=9 max_fails=1 fail_timeout=2s;",
        "server web-b:80 weight=9 max_fails=1 fail_timeout=2s;",
        "server web-new:80 weight=2 max_fails=1 fail_timeout=2s;",
    ]
    unweighted = render_config("web", topo, ["web-a"], {}, weights={"web-gone": 3})
    assert "weight=" not in unweighted


def test_the_parameters_line_records_the_template_parameters_and_reads_back(topo: Topology) -> None:
    parameters = {"DesiredCapacity": "2", "MaxSize": "3", "Greeting": 'say "hi" | bye'}
    config = render_config("web", topo, ["web-a"], parameters)
    line = next(line for line in config.splitlines() if line.startswith("# parameters: "))
    assert line == "# parameters: " + json.dumps(parameters, sort_keys=True)
    assert config_parameters(config) == parameters
    assert config_parameters(render_config("web", topo, ["web-a"], {})) == {}


def test_a_configuration_without_a_readable_parameters_line_has_none() -> None:
    assert config_parameters("worker_processes 1;\n") == {}
    assert config_parameters("# parameters: {not json\n") == {}
    assert config_parameters('# parameters: ["a list"]\n') == {}


def test_the_request_log_is_on_only_while_a_deployment_watches(topo: Topology) -> None:
    plain = render_config("web", topo, ["web-a"], {})
    assert "access_log off;" in plain
    assert "log_format" not in plain
    watched = render_config("web", topo, ["web-a"], {}, log="/var/log/nginx/health.log")
    assert "access_log /var/log/nginx/health.log health;" in watched
    assert (
        "log_format health '$msec|$status|$request_time|$upstream_addr|$upstream_status|$upstream_response_time"
        "|$upstream_http_x_flag_variant';" in watched
    )
    assert "access_log off;" not in watched


# --- read back -------------------------------------------------------------------------------------


def test_servers_are_read_back_from_the_upstream_only(topo: Topology) -> None:
    config = render_config("web", topo, ["web-b", "web-a"], {"DesiredCapacity": "2"})
    assert servers(config) == ["web-a", "web-b"]
    assert "server {" in config, "the server block must not count as a replica"
    assert "server_tokens off;" in config
    assert servers("") == []


def test_the_warm_set_is_written_with_its_deadline_and_read_back(topo: Topology) -> None:
    config = render_config("web", topo, ["web-new"], {}, warm=(("web-c", "web-d"), 1795482379.5))
    assert "# warm: web-c,web-d until 1795482379.500" in config
    assert warm_set(config) == (("web-c", "web-d"), 1795482379.5)
    assert servers(config) == ["web-new"], "a warm set is not routed to"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("", ((), 0.0)),
        ("worker_processes 1;\n", ((), 0.0)),
        ("# warm: web-c until tomorrow\n", ((), 0.0)),
        ("# warm: web-c\n", ((), 0.0)),
        ("# warm:  until 12.5\n", ((), 12.5)),
        ("# warm: web-c,,web-d until 12.5\n", (("web-c", "web-d"), 12.5)),
    ],
)
def test_a_missing_or_damaged_warm_line_means_no_warm_set(config: str, expected: tuple[Any, float]) -> None:
    assert warm_set(config) == expected


def test_an_empty_warm_set_writes_no_line(topo: Topology) -> None:
    assert "# warm:" not in render_config("web", topo, ["web-a"], {}, warm=((), 1795482379.5))
    assert "# warm:" not in render_config("web", topo, ["web-a"], {})


# --- canary weights --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new", "old", "percent"),
    [(1, 2, 10), (1, 2, 50), (1, 4, 10), (2, 2, 25), (1, 1, 1), (3, 2, 90), (1, 3, 33)],
)
def test_canary_weights_give_the_new_replicas_exactly_the_share(new: int, old: int, percent: int) -> None:
    new_names = [f"n{i}" for i in range(new)]
    old_names = [f"o{i}" for i in range(old)]
    weights = canary_weights(new_names, old_names, percent)
    total = sum(weights.values())
    assert sum(weights[n] for n in new_names) / total == pytest.approx(percent / 100)
    assert all(isinstance(w, int) and w >= 1 for w in weights.values())
    assert len({weights[n] for n in new_names}) == 1
    assert len({weights[o] for o in old_names}) == 1


def test_canary_weights_are_the_smallest_whole_numbers() -> None:
    assert canary_weights(["n"], ["a", "b"], 10) == {"n": 2, "a": 9, "b": 9}
    assert canary_weights(["n"], ["a", "b"], 50) == {"n": 2, "a": 1, "b": 1}
    assert canary_weights(["n"], ["a"], 100) == {}
    assert canary_weights([], ["a"], 10) == {}
    assert canary_weights(["n"], [], 10) == {}


# --- what the engine reads from the container ------------------------------------------------------


def test_the_worker_processes_are_found_in_top() -> None:
    top = {
        "Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
        "Processes": [
            ["root", "10", "1", "0", "09:00", "?", "00:00:00", "nginx: master process nginx"],
            ["www", "11", "10", "0", "09:00", "?", "00:00:00", "nginx: worker process"],
            ["www", "12", "10", "0", "09:00", "?", "00:00:00", "nginx: worker process is shutting down"],
        ],
    }
    assert workers(top) == {"11": "nginx: worker process", "12": "nginx: worker process is shutting down"}
    assert workers({"Titles": ["PID", "COMMAND"], "Processes": [["7", "nginx: worker process"]]}) == {
        "7": "nginx: worker process"
    }, "without a CMD column the last one is the command"
    assert workers({"Titles": ["USER"], "Processes": [["root"]]}) == {}
    assert workers({}) == {}


class Container:
    def __init__(self, labels: dict[str, str], attrs: dict[str, Any]) -> None:
        self.labels = labels
        self.attrs = attrs


def test_the_published_port_is_read_from_the_port_bindings_or_the_network_settings() -> None:
    listen = {"io.pipeline.listen": "8080"}
    bound = Container(
        listen, {"HostConfig": {"PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "41000"}]}}}
    )
    assert lb_port(bound) == 41000
    chosen = Container(
        listen,
        {
            "HostConfig": {"PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}},
            "NetworkSettings": {"Ports": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "41001"}]}},
        },
    )
    assert lb_port(chosen) == 41001, "a random port Docker chose is only in the network settings"
    assert lb_port(Container({}, {"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "41002"}]}}})) == 41002
    assert lb_port(Container(listen, {"HostConfig": {}, "NetworkSettings": {"Ports": None}})) is None


# --- a graceful reload, against a fake nginx container ----------------------------------------------


class FakeNginx:
    """What Balancer uses of the container: the config file (put/get archive), `top`, SIGHUP and
    the log. On SIGHUP it replaces its worker by a new one, or, with `rejects`, keeps the old one
    and logs an [emerg] line as nginx does for a configuration it cannot load."""

    name = "web-lb"

    def __init__(self, *, rejects: bool = False) -> None:
        self.files: dict[str, str] = {}
        self.worker = 100
        self.rejects = rejects
        self.reloads = 0
        self.log = b""

    def put_archive(self, folder: str, data: bytes) -> None:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member)
                assert handle is not None
                self.files[f"{folder}/{member.name}"] = handle.read().decode()

    def get_archive(self, path: str) -> tuple[list[bytes], dict[str, Any]]:
        buffer = io.BytesIO()
        data = self.files[path].encode()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(path.rsplit("/", 1)[1])
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return [buffer.getvalue()], {}

    def top(self) -> dict[str, Any]:
        return {"Titles": ["PID", "CMD"], "Processes": [[str(self.worker), "nginx: worker process"]]}

    def kill(self, signal: str) -> None:
        assert signal == "SIGHUP"
        self.reloads += 1
        if self.rejects:
            self.log += b'nginx: [emerg] host not found in upstream "web-gone:80"\n'
        else:
            self.worker += 1

    def logs(self, since: int | None = None, tail: int | None = None) -> bytes:
        return self.log


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


def balancer(topo: Topology, events: list[str]) -> Balancer:
    return Balancer(None, StackId("demo", "web"), replace(topo, deregistration_delay=0.0), {"A": "1"}, events.append)


def test_routing_writes_the_configuration_reloads_and_names_the_servers(topo: Topology) -> None:
    lb = FakeNginx()
    lb.files[CONFIG_PATH] = ""
    events: list[str] = []
    hand = balancer(topo, events)
    hand.route(lb, [Named("web-b"), Named("web-a")], weights={"web-a": 3, "web-gone": 5})
    assert lb.reloads == 1
    assert servers(lb.files[CONFIG_PATH]) == ["web-a", "web-b"]
    assert "server web-a:80 weight=3" in lb.files[CONFIG_PATH]
    assert hand.weights == {"web-a": 3}, "weights of servers not routed to are dropped"
    assert [r.name for r in hand.serving] == ["web-b", "web-a"]
    assert events == ["web-lb routes to web-a, web-b"]
    hand.route(lb, [Named("web-b"), Named("web-a")], weights={"web-a": 3})
    assert lb.reloads == 1, "the same configuration again is not reloaded"
    hand.route(lb, [Named("web-b"), Named("web-a")], weights={"web-a": 3}, force=True)
    assert lb.reloads == 2


def test_a_configuration_nginx_rejects_is_named_and_the_old_file_is_put_back(topo: Topology) -> None:
    lb = FakeNginx(rejects=True)
    before = render_config("web", topo, ["web-a"], {"A": "1"})
    lb.files[CONFIG_PATH] = before
    hand = balancer(topo, [])
    with pytest.raises(
        StackOperationError, match=r'did not apply its new configuration: .*host not found in upstream "web-gone:80"'
    ):
        hand.route(lb, [Named("web-gone")])
    assert lb.files[CONFIG_PATH] == before


def stable_upstream(config: str) -> list[str]:
    """The server names of the alert route's `upstream stable` block."""
    block = config.split("upstream stable {", 1)[1].split("}", 1)[0]
    return [line.split()[1].rsplit(":", 1)[0] for line in block.strip().splitlines()]


def test_the_alert_routes_to_the_stable_replicas_still_here(topo: Topology) -> None:
    """nginx resolves every upstream name when it loads the file, so a stable replica that a rolling
    update already retired (stopped: gone from the network's DNS) must leave the stable upstream, or
    the next reload fails with "host not found in upstream" and the deploy with it (seen in the
    feature-flags e2e test, whose production has an alert route)."""

    def config(serving: list[str], stable: list[str], warm: Any = None) -> str:
        return render_config("web", topo, serving, {}, alert=True, stable=stable, warm=warm)

    assert stable_upstream(config(["new-a", "old-a", "old-b"], ["old-a", "old-b"])) == ["old-a", "old-b"]
    # the rolling update's first batch retired old-a: the alert keeps old-b only
    assert stable_upstream(config(["new-a", "new-b", "old-b"], ["old-a", "old-b"])) == ["old-b"]
    # blue-green: the old set no longer serves but is kept warm for the switch back
    assert stable_upstream(config(["new-a", "new-b"], ["old-a", "old-b"], warm=(["old-a", "old-b"], 9e9))) == [
        "old-a",
        "old-b",
    ]
    # every old replica retired, or no deployment running: every replica that serves
    assert stable_upstream(config(["new-a", "new-b"], ["old-a", "old-b"])) == ["new-a", "new-b"]
    assert stable_upstream(config(["new-a", "new-b"], [])) == ["new-a", "new-b"]
