"""Scenarios that test_lifetime.py runs in a child interpreter: a limiter
closed, dropped or left behind while its calls are still in flight.

Run as ``python in_flight.py SCENARIO REDIS_PORT``. Each scenario prints
``ok`` when every answer was the right one; anything else (a wrong answer,
an exception, a crash, a hang) is the test's failure. test_lifetime.py runs
them with ``MALLOC_PERTURB_`` and glibc's per-thread cache off, so that
memory freed too early is overwritten at once rather than read back intact.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
import threading
import time

from flux import FluxError, RateLimiter
from flux.config import FluxConfig

PORT = int(sys.argv[2])
# Long enough that a call in flight is still waiting when the test acts,
# even on a loaded machine; shorter than any timeout below.
STALL_SECONDS = 2.0


def config(**overrides) -> FluxConfig:
    settings = dict(
        redis_url=f"redis://127.0.0.1:{PORT}/0",
        key_prefix=f"in-flight-{sys.argv[1]}:",
        jitter_enabled=False,
        timeout_ms=10_000,
    )
    settings.update(overrides)
    return FluxConfig(**settings)


def stall_redis(seconds: float) -> socket.socket:
    """Sends DEBUG SLEEP and waits until Redis is asleep; returns the socket
    (its reply comes when Redis wakes)."""
    sleeper = socket.create_connection(("127.0.0.1", PORT))
    arg = f"{seconds}"
    sleeper.sendall(f"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n${len(arg)}\r\n{arg}\r\n".encode())
    # Asleep once a PING on another connection goes unanswered.
    with socket.create_connection(("127.0.0.1", PORT)) as probe:
        probe.settimeout(0.1)
        while True:
            probe.sendall(b"*1\r\n$4\r\nPING\r\n")
            try:
                probe.recv(64)
            except TimeoutError:
                return sleeper
            time.sleep(0.01)


def churn() -> list[RateLimiter]:
    """Limiters of another limit, allocated where freed ones were."""
    return [RateLimiter(77, 60, config=config(), scope=f"churn{i}") for i in range(50)]


def in_native_call(thread: threading.Thread) -> None:
    """Returns once `thread` is inside the library's decision call (made
    from `RateLimiter.hit`'s own frame)."""
    while True:
        frame = sys._current_frames().get(thread.ident)
        if frame is not None and frame.f_code.co_name == "hit":
            break
        time.sleep(0.001)
    # It gives up the GIL inside the call: this sleep lets it get there.
    time.sleep(0.1)


def blocked_hit(limiter: RateLimiter, outcome: dict) -> threading.Thread:
    def run() -> None:
        started = time.monotonic()
        try:
            outcome["result"] = limiter.hit("blocked")
        except BaseException as exc:
            outcome["result"] = exc
        outcome["waited"] = time.monotonic() - started

    # A daemon, so that a hit that never returns fails the scenario, not the exit.
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    in_native_call(thread)
    return thread


def expect_decision(result, limit: int) -> None:
    assert not isinstance(result, BaseException), repr(result)
    assert (result.limit, result.source) == (limit, "storage"), repr(result)


def close_during_hit() -> None:
    limiter = RateLimiter(3, 60, config=config())
    limiter.hit("warm")
    sleeper = stall_redis(STALL_SECONDS)
    outcome: dict = {}
    thread = blocked_hit(limiter, outcome)
    limiter.close()
    thread.join(30)
    assert not thread.is_alive(), "the hit never returned"
    expect_decision(outcome["result"], 3)
    assert outcome["waited"] > 0.5, "the hit was not in flight when closed"
    sleeper.close()


def drop_during_hit() -> None:
    limiter = RateLimiter(3, 60, config=config())
    limiter.hit("warm")
    sleeper = stall_redis(STALL_SECONDS)
    outcome: dict = {}
    thread = blocked_hit(limiter, outcome)
    del limiter
    gc.collect()
    thread.join(30)
    assert not thread.is_alive(), "the hit never returned"
    expect_decision(outcome["result"], 3)
    sleeper.close()


async def queued_then(let_go, stalled: bool) -> None:
    """ahit calls queued for the next loop iteration (or, `stalled`, already
    sent to a stalled Redis) when `let_go` closes or drops their limiter."""
    limiter = RateLimiter(3, 60, config=config(), scope=f"queued-{let_go.__name__}-{stalled}")
    await limiter.ahit("warm")
    sleeper = stall_redis(STALL_SECONDS) if stalled else None
    calls = [asyncio.ensure_future(limiter.ahit(f"k{i}")) for i in range(8)]
    await asyncio.sleep(0)  # each ahit has queued its request
    if stalled:
        await asyncio.sleep(0)  # the batch has gone to the library's thread
    let_go(limiter)
    del limiter
    gc.collect()
    kept = churn()
    results = await asyncio.wait_for(asyncio.gather(*calls), 30)
    for result in results:
        expect_decision(result, 3)
    if sleeper is not None:
        sleeper.close()
    del kept


def close(limiter: RateLimiter) -> None:
    limiter.close()


def drop(limiter: RateLimiter) -> None:
    pass  # the caller's `del` was the last reference


def close_with_ahit_in_flight() -> None:
    for let_go in (close, drop):
        for stalled in (False, True):
            asyncio.run(queued_then(let_go, stalled))


def close_from_two_threads() -> None:
    for round_ in range(200):
        limiter = RateLimiter(3, 60, config=config(), scope=f"twice{round_ % 7}")
        limiter.hit("k")
        barrier = threading.Barrier(2)

        def close_it(barrier: threading.Barrier, limiter: RateLimiter) -> None:
            barrier.wait()
            limiter.close()

        threads = [threading.Thread(target=close_it, args=(barrier, limiter)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        try:
            limiter.hit("k")
        except FluxError as exc:
            assert "closed" in str(exc), exc
        else:
            raise AssertionError("a closed limiter decided")


class SlowFinalizer:
    """Keeps the interpreter finalizing for a while, so that a callback
    arriving then would find it finalizing."""

    def __del__(self) -> None:
        time.sleep(1.0)


def exit_with_ahit_in_flight() -> None:
    global slow_finalizer
    limiter = RateLimiter(3, 60, config=config(timeout_ms=200))
    limiter.hit("warm")
    stall_redis(1.0)

    async def leave() -> None:
        for i in range(4):
            asyncio.ensure_future(limiter.ahit(f"k{i}"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # sent: the answer comes after timeout_ms

    asyncio.run(leave())
    # Module globals go while the interpreter finalizes: this one takes a
    # second, which the library's thread answers within.
    slow_finalizer = SlowFinalizer()


if __name__ == "__main__":
    globals()[sys.argv[1]]()
    print("ok", flush=True)
