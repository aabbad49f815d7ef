"""Flux end to end over HTTP, beside the plain route, the floor and its peers.

    make bench-http      (or: .venv/bin/python benches/http/run.py)

For each framework (FastAPI on uvicorn, Flask and Django on gunicorn) the
runner starts one real server per row on loopback, holding that row's route
alone (a router tries routes in order, so a shared app would charge the
later rows for the routes before them), against one redis-server of its
own; each is warmed up, then loaded with wrk. Rows are interleaved: every
row of a framework runs once per round before the next round begins, in an
order that reverses every round, so slow spells of a shared machine fall on
every row alike. It prints, per row, the median requests per second over the
rounds, their spread, and the ratio to the plain route measured in the same
round (and for limiter rows, to the floor route), as Markdown tables.

Beside them, the server's CPU time per request (user + system, all its
processes and threads, from /proc): requests per second fall when other work
shares the server's CPU, its CPU time per request much less, so this column
stays readable on a busy machine, and a difference of two rows is what one
costs over the other in microseconds.

With 2 or more CPUs, the servers run on all but the first (``taskset``) and
wrk and redis-server on the first, so the load generator does not take CPU
from the server it measures.

Settings (environment):

    BENCH_ROUNDS=5          rounds per framework
    BENCH_DURATION=3        seconds of wrk per row and round (whole seconds, as wrk takes them)
    BENCH_WARMUP=2          seconds of wrk per server before the first round
    BENCH_CONNECTIONS=32    wrk -c
    BENCH_THREADS=1         wrk -t
    BENCH_FRAMEWORKS=fastapi,flask,django
    BENCH_SERVER_CPUS, BENCH_CLIENT_CPUS   taskset lists (e.g. 1 and 0); empty: no pinning
    BENCH_JSON=path         also write every round's numbers there
    BENCH_ROWS="a|b"        only the rows whose label contains a or b (plain and floor always)
    BENCH_BASELINE=dir      beside each Flux row, the same row served with the flux package
                            in dir (e.g. a copy of an installed one, its library beside it):
                            a change and what it replaces, measured in one run

The defaults take about 11 minutes (17 with BENCH_BASELINE).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata

from rows import FLOOR, LIMITERS, PLAIN, ROWS, Row, selected
from servers import SERVERS, Process, start_app, start_redis
from wrk import Load, measure, wrk_binary

PACKAGES = (
    "flux-limiter", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "flask", "werkzeug",
    "django", "gunicorn", "limits", "slowapi", "flask-limiter", "django-ratelimit", "redis",
)
NAMES = {"fastapi": "FastAPI", "flask": "Flask", "django": "Django"}


def setting(name: str, default: str) -> str:
    return os.environ.get(name, default)


def cpu_split() -> tuple[str | None, str | None]:
    """(server CPUs, client CPUs) as taskset lists; None: not pinned."""
    server, client = os.environ.get("BENCH_SERVER_CPUS"), os.environ.get("BENCH_CLIENT_CPUS")
    if server is not None or client is not None:
        return server or None, client or None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return None, None
    return ",".join(map(str, cpus[1:])), str(cpus[0])


def check(row: Row, server: Process) -> None:
    """One request before measuring: a 200, with the header that shows its limiter ran."""
    url = f"http://127.0.0.1:{server.port}{row.path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            if row.header and reply.headers.get(row.header) is None:
                raise SystemExit(f"{row.label}: {url} answered without {row.header}")
    except urllib.error.HTTPError as error:
        raise SystemExit(f"{row.label}: {url} answered {error.code}") from None


@dataclass(frozen=True)
class Sample:
    """One row's wrk run."""

    requests_per_second: float
    #: The server's CPU time over the run divided by the requests wrk completed.
    cpu_us_per_request: float
    socket_errors: str | None


def sample(row: Row, server: Process, load: Load) -> Sample:
    before = server.cpu_seconds()
    measured = measure(f"http://127.0.0.1:{server.port}{row.path}", load)
    cpu = server.cpu_seconds() - before
    per_request = cpu / measured.requests * 1e6 if measured.requests else math.nan
    return Sample(measured.requests_per_second, per_request, measured.socket_errors)


def run_framework(framework: str, redis_url: str, load: Load, server_cpus: str | None, warmup: int,
                  rounds: int, rows: list[Row], baseline: str | None) -> dict[Row, list[Sample]]:
    rows = [row for row in rows if row.pending is None]
    servers: dict[Row, Process] = {}
    try:
        for row in rows:
            servers[row] = start_app(
                framework, row.variant, row.path, redis_url, server_cpus, baseline if row.baseline else None
            )
        for row, server in servers.items():
            server.wait_until_answering(row.path)
            check(row, server)
            measure(f"http://127.0.0.1:{server.port}{row.path}", load, seconds=warmup)
        results: dict[Row, list[Sample]] = {row: [] for row in rows}
        for n in range(rounds):
            for row in rows if n % 2 == 0 else reversed(rows):
                results[row].append(sample(row, servers[row], load))
            print(f"  {NAMES[framework]}: round {n + 1}/{rounds} done", file=sys.stderr, flush=True)
        return results
    finally:
        for server in servers.values():
            server.stop()


def spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def table(framework: str, rows: list[Row], results: dict[Row, list[Sample]]) -> str:
    by_kind = {row.kind: row for row in results if row.kind in (PLAIN, FLOOR)}
    plain = [m.requests_per_second for m in results[by_kind[PLAIN]]]
    floor = [m.requests_per_second for m in results[by_kind[FLOOR]]]
    lines = [
        f"| {NAMES[framework]} ({SERVERS[framework][0]}) | req/s, median (min–max) "
        "| ÷ plain, median (min–max) | ÷ floor, median (min–max) | server CPU µs per request |",
        "|---|---:|---:|---:|---:|",
    ]
    notes = []
    for row in rows:
        if row.pending:
            lines.append(f"| {row.label} | skipped: {row.pending} | | | |")
            continue
        rps = [m.requests_per_second for m in results[row]]
        cpu = [m.cpu_us_per_request for m in results[row]]
        vs_plain = [r / p for r, p in zip(rps, plain)]
        vs_floor = [r / f for r, f in zip(rps, floor)] if row.kind in LIMITERS else None
        errors = [m.socket_errors for m in results[row] if m.socket_errors]
        mark = " †" if errors else ""
        if errors:
            notes.append(f"† {row.label}: wrk's socket errors in {len(errors)} run(s): {errors[0]}")
        lines.append(
            f"| {row.label}{mark} | {spread(rps, ',.0f')} | {spread(vs_plain, '.2f')} "
            f"| {spread(vs_floor, '.2f') if vs_floor else ''} | {spread(cpu, '.0f')} |"
        )
    return "\n".join(lines + ([""] + notes if notes else []))


def versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    found.append(next((w.replace("v=", "redis-server ") for w in redis if w.startswith("v=")), "redis-server"))
    return ", ".join(found)


def main() -> None:
    rounds = int(setting("BENCH_ROUNDS", "5"))
    warmup = int(setting("BENCH_WARMUP", "2"))
    frameworks = [f.strip() for f in setting("BENCH_FRAMEWORKS", "fastapi,flask,django").split(",") if f.strip()]
    for framework in frameworks:
        if framework not in ROWS:
            raise SystemExit(f"BENCH_FRAMEWORKS: unknown framework {framework!r} (known: {', '.join(ROWS)})")
    server_cpus, client_cpus = cpu_split()
    load = Load(
        threads=int(setting("BENCH_THREADS", "1")),
        connections=int(setting("BENCH_CONNECTIONS", "32")),
        duration=int(setting("BENCH_DURATION", "3")),
        cpus=client_cpus,
    )
    names = [n.strip() for n in setting("BENCH_ROWS", "").split("|") if n.strip()]
    baseline = setting("BENCH_BASELINE", "") or None
    if baseline and not os.path.isfile(os.path.join(baseline, "flux", "__init__.py")):
        raise SystemExit(f"BENCH_BASELINE: {baseline!r} holds no flux package (flux/__init__.py)")
    rows = {f: selected(f, names, baseline is not None) for f in frameworks}
    wrk_binary()
    measured = sum(1 for f in frameworks for row in rows[f] if row.pending is None)
    print(
        f"{measured} rows x {rounds} rounds x {load.duration:g} s, plus warm-ups: about "
        f"{(measured * (rounds * load.duration + warmup)) / 60 + 0.5:.0f} minutes",
        file=sys.stderr,
    )
    load_before = os.getloadavg()
    redis = start_redis(client_cpus)
    results = {}
    started = time.monotonic()
    try:
        for framework in frameworks:
            results[framework] = run_framework(
                framework, f"redis://127.0.0.1:{redis.port}/0", load, server_cpus, warmup, rounds,
                rows[framework], baseline,
            )
    finally:
        redis.stop()
    load_after = os.getloadavg()

    pinning = (
        f"servers on CPU {server_cpus}, wrk and redis-server on CPU {client_cpus} (taskset)"
        if server_cpus or client_cpus
        else "not pinned"
    )
    print(
        f"wrk -t{load.threads} -c{load.connections} -d{load.duration:g}s on loopback, {rounds} rounds "
        f"interleaved, {warmup:g} s warm-up per server (one per row); {os.cpu_count()} CPUs, {pinning}; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
        f"{(time.monotonic() - started) / 60:.1f} minutes.\n"
        f"Python {platform.python_version()}; {versions()}.\n"
        + (f"Rows marked (baseline): the flux package of {baseline}.\n" if baseline else "")
    )
    for framework in frameworks:
        print(table(framework, rows[framework], results[framework]) + "\n")
    out = os.environ.get("BENCH_JSON")
    if out:
        with open(out, "w") as f:
            json.dump(
                {
                    framework: {
                        row.label: {
                            "requests_per_second": [m.requests_per_second for m in samples],
                            "cpu_us_per_request": [m.cpu_us_per_request for m in samples],
                        }
                        for row, samples in res.items()
                    }
                    for framework, res in results.items()
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
