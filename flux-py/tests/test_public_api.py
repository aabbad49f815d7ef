"""The names users of flux-limiter 0.1 import keep working."""

from __future__ import annotations

import builtins
import subprocess

import pytest

import flux
import flux.config
import flux.exceptions
from flux import RateLimiter, RateLimitExceeded, RateLimitResult, preload_scripts, rate_limit
from flux.config import FluxConfig, RateLimitPolicy, get_config, load_config, reload_config


def test_seed_names_exist():
    assert callable(rate_limit) and callable(preload_scripts)
    assert {p.value for p in RateLimitPolicy} == {
        "gcra", "token_bucket", "leaky_bucket", "fixed_window", "sliding_window"
    }
    assert callable(get_config) and callable(load_config) and callable(reload_config)
    fields = {f for f in FluxConfig.__dataclass_fields__}
    assert {
        "redis_host", "redis_port", "pool_size", "timeout_ms", "key_prefix", "log_file",
        "fail_silently", "console_logging", "policy", "rate_limit_defaults", "rate_limits",
        "jitter_enabled", "jitter_max_ms", "analytics_enabled", "analytics_port",
        "analytics_stream", "analytics_retention", "analytics_sample_rate", "redis_url", "storage",
    } <= fields


def test_exception_tree():
    e = flux.exceptions
    assert issubclass(e.ConfigError, e.FluxError) and issubclass(e.ConfigError, ValueError)
    assert issubclass(e.LimitError, e.FluxError) and issubclass(e.LimitError, ValueError)
    assert issubclass(e.RateLimitExceeded, e.FluxError)
    assert issubclass(e.ConnectionError, e.FluxError)
    assert issubclass(e.ConnectionError, builtins.ConnectionError)
    exc = RateLimitExceeded("user:1", 2.2)
    assert exc.key == "user:1" and exc.retry_after == 2.2
    assert exc.to_headers() == {"Retry-After": "3", "X-RateLimit-Remaining": "0"}


def test_results_are_results(memory_config):
    assert isinstance(RateLimiter(1, 1, config=memory_config).hit("k"), RateLimitResult)


def test_preload_scripts(memory_config, redis_config, redis_server):
    preload_scripts(memory_config)  # a no-op on memory
    redis_server.command("SCRIPT", "FLUSH")
    preload_scripts(redis_config)
    assert RateLimiter(1, 60, config=redis_config).hit("k").allowed


def _info(server, section: str) -> dict[str, str]:
    text = server.command("INFO", section).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def _evalsha_hashes(server) -> list[str]:
    """The script hashes of the EVALSHA calls in Redis's slow log, oldest first."""
    out = subprocess.run(
        ["redis-cli", "-p", str(server.port), "--no-raw", "SLOWLOG", "GET", "1000"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    words = [line.rsplit(") ", 1)[-1].strip().strip('"') for line in out]
    return [words[i + 1] for i in reversed(range(len(words) - 1)) if words[i].upper() == "EVALSHA"]


def test_preload_scripts_loads_the_script_of_every_configured_limit(redis_server, prefix):
    # A script per limit (its policy and rates are in the script), not per policy.
    cfg = FluxConfig(
        redis_url=redis_server.url, key_prefix=prefix, jitter_enabled=False,
        rate_limits={
            "login": {"requests": 5, "period": 60},
            "search": {"requests": 100, "period": 60, "policy": "sliding_window"},
            "upload": {"requests": 3, "period": 10, "policy": "token_bucket", "burst": 6},
            "api": {"rate": "10/second;1000/day", "policy": "fixed_window"},
        },
    )
    limiters = [RateLimiter(config=cfg)] + [RateLimiter.from_config(n, cfg) for n in cfg.rate_limits]
    preload_scripts(FluxConfig(key_prefix=prefix))  # a no-op on memory

    assert redis_server.command("SCRIPT", "FLUSH") == b"+OK\r\n"
    assert _info(redis_server, "memory")["number_of_cached_scripts"] == "0"
    preload_scripts(cfg)
    assert _info(redis_server, "memory")["number_of_cached_scripts"] == "5"

    # Each limit's first call finds its script loaded: no NOSCRIPT, nothing loaded.
    noscript = _info(redis_server, "errorstats").get("errorstat_NOSCRIPT", "count=0")
    redis_server.command("CONFIG", "SET", "slowlog-log-slower-than", "0")
    redis_server.command("SLOWLOG", "RESET")
    try:
        assert all(limiter.hit("k").allowed for limiter in limiters)
        hashes = _evalsha_hashes(redis_server)
    finally:
        redis_server.command("CONFIG", "SET", "slowlog-log-slower-than", "10000")
    assert len(set(hashes)) == 5, hashes
    exists = redis_server.command("SCRIPT", "EXISTS", *hashes).decode().split("\r\n")
    assert exists[1:-1] == [":1"] * len(hashes), exists
    assert _info(redis_server, "errorstats").get("errorstat_NOSCRIPT", "count=0") == noscript
    assert _info(redis_server, "memory")["number_of_cached_scripts"] == "5"


def test_closed_limiter_refuses_politely(memory_config):
    limiter = RateLimiter(1, 1, config=memory_config)
    limiter.close()
    with pytest.raises(flux.FluxError) as raised:
        limiter.hit("k")
    assert type(raised.value) is flux.FluxError
    assert str(raised.value) == "this limiter was closed: it decides nothing more; make a new one"
