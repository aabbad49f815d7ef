"""Analytics from Python: the metrics server the store starts, read the way
Prometheus and ``python -m flux monitor`` read it.

The server is one per process and stays while its stores do (for the whole
session here), so every test uses the same analytics port and an endpoint of
its own.
"""

from __future__ import annotations

import gc
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import free_port
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from flux import RateLimiter, _ffi, rate_limit
from flux.config import FluxConfig
from flux.limiter import store_of


@pytest.fixture(scope="session")
def analytics_port():
    """The port of this process's metrics server, started here for the
    session by a limiter of its own.

    On a port found free, which another process may take before the library
    binds it (the library then warns and serves nothing): the server must
    answer there with this limiter's endpoint, else another port is tried.
    A metrics server this process started earlier, on another port, would
    fail this fixture rather than go unnoticed."""
    for attempt in range(20):
        port = free_port()
        cfg = FluxConfig(key_prefix=f"analytics-port-{attempt}:", analytics_enabled=True, analytics_port=port)
        keeper = RateLimiter(1, 60, config=cfg, scope="analytics-port")
        keeper.hit("k")
        try:
            serving = "analytics-port" in json.loads(get(port, "/metrics.json")[2])["endpoints"]
        except (OSError, ValueError, KeyError):
            serving = False
        if serving:
            yield port
            keeper.close()
            return
        keeper.close()
    pytest.fail("the metrics server did not start on any of 20 free ports")


@pytest.fixture
def memory_analytics(prefix, analytics_port) -> FluxConfig:
    return FluxConfig(
        key_prefix=prefix,
        jitter_enabled=False,
        analytics_enabled=True,
        analytics_port=analytics_port,
    )


@pytest.fixture
def redis_analytics(redis_server, prefix, analytics_port) -> FluxConfig:
    return FluxConfig(
        redis_url=redis_server.url,
        key_prefix=prefix,
        jitter_enabled=False,
        timeout_ms=1000,
        analytics_enabled=True,
        analytics_port=analytics_port,
        analytics_stream=f"{prefix}events",
    )


def get(port: int, path: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def login_app(cfg: FluxConfig) -> tuple[Flask, str]:
    """A Flask app whose /login admits 3 calls a minute per client; and its endpoint.

    The server shows one process's endpoints, added up by name, so each
    test's view gets a name of its own (from its key prefix)."""
    app = Flask(__name__)

    def login():
        return "ok"

    login.__qualname__ = f"login_{cfg.key_prefix.rstrip(':').replace('-', '_')}"
    view = rate_limit(requests=3, period=60, config=cfg)(login)
    app.add_url_rule("/login", view_func=view)
    return app, view.rate_limiter.scope


def five_logins(app: Flask) -> list[int]:
    client = app.test_client()
    return [
        client.get("/login", environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code
        for _ in range(5)
    ]


def requests_by_outcome(text: str, endpoint: str) -> dict[str, float]:
    counts = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "flux_requests_total" and sample.labels["endpoint"] == endpoint:
                counts[sample.labels["decision"]] = sample.value
    return counts


def outcomes(**counts: int) -> dict[str, int]:
    """Every decision label's count: those given, 0 for the others."""
    return {"allowed": 0, "blocked": 0, "fail_open": 0, "local_cache": 0, "shadow": 0, **counts}


def histogram_count(text: str, endpoint: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == "flux_decision_seconds":
            assert family.type == "histogram"
            for sample in family.samples:
                if sample.name == "flux_decision_seconds_count" and sample.labels["endpoint"] == endpoint:
                    return sample.value
    raise AssertionError(f"no flux_decision_seconds_count for {endpoint}")


def test_metrics_count_a_decorated_views_decisions(memory_analytics, analytics_port):
    app, endpoint = login_app(memory_analytics)
    assert five_logins(app) == [200, 200, 200, 429, 429]

    status, content_type, text = get(analytics_port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert requests_by_outcome(text, endpoint) == outcomes(allowed=3, blocked=2)
    assert histogram_count(text, endpoint) == 5
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"flux_requests", "flux_decision_seconds", "flux_events_dropped"} <= families

    status, content_type, body = get(analytics_port, "/metrics.json")
    assert (status, content_type) == (200, "application/json")
    counts = json.loads(body)["endpoints"][endpoint]
    assert (counts["allowed"], counts["blocked"], counts["total"]) == (3, 2, 5)
    assert counts["block_rate"] == pytest.approx(0.4)


def test_the_store_reports_its_own_counters_through_the_ffi(memory_analytics):
    limiter = RateLimiter(2, 60, config=memory_analytics, scope="ffi-metrics")
    for _ in range(3):
        limiter.hit("k")
    handle = store_of(limiter).handle
    assert requests_by_outcome(handle.metrics(), "ffi-metrics") == {
        "allowed": 2,
        "blocked": 1,
        "fail_open": 0,
        "local_cache": 0,
        "shadow": 0,
    }
    doc = json.loads(handle.metrics(_ffi.METRICS_JSON))
    assert doc["endpoints"]["ffi-metrics"]["total"] == 3
    assert doc["redis_totals"] == []


def test_with_redis_totals_and_events_reach_redis(redis_analytics, redis_server, analytics_port):
    app, endpoint = login_app(redis_analytics)
    assert five_logins(app) == [200, 200, 200, 429, 429]
    # The flusher sends every 250 ms.
    deadline = time.monotonic() + 5
    while True:
        doc = json.loads(get(analytics_port, "/metrics.json")[2])
        totals = [t for t in doc["redis_totals"] if t["stream"] == redis_analytics.analytics_stream]
        assert len(totals) == 1
        flushed = totals[0]["endpoints"].get(endpoint, {})
        if flushed.get("total") == 5 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    # The second refusal is answered from the local deny cache, without Redis.
    counts = (flushed["allowed"], flushed["blocked"], flushed["local_cache"], flushed["fail_open"])
    assert counts == (3, 1, 1, 0)
    assert totals[0]["error"] is None
    assert doc["endpoints"][endpoint]["total"] == 5
    events = stream_events(redis_server, redis_analytics.analytics_stream)
    # The caller's one key: its identity only as a digest.
    stream = redis_analytics.analytics_stream
    (key,) = [k for k in redis_server.keys(f"{redis_analytics.key_prefix}*") if k != stream]
    assert "10.0.0.1" not in key
    now_ms = time.time() * 1000
    assert all(now_ms - 60_000 < event["ts"] <= now_ms + 1000 for event in events), events
    fields = {"key": key, "ep": endpoint, "p": "gcra", "mr": 3, "mp": 60, "mb": 3}
    assert events == [
        {"ts": event["ts"], **fields, "d": allowed, "u": used}
        for event, allowed, used in zip(events, [1, 1, 1, 0, 0], [1, 2, 3, 3, 3], strict=True)
    ]


def test_failing_open_is_counted(dead_redis_url, prefix, analytics_port):
    cfg = FluxConfig(
        redis_url=dead_redis_url,
        key_prefix=prefix,
        timeout_ms=100,
        analytics_enabled=True,
        analytics_port=analytics_port,
    )
    limiter = RateLimiter(5, 60, config=cfg, scope=f"{prefix}down")
    assert limiter.hit("k").source == "fail_open"
    text = get(analytics_port, "/metrics")[2]
    assert requests_by_outcome(text, f"{prefix}down") == outcomes(fail_open=1)


def monitor(*args: str, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flux", "monitor", *args],
        cwd=cwd,
        env={**os.environ, "FLUX_CONFIG": "", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_port_in_use_is_a_warning_in_the_flux_logger(tmp_path):
    # Said by the library, through its log callback, to the `flux` logger;
    # nothing on stderr but what logging writes there.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        script = f"""
import logging, sys
logging.basicConfig(stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
from flux import RateLimiter
from flux.config import FluxConfig
cfg = FluxConfig(key_prefix="p:", analytics_enabled=True, analytics_port={port})
print(RateLimiter(1, 60, config=cfg).hit("k").allowed)
"""
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
    assert (done.returncode, done.stdout) == (0, "True\n"), done.stderr
    assert done.stderr.startswith(
        f"flux WARNING analytics: cannot serve /metrics on 127.0.0.1:{port} ("
    ), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_monitor_once_shows_each_endpoint_and_the_totals(memory_analytics, analytics_port, tmp_path):
    app, endpoint = login_app(memory_analytics)
    five_logins(app)
    done = monitor("--once", "--port", str(analytics_port), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\x1b[" not in out, "no screen control in --once"
    row = next(line for line in out.splitlines() if line.startswith(endpoint[:40]))
    # endpoint, requests, allowed, blocked, fail-open, block rate, bar
    assert row.split()[1:6] == ["5", "3", "2", "0", "40.0%"]
    assert "TOTAL" in out and "This process" in out


def test_monitor_reads_host_and_port_from_the_configuration(memory_analytics, analytics_port, tmp_path):
    app, endpoint = login_app(memory_analytics)
    five_logins(app)
    (tmp_path / "flux.toml").write_text(f"[analytics]\nenabled = true\nport = {analytics_port}\n")
    done = monitor("--once", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"127.0.0.1:{analytics_port}/metrics.json" in done.stdout
    assert endpoint[:40] in done.stdout


def test_monitor_says_what_to_do_when_nothing_listens(tmp_path, dead_redis_url):
    # A port held bound and never listening (the fixture's): nothing answers there.
    port = int(dead_redis_url.rsplit(":", 1)[1].split("/")[0])
    done = monitor("--once", "--port", str(port), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert f"nothing answered at http://127.0.0.1:{port}/metrics.json" in done.stderr
    assert "[analytics]" in done.stderr and "enabled = true" in done.stderr
    # Without --once too: no screen to draw, the same message.
    live = monitor("--port", str(port), cwd=tmp_path)
    assert (live.returncode, live.stderr) == (1, done.stderr)


def test_python_m_flux_lists_monitor(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "flux"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert re.search(r"python -m flux monitor \[-h\] \[--host HOST\] \[--port PORT\] \[--once\]", done.stdout)


# --- endpoints ---------------------------------------------------------------


EVENT_FIELDS = ("ts", "key", "ep", "d", "p", "u", "mr", "mp", "mb")


def parse_resp(reply: bytes, at: int = 0):
    """One RESP value of ``reply`` from ``at`` (arrays, bulk strings,
    integers): the value and where the next one starts."""
    end = reply.index(b"\r\n", at)
    kind, head = reply[at : at + 1], reply[at + 1 : end]
    if kind == b"*":
        items, at = [], end + 2
        for _ in range(int(head)):
            item, at = parse_resp(reply, at)
            items.append(item)
        return items, at
    if kind == b"$":
        size = int(head)
        return reply[end + 2 : end + 2 + size].decode(), end + 4 + size
    assert kind == b":", reply[at : at + 40]
    return int(head), end + 2


def stream_events(redis_server, stream: str) -> list[dict]:
    """Every event in ``stream``, oldest first, by field name, read as a
    consumer of format 1 would (README, "Analytics"): each entry's fields
    are ``v`` (1), ``n`` and ``events``, a JSON array of ``n`` events of
    nine values each."""
    entries, _ = parse_resp(redis_server.command("XRANGE", stream, "-", "+"))
    events = []
    for _id, flat in entries:
        entry = dict(zip(flat[::2], flat[1::2], strict=True))
        assert sorted(entry) == ["events", "n", "v"] and entry["v"] == "1", entry
        rows = json.loads(entry["events"])
        assert len(rows) == int(entry["n"]), entry
        for row in rows:
            assert len(row) == len(EVENT_FIELDS), row
            events.append(dict(zip(EVENT_FIELDS, row, strict=True)))
    return events


def stream_endpoints(redis_server, stream: str) -> list[str]:
    """The ``ep`` field of every event in ``stream``, oldest first."""
    return [event["ep"] for event in stream_events(redis_server, stream)]


def test_decisions_are_labelled_by_their_endpoint_everywhere(
    redis_analytics, redis_server, analytics_port, tmp_path
):
    """A new user's first try: ``hit(k, endpoint="search")`` five times shows
    ``search`` with 5 in /metrics, /metrics.json, the stream and the monitor."""
    limiter = RateLimiter(3, 60, config=redis_analytics, scope=f"{redis_analytics.key_prefix}lim")
    assert [limiter.hit("k", endpoint="search").allowed for _ in range(5)] == [True] * 3 + [False] * 2
    limiter.hit("k")  # no endpoint: the limiter's scope

    text = get(analytics_port, "/metrics")[2]
    # The second refusal is answered from the local deny cache, without Redis.
    assert requests_by_outcome(text, "search") == outcomes(allowed=3, blocked=1, local_cache=1)
    assert histogram_count(text, "search") == 5
    assert requests_by_outcome(text, limiter.scope) == outcomes(allowed=1)

    doc = json.loads(get(analytics_port, "/metrics.json")[2])
    search = doc["endpoints"]["search"]
    assert (search["allowed"], search["blocked"], search["local_cache"]) == (3, 1, 1)

    # The flusher sends every 250 ms.
    deadline = time.monotonic() + 5
    while len(events := stream_endpoints(redis_server, redis_analytics.analytics_stream)) < 6:
        assert time.monotonic() < deadline, events
        time.sleep(0.05)
    assert events == ["search"] * 5 + [limiter.scope]

    done = monitor("--once", "--port", str(analytics_port), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.split()[:1] == ["search"])
    assert row.split()[1:6] == ["5", "3", "2", "0", "40.0%"]


def live_limiters() -> int:
    return sum(isinstance(o, _ffi.Limiter) for o in gc.get_objects())


def test_many_endpoints_keep_native_limiters_and_metrics_bounded(prefix, analytics_port):
    cfg = FluxConfig(key_prefix=prefix, analytics_enabled=True, analytics_port=analytics_port)
    limiter = RateLimiter(1, 60, config=cfg, scope=f"{prefix}many")
    before = live_limiters()
    for i in range(50_000):
        assert limiter.hit("k", endpoint=f"{prefix}/item/{i}").allowed
    assert not limiter.hit("k", endpoint=f"{prefix}/item/7").allowed  # still one limit per endpoint
    assert live_limiters() == before

    text = store_of(limiter).handle.metrics()
    ours = {
        sample.labels["endpoint"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "flux_requests_total"
    }
    # 100 endpoints by name, the rest under __other__: every decision still counted.
    assert len(ours - {"__other__"}) == 100
    assert requests_by_outcome(text, "__other__")["allowed"] == 50_000 - 100
    assert len(text) < 300_000
