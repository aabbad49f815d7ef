"""flux.toml through the Rust schema: loading, errors, FluxConfig in code."""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import quote, unquote

import pytest

import flux.config
from flux import RateLimiter, _ffi
from flux.config import FluxConfig, RateLimitPolicy, get_config, load_config, reload_config
from flux.exceptions import ConfigError

GOOD = """\
[redis]
host = "10.1.1.1"
port = 6380
pool_size = 7

[flux]
key_prefix = "app:"
fail_silently = false

[rate_limit]
policy = "token_bucket"
requests = 50
period = 30

[rate_limits.login]
requests = 5
period = 300
"""


def write(tmp_path, text, name="flux.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_config_fills_every_field(tmp_path, monkeypatch):
    monkeypatch.delenv("FLUX_REDIS_URL", raising=False)
    path = write(tmp_path, GOOD)
    cfg = load_config(path)
    assert (cfg.redis_host, cfg.redis_port, cfg.pool_size, cfg.timeout_ms) == ("10.1.1.1", 6380, 7, 200)
    assert cfg.storage == "redis"  # [redis] present
    assert (cfg.key_prefix, cfg.fail_silently) == ("app:", False)
    assert cfg.policy is RateLimitPolicy.TOKEN_BUCKET
    assert (cfg.rate_limit_defaults.requests, cfg.rate_limit_defaults.period) == (50, 30)
    # Named limits inherit what they leave out.
    assert cfg.rate_limits["login"] == {"policy": "token_bucket", "requests": 5, "period": 300}
    assert cfg.origin == str(path)
    assert cfg.jitter_enabled is True and cfg.jitter_max_ms == 500
    assert (cfg.analytics_enabled, cfg.analytics_port, cfg.analytics_stream) == (False, 4444, "flux:events")


def test_a_loaded_config_keeps_its_handle_and_its_data_loads_back_the_same(tmp_path, monkeypatch):
    monkeypatch.delenv("FLUX_REDIS_URL", raising=False)
    cfg = load_config(write(tmp_path, GOOD))
    _, handle = flux.config.native(cfg)
    # Equal data finds the handle the file was loaded into: not parsed again.
    assert flux.config.native(dataclasses.replace(cfg))[1] is handle
    again = _ffi.Config.from_json(json.dumps(cfg.to_document()), "again")
    assert FluxConfig.from_json(json.loads(again.to_json())) == cfg
    changed = dataclasses.replace(cfg, key_prefix="other:")
    assert flux.config.native(changed)[1] is not handle


@pytest.mark.parametrize(
    "text, line, key, words",
    [
        ("[rate_limit]\nrequests = 0\n", 2, "rate_limit.requests", "at least 1"),
        ("[flux]\nkey_prefix = 'a'\nbogus = 1\n", 3, "flux.bogus", "unknown"),
        ("[redis]\nport = \"six\"\n", 2, "redis.port", ""),
        ("[rate_limits.api]\nrequests = 5\npolicy = \"fastest\"\n", 3, "rate_limits.api.policy", "gcra"),
        ("[rate_limit]\nperiod = -1\n", 2, "rate_limit.period", "greater than 0"),
    ],
)
def test_bad_files_name_the_file_line_and_key(tmp_path, text, line, key, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: {key}"), message
    assert words in message
    assert isinstance(caught.value, ValueError)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_discovery_and_reload(tmp_path, monkeypatch):
    monkeypatch.delenv("FLUX_CONFIG", raising=False)
    monkeypatch.delenv("FLUX_REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    flux.config.set_config(None)
    assert get_config().storage == "memory" and get_config().origin is None
    (tmp_path / "config").mkdir()
    write(tmp_path / "config", "[rate_limit]\nrequests = 7\n")
    assert get_config().rate_limit_defaults.requests == 100  # loaded once
    assert reload_config().rate_limit_defaults.requests == 7
    write(tmp_path, "[rate_limit]\nrequests = 8\n")  # ./flux.toml comes first
    assert reload_config().rate_limit_defaults.requests == 8
    other = write(tmp_path, "[rate_limit]\nrequests = 9\n", "other.toml")
    monkeypatch.setenv("FLUX_CONFIG", str(other))
    assert reload_config().rate_limit_defaults.requests == 9


def test_flux_redis_url_overrides_the_address(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUX_REDIS_URL", "redis://cache.internal:6390/2")
    cfg = load_config(write(tmp_path, "[flux]\nkey_prefix = 'x:'\n"))
    assert cfg.redis_url == "redis://cache.internal:6390/2"
    assert cfg.storage == "redis"


def test_config_in_code_uses_redis_when_given_an_address():
    assert not FluxConfig().uses_redis
    assert FluxConfig(redis_host="10.0.0.5").uses_redis
    assert FluxConfig(redis_port=6380).uses_redis
    assert FluxConfig(redis_url="redis://x:1/0").uses_redis
    assert not FluxConfig(redis_host="10.0.0.5", storage="memory").uses_redis
    assert RateLimiter(1, 1, config=FluxConfig(key_prefix="code-a:")).storage == "memory"
    assert RateLimiter(1, 1, config=FluxConfig(redis_port=1, key_prefix="code-b:")).storage == "redis"


def test_config_in_code_is_validated_by_the_same_schema():
    with pytest.raises(ConfigError, match=r"rate_limit\.requests"):
        flux.config.validate(FluxConfig(rate_limit_defaults=flux.config.RateLimitDefaults(requests=0)))
    with pytest.raises(ConfigError, match=r"rate_limits\.api\.burst"):
        flux.config.validate(FluxConfig(rate_limits={"api": {"requests": 1, "period": 1, "burst": 0}}))
    with pytest.raises(ConfigError, match=r"rate_limits\.api\.speed"):
        flux.config.validate(FluxConfig(rate_limits={"api": {"requests": 1, "speed": 3}}))
    with pytest.raises(ConfigError, match=r"redis\.url"):
        flux.config.validate(FluxConfig(redis_url="http://nope"))


def test_sentinel_in_code_and_in_a_file_is_the_same_config(tmp_path, monkeypatch):
    monkeypatch.delenv("FLUX_REDIS_URL", raising=False)
    cfg = FluxConfig(redis_sentinel=["10.0.0.1:26379", "10.0.0.2:26379"], redis_master_name="mymaster",
                     redis_password="pw", redis_db=2, redis_sentinel_password="s3nt!nel",
                     redis_sentinel_username="flux")
    assert cfg.uses_redis
    assert flux.config.validate(cfg) == cfg
    assert "pw" not in repr(cfg) and "s3nt!nel" not in repr(cfg)
    text = """[redis]
sentinel = ["10.0.0.1:26379", "10.0.0.2:26379"]
master_name = "mymaster"
password = "pw"
db = 2
sentinel_password = "s3nt!nel"
sentinel_username = "flux"
"""
    loaded = load_config(write(tmp_path, text))
    assert (loaded.redis_sentinel, loaded.redis_master_name) == (["10.0.0.1:26379", "10.0.0.2:26379"], "mymaster")
    assert (loaded.redis_host, loaded.redis_port, loaded.redis_db) == (None, None, 2)
    assert (loaded.redis_sentinel_username, loaded.redis_sentinel_password) == ("flux", "s3nt!nel")
    # The file and the code describe one configuration: one handle, one store.
    assert flux.config.identity(loaded) == flux.config.identity(cfg)
    with pytest.raises(ConfigError, match=r"redis\.master_name: must be set with sentinel"):
        flux.config.validate(FluxConfig(redis_sentinel=["10.0.0.1:26379"]))
    with pytest.raises(ConfigError, match=r"redis\.sentinel: .*leave out host"):
        flux.config.validate(FluxConfig(redis_sentinel=["h:1"], redis_master_name="m", redis_host="h"))
    with pytest.raises(ConfigError, match=r"redis\.sentinel_password: is for Redis Sentinel's sentinels"):
        flux.config.validate(FluxConfig(redis_host="h", redis_sentinel_password="s3nt!nel"))
    with pytest.raises(ConfigError, match=r"redis\.sentinel_username: needs sentinel_password"):
        flux.config.validate(FluxConfig(redis_sentinel=["h:1"], redis_master_name="m", redis_sentinel_username="u"))


def test_policy_enum_and_strings_both_work():
    cfg = FluxConfig(policy="fixed_window", key_prefix="enum-a:")
    assert RateLimiter(config=cfg).policy == "fixed_window"
    cfg = FluxConfig(policy=RateLimitPolicy.SLIDING_WINDOW, key_prefix="enum-b:")
    assert RateLimiter(config=cfg).policy == "sliding_window"


def test_running_without_a_config_is_said_once(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("FLUX_CONFIG", raising=False)
    monkeypatch.delenv("FLUX_REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(flux.config, "_defaults_said", False)
    caplog.set_level("WARNING", logger="flux")
    load_config()
    load_config()
    said = [r for r in caplog.records if "no flux.toml found" in r.getMessage()]
    assert len(said) == 1 and "per process" in said[0].getMessage()


def test_no_memory_store_notice_when_flux_redis_url_is_set(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("FLUX_CONFIG", raising=False)
    monkeypatch.setenv("FLUX_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(flux.config, "_defaults_said", False)
    caplog.set_level("WARNING", logger="flux")
    assert load_config().storage == "redis"
    assert not [r for r in caplog.records if "no flux.toml found" in r.getMessage()]


# --- secrets -----------------------------------------------------------------

# Passwords as people write them into URLs, unencoded.
PASSWORDS = ["s3cr/et", "p@ss", "pa:ss", "100%sure", "a/b@c:d%e?f#g"]


def _secret_urls(scheme: str):
    for password in PASSWORDS:
        secret = f"{password}-hunter2"
        for user in ("", "app"):
            yield secret, f"{scheme}://{user}:{secret}@cache:6379/0"


def test_no_password_in_a_configs_repr():
    for secret, url in _secret_urls("redis"):
        shown = repr(FluxConfig(redis_url=url))
        assert secret not in shown, shown
        assert ":***@cache:6379/0" in shown
        parts = FluxConfig(redis_host="cache", redis_username="app", redis_password=secret)
        assert secret not in repr(parts) and secret not in str(parts)


def test_no_password_in_a_config_error(tmp_path, monkeypatch):
    for secret, url in _secret_urls("http"):
        with pytest.raises(ConfigError) as caught:
            flux.config.validate(FluxConfig(redis_url=url))
        assert secret not in str(caught.value), caught.value
        path = write(tmp_path, f"[redis]\nurl = {url!r}\n".replace("'", '"'))
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert secret not in str(caught.value), caught.value
        monkeypatch.setenv("FLUX_REDIS_URL", url)
        with pytest.raises(ConfigError) as caught:
            load_config(write(tmp_path, ""))
        assert secret not in str(caught.value), caught.value
        monkeypatch.delenv("FLUX_REDIS_URL")


def test_no_password_in_the_error_of_a_url_the_redis_client_cannot_read(prefix):
    refused = 0
    for secret, url in _secret_urls("redis"):
        try:
            RateLimiter(1, 60, config=FluxConfig(redis_url=url, key_prefix=prefix))
        except ConfigError as exc:
            refused += 1
            assert secret not in str(exc), exc
    assert refused  # a "/" in a password ends the URL's authority early


def test_python_hides_passwords_the_way_the_core_does():
    """The URL a message shows is the core's redaction, and Python's log
    lines and reprs use that one rule (``flux_redact_url``)."""
    for secret, url in _secret_urls("bad"):
        with pytest.raises(ConfigError) as caught:
            flux.config.validate(FluxConfig(redis_url=url))
        shown = flux.config.redact_url(url)
        assert secret not in shown and "***" in shown, shown
        assert f'got "{shown}"' in str(caught.value)


def test_no_password_in_log_lines(dead_redis_url, prefix, caplog):
    caplog.set_level("WARNING", logger="flux")
    port = dead_redis_url.rsplit(":", 1)[1].split("/")[0]
    secrets = []
    for i, password in enumerate(PASSWORDS):
        # Encoded, so that the Redis client takes the URL and a decision fails open.
        secret = quote(f"{password}-hunter2", safe="")
        secrets.append(secret)
        url = f"redis://app:{secret}@127.0.0.1:{port}/0"
        cfg = FluxConfig(redis_url=url, key_prefix=f"{prefix}{i}:", timeout_ms=50)
        assert RateLimiter(1, 60, config=cfg).hit("k").source == "fail_open"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged.count("admitted without a decision") == len(PASSWORDS)
    for secret in secrets:
        assert secret not in logged and unquote(secret) not in logged


# --- numbers and names that cross into Rust -----------------------------------


@pytest.mark.parametrize(
    "field, key, value",
    [
        ("pool_size", "redis.pool_size", 2**32 + 5),
        ("redis_port", "redis.port", 2**16 + 6379),
        ("redis_db", "redis.db", 2**32),
        ("timeout_ms", "redis.timeout_ms", 2**64 + 1),
        ("jitter_max_ms", "flux.jitter_max_ms", 2**64 + 1),
        ("ipv6_prefix", "flux.ipv6_prefix", 2**8 + 64),
        ("analytics_port", "analytics.port", 2**16 + 4444),
        ("analytics_retention", "analytics.retention", 2**64),
    ],
)
def test_integers_beyond_their_type_are_refused_by_key_not_wrapped(field, key, value):
    """Settings reach Rust as JSON data, never as C integers: a value beyond
    its key's type is an error naming the key, not a number cut to fit."""
    with pytest.raises(ConfigError, match=rf"FluxConfig: {key}: must be .*, got {value}$"):
        flux.config.validate(FluxConfig(**{field: value}))


def test_a_path_with_a_nul_is_refused_not_cut(tmp_path):
    real = write(tmp_path, "[rate_limit]\nrequests = 7\n")
    with pytest.raises(ConfigError, match="path must not contain a NUL character"):
        load_config(f"{real}\0.bak")


def test_http_section_in_a_file_and_in_code_is_one_config(tmp_path):
    path = tmp_path / "flux.toml"
    path.write_text(
        '[rate_limits.api]\nrate = "100/minute"\n'
        '[http]\nrate = "1000/hour"\n[http.rules]\n"/login" = "5/minute"\n"/api/*" = "api"\n"/health" = false\n'
    )
    loaded = load_config(path)
    assert loaded.http == {
        "rate": "1000/3600s",
        "rules": {"/login": "5/60s", "/api/*": "api", "/health": None},
    }
    in_code = FluxConfig(
        rate_limits={"api": {"rate": "100/minute"}},
        http={"rate": ["1000/hour"], "rules": {"/login": "5/minute", "/api/*": "api", "/health": None}},
    )
    assert flux.config.identity(in_code) == flux.config.identity(loaded)


def test_http_section_in_code_is_checked_by_the_schema():
    with pytest.raises(ConfigError, match=r"^FluxConfig: http.rules.\"/x\": \"apii\" is neither a limit"):
        flux.config.validate(FluxConfig(http={"rules": {"/x": "apii"}}))
    with pytest.raises(ConfigError, match=r"http.bogus: unknown key; \[http\] allows rate, name, rules"):
        flux.config.validate(FluxConfig(http={"bogus": 1}))
    with pytest.raises(ConfigError, match="http must be a dict"):
        flux.config.validate(FluxConfig(http="1/second"))  # type: ignore[arg-type]
