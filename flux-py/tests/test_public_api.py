"""The names users of flux-limiter 0.1 import keep working."""

from __future__ import annotations

import builtins

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
