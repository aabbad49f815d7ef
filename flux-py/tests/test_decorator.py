"""@rate_limit outside any framework, and its checks at decoration time."""

from __future__ import annotations

import asyncio
import time

import pytest

from flux import RateLimitExceeded, rate_limit
from flux.config import FluxConfig
from flux.exceptions import ConfigError


def test_plain_function_raises_when_refused(config):
    @rate_limit(requests=2, period=10)
    def work(x):
        return x * 2

    started = time.monotonic()
    assert work(1) == 2 and work(2) == 4
    with pytest.raises(RateLimitExceeded) as caught:
        work(3)
    assert 5 - (time.monotonic() - started) <= caught.value.retry_after <= 5
    assert caught.value.to_headers()["Retry-After"] == "5"


def test_async_function(config):
    @rate_limit(requests=1, period=10)
    async def work():
        return "done"

    async def main():
        assert await work() == "done"
        with pytest.raises(RateLimitExceeded):
            await work()

    asyncio.run(main())


def test_key_may_take_no_argument_or_be_a_string(config):
    current = {"user": "ann"}

    @rate_limit(requests=1, period=10, key=lambda: current["user"])
    def per_user():
        return True

    @rate_limit(requests=1, period=10, key="shared")
    def fixed():
        return True

    assert per_user()
    current["user"] = "ben"
    assert per_user()
    with pytest.raises(RateLimitExceeded):
        per_user()
    assert fixed()
    with pytest.raises(RateLimitExceeded):
        fixed()


def test_cost(config):
    @rate_limit(requests=10, period=60, cost=4)
    def heavy():
        return True

    assert heavy() and heavy()
    with pytest.raises(RateLimitExceeded):
        heavy()


def test_leaky_bucket_delay_is_waited(config):
    @rate_limit(requests=10, period=1, burst=1, policy="leaky_bucket", max_wait=1)
    def shaped():
        return time.monotonic()

    async_calls = []

    @rate_limit(requests=10, period=1, burst=1, policy="leaky_bucket", max_wait=1)
    async def shaped_async():
        async_calls.append(time.monotonic())

    started = time.monotonic()
    shaped()
    second = shaped()  # admitted 0.1 s after the first, whatever ran between
    assert second - started >= 0.095

    async def main():
        started = time.monotonic()
        await shaped_async()
        await shaped_async()
        return started

    started = asyncio.run(main())
    assert async_calls[1] - started >= 0.095


def test_two_views_with_the_same_numbers_have_separate_limits(config):
    @rate_limit(requests=1, period=10)
    def a():
        return "a"

    @rate_limit(requests=1, period=10)
    def b():
        return "b"

    assert a() == "a" and b() == "b"


def test_identical_stacked_limits_stay_two_limits(config):
    @rate_limit(requests=2, period=10)
    @rate_limit(requests=2, period=10)
    def twice():
        return True

    assert twice() and twice()
    with pytest.raises(RateLimitExceeded):
        twice()


def test_named_limit_is_shared_by_name(prefix):
    cfg = FluxConfig(key_prefix=prefix, rate_limits={"api": {"requests": 1, "period": 10}})

    @rate_limit("api", config=cfg)
    def one():
        return 1

    @rate_limit(name="api", config=cfg)
    def two():
        return 2

    assert one() == 1
    with pytest.raises(RateLimitExceeded):
        two()


def test_bare_decorator_uses_the_default_limit(config):
    @rate_limit
    def anything():
        return "ok"

    assert anything() == "ok"
    assert anything.rate_limiter.requests == 100


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"requests": 0, "period": 1}, "requests"),
        ({"requests": 1, "period": 0}, "period"),
        ({"requests": 1, "period": 1, "burst": 0}, "burst"),
        ({"requests": 1, "period": 1, "policy": "nope"}, "policy"),
        ({"requests": 5, "period": 1, "cost": 6}, "cost"),
        ({"requests": 5, "period": 1, "cost": 0}, "cost"),
        ({"requests": 5, "period": 1, "policy": "gcra", "max_wait": 2}, "max_wait"),
    ],
)
def test_bad_arguments_raise_at_decoration_time(kwargs, argument):
    def view():
        return "ok"

    with pytest.raises(ValueError) as caught:
        rate_limit(**kwargs)(view)
    assert argument in str(caught.value).split(" ")[0] or str(caught.value).startswith(argument), str(caught.value)


def test_unknown_name_raises_at_decoration_time(prefix):
    cfg = FluxConfig(key_prefix=prefix, rate_limits={"api": {"requests": 1, "period": 10}})
    with pytest.raises(ConfigError, match=r'no limit named "missing"; defined: "api"'):
        rate_limit(name="missing", config=cfg)
