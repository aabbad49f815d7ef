"""``flux monitor``: a live terminal view of a running app's limits.

It reads ``/metrics.json`` from the metrics server that Flux runs inside the
application (``[analytics] enabled = true``) once a second and draws, per
endpoint (the one a call named, else the limit's scope; ``__other__`` for
those beyond the caps on series), the requests decided, allowed and
blocked, the block rate and a bar for it, and the totals. ``--once`` prints one frame, without clearing the
screen, and exits: for scripts.

With Redis, two tables: this process's counters (the process whose server
answered), and every process's, from the totals the flushers add to Redis.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TextIO

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4444
REFRESH_SECONDS = 1.0
FETCH_TIMEOUT_SECONDS = 2.0
BAR_WIDTH = 20
MAX_NAME_WIDTH = 48
CLEAR_SCREEN = "\x1b[H\x1b[2J"


class Unreachable(Exception):
    """Nothing (or something other than Flux) answered at the URL."""


def metrics_url(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"http://{host}:{port}/metrics.json"


def fetch(url: str, timeout: float = FETCH_TIMEOUT_SECONDS) -> dict[str, Any]:
    """The document ``/metrics.json`` serves; raises :class:`Unreachable`."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            document: dict[str, Any] = json.loads(response.read().decode("utf-8"))
            return document
    except urllib.error.HTTPError as exc:
        raise Unreachable(f"{url} answered HTTP {exc.code}: is that a Flux metrics server?") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"nothing answered at {url} ({reason})") from exc
    except ValueError as exc:
        raise Unreachable(f"{url} did not answer JSON: is that a Flux metrics server?") from exc


def not_listening_message(problem: str, host: str, port: int) -> str:
    return (
        f"flux monitor: {problem}.\n"
        "\n"
        "The metrics server runs inside your application, started with its first rate\n"
        "limit, when its flux.toml enables analytics:\n"
        "\n"
        "    [analytics]\n"
        "    enabled = true\n"
        f'    host = "{host}"\n'
        f"    port = {port}\n"
        "\n"
        "Start (or restart) the application with that, or point the monitor at where it\n"
        "listens: python -m flux monitor --host HOST --port PORT\n"
    )


# --- drawing -----------------------------------------------------------------


def _counts(raw: Mapping[str, Any]) -> tuple[int, int, int]:
    """Allowed (by the store or, in shadow, past a limit), refused (by the
    store or from the cache of refusals) and failed open."""
    allowed = int(raw.get("allowed", 0)) + int(raw.get("shadow", 0))
    refused = int(raw.get("blocked", 0)) + int(raw.get("local_cache", 0))
    return allowed, refused, int(raw.get("fail_open", 0))


def _bar(rate: float, full: str, empty: str) -> str:
    filled = round(max(0.0, min(rate, 1.0)) * BAR_WIDTH)
    return full * filled + empty * (BAR_WIDTH - filled)


def _name(name: str, width: int) -> str:
    return name if len(name) <= width else name[: width - 1] + "~"


def table(title: str, endpoints: Mapping[str, Mapping[str, Any]], unicode: bool = True) -> list[str]:
    """One table: a row per endpoint (busiest first) and a TOTAL row."""
    full, empty = ("█", "░") if unicode else ("#", ".")
    rows = []
    for name, raw in endpoints.items():
        allowed, blocked, fail_open = _counts(raw)
        rows.append((name, allowed + blocked + fail_open, allowed, blocked, fail_open))
    rows.sort(key=lambda r: (-r[1], r[0]))
    width = min(max([len("ENDPOINT"), *(len(r[0]) for r in rows)]), MAX_NAME_WIDTH)
    header = (
        f"{'ENDPOINT':<{width}}  {'REQUESTS':>9}  {'ALLOWED':>9}  {'BLOCKED':>9}  "
        f"{'FAIL-OPEN':>9}  {'BLOCK RATE':>10}  "
    )
    lines = [title, header.rstrip(), "-" * (len(header) + BAR_WIDTH)]

    def line(name: str, total: int, allowed: int, blocked: int, fail_open: int) -> str:
        rate = blocked / total if total else 0.0
        return (
            f"{_name(name, width):<{width}}  {total:>9}  {allowed:>9}  {blocked:>9}  "
            f"{fail_open:>9}  {rate:>10.1%}  {_bar(rate, full, empty)}"
        )

    for row in rows:
        lines.append(line(*row))
    if not rows:
        lines.append("(no decisions yet)")
    counts = [r[1:] for r in rows]  # each row's numbers, without its name
    totals = [sum(c[i] for c in counts) for i in range(4)]
    lines.append("-" * (len(header) + BAR_WIDTH))
    lines.append(line("TOTAL", *totals))
    return lines


def _merge(sources: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    merged: dict[str, dict[str, int]] = {}
    for endpoints in sources:
        for name, raw in endpoints.items():
            into = merged.setdefault(name, {"allowed": 0, "blocked": 0, "fail_open": 0})
            for key, value in zip(("allowed", "blocked", "fail_open"), _counts(raw), strict=True):
                into[key] += value
    return merged


def frame(doc: Mapping[str, Any], url: str, unicode: bool = True, now: datetime | None = None) -> str:
    """The whole screen for one ``/metrics.json`` document."""
    stamp = (now or datetime.now()).strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"Flux monitor  {url}  {stamp}", ""]
    lines += table("This process", doc.get("endpoints", {}), unicode)
    redis_totals = doc.get("redis_totals") or []
    if redis_totals:
        where = ", ".join(f"{t.get('redis')} {t.get('totals_key')}" for t in redis_totals)
        lines += ["", *table(f"All processes (totals in Redis: {where})", _merge(
            t.get("endpoints", {}) for t in redis_totals
        ), unicode)]
        for t in redis_totals:
            if t.get("error"):
                lines.append(f"! could not read {t.get('redis')}: {t['error']}")
    dropped = int(doc.get("events_dropped", 0))
    lines += ["", f"analytics events dropped: {dropped}"]
    return "\n".join(lines) + "\n"


def _can_draw_blocks(stream: TextIO) -> bool:
    try:
        "█░".encode(stream.encoding or "ascii")
        return True
    except (LookupError, UnicodeEncodeError):
        return False


# --- the command -------------------------------------------------------------


def _configured_address() -> tuple[str, int]:
    """``[analytics] host`` and ``port`` of the configuration the app would load."""
    from .config import load_config
    from .exceptions import FluxError

    flux_logger = logging.getLogger("flux")
    level = flux_logger.level
    # "No flux.toml found, using the memory store" is about limits, not the monitor.
    flux_logger.setLevel(logging.ERROR)
    try:
        cfg = load_config()
    except FluxError as exc:
        print(f"flux monitor: ignoring the configuration ({exc})", file=sys.stderr)
        return DEFAULT_HOST, DEFAULT_PORT
    finally:
        flux_logger.setLevel(level)
    return cfg.analytics_host, cfg.analytics_port


DESCRIPTION = "Live view of the rate limits of a running application (its [analytics] metrics server)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``flux monitor``."""
    parser.add_argument(
        "--host", metavar="HOST",
        help="where the app serves /metrics.json (default: [analytics] host, else 127.0.0.1)",
    )
    parser.add_argument("--port", type=int, metavar="PORT", help="its port (default: [analytics] port, else 4444)")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.add_argument(
        "--interval", type=float, default=REFRESH_SECONDS, metavar="SECONDS",
        help="seconds between frames (default: 1)",
    )


def run(args: argparse.Namespace) -> int:
    """``flux monitor`` with the options :func:`add_arguments` declares."""
    host, port = args.host, args.port
    if host is None or port is None:
        configured_host, configured_port = _configured_address()
        host = configured_host if host is None else host
        port = configured_port if port is None else port
    if host in ("0.0.0.0", "::", ""):
        host = DEFAULT_HOST  # the app listens everywhere; ask it here
    url = metrics_url(host, port)
    unicode = _can_draw_blocks(sys.stdout)

    try:
        doc = fetch(url)
    except Unreachable as exc:
        print(not_listening_message(str(exc), host, port), end="", file=sys.stderr)
        return 1
    if args.once:
        sys.stdout.write(frame(doc, url, unicode))
        return 0
    interval = max(args.interval, 0.1)
    problem = None
    try:
        while True:
            screen = frame(doc, url, unicode)
            if problem:
                screen += f"\n! {problem}: showing the last figures, trying again\n"
            sys.stdout.write(CLEAR_SCREEN + screen)
            sys.stdout.flush()
            time.sleep(interval)
            try:
                doc, problem = fetch(url), None
            except Unreachable as exc:
                problem = str(exc)
    except KeyboardInterrupt:
        return 0
