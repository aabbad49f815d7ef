"""flux.toml as Python sees it.

The schema lives in Rust (flux-core), so C and Python accept the same files
and print the same errors. Python never parses flux.toml itself:

* ``load_config(path)`` asks Rust to load and validate the file (or to find
  one: ``$FLUX_CONFIG``, ``./flux.toml``, ``./config/flux.toml``), then reads
  the normalized result back as JSON to fill a :class:`FluxConfig`.
* A :class:`FluxConfig` built in code is rendered to TOML text and given to
  the same Rust parser, so one schema validates both.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import _ffi
from .exceptions import ConfigError

logger = logging.getLogger("flux")


class RateLimitPolicy(str, enum.Enum):
    """The admission policies (see the README for when to pick which)."""

    GCRA = "gcra"
    TOKEN_BUCKET = "token_bucket"
    LEAKY_BUCKET = "leaky_bucket"
    FIXED_WINDOW = "fixed_window"
    SLIDING_WINDOW = "sliding_window"

    def __str__(self) -> str:
        return self.value


@dataclass
class RateLimitDefaults:
    """``[rate_limit]``: the limit used when none is named; named limits inherit it."""

    requests: int = 100
    period: float = 60
    burst: int | None = None  # None: the same as requests


@dataclass
class FluxConfig:
    """Every setting of flux.toml, flattened the way flux-limiter 0.1 had them.

    Built in code, a config with any Redis address (``redis_url``,
    ``redis_host`` or ``redis_port``) uses Redis; otherwise the memory store,
    unless ``storage`` says otherwise.
    """

    # [redis]
    redis_url: str | None = None
    redis_host: str | None = None
    redis_port: int | None = None
    redis_db: int | None = None
    redis_username: str | None = None
    redis_password: str | None = field(default=None, repr=False)
    redis_cluster: bool = False
    # Redis Sentinel: the sentinels' "host:port" addresses and the master's name
    # (instead of redis_host and redis_port; or a redis+sentinel:// redis_url).
    redis_sentinel: list[str] | None = None
    redis_master_name: str | None = None
    pool_size: int = 5
    timeout_ms: int = 200
    # [flux]
    storage: str | None = None  # "memory" | "redis"; None: decided as above
    key_prefix: str = "flux:"
    log_file: str | None = None
    fail_silently: bool = True
    console_logging: bool = False
    jitter_enabled: bool = True
    jitter_max_ms: int = 500
    ipv6_prefix: int = 64  # leading bits of an IPv6 peer that identify a client
    local_cache_size: int = 10_000  # refusals answered in-process (Redis only); 0: off
    # [rate_limit] and [rate_limits.NAME]
    policy: RateLimitPolicy | str = RateLimitPolicy.GCRA
    rate_limit_defaults: RateLimitDefaults = field(default_factory=RateLimitDefaults)
    rate_limits: dict[str, dict[str, Any]] = field(default_factory=dict)
    # [analytics]
    analytics_enabled: bool = False
    analytics_host: str = "127.0.0.1"
    analytics_port: int = 4444
    analytics_stream: str = "flux:events"
    analytics_retention: int = 100_000
    analytics_sample_rate: float = 1.0
    # Where this came from: a file path, or None for defaults and code.
    origin: str | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        # By hand, so that no password reaches a log line: the URL's is hidden
        # and redis_password is left out.
        shown = []
        for f in dataclasses.fields(self):
            if f.repr:
                value = getattr(self, f.name)
                if f.name == "redis_url" and value is not None:
                    value = redact_url(value)
                shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    @property
    def uses_redis(self) -> bool:
        if self.storage is not None:
            return self.storage == "redis"
        addresses = (self.redis_url, self.redis_host, self.redis_port, self.redis_sentinel)
        return any(v is not None for v in addresses)

    def to_toml(self) -> str:
        """This configuration as flux.toml text, every setting explicit."""
        return _render_toml(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FluxConfig:
        """Fills a FluxConfig from the JSON that ``flux_config_to_json`` writes."""
        return _from_json(data)


def redact_url(url: str) -> str:
    """``url`` with its passwords hidden, for messages: the userinfo after its
    first ``:`` up to the *last* ``@`` (passwords are often written
    unencoded), and everything after a ``pass=`` or ``password=`` query
    parameter. The same rule as flux-core's ``redact_url``, which writes the
    messages of the Rust side."""
    rest_at = url.find("://")
    rest_at = 0 if rest_at < 0 else rest_at + 3
    rest = url[rest_at:]
    hidden: list[tuple[int, int]] = []
    at = rest.rfind("@")
    if at >= 0:
        colon = rest.find(":", 0, at)
        if colon >= 0:
            hidden.append((rest_at + colon + 1, rest_at + at))
    lower = rest.lower()
    values = [
        i + len(marker)
        for marker in ("?pass=", "&pass=", "?password=", "&password=")
        if (i := lower.find(marker)) >= 0
    ]
    if values:
        hidden.append((rest_at + min(values), len(url)))
    out = []
    shown_from = 0
    for start, end in sorted(hidden):
        if end <= shown_from:
            continue
        if start >= shown_from:
            out += [url[shown_from:start], "***"]
        shown_from = end
    out.append(url[shown_from:])
    return "".join(out)


# --- rendering to TOML -------------------------------------------------------


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (str, os.PathLike)):
        # JSON strings with ASCII escapes are valid TOML basic strings.
        return json.dumps(os.fspath(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    # Anything else is written as a string, so the schema reports the wrong type
    # with the key's name instead of this renderer failing.
    return json.dumps(str(value))


def _toml_key(name: str) -> str:
    bare = name and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
    return name if bare else json.dumps(name)


def _limit_items(limit: Any) -> dict[str, Any]:
    if isinstance(limit, Mapping):
        return dict(limit)
    if dataclasses.is_dataclass(limit):
        return {k: v for k, v in dataclasses.asdict(limit).items() if v is not None}
    raise TypeError(f"a rate limit must be a dict of requests, period, burst, policy, max_wait; got {limit!r}")


def _render_toml(cfg: FluxConfig) -> str:
    lines: list[str] = []

    def table(name: str, items: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        for key, value in items.items():
            if value is not None:
                lines.append(f"{_toml_key(key)} = {_toml_value(value, f'{name}.{key}')}")
        lines.append("")

    redis: dict[str, Any] = {"url": cfg.redis_url}
    if cfg.redis_url is None or any(
        v is not None for v in (cfg.redis_host, cfg.redis_port, cfg.redis_db)
    ):
        redis.update(
            host=cfg.redis_host,
            port=cfg.redis_port,
            db=cfg.redis_db,
            username=cfg.redis_username,
            password=cfg.redis_password,
        )
    redis.update(sentinel=cfg.redis_sentinel, master_name=cfg.redis_master_name)
    redis.update(pool_size=cfg.pool_size, timeout_ms=cfg.timeout_ms, cluster=cfg.redis_cluster)
    table("redis", redis)
    table(
        "flux",
        {
            "storage": "redis" if cfg.uses_redis else "memory",
            "key_prefix": cfg.key_prefix,
            "log_file": cfg.log_file,
            "fail_silently": cfg.fail_silently,
            "console_logging": cfg.console_logging,
            "jitter_enabled": cfg.jitter_enabled,
            "jitter_max_ms": cfg.jitter_max_ms,
            "ipv6_prefix": cfg.ipv6_prefix,
            "local_cache_size": cfg.local_cache_size,
        },
    )
    table(
        "analytics",
        {
            "enabled": cfg.analytics_enabled,
            "host": cfg.analytics_host,
            "port": cfg.analytics_port,
            "stream": cfg.analytics_stream,
            "retention": cfg.analytics_retention,
            "sample_rate": cfg.analytics_sample_rate,
        },
    )
    defaults = _limit_items(cfg.rate_limit_defaults)
    defaults.setdefault("policy", cfg.policy)
    table("rate_limit", {"policy": defaults.pop("policy"), **defaults})
    for name, limit in cfg.rate_limits.items():
        table(f"rate_limits.{_toml_key(name)}", _limit_items(limit))
    return "\n".join(lines)


# --- reading the normalized JSON ---------------------------------------------


def _from_json(data: Mapping[str, Any]) -> FluxConfig:
    redis = data.get("redis", {})
    flux = data.get("flux", {})
    analytics = data.get("analytics", {})
    default_limit = data.get("rate_limit", {})
    url = redis.get("url")
    sentinel = redis.get("sentinel") or None
    # With a url or sentinels, the host and port are not used (and may not be given).
    parts = url is None and sentinel is None

    def limit_dict(raw: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: raw[k] for k in ("policy", "requests", "period", "burst", "max_wait") if k in raw}
        if out.get("burst") is None:
            out.pop("burst", None)
        if not out.get("max_wait"):
            out.pop("max_wait", None)
        return out

    policy = default_limit.get("policy", "gcra")
    try:
        policy = RateLimitPolicy(policy)
    except ValueError:
        pass
    return FluxConfig(
        redis_url=url,
        redis_host=redis.get("host") if parts else None,
        redis_port=redis.get("port") if parts else None,
        redis_db=None if url else redis.get("db"),
        redis_username=None if url else redis.get("username"),
        redis_password=None if url else redis.get("password"),
        redis_cluster=bool(redis.get("cluster", False)),
        redis_sentinel=sentinel,
        redis_master_name=redis.get("master_name"),
        pool_size=redis.get("pool_size", 5),
        timeout_ms=redis.get("timeout_ms", 200),
        storage=flux.get("storage"),
        key_prefix=flux.get("key_prefix", "flux:"),
        log_file=flux.get("log_file"),
        fail_silently=flux.get("fail_silently", True),
        console_logging=flux.get("console_logging", False),
        jitter_enabled=flux.get("jitter_enabled", True),
        jitter_max_ms=flux.get("jitter_max_ms", 500),
        ipv6_prefix=flux.get("ipv6_prefix", 64),
        local_cache_size=flux.get("local_cache_size", 10_000),
        policy=policy,
        rate_limit_defaults=RateLimitDefaults(
            requests=default_limit.get("requests", 100),
            period=default_limit.get("period", 60),
            burst=default_limit.get("burst"),
        ),
        rate_limits={name: limit_dict(raw) for name, raw in data.get("rate_limits", {}).items()},
        analytics_enabled=analytics.get("enabled", False),
        analytics_host=analytics.get("host", "127.0.0.1"),
        analytics_port=analytics.get("port", 4444),
        analytics_stream=analytics.get("stream", "flux:events"),
        analytics_retention=analytics.get("retention", 100_000),
        analytics_sample_rate=analytics.get("sample_rate", 1.0),
        origin=data.get("origin"),
    )


# --- the native side of a FluxConfig -----------------------------------------

_native_lock = threading.Lock()
_natives: dict[str, _ffi.Config] = {}


def native(cfg: FluxConfig) -> tuple[str, _ffi.Config]:
    """The validated Rust configuration for ``cfg`` and the TOML text it came
    from (which identifies it: equal texts share one store)."""
    text = cfg.to_toml()
    with _native_lock:
        handle = _natives.get(text)
        if handle is None:
            origin = cfg.origin if cfg.origin else "FluxConfig"
            handle = _natives[text] = _ffi.Config.from_toml(text, origin)
    return text, handle


def validate(cfg: FluxConfig) -> FluxConfig:
    """Checks ``cfg`` against the schema; raises ConfigError naming the key."""
    native(cfg)
    return cfg


# --- loading -----------------------------------------------------------------


def _load_native(handle: _ffi.Config) -> FluxConfig:
    return FluxConfig.from_json(json.loads(handle.to_json()))


def load_config(path: str | os.PathLike | None = None) -> FluxConfig:
    """Loads flux.toml through the Rust schema.

    With ``path``, that file; without, the first of ``$FLUX_CONFIG``,
    ``./flux.toml``, ``./config/flux.toml``, else the defaults (memory store).
    ``FLUX_REDIS_URL`` overrides the Redis address. Raises
    :class:`flux.exceptions.ConfigError` naming the file, line and key.
    """
    if path is not None:
        if "\0" in os.fsdecode(path):  # C would read the path only up to it
            raise ConfigError(f"path must not contain a NUL character, got {os.fsdecode(path)!r}")
        handle = _ffi.Config.from_file(path)
    else:
        handle = _ffi.Config.discover()
    try:
        cfg = _load_native(handle)
    finally:
        handle.close()
    if cfg.origin is None and path is None and not cfg.uses_redis:
        _say_defaults_once()
    return cfg


_defaults_said = False


def _say_defaults_once() -> None:
    global _defaults_said
    if not _defaults_said:
        _defaults_said = True
        logger.warning(
            "flux: no flux.toml found; using the in-process memory store, so limits are "
            "per process. Set [redis] (or FLUX_REDIS_URL) to share them."
        )


_config_lock = threading.Lock()
_config: FluxConfig | None = None


def get_config() -> FluxConfig:
    """The process's configuration, loaded once (see :func:`load_config`)."""
    global _config
    cfg = _config
    if cfg is None:
        with _config_lock:
            if _config is None:
                _config = load_config()
            cfg = _config
    return cfg


def reload_config() -> FluxConfig:
    """Loads the configuration again. Limiters made before keep their settings."""
    global _config
    with _config_lock:
        _config = load_config()
        return _config


def set_config(cfg: FluxConfig | None) -> None:
    """Makes ``cfg`` the process's configuration (None: load again on next use)."""
    global _config
    if cfg is not None:
        validate(cfg)
    with _config_lock:
        _config = cfg


__all__ = [
    "FluxConfig",
    "RateLimitDefaults",
    "RateLimitPolicy",
    "get_config",
    "load_config",
    "reload_config",
    "set_config",
]
