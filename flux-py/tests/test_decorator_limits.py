"""@rate_limit's limit arguments outside any framework, on both stores:
rates, limits per call, deduct_when, shadow, exemptions, on_breach, and
the key callable's argument."""

from __future__ import annotations

import asyncio
import logging

import pytest

from flux import RateLimiter, RateLimitExceeded, _guard, rate_limit
from flux.exceptions import ConfigError, LimitError


def calls(func, n, *args):
    """How many of n calls were admitted."""
    admitted = 0
    for _ in range(n):
        try:
            func(*args)
            admitted += 1
        except RateLimitExceeded:
            pass
    return admitted


def test_rate_as_a_string_a_list_and_several_rates(config):
    @rate_limit(rate="3/minute")
    def one():
        return True

    @rate_limit(rate=["2/second", "3/minute"])
    def listed():
        return True

    @rate_limit(rate="2/second;3/minute")
    def several():
        return True

    assert calls(one, 5) == 3
    assert [q.requests for q in listed.rate_limiter.quotas] == [2, 3]
    assert calls(listed, 5) == 2  # the per-second rate refuses first
    assert calls(several, 5) == 2
    assert several.rate_limiter.quotas[0].policy_name == "2per1"


def test_the_first_argument_is_a_limit_name(prefix):
    from flux.config import FluxConfig

    cfg = FluxConfig(key_prefix=prefix, rate_limits={"api": {"rate": "1/minute"}})

    @rate_limit("api", config=cfg)
    def view():
        return True

    assert calls(view, 3) == 1
    with pytest.raises(TypeError, match="give the limit's name once"):
        rate_limit("api", name="api", config=cfg)


def test_a_rate_per_call_from_a_callable(config, prefix):
    plans = {"free": "2/minute", "paid": "5/minute"}

    @rate_limit(rate=lambda user: plans.get(user), key=lambda user: user)
    def work(user):
        return user

    assert calls(work, 10, "free") == 2
    assert calls(work, 10, "paid") == 5
    # None: not limited.
    assert calls(work, 50, "staff") == 50


def test_a_callable_answer_may_name_a_limit(prefix, config):
    config.rate_limits = {"tight": {"rate": "1/minute"}}

    @rate_limit(name=lambda kind: kind, key="k", config=config)
    def work(kind):
        return kind

    assert calls(work, 3, "tight") == 1
    assert calls(work, 3, "2/minute") == 2


def test_limiters_of_a_callable_are_made_once_per_answer(config, monkeypatch):
    made = []
    real = RateLimiter._with_params.__func__

    def counting(cls, *args):
        made.append(args[3] or args[4])
        return real(cls, *args)

    @rate_limit(rate=lambda plan: plan, key=lambda plan: "user")
    def work(plan):
        return plan

    monkeypatch.setattr(RateLimiter, "_with_params", classmethod(counting))
    for _ in range(20):
        work("100/minute")
        work("200/minute")
    assert len(made) == 2


def test_limiters_of_a_callable_are_bounded(config, monkeypatch, caplog):
    monkeypatch.setattr(_guard, "MAX_CHOICES", 3)

    @rate_limit(rate=lambda n: f"{n}/minute", key="k")
    def work(n):
        return n

    with caplog.at_level(logging.WARNING, logger="flux"):
        for n in range(1, 8):
            work(n)
    assert sum("answered more than 3 different limits" in r.message for r in caplog.records) == 1
    # State outlives the limiter let go: the same answer counts on.
    assert calls(work, 2, 1) == 0  # 1/minute was used by the first call


def test_a_bad_answer_names_the_callable_and_the_answer(config):
    @rate_limit(rate=lambda x: x, key="k")
    def work(x):
        return x

    with pytest.raises(LimitError, match=r"rate_limit of .*work: the callable answered 'ten/second': .*invalid rate"):
        work("ten/second")
    with pytest.raises(LimitError, match=r"must answer a rate .* got 5"):
        work(5)


def test_rate_and_name_callables_exclude_each_other(config):
    with pytest.raises(LimitError, match="give rate= or name=, not both"):
        rate_limit(rate=lambda r: "1/second", name="api")(lambda: None)


def test_deduct_when_keeps_only_matching_charges(config):
    outcomes = iter(["ok", "fail", "ok", "fail", "fail", "ok", "ok"])

    @rate_limit(rate="2/minute", deduct_when=lambda result: result == "fail")
    def login():
        return next(outcomes)

    # Successes give their charge back; the two failures use the limit up.
    assert [login() for _ in range(4)] == ["ok", "fail", "ok", "fail"]
    with pytest.raises(RateLimitExceeded):
        login()
    assert login.rate_limiter.peek(b"global").remaining == 0


def test_deduct_when_sees_the_exception_a_view_raised(config):
    @rate_limit(rate="2/minute", deduct_when=lambda r: isinstance(r, PermissionError))
    def login(ok):
        if not ok:
            raise PermissionError("wrong password")
        return "in"

    for _ in range(5):
        assert login(True) == "in"  # never charged
    for _ in range(2):
        with pytest.raises(PermissionError):
            login(False)
    with pytest.raises(RateLimitExceeded):
        login(True)


def test_deduct_when_in_async_code(config):
    @rate_limit(rate="1/minute", deduct_when=lambda r: r >= 400)
    async def handler(status):
        return status

    async def main():
        assert [await handler(200) for _ in range(5)] == [200] * 5
        assert await handler(401) == 401
        with pytest.raises(RateLimitExceeded):
            await handler(200)

    asyncio.run(main())


def test_shadow_admits_every_call_and_says_so(config):
    seen = []

    @rate_limit(rate="2/minute", shadow=True)
    def view():
        return True

    assert calls(view, 5) == 5
    limiter = view.rate_limiter
    for _ in range(3):
        seen.append(limiter.hit(b"global").source)
    assert seen == ["shadow"] * 3


def test_exempt_when_and_a_key_answering_none(config):
    @rate_limit(rate="1/minute", exempt_when=lambda user: user == "admin", key=lambda user: user)
    def view(user):
        return user

    @rate_limit(rate="1/minute", key=lambda user: None if user == "internal" else user)
    def other(user):
        return user

    assert calls(view, 5, "admin") == 5
    assert calls(view, 5, "ann") == 1
    assert calls(other, 5, "internal") == 5
    assert calls(other, 5, "ann") == 1


def test_a_key_callable_gets_the_first_positional_argument(config):
    """flux-limiter 0.1 passed the call's first argument outside frameworks."""

    class Call:
        def __init__(self, user_id):
            self.user_id = user_id

    @rate_limit(rate="1/minute", key=lambda r: f"user:{r.user_id}")
    def f(request):
        return request.user_id

    assert f(Call(1)) == 1
    assert f(Call(2)) == 2
    with pytest.raises(RateLimitExceeded) as refused:
        f(Call(1))
    assert refused.value.key == "user:1"


def test_on_breach_answers_refused_calls(config):
    @rate_limit(rate="1/minute", on_breach=lambda arg, result: f"busy, retry in {result.retry_after:.0f}s")
    def work(arg):
        return "done"

    @rate_limit(rate="1/minute", on_breach=lambda arg, result: None)
    def default(arg):
        return "done"

    assert work(1) == "done"
    assert work(1) == "busy, retry in 60s"
    assert default(1) == "done"
    with pytest.raises(RateLimitExceeded):
        default(1)


def test_bad_options_raise_at_decoration_time(config):
    with pytest.raises(LimitError, match="methods must be HTTP method names"):
        rate_limit(rate="1/second", methods=["P0ST"])(lambda: None)
    for option in ("exempt_when", "deduct_when", "on_breach"):
        with pytest.raises(TypeError, match=f"{option} must be a callable"):
            rate_limit(rate="1/second", **{option: "yes"})(lambda: None)
    with pytest.raises(TypeError, match="headers must be True or False"):
        rate_limit(rate="1/second", headers="no")(lambda: None)
    with pytest.raises(LimitError, match="invalid rate"):
        rate_limit(rate="10/fortnight")


def test_unknown_name_from_a_callable_is_a_rate_error(prefix):
    from flux.config import FluxConfig

    cfg = FluxConfig(key_prefix=prefix)

    @rate_limit(name=lambda r: "missing", key="k", config=cfg)
    def view(r):
        return r

    with pytest.raises(LimitError, match="answered 'missing'"):
        view(1)
    with pytest.raises(ConfigError, match='no limit named "missing"'):
        rate_limit(name="missing", config=cfg)
