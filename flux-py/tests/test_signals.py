"""A signal that arrives while a call waits for Redis's reply.

Every connection Flux makes has a receive timeout, and a socket read with a
timeout is not restarted after a signal handler runs: it fails with EINTR,
whatever SA_RESTART says. Hosts have handlers (Python's own, a server's
SIGCHLD or SIGWINCH, a profiler's SIGPROF), and the kernel hands a signal
to any thread that does not block it, Flux's included. Redis answered such
a call; it must be decided as answered, never failed open.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import threading

import pytest

from flux import RateLimiter
from flux.config import FluxConfig

CALLS = 1500


@pytest.fixture
def interrupted():
    """Python's handler for SIGUSR1 (installed without SA_RESTART) and a
    thread that sends it, to the thread given or to the process, until the
    test ends."""
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    stop = threading.Event()
    sent = []
    senders = []

    def start(thread_id: int | None) -> None:
        def send() -> None:
            while not stop.wait(0.0002):
                if thread_id is None:
                    os.kill(os.getpid(), signal.SIGUSR1)
                else:
                    signal.pthread_kill(thread_id, signal.SIGUSR1)
                sent.append(1)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        senders.append(sender)

    yield start
    stop.set()
    for sender in senders:  # none may send once the default action is back
        sender.join()
    signal.signal(signal.SIGUSR1, previous)
    assert len(sent) > 10, "signals were sent all along"


def _limiter(redis_config: FluxConfig) -> RateLimiter:
    # fail_silently: a call the signal broke would be admitted as fail_open.
    return RateLimiter(10 * CALLS, 3600, config=dataclasses.replace(redis_config, fail_silently=True))


def test_a_call_interrupted_by_a_signal_is_decided_by_redis(redis_config, interrupted):
    limiter = _limiter(redis_config)
    interrupted(threading.get_ident())
    sources = [limiter.hit("caller").source for _ in range(CALLS)]
    assert sources.count("storage") == CALLS, {s: sources.count(s) for s in set(sources)}
    assert limiter.peek("caller").remaining == 10 * CALLS - CALLS - 1


def test_an_async_call_interrupted_by_a_signal_is_decided_by_redis(redis_config, interrupted):
    limiter = _limiter(redis_config)
    interrupted(None)

    async def calls() -> list[str]:
        results = []
        for _ in range(CALLS // 50):
            batch = await asyncio.gather(*(limiter.ahit("caller") for _ in range(50)))
            results.extend(r.source for r in batch)
        return results

    sources = asyncio.run(calls())
    assert sources.count("storage") == CALLS, {s: sources.count(s) for s in set(sources)}
    assert limiter.peek("caller").remaining == 10 * CALLS - CALLS - 1
