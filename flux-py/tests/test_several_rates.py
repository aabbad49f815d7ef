"""Limits of several rates from Python: threads and processes on one caller
of "3/second;5/minute" are admitted exactly the bound, and a refusal charges
no rate; peek, refund and reset act on every rate at once."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from flux import RateLimiter
from flux.config import FluxConfig

RATE = "3/second;5/minute"
#: Long enough for the second's rate to let two more through (a sliding
#: window's fifth call fits at 1.67 s): the minute's 5 is then the bound.
HAMMER_SECONDS = 2.2


def hammer(limiter: RateLimiter, until: float) -> int:
    admitted = 0
    while time.monotonic() < until:
        admitted += limiter.hit("one caller").allowed
    return admitted


def value(redis_server, key: str) -> str:
    """A string key's value (the reply is RESP: ``$<length>``, then the value)."""
    return redis_server.command("GET", key).split(b"\r\n")[1].decode()


@pytest.mark.parametrize("policy", ["gcra", "sliding_window"])
def test_threads_on_one_caller_are_admitted_exactly_the_bound(policy, config):
    cfg = FluxConfig(**{**config.__dict__, "jitter_enabled": False, "local_cache_size": 0})
    limiter = RateLimiter(rate=RATE, policy=policy, config=cfg, scope=f"threads-{policy}")
    until = time.monotonic() + HAMMER_SECONDS
    counts: list[int] = []
    threads = [threading.Thread(target=lambda: counts.append(hammer(limiter, until))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 5
    assert limiter.peek("one caller").allowed is False


def child(cfg: FluxConfig, policy: str, until: float, out) -> None:
    limiter = RateLimiter(rate=RATE, policy=policy, config=cfg, scope=f"processes-{policy}")
    out.put(hammer(limiter, until))


def test_processes_on_one_caller_are_admitted_exactly_the_bound_and_refusals_charge_nothing(
    redis_server, redis_config
):
    cfg = FluxConfig(**{**redis_config.__dict__, "jitter_enabled": False, "local_cache_size": 0})
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    until = time.monotonic() + HAMMER_SECONDS + 3  # spawned interpreters take a while to start
    processes = [
        context.Process(target=child, args=(cfg, "fixed_window", until, out)) for _ in range(4)
    ]
    for process in processes:
        process.start()
    admitted = [out.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(30)
    assert sum(admitted) == 5, admitted
    # One caller, so one key per rate: "count end" per window.
    head = f"{cfg.key_prefix}processes-fixed_window:fixed_window"
    (second_key,) = redis_server.keys(f"{head}:3per1:*") or [None]
    (minute_key,) = redis_server.keys(f"{head}:5per60:*")
    minute = value(redis_server, minute_key)
    # The minute counted exactly the calls admitted: no refusal charged it.
    assert minute.split()[0] == "5", minute
    if second_key is not None:  # else its window has passed
        second = value(redis_server, second_key)
        assert int(second.split()[0]) <= 3, second


def test_peek_refund_and_reset_act_on_every_rate(config):
    limiter = RateLimiter(rate=RATE, config=config, scope="every-rate")
    assert [q.policy_name for q in limiter.quotas] == ["3per1", "5per60"]
    for _ in range(3):
        assert limiter.hit("k").allowed
    refused = limiter.hit("k")
    assert not refused.allowed and refused.quota.policy_name == "3per1"
    assert refused.to_headers()["RateLimit-Policy"] == '"3per1";q=3;w=1, "5per60";q=5;w=60'
    peeked = limiter.peek("k")
    assert (peeked.allowed, peeked.remaining) == (False, 0)
    # A refund gives back to both rates: one more call fits in each.
    after = limiter.refund("k")
    assert after.allowed and limiter.hit("k").allowed
    assert not limiter.hit("k").allowed
    assert limiter.reset("k") == 2
    assert [limiter.hit("k").allowed for _ in range(4)] == [True, True, True, False]
