"""The dashboard in a real browser.

Headless Chromium from the system's packages (``make deps`` installs it)
opens the page that an application's metrics server serves at ``/``, and
each test reads back what the page shows once its scripts ran, against the
``/metrics.json`` the page itself reads. The application is
``dashboard_feeder.py``, a separate process that decides a script of calls,
so a test can stop its server under the page and start another.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chromium import Chromium, chromium_binary
from conftest import free_port

FEEDER = Path(__file__).with_name("dashboard_feeder.py")

# Names a page that builds markup from data would run or break on.
SCRIPT_NAME = '<script>document.title="owned"</script>'
IMG_NAME = '"><img src=x onerror="document.title=\'owned\'">'


class Feeder:
    """An application process with [analytics] enabled; see dashboard_feeder.py."""

    def __init__(self, port: int, prefix: str, redis_url: str | None = None) -> None:
        self.port = port
        args = [sys.executable, str(FEEDER), "--port", str(port), "--prefix", prefix]
        if redis_url:
            args += ["--redis", redis_url]
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(self.process.stdout.readline() or "{}")
        if not ready.get("ready"):
            self.stop()
            pytest.fail(f"the feeder did not start: {ready}")

    def run(self, endpoint: str, calls: int, requests: int = 1000, store: str = "main") -> dict[str, int]:
        step = {"endpoint": endpoint, "calls": calls, "requests": requests, "store": store}
        self.process.stdin.write(json.dumps(step) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def stop(self) -> None:
        """Ends the process (its server with it) and waits until it is gone."""
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process.stdout.close()


@pytest.fixture
def feeders():
    started: list[Feeder] = []

    def start(port: int, prefix: str, redis_url: str | None = None) -> Feeder:
        started.append(Feeder(port, prefix, redis_url))
        return started[-1]

    yield start
    for feeder in started:
        feeder.stop()


@pytest.fixture(scope="module")
def browser():
    if chromium_binary() is None:
        pytest.fail("chromium is not installed (make deps installs it)")
    with Chromium(width=1280, height=800) as chromium:
        yield chromium


def metrics(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics.json", timeout=5) as response:
        return json.loads(response.read())


def eventually(read: Callable[[], Any], check: Callable[[Any], bool], timeout: float = 15.0) -> Any:
    """``read()`` once ``check`` holds for it (the page redraws every second)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if check(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


CARDS = """[...document.querySelectorAll('#endpoints .card')].map(card => ({
  name: card.querySelector('.name').textContent,
  fields: Object.fromEntries([...card.querySelectorAll('[data-field]')].map(e => [e.dataset.field, e.textContent])),
  rates: [...card.querySelectorAll('[data-rate]')].map(e => e.textContent),
  charts: card.querySelectorAll('svg.chart').length,
  baseline: Number(card.querySelector('svg.chart line.grid').getAttribute('y1')),
  lines: Object.fromEntries([...card.querySelectorAll('svg.chart polyline')].map(
    p => [p.dataset.series, p.getAttribute('points').split(' ').filter(Boolean).map(xy => xy.split(',').map(Number))])),
}))"""

TOTALS = (
    "[...document.querySelectorAll('#totals-list tbody tr')]"
    ".map(tr => [...tr.cells].map(td => td.textContent))"
)


def cards(browser: Chromium) -> list[dict[str, Any]]:
    return browser.evaluate(CARDS)


def shown_counts(card: dict[str, Any]) -> dict[str, int]:
    return {k: int(card["fields"][k].replace(",", "")) for k in ("allowed", "blocked", "fail_open", "total")}


def served_counts(raw: dict[str, Any]) -> dict[str, int]:
    """What the page should show: refused by Redis or from the local deny cache."""
    counts = {k: raw[k] for k in ("allowed", "blocked", "fail_open", "total")}
    counts["blocked"] += raw["local_cache"]
    return counts


def quantile(q: float, buckets: list[dict[str, Any]]) -> float:
    """The estimate the page should show: linear inside the bucket that holds rank q."""
    total = buckets[-1]["count"]
    rank, lower, below = q * total, 0.0, 0
    for bucket in buckets:
        if bucket["count"] >= rank:
            assert bucket["le"] != "+Inf", "every decision here takes under a second"
            return lower + (bucket["le"] - lower) * (rank - below) / max(bucket["count"] - below, 1)
        lower, below = bucket["le"], bucket["count"]
    raise AssertionError("no bucket holds the rank")


def seconds(shown: str) -> float:
    value, unit = shown.split()
    return float(value) * {"s": 1.0, "ms": 1e-3, "µs": 1e-6}[unit]


def test_the_page_shows_each_endpoint_as_metrics_json_counts_it(browser, feeders, prefix):
    port = free_port()
    app = feeders(port, prefix)
    browser.open(f"http://127.0.0.1:{port}/")
    # Before any decision: a clear "no data yet", not an empty page.
    assert browser.wait_for("document.body.dataset.state") in ("loading", "empty")
    browser.wait_for("document.body.dataset.state === 'empty'")
    assert "No data yet" in browser.evaluate("document.getElementById('status').textContent")
    assert "No data yet" in browser.evaluate("document.getElementById('endpoints').textContent")

    # A script of decisions, with exact outcomes: each limit admits
    # `requests` calls an hour for the one client.
    assert app.run("login", 8, requests=5) == {"allowed": 5, "blocked": 3, "fail_open": 0}
    assert app.run("api.search", 20, requests=20) == {"allowed": 20, "blocked": 0, "fail_open": 0}
    assert app.run(SCRIPT_NAME, 6, requests=1) == {"allowed": 1, "blocked": 5, "fail_open": 0}
    assert app.run(IMG_NAME, 3, requests=1) == {"allowed": 1, "blocked": 2, "fail_open": 0}
    # On a Redis where nothing listens: admitted without a decision.
    assert app.run("payments", 3, store="dead") == {"allowed": 0, "blocked": 0, "fail_open": 3}
    served = metrics(port)["endpoints"]

    # Sorted by refusals, then by name; every count as /metrics.json has it.
    order = [SCRIPT_NAME, "login", IMG_NAME, "api.search", "payments"]
    shown = eventually(lambda: cards(browser), lambda cs: [c["name"] for c in cs] == order)
    assert [c["name"] for c in shown] == order
    assert browser.evaluate("document.body.dataset.state") == "live"
    for card in shown:
        raw = served[card["name"]]
        assert shown_counts(card) == served_counts(raw), card["name"]
        assert card["fields"]["block_rate"] == f"{100 * raw['block_rate']:.1f}%"
        for q in (50, 90, 99):
            expected = quantile(q / 100, raw["latency"]["buckets"])
            assert seconds(card["fields"][f"p{q}"]) == pytest.approx(expected, rel=0.01), (card["name"], q)
        # One chart each, a line per outcome.
        assert card["charts"] == 1
        assert sorted(card["lines"]) == ["allowed", "blocked", "fail_open"]

    # The hostile names are text: no element, no script ran.
    assert browser.evaluate("document.querySelectorAll('img').length") == 0
    assert browser.evaluate("document.scripts.length") == 1
    assert browser.evaluate("document.title") == "Flux dashboard"

    # Calls while the page watches draw a rate: api.search is at its limit
    # and had refused nothing, so its refused line rises from zero now.
    assert app.run("api.search", 30, requests=20) == {"allowed": 0, "blocked": 30, "fail_open": 0}
    total = metrics(port)["endpoints"]["api.search"]["total"]

    def search_card() -> dict[str, Any]:
        return next(c for c in cards(browser) if c["name"] == "api.search")

    card = eventually(search_card, lambda c: shown_counts(c)["total"] == total)
    assert shown_counts(card)["blocked"] == 30
    card = eventually(search_card, lambda c: len(c["lines"]["blocked"]) >= 2)
    assert min(y for _, y in card["lines"]["blocked"]) < card["baseline"], "refusals drawn"

    # Each outcome has its own line style, not only its own colour.
    dashes = browser.evaluate(
        "[...document.querySelectorAll('.card')[0].querySelectorAll('polyline')]"
        ".map(p => getComputedStyle(p).strokeDasharray)"
    )
    assert len(set(dashes)) == 3, dashes

    # The search box filters by name, ignoring case.
    browser.type_text("#search", "LOG")
    assert eventually(lambda: [c["name"] for c in cards(browser)], lambda n: n == ["login"]) == ["login"]
    browser.type_text("#search", "-nothing")
    assert "No endpoint matches" in browser.wait_for("document.getElementById('endpoints').textContent")
    browser.evaluate("(s => { s.value = ''; s.dispatchEvent(new Event('input')); })(document.getElementById('search'))")
    assert len(cards(browser)) == 5

    # Readable at a phone's width: one column, nothing wider than the screen.
    browser.resize(390, 844)
    assert browser.wait_for("document.documentElement.scrollWidth <= 390")
    assert browser.evaluate(
        "[...document.querySelectorAll('.card, header, #totals')].every(e => e.getBoundingClientRect().right <= 390)"
    )
    browser.resize(1280, 800)
    lefts = browser.evaluate("[...document.querySelectorAll('.card')].map(c => c.getBoundingClientRect().left)")
    assert len(set(lefts)) >= 3, "several columns on a laptop screen"
    assert browser.evaluate("document.documentElement.scrollWidth") <= 1280

    # Its own inline style and script ran under its CSP; it asked nothing
    # but GET /metrics.json of its own origin.
    browser.drain_events()
    assert browser.console_problems() == []
    origin = f"http://127.0.0.1:{port}"
    requests = browser.requests()
    assert requests[0] == ("GET", f"{origin}/")
    assert set(requests[1:]) == {("GET", f"{origin}/metrics.json")}

    # The server stops: the page says so and keeps the last figures.
    app.stop()
    status = browser.wait_for(
        "document.body.dataset.state === 'unreachable' && document.getElementById('status').textContent"
    )
    assert status.startswith("Server unreachable since")
    assert len(cards(browser)) == 5

    # A new process on the same port starts its counters from zero: the page
    # shows the new counts, and the drop draws no negative rate.
    restarted = feeders(port, prefix)
    assert restarted.run("login", 2, requests=5) == {"allowed": 2, "blocked": 0, "fail_open": 0}
    shown = eventually(lambda: cards(browser), lambda cs: [c["name"] for c in cs] == ["login"])
    assert browser.evaluate("document.body.dataset.state") == "live"
    assert shown_counts(shown[0]) == served_counts(metrics(port)["endpoints"]["login"])
    assert shown_counts(shown[0]) == {"allowed": 2, "blocked": 0, "fail_open": 0, "total": 2}
    for _ in range(3):  # as many redraws, with the drop inside the window
        card = cards(browser)[0]
        for series, points in card["lines"].items():
            assert all(y <= card["baseline"] for _, y in points), (series, points)
        assert not any("-" in rate for rate in card["rates"]), card["rates"]
        time.sleep(0.5)


def test_with_redis_the_page_shows_every_processes_totals(browser, feeders, redis_server, prefix):
    port = free_port()
    app = feeders(port, prefix, redis_server.url)
    other = feeders(free_port(), prefix, redis_server.url)
    # One limit in Redis for both processes: what one admitted, the other cannot.
    assert app.run("login", 8, requests=5) == {"allowed": 5, "blocked": 3, "fail_open": 0}
    assert other.run("login", 4, requests=5) == {"allowed": 0, "blocked": 4, "fail_open": 0}
    assert other.run("search", 3) == {"allowed": 3, "blocked": 0, "fail_open": 0}

    # The flushers add their counts to Redis within a few hundred ms.
    expected = {"login": (5, 7, 0), "search": (3, 0, 0)}

    def totals_in(doc: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
        [entry] = doc["redis_totals"]
        refused = lambda c: c["blocked"] + c.get("local_cache", 0)  # noqa: E731
        return {name: (c["allowed"], refused(c), c["fail_open"]) for name, c in entry["endpoints"].items()}

    doc = eventually(lambda: metrics(port), lambda d: totals_in(d) == expected)
    assert totals_in(doc) == expected

    browser.open(f"http://127.0.0.1:{port}/dashboard")
    rows = eventually(lambda: browser.evaluate(TOTALS), lambda r: len(r) == 2)
    assert browser.evaluate("document.getElementById('totals').hidden") is False
    # Sorted by refusals; requests, allowed, refused, failed open, block rate.
    assert rows == [
        ["login", "12", "5", "7", "0", "58.3%"],
        ["search", "3", "3", "0", "0", "0.0%"],
    ]
    heading = browser.evaluate("document.querySelector('#totals-list h3').textContent")
    assert heading == f"{redis_server.url} · {{{prefix}events}}:totals"
    # This process's own counters are only its part.
    [card] = eventually(lambda: cards(browser), lambda cs: len(cs) == 1)
    assert card["name"] == "login"
    assert shown_counts(card) == served_counts(doc["endpoints"]["login"])
    assert shown_counts(card) == {"allowed": 5, "blocked": 3, "fail_open": 0, "total": 8}
