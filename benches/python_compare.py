"""Flux from Python, side by side with `limits` and redis-py, in one run.

    make bench-py        (or: .venv/bin/python benches/python_compare.py)

Per-decision cost, single thread, median over rounds: Flux on the memory
store and on Redis against `limits` (memory and Redis storage, fixed and
moving window) and against redis-py's own PING and a raw EVALSHA of a
minimal counter script. Then decisions per second from 64 concurrent asyncio
callers: Flux `ahit` against `limits.aio`.

Round trips on a small virtual machine vary with how busy its CPUs are, so
the rows are interleaved round by round (every row sees the same conditions)
and only ratios within one run are meaningful. Starts its own redis-server
on a free port and stops it.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time

import redis
from limits import RateLimitItemPerMinute, storage, strategies
from limits.aio import storage as aio_storage
from limits.aio import strategies as aio_strategies

import flux._ffi
from flux import RateLimiter
from flux.config import FluxConfig

from redis_server import redis_server

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "15"))
MEMORY_CALLS = 20_000  # per round, per memory row
REDIS_CALLS = 1_000  # per round, per Redis row
ASYNC_CALLERS = 64
ASYNC_CALLS = 40  # per caller per round
KEYS = [f"user-{i}" for i in range(1000)]
LIMIT = 1_000_000_000  # per minute: every call is admitted, so every row does the same work
COUNTER = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


def per_call_us(calls: int, body) -> float:
    started = time.perf_counter()
    body(calls)
    return (time.perf_counter() - started) / calls * 1e6


def sync_rows(port: int) -> dict[str, callable]:
    url = f"redis://127.0.0.1:{port}/0"
    prefix = f"bench{os.getpid()}:"
    flux_memory = RateLimiter(LIMIT, 60, config=FluxConfig(key_prefix=prefix, jitter_enabled=False))
    flux_redis = RateLimiter(
        LIMIT, 60, config=FluxConfig(redis_url=url, key_prefix=prefix, jitter_enabled=False)
    )
    flux_redis.hit("warm-up")
    item = RateLimitItemPerMinute(LIMIT)
    limits_memory_fixed = strategies.FixedWindowRateLimiter(storage.MemoryStorage())
    limits_memory_moving = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
    limits_redis = storage.RedisStorage(url)
    limits_redis_fixed = strategies.FixedWindowRateLimiter(limits_redis)
    limits_redis_moving = strategies.MovingWindowRateLimiter(limits_redis)
    raw = redis.Redis(port=port)
    counter = raw.register_script(COUNTER)
    counter(keys=["warm-up"], args=[60_000])
    kind = flux._ffi.flux_store_kind
    store_ptr = flux_memory._store.handle
    nk = len(KEYS)

    def loop(fn):
        def body(n):
            keys = KEYS
            for i in range(n):
                fn(keys[i % nk])

        return body

    # The decision itself through ctypes with its declared argument types, as
    # hit() makes it, minus everything hit() does around it: hit()'s floor.
    decide = flux._ffi.flux_limiter_decide_gil
    handle, result_type = flux_memory._handle, flux_memory._result_type
    raw_keys = [k.encode() for k in KEYS]

    def bare_decide(n):
        keys = raw_keys
        for i in range(n):
            key = keys[i % nk]
            decide(handle, key, len(key), 1, result_type())

    return {
        "ctypes call alone (flux_store_kind)": (MEMORY_CALLS, lambda n: [kind(store_ptr) for _ in range(n)]),
        "ctypes flux_limiter_decide alone (declared argtypes)": (MEMORY_CALLS, bare_decide),
        "flux memory  hit()": (MEMORY_CALLS, loop(flux_memory.hit)),
        "limits memory fixed window": (MEMORY_CALLS, loop(lambda k: limits_memory_fixed.hit(item, k))),
        "limits memory moving window": (MEMORY_CALLS, loop(lambda k: limits_memory_moving.hit(item, k))),
        "redis-py PING": (REDIS_CALLS, lambda n: [raw.ping() for _ in range(n)]),
        "redis-py EVALSHA (minimal counter)": (
            REDIS_CALLS,
            loop(lambda k: counter(keys=[prefix + "raw:" + k], args=[60_000])),
        ),
        "flux redis   hit()": (REDIS_CALLS, loop(flux_redis.hit)),
        "limits redis fixed window": (REDIS_CALLS, loop(lambda k: limits_redis_fixed.hit(item, k))),
        "limits redis moving window": (REDIS_CALLS, loop(lambda k: limits_redis_moving.hit(item, "moving", k))),
    }


def async_rows(port: int) -> dict[str, callable]:
    url = f"redis://127.0.0.1:{port}/0"
    prefix = f"abench{os.getpid()}:"
    flux_redis = RateLimiter(
        LIMIT, 60, config=FluxConfig(redis_url=url, key_prefix=prefix, jitter_enabled=False)
    )
    item = RateLimitItemPerMinute(LIMIT)
    limits_fixed = aio_strategies.FixedWindowRateLimiter(aio_storage.RedisStorage(f"async+{url}", implementation="redispy"))
    loop = asyncio.new_event_loop()

    def rate(decide) -> float:
        async def caller(c: int):
            for i in range(ASYNC_CALLS):
                await decide(KEYS[(c * ASYNC_CALLS + i) % len(KEYS)])

        async def main():
            await asyncio.gather(*(caller(c) for c in range(ASYNC_CALLERS)))

        started = time.perf_counter()
        loop.run_until_complete(main())
        return ASYNC_CALLERS * ASYNC_CALLS / (time.perf_counter() - started)

    rate(flux_redis.ahit)  # warm-up: connections and scripts
    rate(lambda k: limits_fixed.hit(item, k))
    return {
        "flux redis   ahit(), 64 coroutines": lambda: rate(flux_redis.ahit),
        "limits.aio redis fixed window, 64 coroutines": lambda: rate(lambda k: limits_fixed.hit(item, k)),
    }


def main() -> int:
    with redis_server() as port:
        rows = sync_rows(port)
        arows = async_rows(port)
        samples: dict[str, list[float]] = {name: [] for name in rows}
        asamples: dict[str, list[float]] = {name: [] for name in arows}
        names, anames = list(rows), list(arows)
        for r in range(ROUNDS):
            # Rotate the order each round, so no row always runs first.
            for name in names[r % len(names):] + names[: r % len(names)]:
                calls, body = rows[name]
                samples[name].append(per_call_us(calls, body))
            for name in anames[r % len(anames):] + anames[: r % len(anames)]:
                asamples[name].append(arows[name]())
            print(f"round {r + 1}/{ROUNDS}", file=sys.stderr, end="\r")
        print(file=sys.stderr)
        med = {name: statistics.median(v) for name, v in samples.items()}
        amed = {name: statistics.median(v) for name, v in asamples.items()}
        print(report(med, amed))
        return 0


def report(med: dict[str, float], amed: dict[str, float]) -> str:
    flux_memory = med["flux memory  hit()"]
    ping = med["redis-py PING"]
    flux_redis = med["flux redis   hit()"]
    lines = [
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, one local redis-server; "
        f"median of {ROUNDS} interleaved rounds",
        "",
        "| per decision, single thread | median µs | vs flux memory | vs redis-py PING |",
        "|---|---:|---:|---:|",
    ]
    for name, us in med.items():
        memory_row = "redis" not in name.lower()
        vs_flux = f"{us / flux_memory:.2f}x" if memory_row else ""
        vs_ping = "" if memory_row else f"{us / ping:.2f}x"
        lines.append(f"| {name} | {us:.2f} | {vs_flux} | {vs_ping} |")
    lines += [
        "",
        "| 64 concurrent asyncio callers, Redis | decisions/s | vs limits.aio |",
        "|---|---:|---:|",
    ]
    limits_rate = amed["limits.aio redis fixed window, 64 coroutines"]
    for name, per_s in amed.items():
        lines.append(f"| {name} | {per_s:,.0f} | {per_s / limits_rate:.2f}x |")
    ahit = amed["flux redis   ahit(), 64 coroutines"]
    bare = med["ctypes flux_limiter_decide alone (declared argtypes)"]
    met = flux_memory <= 1.0 and flux_memory - bare <= 0.5
    lines += [
        "",
        "Targets: "
        f"memory decision {flux_memory:.2f} µs, {flux_memory - bare:+.2f} µs beside the bare ctypes "
        f"decision (target <= 1.0 and within 0.5: {'met' if met else 'missed'}); "
        f"sync Redis decision {flux_redis / ping:.2f}x PING (target <= 1: {'met' if flux_redis <= ping else 'missed'}); "
        f"ahit {ahit:,.0f}/s (target >= 60,000: {'met' if ahit >= 60_000 else 'missed'}).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
