"""ahit: the same decisions as hit, batched on Redis, never blocking the loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time

import pytest

import flux._ffi
import flux.exceptions
from flux import RateLimiter
from flux.config import FluxConfig
from flux.exceptions import LimitError


def test_ahit_decides_like_hit(config):
    limiter = RateLimiter(2, 60, config=config)

    async def main():
        return [await limiter.ahit("k") for _ in range(3)]

    started = time.monotonic()
    results = asyncio.run(main())
    took = time.monotonic() - started
    assert [r.allowed for r in results] == [True, True, False]
    assert [r.remaining for r in results] == [1, 0, 0]
    assert 30 - took <= results[2].retry_after <= 30


def test_concurrent_ahit_calls_share_a_few_batches(redis_config, monkeypatch):
    limiter = RateLimiter(10, 60, config=redis_config)
    calls = []
    original = flux._ffi.flux_decide_packed_queued

    def counting(*args):
        calls.append(args[6])  # n
        return original(*args)

    monkeypatch.setattr(flux._ffi, "flux_decide_packed_queued", counting)

    async def main():
        return await asyncio.gather(*(limiter.ahit("k") for _ in range(64)))

    results = asyncio.run(main())
    assert sum(r.allowed for r in results) == 10
    assert sum(calls) == 64
    assert len(calls) <= 2, calls


def test_one_batch_of_many_limiters_keys_costs_and_endpoints_decides_each_call_as_hit_does(
    redis_server, prefix, monkeypatch
):
    def limiters(key_prefix: str) -> tuple[RateLimiter, RateLimiter]:
        cfg = FluxConfig(redis_url=redis_server.url, key_prefix=key_prefix, jitter_enabled=False)
        return RateLimiter(5, 60, config=cfg), RateLimiter(3, 60, config=cfg)

    # Keys of every length (an empty one, non-ASCII text, bytes), costs and
    # endpoints, mixed: the batch's arrays must give each call its own.
    calls = [
        (0, "ana", None, 1),
        (1, "ana", None, 2),
        (0, "", None, 1),
        (0, "ana", "search", 3),
        (0, "zoë", None, 4),
        (1, b"\x00\xff", "search", 1),
        (0, "ana", None, 5),
        (0, "ana", "search", 2),
        (1, "ana", None, 1),
        (0, "zoë", None, 2),
        (1, "ana", None, 1),
    ]
    one_by_one = limiters(prefix + "sync:")
    expected = [(r.allowed, r.remaining, r.limit) for r in (one_by_one[i].hit(k, e, c) for i, k, e, c in calls)]

    sizes = []
    original = flux._ffi.flux_decide_packed_queued
    monkeypatch.setattr(flux._ffi, "flux_decide_packed_queued", lambda *a: sizes.append(a[6]) or original(*a))
    batched = limiters(prefix + "async:")

    async def main():
        return await asyncio.gather(*(batched[i].ahit(k, e, c) for i, k, e, c in calls))

    results = asyncio.run(main())
    assert sizes == [len(calls)]
    assert [(r.allowed, r.remaining, r.limit) for r in results] == expected
    assert [allowed for allowed, _, _ in expected] == [True] * 6 + [False, True, True, False, False]


def test_event_loop_keeps_ticking_while_redis_stalls(redis_server, redis_config):
    limiter = RateLimiter(10, 60, config=redis_config)
    limiter.hit("warm-up")  # the pool has its connection and the script is loaded

    async def main():
        ticks = 0
        stop = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        stall = threading.Thread(target=redis_server.command, args=("DEBUG", "SLEEP", "0.5"))
        stall.start()
        await asyncio.sleep(0.05)  # DEBUG SLEEP is running now
        started, ticks_before = time.monotonic(), ticks
        result = await limiter.ahit("k")
        waited, ticked = time.monotonic() - started, ticks - ticks_before
        stop.set()
        await task
        stall.join()
        return result, waited, ticked

    result, waited, ticked = asyncio.run(main())
    assert result.allowed and result.source == "storage"
    assert waited > 0.3, "the decision did wait for the stalled Redis"
    # A blocked loop ticks not once while it waits; a free one every 10 ms
    # or so (3 asks only for a tick per 100 ms of a loaded machine).
    assert ticked >= 3, f"the loop ticked only {ticked} times in {waited:.2f}s"


def test_cancelled_ahit_leaves_the_others_alone(redis_config):
    limiter = RateLimiter(10, 60, config=redis_config)

    async def main():
        errors = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        first = asyncio.ensure_future(limiter.ahit("k"))
        second = asyncio.ensure_future(limiter.ahit("k"))
        await asyncio.sleep(0)
        first.cancel()
        # One batch answers both: when the second has its answer, the
        # cancelled one was passed over (or it would have raised in the loop).
        result = await asyncio.wait_for(second, 30)  # bounded, should an answer be lost
        return result, first.cancelled(), errors

    result, cancelled, errors = asyncio.run(main())
    assert result.allowed and result.remaining == 8, result
    assert cancelled and errors == []


def test_a_loop_gone_with_a_batch_in_flight_leaves_the_next_loop_its_answers(redis_server, redis_config):
    limiter = RateLimiter(3, 3600, config=redis_config)
    limiter.hit("warm-up")  # the pool has its connection and the script is loaded
    stall = threading.Thread(target=redis_server.command, args=("DEBUG", "SLEEP", "0.5"))
    stall.start()
    time.sleep(0.05)  # DEBUG SLEEP is running now
    loop = asyncio.new_event_loop()
    call = loop.create_task(limiter.ahit("k"))
    loop.run_until_complete(asyncio.sleep(0.05))  # the batch went to Flux's thread
    assert not call.done(), "answered while Redis slept"
    call.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    del loop, call
    gc.collect()  # the loop's completion queue goes while its batch is in flight
    stall.join()

    async def main():
        return [await limiter.ahit("k") for _ in range(3)]

    # Redis counted the call of the loop that went: two left of three.
    assert [(r.allowed, r.remaining) for r in asyncio.run(main())] == [(True, 1), (True, 0), (False, 0)]


def test_loops_on_two_threads_each_get_their_own_answers(redis_config):
    limiters = {10: RateLimiter(10, 3600, config=redis_config), 20: RateLimiter(20, 3600, config=redis_config)}
    start = threading.Barrier(2)
    seen: dict[int, list] = {}

    def run(limit: int) -> None:
        async def main():
            start.wait()
            results = []
            for _ in range(5):
                results += await asyncio.gather(*(limiters[limit].ahit(f"k{limit}") for _ in range(10)))
            return results

        seen[limit] = asyncio.run(main())

    threads = [threading.Thread(target=run, args=(limit,)) for limit in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for limit, results in seen.items():
        assert len(results) == 50
        assert {r.limit for r in results} == {limit}, "an answer crossed loops"
        assert sum(r.allowed for r in results) == limit
        assert sorted((r.remaining for r in results if r.allowed), reverse=True) == list(range(limit - 1, -1, -1))
    assert sorted(seen) == [10, 20]


def test_ahit_fail_open_and_fail_closed(dead_redis_url, prefix, caplog):
    caplog.set_level(logging.WARNING, logger="flux")
    open_cfg = FluxConfig(redis_url=dead_redis_url, key_prefix=prefix, fail_silently=True, timeout_ms=100)
    closed_cfg = FluxConfig(redis_url=dead_redis_url, key_prefix=prefix, fail_silently=False, timeout_ms=100)

    limiter = RateLimiter(1, 60, config=open_cfg)

    async def main():
        opened = [await limiter.ahit("k")]
        # Three batches of four: failing open is said once per interval, not per batch.
        for _ in range(3):
            opened += await asyncio.gather(*(limiter.ahit(f"k{i}") for i in range(4)))
        with pytest.raises(flux.exceptions.ConnectionError) as raised:
            await RateLimiter(1, 60, config=closed_cfg).ahit("k")
        assert raised.value.code == flux._ffi.STORAGE
        # The message of the request's own failure, taken with its batch.
        assert str(raised.value).startswith("Redis is unreachable: "), str(raised.value)
        return opened

    results = asyncio.run(main())
    assert len(results) == 13
    assert all(r.allowed and r.source == "fail_open" for r in results)
    # The same store's sync path is held back by the same interval.
    assert limiter.hit("k").source == "fail_open"
    # Said by the store's own thread, through the library's log callback.
    said = [r for r in caplog.records if r.name == "flux"]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].getMessage().startswith(f"Redis at {dead_redis_url} failed: Redis is unreachable: ")
    assert said[0].threadName != threading.current_thread().name


def test_ahit_bad_cost_raises(config):
    limiter = RateLimiter(2, 60, config=config)

    async def main():
        await limiter.ahit("k", cost=3)

    with pytest.raises(LimitError) as raised:
        asyncio.run(main())
    assert str(raised.value) == "cost 3 can never be admitted: the limit holds at most 2 at once"
