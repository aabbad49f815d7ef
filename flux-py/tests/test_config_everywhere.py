"""Every key of flux.toml reaches the limiter, whichever way it travels.

Two files: one with every key flux-limiter 0.1 documented (the values of its
complete example), and what ``flux init`` writes. For each, the file as
tomllib reads it is the truth, and every key is compared with what Python's
FluxConfig holds, what the C ABI hands out (``flux_config_to_json``, which
is Rust's serializer), and what native limiters built from it apply: once
from the handle the file was loaded into, once from the same FluxConfig sent
back to Rust as data.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from flux import RateLimiter, _ffi
from flux.config import load_config

SEED_FILE = Path(__file__).parents[2] / "flux-core" / "tests" / "data" / "flux-limiter-0.1.toml"

#: Where each key of flux.toml lives in a FluxConfig.
PYTHON_FIELD = {
    ("redis", "url"): "redis_url",
    ("redis", "host"): "redis_host",
    ("redis", "port"): "redis_port",
    ("redis", "db"): "redis_db",
    ("redis", "username"): "redis_username",
    ("redis", "password"): "redis_password",
    ("redis", "pool_size"): "pool_size",
    ("redis", "timeout_ms"): "timeout_ms",
    ("redis", "cluster"): "redis_cluster",
    ("redis", "sentinel"): "redis_sentinel",
    ("redis", "master_name"): "redis_master_name",
    ("redis", "sentinel_password"): "redis_sentinel_password",
    ("redis", "sentinel_username"): "redis_sentinel_username",
    **{("flux", key): key for key in (
        "storage", "key_prefix", "log_file", "fail_silently", "console_logging",
        "jitter_enabled", "jitter_max_ms", "ipv6_prefix", "local_cache_size",
    )},
    **{("analytics", key): f"analytics_{key}" for key in (
        "enabled", "host", "port", "stream", "retention", "sample_rate",
    )},
}


def init_file(tmp_path: Path) -> Path:
    path = tmp_path / "flux.toml"
    subprocess.run([sys.executable, "-m", "flux.cli", "init", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(params=["flux-limiter-0.1", "flux init"])
def path(request, tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("FLUX_REDIS_URL", raising=False)
    return SEED_FILE if request.param == "flux-limiter-0.1" else init_file(tmp_path)


def limits_of(written: dict) -> dict[str | None, dict]:
    """Each limit as written, the named ones over ``[rate_limit]`` (what
    they leave out they take from it; flux.toml's rule for these keys)."""
    default = written.get("rate_limit", {})
    limits: dict[str | None, dict] = {None: default}
    for name, table in written.get("rate_limits", {}).items():
        limits[name] = {**default, **table}
    return limits


def test_every_key_reads_the_same_in_python_and_through_the_c_abi(path):
    written = tomllib.loads(path.read_text())
    cfg = load_config(path)
    native = json.loads(_ffi.Config.from_file(path).to_json())
    for section in ("redis", "flux", "analytics"):
        for key, value in written.get(section, {}).items():
            assert native[section][key] == value, (section, key)
            assert getattr(cfg, PYTHON_FIELD[section, key]) == value, (section, key)
    for name, limit in limits_of(written).items():
        seen = native["rate_limit"] if name is None else native["rate_limits"][name]
        python = dataclasses.asdict(cfg.rate_limit_defaults) if name is None else cfg.rate_limits[name]
        for key, value in limit.items():
            assert seen[key] == value, (name, key)
            if key == "policy" and name is None:
                assert cfg.policy == value
            elif key in python or value not in (None, 0, False):
                assert python[key] == value, (name, key)


def test_every_limit_reaches_its_limiter_from_the_file_and_from_code(path, prefix):
    written = tomllib.loads(path.read_text())
    loaded = load_config(path)
    # The same data, sent back to Rust from Python (memory store, no metrics
    # server and no log file, so that building limiters leaves nothing behind).
    in_code = dataclasses.replace(
        loaded, storage="memory", analytics_enabled=False, key_prefix=prefix, log_file=None
    )
    configs = [in_code] if loaded.uses_redis or loaded.analytics_enabled else [loaded, in_code]
    for cfg in configs:
        for name, limit in limits_of(written).items():
            quota = RateLimiter(name=name, config=cfg).quota
            assert quota.policy == limit.get("policy", "gcra"), name
            assert quota.requests == limit["requests"], name
            assert quota.period == limit["period"], name
            assert quota.burst == limit.get("burst", limit["requests"]), name
            assert quota.max_wait == limit.get("max_wait", 0), name


def test_max_wait_of_the_default_limit_delays_a_call_instead_of_refusing_it(tmp_path, prefix):
    # Two per 10 s with 6 s of wait allowed: the third call at once is
    # admitted, to run one emission interval (5 s) later.
    path = tmp_path / "flux.toml"
    path.write_text(
        f'[flux]\nkey_prefix = "{prefix}"\njitter_enabled = false\n'
        '[rate_limit]\npolicy = "leaky_bucket"\nrequests = 2\nperiod = 10\nmax_wait = 6\n'
    )
    for cfg in (load_config(path), dataclasses.replace(load_config(path), key_prefix=prefix + "code:")):
        limiter = RateLimiter(config=cfg)
        assert limiter.max_wait == 6
        first, second, third = (limiter.hit("k") for _ in range(3))
        assert first.allowed and second.allowed and third.allowed
        assert 4.9 < third.delay <= 5.0, third
        assert not limiter.hit("k").allowed  # 10 s of queue is beyond 6
