"""RateLimiter on both stores: each policy's numbers, keys, costs, names, errors."""

from __future__ import annotations

import asyncio
import builtins
import logging
import time

import pytest

import flux.exceptions
from flux import RateLimiter, RateLimitExceeded
from flux.config import FluxConfig
from flux.exceptions import ConfigError, LimitError


def timed(calls):
    """The results of ``calls()`` and the seconds they took: durations a
    decision reports are exact less at most that time (the machine may stall
    any call for a while; no fixed margin is safe)."""
    started = time.monotonic()
    results = calls()
    return results, time.monotonic() - started


def test_gcra_admits_the_burst_then_one_call_per_interval(config):
    limiter = RateLimiter(3, 60, config=config)
    results, took = timed(lambda: [limiter.hit("client") for _ in range(4)])
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results] == [2, 1, 0, 0]
    assert {r.limit for r in results} == {3}
    assert 20 - took <= results[3].retry_after <= 20  # one emission interval, 60 / 3
    assert 60 - took <= results[2].reset_after <= 60
    assert results[0].retry_after == 0 and results[0].delay == 0
    assert results[0].source == "storage"


def test_token_bucket_admits_what_gcra_admits(config):
    limiter = RateLimiter(2, 4, policy="token_bucket", config=config)
    assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]
    time.sleep(2.1)  # one token (2 s) comes back, not two
    assert [limiter.hit("k").allowed for _ in range(2)] == [True, False]


def test_burst_above_requests(config):
    limiter = RateLimiter(1, 60, burst=3, config=config)
    results, took = timed(lambda: [limiter.hit("k") for _ in range(4)])
    assert [r.allowed for r in results] == [True, True, True, False]
    assert results[0].limit == 3
    assert 60 - took <= results[3].retry_after <= 60


def test_leaky_bucket_with_max_wait_delays_instead_of_refusing(config):
    # One call per 5 s: the calls below take far less than that.
    limiter = RateLimiter(2, 10, policy="leaky_bucket", max_wait=10, config=config)
    results, took = timed(lambda: [limiter.hit("k") for _ in range(5)])
    assert [r.allowed for r in results] == [True, True, True, True, False]
    assert results[0].delay == 0 and results[1].delay == 0
    # Less whatever time passed between the calls.
    assert 5 - took <= results[2].delay <= 5
    assert 10 - took <= results[3].delay <= 10
    assert 5 - took <= results[4].retry_after <= 5


def test_leaky_bucket_without_max_wait_refuses(config):
    limiter = RateLimiter(2, 1, policy="leaky_bucket", config=config)
    assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]


def test_fixed_window_counts_per_window(config):
    limiter = RateLimiter(2, 60, policy="fixed_window", config=config)
    results, took = timed(lambda: [limiter.hit("k") for _ in range(3)])
    assert [r.allowed for r in results] == [True, True, False]
    assert [r.remaining for r in results] == [1, 0, 0]
    assert 60 - took <= results[2].retry_after <= 60
    assert results[2].retry_after == pytest.approx(results[2].reset_after)


def test_sliding_window_counts_requests_in_any_window(config):
    limiter = RateLimiter(2, 60, policy="sliding_window", config=config)
    assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]


def test_high_rates_are_exact(config):
    # 2,000 per second: the original's whole-millisecond interval was 0 here,
    # and the limit vanished. Admitted: the burst, plus one per 0.5 ms elapsed.
    limiter = RateLimiter(2000, 1, config=config)
    started = time.monotonic()
    admitted = sum(limiter.hit("k").allowed for _ in range(4000))
    elapsed = time.monotonic() - started
    assert 2000 <= admitted <= 2000 + elapsed / 0.0005 + 1


def test_each_key_has_its_own_limit_and_bytes_equal_str(config):
    limiter = RateLimiter(1, 60, config=config)
    assert limiter.hit("alice").allowed
    assert not limiter.hit(b"alice").allowed
    assert limiter.hit("bob").allowed
    assert limiter.hit("ünïcode").allowed and not limiter.hit("ünïcode".encode()).allowed


def test_long_keys_are_read_whole(config):
    # A key's bytes and length reach the library whole on the call's fast
    # path too: keys that differ only in their last byte, or only in their
    # length, are limits of their own.
    limiter = RateLimiter(1, 60, config=config)
    long = "k" * 100_000
    assert limiter.hit(long + "a").allowed
    assert not limiter.hit(long + "a").allowed
    assert limiter.hit(long + "b").allowed
    assert limiter.hit(long).allowed
    assert limiter.hit(long.encode() + b"c").allowed
    assert not limiter.hit(long.encode() + b"c").allowed


def test_endpoint_gives_the_key_a_separate_limit(config):
    limiter = RateLimiter(1, 60, config=config)
    assert limiter.hit("k").allowed
    assert limiter.hit("k", endpoint="/a").allowed
    assert not limiter.hit("k", endpoint="/a").allowed
    assert limiter.hit("k", endpoint="/b").allowed


def test_cost(config):
    limiter = RateLimiter(3, 60, config=config)
    result = limiter.hit("k", cost=2)
    assert result.allowed and result.remaining == 1
    assert not limiter.hit("k", cost=2).allowed
    assert limiter.hit("k", cost=1).allowed
    with pytest.raises(ValueError, match="cost 4 can never be admitted"):
        limiter.hit("other", cost=4)
    for bad in (0, -1):
        with pytest.raises(LimitError) as raised:
            limiter.hit("other", cost=bad)
        assert str(raised.value) == f"cost must be at least 1, got {bad}"


def test_limiters_with_the_same_limit_share_it_unless_scoped(config):
    a = RateLimiter(1, 60, config=config)
    b = RateLimiter(1, 60, config=config)
    c = RateLimiter(1, 60, config=config, scope="elsewhere")
    assert a.hit("k").allowed
    assert not b.hit("k").allowed
    assert c.hit("k").allowed


def test_is_allowed_check_require(config):
    limiter = RateLimiter(1, 60, config=config)
    assert limiter.is_allowed("k") is True
    assert limiter.check("k").allowed is False
    with pytest.raises(RateLimitExceeded) as caught:
        limiter.require("k")
    assert caught.value.key == "k"
    assert 59 < caught.value.retry_after <= 60
    assert caught.value.to_headers()["Retry-After"] == "60"


def test_named_limits_come_from_the_config(prefix):
    cfg = FluxConfig(
        key_prefix=prefix,
        rate_limits={"login": {"requests": 2, "period": 10, "policy": "fixed_window"}},
    )
    limiter = RateLimiter.from_config("login", cfg)
    assert (limiter.policy, limiter.requests, limiter.period) == ("fixed_window", 2, 10)
    overridden = RateLimiter(5, name="login", config=cfg)
    assert (overridden.policy, overridden.requests, overridden.period) == ("fixed_window", 5, 10)
    with pytest.raises(ConfigError, match=r'rate_limits\.nope.*"login"'):
        RateLimiter.from_config("nope", cfg)


def test_defaults_come_from_rate_limit(prefix):
    cfg = FluxConfig(key_prefix=prefix)
    limiter = RateLimiter(config=cfg)
    assert (limiter.policy, limiter.requests, limiter.period, limiter.burst) == ("gcra", 100, 60, 100)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"requests": 0, "period": 1}, "requests"),
        ({"requests": -3, "period": 1}, "requests"),
        ({"requests": 1, "period": 0}, "period"),
        ({"requests": 1, "period": -1}, "period"),
        ({"requests": 1, "period": 1, "burst": 0}, "burst"),
        ({"requests": 1, "period": 1, "policy": "bogus"}, "policy"),
        ({"requests": 1, "period": 1, "max_wait": 1}, "max_wait"),
        ({"requests": 1.5, "period": 1}, "requests"),
        ({"requests": "10", "period": 1}, "requests"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument, memory_config):
    with pytest.raises(ValueError) as caught:
        RateLimiter(config=memory_config, **kwargs)
    assert isinstance(caught.value, LimitError)
    assert str(caught.value).startswith(argument), str(caught.value)


def test_headers_have_exact_values(memory_config):
    limiter = RateLimiter(2, 10, config=memory_config)
    first = limiter.hit("k")
    assert first.to_headers() == {
        "X-RateLimit-Limit": "2",
        "X-RateLimit-Remaining": "1",
        "X-RateLimit-Reset": "5",
        "RateLimit-Policy": '"default";q=2;w=10',
        "RateLimit": '"default";r=1;t=5',
    }
    limiter.hit("k")
    refused = limiter.hit("k")
    assert refused.to_headers() == {
        "X-RateLimit-Limit": "2",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "10",
        "RateLimit-Policy": '"default";q=2;w=10',
        "RateLimit": '"default";r=0;t=5',
        "Retry-After": "5",
    }


def test_named_limit_headers_carry_the_name(prefix):
    cfg = FluxConfig(key_prefix=prefix, jitter_enabled=False, rate_limits={"api": {"requests": 5, "period": 1}})
    headers = RateLimiter.from_config("api", cfg).hit("k").to_headers()
    assert headers["RateLimit-Policy"] == '"api";q=5;w=1'
    assert headers["RateLimit"] == '"api";r=4;t=1'


@pytest.fixture(params=["memory", "redis"])
def jittered(request, prefix):
    """A configuration with jitter of up to 500 ms, on each store."""
    redis_url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    return FluxConfig(redis_url=redis_url, key_prefix=prefix, jitter_enabled=True, jitter_max_ms=500)


# 50 uniform draws from 0..=500 ms all within 250 ms of each other: about
# 50 * 2**-49, never. Without jitter the values below differ by the time a
# call takes to reach the store, milliseconds, far from 250 ms however
# loaded the machine.
SPREAD = 0.25


def test_jitter_spreads_the_retry_after_of_refusals_only(jittered):
    limiter = RateLimiter(1, 10, config=jittered)
    assert limiter.hit("k").retry_after == 0
    started = time.monotonic()
    waits = []
    for _ in range(50):
        asked = time.monotonic() - started
        result = limiter.hit("k")
        assert not result.allowed
        # What the call would have waited had it been asked at `started`.
        waits.append(result.retry_after + asked)
    # Each is 10 s and its jitter, less the time the call took to decide.
    assert all(9 < w <= 10.6 for w in waits), waits
    assert max(waits) - min(waits) > SPREAD, waits


def test_jitter_spreads_the_refusals_of_a_batch(jittered):
    limiter = RateLimiter(1, 10, config=jittered)

    async def main():
        first = await limiter.ahit("k")
        return first, await asyncio.gather(*(limiter.ahit("k") for _ in range(50)))

    first, refused = asyncio.run(main())
    assert first.allowed and first.retry_after == 0
    assert not any(r.allowed for r in refused)
    waits = [r.retry_after for r in refused]
    assert all(9 < w <= 10.5 for w in waits), waits
    assert max(waits) - min(waits) > SPREAD, waits


def test_redis_keys_hold_no_raw_identity(redis_server, redis_config, prefix):
    RateLimiter(5, 60, config=redis_config, scope="api").hit("10.1.2.3")
    keys = redis_server.keys(prefix + "*")
    assert len(keys) == 1
    assert keys[0].startswith(prefix + "api:gcra:")
    assert "10.1.2.3" not in keys[0]


def test_memory_and_redis_agree(memory_config, redis_config):
    for policy in ("gcra", "token_bucket", "leaky_bucket", "fixed_window", "sliding_window"):
        on_memory = RateLimiter(3, 60, policy=policy, config=memory_config)
        on_redis = RateLimiter(3, 60, policy=policy, config=redis_config)
        a = [on_memory.hit("k") for _ in range(5)]
        b = [on_redis.hit("k") for _ in range(5)]
        assert [r.allowed for r in a] == [r.allowed for r in b], policy
        assert [r.remaining for r in a] == [r.remaining for r in b], policy
        assert [round(r.retry_after) for r in a] == [round(r.retry_after) for r in b], policy


def test_fail_open_admits_and_logs_once(dead_redis_url, prefix, caplog):
    cfg = FluxConfig(redis_url=dead_redis_url, key_prefix=prefix, fail_silently=True, timeout_ms=100)
    limiter = RateLimiter(1, 60, config=cfg)
    caplog.set_level(logging.WARNING, logger="flux")
    started = time.monotonic()
    results = [limiter.hit("k") for _ in range(3)]
    assert time.monotonic() - started < 3 * 0.5
    assert all(r.allowed and r.source == "fail_open" for r in results)
    warnings = [r for r in caplog.records if "fail_silently = true" in r.getMessage()]
    assert len(warnings) == 1
    said = warnings[0].getMessage()
    assert said.startswith(f"Redis at {dead_redis_url} failed: Redis is unreachable: "), said


def test_fail_closed_raises_connection_error(dead_redis_url, prefix):
    cfg = FluxConfig(redis_url=dead_redis_url, key_prefix=prefix, fail_silently=False, timeout_ms=100)
    limiter = RateLimiter(1, 60, config=cfg)
    started = time.monotonic()
    with pytest.raises(flux.exceptions.ConnectionError) as caught:
        limiter.hit("k")
    assert time.monotonic() - started < 1.0
    assert isinstance(caught.value, builtins.ConnectionError)


def test_result_is_readable(memory_config):
    result = RateLimiter(1, 1, config=memory_config).hit("k")
    assert bool(result) is True
    assert "allowed=True" in repr(result) and "source='storage'" in repr(result)


# --- numbers and names that cross into Rust -----------------------------------


@pytest.mark.parametrize("cost", [2**64, 2**64 + 1, 2**65 + 3, 10**30])
def test_a_cost_too_large_for_the_library_is_refused_not_wrapped(cost, config):
    limiter = RateLimiter(3, 60, config=config)
    message = f"cost must be a whole number from 1 to 2**64 - 1, got {cost}"
    with pytest.raises(LimitError) as caught:
        limiter.hit("k", cost=cost)
    assert str(caught.value) == message
    for refuse in (limiter.check_cost, lambda c: limiter.require("k", endpoint="e", cost=c)):
        with pytest.raises(LimitError) as caught:
            refuse(cost)
        assert str(caught.value) == message
    assert limiter.hit("k").remaining == 2, "nothing was charged"


def test_costs_the_limit_can_never_admit_are_refused_with_the_cores_message(config):
    limiter = RateLimiter(3, 60, config=config)
    for cost in (4, 2**64 - 1):
        with pytest.raises(LimitError) as caught:
            limiter.hit("k", cost=cost)
        assert str(caught.value) == f"cost {cost} can never be admitted: the limit holds at most 3 at once"
    with pytest.raises(LimitError) as caught:
        limiter.hit("k", cost=0)
    assert str(caught.value).startswith("cost must be at least 1"), caught.value
    assert limiter.hit("k").remaining == 2, "nothing was charged"


@pytest.mark.parametrize("cost", [1.0, True, 2.0, "1"])
def test_a_cost_that_is_not_a_whole_number_is_refused(cost, config):
    limiter = RateLimiter(3, 60, config=config)
    with pytest.raises(LimitError) as caught:
        limiter.hit("k", cost=cost)
    assert str(caught.value) == f"cost must be a whole number of at least 1, got {cost!r}"
    with pytest.raises(LimitError, match="whole number"):
        asyncio.run(limiter.ahit("k", cost=cost))
    assert limiter.hit("k").remaining == 2, "nothing was charged"


def test_a_cost_too_large_is_refused_by_ahit_too(config):
    limiter = RateLimiter(3, 60, config=config)
    with pytest.raises(LimitError) as caught:
        asyncio.run(limiter.ahit("k", cost=4))
    assert str(caught.value) == "cost 4 can never be admitted: the limit holds at most 3 at once"
    with pytest.raises(LimitError, match="from 1 to 2\\*\\*64 - 1"):
        asyncio.run(limiter.ahit("k", cost=2**64 + 1))


@pytest.mark.parametrize("argument", ["period", "max_wait"])
def test_seconds_too_large_for_a_double_name_the_argument(argument, memory_config):
    kwargs = {"requests": 1, "period": 1, "policy": "leaky_bucket", argument: 10**400}
    with pytest.raises(LimitError) as caught:
        RateLimiter(config=memory_config, **kwargs)
    assert str(caught.value).startswith(f"{argument} must be"), caught.value


@pytest.mark.parametrize("argument", ["requests", "burst"])
def test_whole_numbers_too_large_say_what_is_allowed(argument, memory_config):
    kwargs = {"requests": 1, "period": 1, argument: 2**64 + 1}
    with pytest.raises(LimitError) as caught:
        RateLimiter(config=memory_config, **kwargs)
    assert str(caught.value) == f"{argument} must be a whole number from 1 to 2**63 - 1, got {2**64 + 1}"


@pytest.mark.parametrize("argument", ["scope", "name"])
def test_a_nul_in_a_scope_or_name_is_refused(argument, memory_config):
    with pytest.raises(LimitError) as caught:
        RateLimiter(1, 60, config=memory_config, **{argument: "api\0v2"})
    assert str(caught.value) == f"{argument} must not contain a NUL character, got 'api\\x00v2'"


def test_scopes_are_exact_for_any_period(memory_config):
    day, longer = RateLimiter(1, 1_000_000, config=memory_config), RateLimiter(1, 1_000_001, config=memory_config)
    assert day.scope != longer.scope
    assert day.hit("k").allowed and longer.hit("k").allowed
    assert RateLimiter(5, 60, config=memory_config).scope == "default@5/60s"
    assert RateLimiter(5, 0.5, config=memory_config).scope == "default@5/0.5s"
    assert RateLimiter(5, 60, burst=9, config=memory_config).scope == "default@5/60s+b9"
    assert RateLimiter(rate="3/second;5/minute", config=memory_config).scope == "default@3/1s;5/60s"
    a = RateLimiter(1, 2, policy="leaky_bucket", max_wait=1_000_000, config=memory_config)
    b = RateLimiter(1, 2, policy="leaky_bucket", max_wait=1_000_001, config=memory_config)
    assert a.scope != b.scope


def test_a_refusal_carries_the_identity_but_never_says_it(config):
    limiter = RateLimiter(1, 60, config=config)
    limiter.hit("203.0.113.9")
    with pytest.raises(RateLimitExceeded) as caught:
        limiter.require("203.0.113.9")
    assert caught.value.key == "203.0.113.9"  # flux-limiter 0.1's attribute
    assert "203.0.113.9" not in str(caught.value) and "203.0.113.9" not in repr(caught.value)
    assert str(caught.value).startswith("Rate limit exceeded; retry after 6")
def test_a_nul_in_an_endpoint_does_not_merge_endpoints(config):
    limiter = RateLimiter(1, 60, config=config)
    assert limiter.hit("k", endpoint="a\0b").allowed
    assert limiter.hit("k", endpoint="a\0c").allowed
    assert limiter.hit("k", endpoint="a").allowed
    assert not limiter.hit("k", endpoint="a\0b").allowed




def test_refusals_on_redis_are_answered_from_the_local_cache_until_retry_after(redis_config):
    limiter = RateLimiter(1, 60, policy="fixed_window", config=redis_config)
    assert limiter.hit("k").allowed
    refused = limiter.hit("k")
    assert (refused.allowed, refused.source) == (False, "storage")
    cached = limiter.hit("k")
    assert (cached.allowed, cached.source) == (False, "local_cache")
    # Counted down from the store's answer.
    assert 0 < cached.retry_after <= refused.retry_after
    assert (cached.limit, cached.remaining) == (refused.limit, refused.remaining)


def test_a_local_cache_size_of_0_asks_redis_every_time(redis_config):
    redis_config.local_cache_size = 0
    limiter = RateLimiter(1, 60, policy="fixed_window", config=redis_config)
    limiter.hit("k")
    assert {limiter.hit("k").source for _ in range(5)} == {"storage"}
