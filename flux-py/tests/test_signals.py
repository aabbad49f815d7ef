"""A signal, or a stop, that comes while a call waits for Redis's reply.

Every connection Flux makes has a receive timeout, and a socket read with a
timeout is not restarted after a signal handler runs: it fails with EINTR,
whatever SA_RESTART says. Hosts have handlers (Python's own, a server's
SIGCHLD or SIGWINCH, a profiler's SIGPROF), and the kernel hands a signal
to any thread that does not block it, Flux's included. Nor is it restarted
after the process was stopped and continued (SIGSTOP and SIGCONT, Ctrl-Z
and fg, a debugger or py-spy attaching), which no mask can hold off. Redis
answered such a call; it must be decided as answered, never failed open or
counted twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

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


STOPPED = Path(__file__).with_name("stopped.py")
# What the child may admit in a day: far fewer than the calls it makes while
# it is stopped and continued, so every outcome is exact.
LIMIT = 2000
STOPS = 250


def stopped_while_deciding(mode: str, config: FluxConfig, fail_silently: bool) -> dict:
    """Runs stopped.py deciding in ``mode`` while this process stops and
    continues it STOPS times, a few milliseconds apart; returns its outcomes."""
    child = subprocess.Popen(
        [
            sys.executable,
            str(STOPPED),
            mode,
            config.redis_url,
            config.key_prefix,
            str(LIMIT),
            "true" if fail_silently else "false",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "ready\n", child.stderr.read()[-2000:]
        for _ in range(STOPS):
            os.kill(child.pid, signal.SIGSTOP)
            time.sleep(0.001)
            os.kill(child.pid, signal.SIGCONT)
            time.sleep(0.005)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.wait()
    assert child.returncode == 0, err[-2000:]
    return json.loads(out)


def assert_decided_by_redis(outcomes: dict, config: FluxConfig) -> None:
    calls = outcomes["allowed"] + outcomes["refused"] + outcomes["fail_open"] + len(outcomes["errors"])
    summary = {**outcomes, "errors": outcomes["errors"][:3], "calls": calls}
    assert outcomes["errors"] == [] and outcomes["fail_open"] == 0, summary
    assert calls > LIMIT, summary
    assert (outcomes["allowed"], outcomes["refused"]) == (LIMIT, calls - LIMIT), summary
    read_back = RateLimiter(LIMIT, 86400, config=config, scope="stopped").peek("caller")
    assert (read_back.source, read_back.remaining) == ("storage", 0)


@pytest.mark.parametrize("fail_silently", [True, False])
def test_a_call_in_a_process_stopped_and_continued_is_decided_by_redis(redis_config, fail_silently):
    outcomes = stopped_while_deciding("hit", redis_config, fail_silently)
    assert_decided_by_redis(outcomes, redis_config)


def test_an_async_call_in_a_process_stopped_and_continued_is_decided_by_redis(redis_config):
    outcomes = stopped_while_deciding("ahit", redis_config, fail_silently=False)
    assert_decided_by_redis(outcomes, redis_config)
