"""The local deny cache from Python, with and without it, in one run.

    make bench-deny-cache     (or: .venv/bin/python benches/deny_cache.py)

1. One key called at 10x its limit from 4 processes, each with its own
   limiter (as 4 app servers would be): Redis commands per second (the
   EVALSHA calls of INFO commandstats), with the cache off and on, runs
   interleaved. Every admitted call must reach Redis, so at 10x the total
   can fall by 90% at most; the refusals that reach Redis are counted apart.
2. Python µs per refused call, single thread: answered from the cache, and
   asked of Redis with the cache off, beside the floor (a bare ctypes call
   into the library, `flux_store_kind`) and a refusal by the memory store (the
   same call into the library, decided in-process). Median of interleaved
   rounds.

Starts its own redis-server on a free port and stops it. Speed is measured,
never asserted: this is not part of `make test`.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import subprocess
import sys
import time

from redis_server import redis_server

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PROCESSES = 4
# 100 per 2 s in fixed windows, called at 10x: 1,000 calls per second.
REQUESTS, PERIOD = 200, 2.0
CALLS_PER_S = 10 * REQUESTS / PERIOD
SECONDS = float(os.environ.get("BENCH_SECONDS", "6"))
FLOOR_CALLS, CACHED_CALLS, REDIS_CALLS = 50_000, 50_000, 2_000


def command(port: int, *args: str) -> str:
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True)
    return out.stdout


def evalsha_calls(port: int) -> int:
    for line in command(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def limiter(port: int, prefix: str, cache_size: int, requests: int = REQUESTS, period: float = PERIOD):
    # Imported here: each process of the attack loads the library itself.
    from flux import RateLimiter
    from flux.config import FluxConfig

    config = FluxConfig(
        redis_url=f"redis://127.0.0.1:{port}/0",
        key_prefix=prefix,
        local_cache_size=cache_size,
        jitter_enabled=False,
    )
    return RateLimiter(requests, period, policy="fixed_window", config=config)


def attacker(port: int, prefix: str, cache_size: int, start_at: float, results) -> None:
    lim = limiter(port, prefix, cache_size)
    every = PROCESSES / CALLS_PER_S
    counts = {"allowed": 0, "storage": 0, "local_cache": 0}
    while time.time() < start_at:
        time.sleep(0.001)
    began = time.perf_counter()
    n = 0
    while (now := time.perf_counter() - began) < SECONDS:
        # Paced: call n goes at n * every, late calls catch up at once.
        if now < n * every:
            time.sleep(n * every - now)
        result = lim.hit("the-attacked-key")
        counts["allowed" if result.allowed else result.source] += 1
        n += 1
    results.put(counts)


def attack(port: int, cache_size: int, run: int) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    prefix = f"attack{run}:{cache_size}:"
    start_at = time.time() + 1.5  # every process loaded and ready
    procs = [ctx.Process(target=attacker, args=(port, prefix, cache_size, start_at, results)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    while time.time() < start_at:
        time.sleep(0.001)
    before = evalsha_calls(port)
    totals = {"allowed": 0, "storage": 0, "local_cache": 0}
    for _ in procs:
        for k, v in results.get().items():
            totals[k] += v
    after = evalsha_calls(port)
    for p in procs:
        p.join()
    calls = sum(totals.values())
    return {
        "calls/s": calls / SECONDS,
        "allowed/s": totals["allowed"] / SECONDS,
        "EVALSHA/s": (after - before) / SECONDS,
        "refusals to Redis/s": totals["storage"] / SECONDS,
        "refusals from cache/s": totals["local_cache"] / SECONDS,
    }


def per_call_us(calls: int, body) -> float:
    started = time.perf_counter()
    body(calls)
    return (time.perf_counter() - started) / calls * 1e6


def refusal_rows(port: int) -> dict[str, tuple[int, object]]:
    import flux._ffi

    # One call an hour: every call after the first is refused.
    cached = limiter(port, "refused:on:", 10_000, 1, 3600)
    uncached = limiter(port, "refused:off:", 0, 1, 3600)
    for lim in (cached, uncached):
        lim.hit("k")
        assert not lim.hit("k").allowed
    assert cached.hit("k").source == "local_cache"
    assert uncached.hit("k").source == "storage"
    from flux import RateLimiter
    from flux.config import FluxConfig

    memory = RateLimiter(1, 3600, policy="fixed_window", config=FluxConfig(key_prefix="refused:memory:"))
    memory.hit("k")
    kind = flux._ffi.flux_store_kind
    store_ptr = cached._store.handle
    return {
        "floor: a bare ctypes call (flux_store_kind)": (FLOOR_CALLS, lambda n: [kind(store_ptr) for _ in range(n)]),
        "hit() refused, from the local cache": (CACHED_CALLS, lambda n: [cached.hit("k") for _ in range(n)]),
        "hit() refused, asked of Redis (cache off)": (REDIS_CALLS, lambda n: [uncached.hit("k") for _ in range(n)]),
        "hit() refused by the memory store (no cache)": (CACHED_CALLS, lambda n: [memory.hit("k") for _ in range(n)]),
    }


def main() -> int:
    with redis_server() as port:
        off: list[dict[str, float]] = []
        on: list[dict[str, float]] = []
        for run in range(ROUNDS):
            off.append(attack(port, 0, run))
            on.append(attack(port, 10_000, run))
            print(f"attack round {run + 1}/{ROUNDS}", file=sys.stderr, end="\r")
        print(file=sys.stderr)
        rows = refusal_rows(port)
        samples: dict[str, list[float]] = {name: [] for name in rows}
        names = list(rows)
        for r in range(5 * ROUNDS):
            for name in names[r % len(names):] + names[: r % len(names)]:
                calls, body = rows[name]
                samples[name].append(per_call_us(calls, body))
        print(report(off, on, {name: statistics.median(v) for name, v in samples.items()}))
        return 0


def report(off: list[dict[str, float]], on: list[dict[str, float]], us: dict[str, float]) -> str:
    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    lines = [
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, one local redis-server; "
        f"{PROCESSES} processes calling one key of {REQUESTS} per {PERIOD:g} s (fixed window) "
        f"at 10x for {SECONDS:g} s; median of {ROUNDS} interleaved runs",
        "",
        "| per second | cache off | cache on | change |",
        "|---|---:|---:|---:|",
    ]
    for key in ("calls/s", "allowed/s", "EVALSHA/s", "refusals to Redis/s", "refusals from cache/s"):
        a, b = med(off, key), med(on, key)
        change = f"{(b - a) / a * 100:+.1f}%" if a else ""
        lines.append(f"| {key} | {a:,.1f} | {b:,.1f} | {change} |")
    lines += [
        "",
        "| per refused call, single thread | median µs | vs floor |",
        "|---|---:|---:|",
    ]
    floor = us["floor: a bare ctypes call (flux_store_kind)"]
    for name, v in us.items():
        lines.append(f"| {name} | {v:.2f} | {v / floor:.1f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
