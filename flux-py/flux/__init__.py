"""Flux: a rate limiter with a Rust core, for Django, FastAPI, Flask and plain Python.

    from flux import rate_limit

    @rate_limit(rate="100/minute")
    def view(request): ...

App-wide limits: ``flux.asgi.RateLimitMiddleware``, ``flux.flask.Flux``,
``flux.django.RateLimitMiddleware``; ``@flux.exempt`` keeps a view out of them.
"""

from __future__ import annotations

from .config import FluxConfig, RateLimitPolicy, get_config, load_config, reload_config
from .decorators import exempt, rate_limit
from .exceptions import ConfigError, ConnectionError, FluxError, LimitError, RateLimitExceeded
from .keys import forwarded_for, remote_address
from .limiter import RateLimiter, RateLimitResult, preload_scripts

__version__ = "0.2.0"

__all__ = [
    "rate_limit",
    "exempt",
    "RateLimiter",
    "RateLimitResult",
    "RateLimitExceeded",
    "preload_scripts",
    "FluxConfig",
    "RateLimitPolicy",
    "get_config",
    "load_config",
    "reload_config",
    "forwarded_for",
    "remote_address",
    "FluxError",
    "ConfigError",
    "LimitError",
    "ConnectionError",
]
