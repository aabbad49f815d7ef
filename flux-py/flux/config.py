"""flux.toml as Python sees it.

The schema lives in Rust (flux-core), so C and Python accept the same files
and print the same errors, and a configuration is parsed and validated once,
by Rust, then held as a native handle:

* ``load_config(path)`` asks Rust to load and validate the file (or to find
  one: ``$FLUX_CONFIG``, ``./flux.toml``, ``./config/flux.toml``), keeps the
  handle, and reads the normalized result back (as JSON, which Rust's
  serializer writes) to fill a :class:`FluxConfig`.
* A :class:`FluxConfig` built (or changed) in code goes to Rust once as data:
  its sections as one JSON object, with flux.toml's keys.

Either way the handle is found again by the configuration's data, so equal
configurations share one handle and one store.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import _ffi
from .exceptions import ConfigError

logger = logging.getLogger("flux")


class RateLimitPolicy(enum.StrEnum):
    """The admission policies (see the README for when to pick which)."""

    GCRA = "gcra"
    TOKEN_BUCKET = "token_bucket"
    LEAKY_BUCKET = "leaky_bucket"
    FIXED_WINDOW = "fixed_window"
    SLIDING_WINDOW = "sliding_window"


@dataclass
class RateLimitDefaults:
    """``[rate_limit]``: the limit used when none is named; named limits
    inherit it. ``None`` leaves a key to flux.toml's default: 100 requests
    per 60 s, a burst of ``requests``, no wait, enforced. ``rate``
    (``"10/second"``, several joined by ``;`` or as a list) replaces
    ``requests`` and ``period``; the policy is :attr:`FluxConfig.policy`."""

    requests: int | None = None
    period: float | None = None
    burst: int | None = None
    rate: str | list[str] | None = None
    max_wait: float | None = None
    shadow: bool | None = None


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
    # The sentinels' own password, when they ask for one, and the ACL user it
    # is of, if any (redis_username and redis_password are the master's).
    redis_sentinel_password: str | None = field(default=None, repr=False)
    redis_sentinel_username: str | None = None
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
    # [http]: what the framework middlewares (flux.asgi, flux.flask,
    # flux.django) limit when not told in code: "rate" or "name", and "rules"
    # of path patterns to a rate, a limit's name, or None (not limited).
    http: dict[str, Any] = field(default_factory=dict)
    # Where this came from: a file path, or None for defaults and code.
    origin: str | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        # By hand, so that no password reaches a log line: the URL's is hidden
        # and the password fields are left out.
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

    def to_document(self) -> dict[str, Any]:
        """This configuration as flux.toml's sections and keys (what
        ``flux_config_from_json`` takes); keys left at ``None`` are left out,
        so they take the schema's defaults."""
        return _document(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FluxConfig:
        """Fills a FluxConfig from the JSON that ``flux_config_to_json`` writes."""
        return _from_json(data)


def redact_url(url: str) -> str:
    """``url`` with its passwords hidden, for messages: by flux-core's rule,
    the one that writes the messages of the Rust side (``flux_redact_url``)."""
    return _ffi.redact_url(url)


# --- the document Rust reads -------------------------------------------------


def _limit_items(limit: Any) -> dict[str, Any]:
    if isinstance(limit, Mapping):
        return {k: v for k, v in limit.items() if v is not None}
    if dataclasses.is_dataclass(limit) and not isinstance(limit, type):
        return {k: v for k, v in dataclasses.asdict(limit).items() if v is not None}
    raise ConfigError(
        "a rate limit must be a dict (or RateLimitDefaults) of rate, requests, period, "
        f"burst, policy, max_wait, shadow; got {limit!r}"
    )


def _plain(value: Any) -> Any:
    """``value`` as JSON carries it: enums by value, paths as text. Anything
    else JSON cannot carry is sent as text, so that the schema names the key
    whose type is wrong."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _rates_text(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return ";".join(value)
    return value


def _http_items(http: Any) -> dict[str, Any]:
    """``FluxConfig.http`` as flux.toml's ``[http]``: rates as text, and
    ``false`` for a rule that limits nothing (JSON's null means "left out")."""
    if not isinstance(http, Mapping):
        raise ConfigError(f'http must be a dict of rate or name, and rules; got {http!r}')
    items = {k: _rates_text(v) for k, v in http.items()}
    rules = items.get("rules")
    if isinstance(rules, Mapping):
        items["rules"] = {p: False if v is None else _rates_text(v) for p, v in rules.items()}
    return items


def _document(cfg: FluxConfig) -> dict[str, Any]:
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
    redis.update(
        sentinel=cfg.redis_sentinel,
        master_name=cfg.redis_master_name,
        sentinel_password=cfg.redis_sentinel_password,
        sentinel_username=cfg.redis_sentinel_username,
    )
    redis.update(pool_size=cfg.pool_size, timeout_ms=cfg.timeout_ms, cluster=cfg.redis_cluster)
    defaults = _limit_items(cfg.rate_limit_defaults)
    defaults.setdefault("policy", cfg.policy)
    document = {
        "redis": redis,
        "flux": {
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
        "analytics": {
            "enabled": cfg.analytics_enabled,
            "host": cfg.analytics_host,
            "port": cfg.analytics_port,
            "stream": cfg.analytics_stream,
            "retention": cfg.analytics_retention,
            "sample_rate": cfg.analytics_sample_rate,
        },
        "rate_limit": defaults,
        "rate_limits": {name: _limit_items(limit) for name, limit in cfg.rate_limits.items()},
        "http": _http_items(cfg.http),
    }
    return {
        section: {k: _plain(v) for k, v in items.items() if v is not None}
        for section, items in document.items()
    }


# --- reading the normalized JSON ---------------------------------------------


def _limit_view(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved limit as Rust serialized it, with only what one would
    write: ``requests`` and ``period`` for one rate, else ``rate``; ``burst``,
    ``max_wait`` and ``shadow`` when they are not the defaults."""
    several = ";" in raw.get("rate", "")
    out: dict[str, Any] = {"policy": raw["policy"]}
    if several:
        out["rate"] = raw["rate"]
    else:
        out.update(requests=raw["requests"], period=raw["period"])
    if raw.get("burst") is not None:
        out["burst"] = raw["burst"]
    if raw.get("max_wait"):
        out["max_wait"] = raw["max_wait"]
    if raw.get("shadow"):
        out["shadow"] = True
    return out


def _http_view(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``[http]`` as Rust serialized it, with None for a rule that limits nothing."""
    view = {k: v for k, v in raw.items() if k != "rules"}
    rules = raw.get("rules") or {}
    if rules:
        view["rules"] = {p: None if v is False else v for p, v in rules.items()}
    return view


def _from_json(data: Mapping[str, Any]) -> FluxConfig:
    redis = data["redis"]
    flux = data["flux"]
    analytics = data["analytics"]
    # The default limit says every value; named ones only what one would write.
    default_limit = {
        **_limit_view(data["rate_limit"]),
        "max_wait": data["rate_limit"]["max_wait"],
        "shadow": data["rate_limit"]["shadow"],
    }
    url = redis.get("url")
    policy_name = default_limit.pop("policy")
    sentinel = redis.get("sentinel") or None
    # With a url or sentinels, the host and port are not used (and may not be given).
    parts = url is None and sentinel is None
    try:
        policy: RateLimitPolicy | str = RateLimitPolicy(policy_name)
    except ValueError:  # a policy this package predates: kept by name
        policy = policy_name
    return FluxConfig(
        redis_url=url,
        redis_host=redis.get("host") if parts else None,
        redis_port=redis.get("port") if parts else None,
        redis_db=None if url else redis.get("db"),
        redis_username=None if url else redis.get("username"),
        redis_password=None if url else redis.get("password"),
        redis_cluster=bool(redis["cluster"]),
        redis_sentinel=sentinel,
        redis_master_name=redis.get("master_name"),
        redis_sentinel_password=redis.get("sentinel_password"),
        redis_sentinel_username=redis.get("sentinel_username"),
        pool_size=redis["pool_size"],
        timeout_ms=redis["timeout_ms"],
        storage=flux["storage"],
        key_prefix=flux["key_prefix"],
        log_file=flux.get("log_file"),
        fail_silently=flux["fail_silently"],
        console_logging=flux["console_logging"],
        jitter_enabled=flux["jitter_enabled"],
        jitter_max_ms=flux["jitter_max_ms"],
        ipv6_prefix=flux["ipv6_prefix"],
        local_cache_size=flux["local_cache_size"],
        policy=policy,
        rate_limit_defaults=RateLimitDefaults(**default_limit),
        rate_limits={name: _limit_view(raw) for name, raw in data["rate_limits"].items()},
        analytics_enabled=analytics["enabled"],
        analytics_host=analytics["host"],
        analytics_port=analytics["port"],
        analytics_stream=analytics["stream"],
        analytics_retention=analytics["retention"],
        analytics_sample_rate=analytics["sample_rate"],
        http=_http_view(data.get("http") or {}),
        origin=data.get("origin"),
    )


# --- the native side of a FluxConfig -----------------------------------------

#: A FluxConfig's document (as sent) -> its identity and native handle.
_natives: dict[str, tuple[str, _ffi.Config]] = {}
#: Identity -> the one native handle kept for it.
_handles: dict[str, _ffi.Config] = {}


def _canonical(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _adopt(handle: _ffi.Config) -> tuple[str, _ffi.Config, dict[str, Any]]:
    """The identity of a native configuration (its data as Rust normalized
    it: defaults filled in, inherited values resolved), the handle kept for
    that identity, and the data."""
    data = json.loads(handle.to_json())
    identity = _canonical({k: v for k, v in data.items() if k != "origin"})
    # No lock (one held by another thread when the process forks would stay
    # held in the child): two threads may both make one, one is kept.
    return identity, _handles.setdefault(identity, handle), data


def native(cfg: FluxConfig) -> tuple[str, _ffi.Config]:
    """``cfg``'s identity (what tells configurations apart: equal ones share a
    native handle and a store) and its validated native configuration: the
    one it was loaded from, or one made from its data on first use."""
    document = _canonical(_document(cfg))
    found = _natives.get(document)
    if found is None:
        handle = _ffi.Config.from_json(document, cfg.origin or "FluxConfig")
        identity, handle, _ = _adopt(handle)
        found = _natives.setdefault(document, (identity, handle))
    return found


def identity(cfg: FluxConfig) -> str:
    """What tells ``cfg`` from other configurations: its data as Rust sees it."""
    return native(cfg)[0]


def validate(cfg: FluxConfig) -> FluxConfig:
    """Checks ``cfg`` against the schema; raises ConfigError naming the key."""
    native(cfg)
    return cfg


# --- loading -----------------------------------------------------------------


def _load_native(handle: _ffi.Config) -> FluxConfig:
    """The FluxConfig ``handle`` holds; the handle is kept for it, so the
    configuration is not made again from its data."""
    identity, handle, data = _adopt(handle)
    cfg = FluxConfig.from_json(data)
    _natives.setdefault(_canonical(_document(cfg)), (identity, handle))
    return cfg


def load_config(path: str | os.PathLike[str] | None = None) -> FluxConfig:
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
    cfg = _load_native(handle)
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


def _new_lock_in_child() -> None:
    # Another thread may have held it when the process forked: in the child
    # it would stay held.
    global _config_lock
    _config_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


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
