"""HTTP verification through a balancer, against a small server on 127.0.0.1 whose answers each test
scripts: the wait for a first good answer, the consecutive requests, and what a failure says."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.engines.http_check import LoadClient, percentile, probe, verify
from pipeline.model import Verify

Reply = tuple[int, str]


class Script:
    """Answers by request number: `answer(n, path)` gives (status, body)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.answer: Callable[[int, str], Reply] = lambda n, path: (200, "Hello World 1.0.0\n")
        self.delay = 0.0


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                script.paths.append(self.path)
                number = len(script.paths)
            if script.delay:
                time.sleep(script.delay)
            status, body = script.answer(number, self.path)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that gave up (the timeout test) is not an error here

    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", script
    finally:
        httpd.shutdown()
        httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_all_requests_pass(server: tuple[str, Script]) -> None:
    url, script = server
    report = verify(url, Verify(path="/health", expect_text="Hello World 1.0.0", requests=5))
    assert report.ok
    assert (report.requests, report.failures) == (5, 0)
    assert script.paths == ["/health"] * 5
    assert "5/5 requests" in report.detail
    assert report.real
    assert report.real[0].startswith(f"HTTP GET {url}health x5")
    assert report.emulated == ()


def test_the_wrong_text_fails_and_shows_what_came_instead(server: tuple[str, Script]) -> None:
    url, script = server
    script.answer = lambda n, path: (200, "Hello World 0.9.0")
    report = verify(url, Verify(expect_text="Hello World 1.0.0", requests=3, wait_seconds=0.3), interval=0.05)
    assert not report.ok
    assert "does not contain 'Hello World 1.0.0'" in report.detail
    assert "Hello World 0.9.0" in report.detail
    assert "within 0.3 s" in report.detail


def test_a_wrong_status_fails(server: tuple[str, Script]) -> None:
    url, script = server
    script.answer = lambda n, path: (503, "busy")
    report = verify(url, Verify(requests=2, wait_seconds=0.2), interval=0.05)
    assert not report.ok
    assert "status 503 (expected 200)" in report.detail
    assert report.failures == report.requests >= 1


def test_an_expected_error_status_passes(server: tuple[str, Script]) -> None:
    url, script = server
    script.answer = lambda n, path: (404, "not here")
    assert verify(url, Verify(path="/missing", expect_status=404, requests=2)).ok


def test_it_waits_for_the_first_good_answer(server: tuple[str, Script]) -> None:
    url, script = server
    script.answer = lambda n, path: (502, "starting") if n <= 3 else (200, "Hello World 1.0.0")
    events: list[str] = []
    report = verify(url, Verify(requests=4, wait_seconds=30), interval=0.01, on_event=events.append)
    assert report.ok
    assert (report.requests, report.failures) == (4, 0)
    assert len(script.paths) == 3 + 4  # three refusals while waiting, then the four that count
    assert any("waiting for" in e for e in events)
    assert any("answers after 4 tries" in e for e in events)


def test_a_failure_after_the_first_good_answer_counts(server: tuple[str, Script]) -> None:
    url, script = server
    script.answer = lambda n, path: (500, "oops") if n == 3 else (200, "fine")
    report = verify(url, Verify(requests=5))
    assert not report.ok
    assert (report.requests, report.failures) == (5, 1)
    assert "request 3 of 5: status 500" in report.detail


def test_it_gives_up_when_the_wait_runs_out() -> None:
    """With a fake clock: the number of tries follows from wait_seconds and the interval."""
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    url = f"http://127.0.0.1:{_closed_port()}/"
    report = verify(url, Verify(wait_seconds=1.0), interval=0.25, clock=lambda: now[0], sleep=sleep)
    assert not report.ok
    assert report.requests == 4
    assert "connection refused" in report.detail
    assert "within 1 s (4 tries)" in report.detail


def test_a_slow_answer_is_a_timeout(server: tuple[str, Script]) -> None:
    url, script = server
    script.delay = 0.5
    answer = probe(url, Verify(), timeout=0.1)
    assert not answer.ok
    assert answer.problem == "no answer within 0.1 s"


def test_cancel_stops_the_wait() -> None:
    cancel = threading.Event()
    cancel.set()
    report = verify(f"http://127.0.0.1:{_closed_port()}/", Verify(wait_seconds=60), cancel=cancel)
    assert not report.ok
    assert "interrupted" in report.detail


def test_the_load_client_paces_and_summarises(server: tuple[str, Script]) -> None:
    url, script = server
    script.answer = lambda n, path: (500, "bad") if n == 5 else (200, "v1" if n % 2 else "v2")
    client = LoadClient(url, rate=200, max_requests=20)
    with client:
        deadline = time.monotonic() + 10
        while len(client.samples) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
    stats = client.stats()
    assert stats.requests == 20
    assert stats.failures == 1
    assert stats.first_failure == "status 500"
    assert stats.bodies == {"v1": 9, "v2": 10, "<500>": 1}
    assert stats.rate > 0
    assert 0 < stats.p50 <= stats.p99
    window = client.stats(client.samples[10].started, client.samples[14].started)
    assert window.requests == 5


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([3.0], 0.99) == 3
    assert percentile([], 0.5) == 0


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_steady_wrong_answer_fails_without_waiting_out_the_wait(server: tuple[str, Script]) -> None:
    url, script = server
    script.answer = lambda n, path: (200, "Hello World 0.9.0")
    fake = FakeTime()
    report = verify(
        url,
        Verify(expect_text="Hello World 1.0.0", wait_seconds=60),
        interval=0.25,
        settle=1.0,
        clock=fake.clock,
        sleep=fake.sleep,
    )
    assert not report.ok
    assert "gave the same wrong answer for 1 s" in report.detail
    assert fake.now < 2
    assert len(script.paths) == 5


def test_a_service_that_is_not_ready_gets_the_whole_wait(server: tuple[str, Script]) -> None:
    url, script = server
    script.answer = lambda n, path: (503, "no healthy upstream")
    fake = FakeTime()
    report = verify(url, Verify(wait_seconds=3), interval=0.5, settle=1.0, clock=fake.clock, sleep=fake.sleep)
    assert not report.ok
    assert "no good answer" in report.detail
    assert "within 3 s" in report.detail
    assert fake.now >= 2.5


def test_a_changing_wrong_answer_keeps_the_wait_going(server: tuple[str, Script]) -> None:
    url, script = server
    script.answer = lambda n, path: (200, f"warming up {n}") if n < 10 else (200, "Hello World 1.0.0")
    fake = FakeTime()
    report = verify(
        url,
        Verify(expect_text="Hello World 1.0.0", requests=2, wait_seconds=60),
        interval=0.25,
        settle=1.0,
        clock=fake.clock,
        sleep=fake.sleep,
    )
    assert report.ok
    assert len(script.paths) == 11
