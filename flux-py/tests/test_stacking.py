"""Stacked @rate_limit decorators: independent limits, and a refusal by an
inner one leaves the outer ones uncharged (check all, then charge), counted
exactly on both stores, sync, async and from many threads.

``peek`` answers what a call would be told now: after n charges of a limit
of N, ``remaining`` is N - n - 1 (the call peeked at is counted)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from flux import RateLimitExceeded, rate_limit


def admitted(func, n, *args):
    count = 0
    for _ in range(n):
        try:
            func(*args)
            count += 1
        except RateLimitExceeded:
            pass
    return count


def test_an_inner_refusal_gives_the_outer_charge_back(config):
    @rate_limit(rate="5/minute", key="k")
    @rate_limit(rate="2/minute", key="k")
    def view():
        return "ok"

    outer, inner = view.rate_limiter, view.__wrapped__.rate_limiter
    assert admitted(view, 10) == 2
    assert inner.peek("k").remaining == 0
    # Only the two calls that ran are charged to the outer limit.
    assert outer.peek("k").remaining == 5 - 2 - 1


def test_three_limits_deep(config):
    @rate_limit(rate="10/minute", key="k")
    @rate_limit(rate="6/minute", key="k")
    @rate_limit(rate="3/minute", key="k")
    def view():
        return "ok"

    top, middle, bottom = view.rate_limiter, view.__wrapped__.rate_limiter, view.__wrapped__.__wrapped__.rate_limiter
    assert admitted(view, 8) == 3
    assert [lim.peek("k").remaining for lim in (top, middle, bottom)] == [10 - 3 - 1, 6 - 3 - 1, 0]


def test_an_outer_refusal_never_reaches_the_inner_limit(config):
    @rate_limit(rate="2/minute", key="k")
    @rate_limit(rate="5/minute", key="k")
    def view():
        return "ok"

    assert admitted(view, 6) == 2
    assert view.__wrapped__.rate_limiter.peek("k").remaining == 5 - 2 - 1


def test_async_stacked_limits(config):
    @rate_limit(rate="5/minute", key="k")
    @rate_limit(rate="2/minute", key="k")
    async def view():
        return "ok"

    async def main():
        count = 0
        for _ in range(10):
            try:
                await view()
                count += 1
            except RateLimitExceeded:
                pass
        return count

    assert asyncio.run(main()) == 2
    assert view.rate_limiter.peek("k").remaining == 5 - 2 - 1
    assert view.__wrapped__.rate_limiter.peek("k").remaining == 0


def test_concurrent_calls_charge_the_outer_limit_only_for_what_ran(config):
    ran = []

    @rate_limit(rate="100/minute", key="k")
    @rate_limit(rate="7/minute", key="k")
    def view():
        ran.append(1)

    threads, per_thread = 8, 6
    barrier = threading.Barrier(threads)
    refused = []

    def worker():
        barrier.wait()
        for _ in range(per_thread):
            try:
                view()
            except RateLimitExceeded:
                refused.append(1)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert len(ran) == 7
    assert len(refused) == threads * per_thread - 7
    assert view.rate_limiter.peek("k").remaining == 100 - 7 - 1


def test_an_inner_refusal_with_deduct_when_outside_gives_back_once(config):
    @rate_limit(rate="5/minute", key="k", deduct_when=lambda r: r == "fail")
    @rate_limit(rate="1/minute", key="k")
    def view():
        return "ok"

    assert view() == "ok"  # admitted by both; the outer gives its charge back (not a failure)
    with pytest.raises(RateLimitExceeded):
        view()  # the inner refuses; the outer gives back once
    assert view.rate_limiter.peek("k").remaining == 5 - 0 - 1
