"""``@rate_limit``: one decorator for plain functions and Django, Flask and
Starlette/FastAPI views, sync or async.

The framework is recognised from each call (a Django ``HttpRequest`` or a
Starlette ``Request`` among the arguments, or Flask's request context), and
only frameworks the application imported are looked for. A refused call gets
that framework's 429 response; outside a framework it raises
:class:`RateLimitExceeded`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
import time
from typing import Any, Callable

from . import frameworks
from .config import FluxConfig, RateLimitPolicy, get_config, native
from .exceptions import RateLimitExceeded
from .keys import client_key, remote_address
from .limiter import RateLimiter, _cost, limit_params

#: The identity of calls made outside any framework with no ``key``: one
#: limit shared by every caller of the function.
GLOBAL_KEY = b"global"


def rate_limit(
    name: str | Callable | None = None,
    *,
    requests: int | None = None,
    period: float | None = None,
    burst: int | None = None,
    policy: RateLimitPolicy | str | None = None,
    key: Callable[..., Any] | str | bytes | None = None,
    cost: int = 1,
    max_wait: float = 0,
    config: FluxConfig | None = None,
) -> Callable:
    """Limits calls to the decorated function or view.

    ``name`` picks ``[rate_limits.NAME]`` from flux.toml; explicit arguments
    override it; with neither, ``[rate_limit]`` applies. ``key`` is what a
    limit is counted per: a callable taking the request (or nothing), or a
    fixed string; by default the peer address the server saw (see
    :func:`flux.keys.forwarded_for` for apps behind proxies). Every argument is
    checked now, by the Rust core: a bad one raises ``ValueError`` naming it.

    Each decorated view has its own limit (its scope is ``name``, or its
    module.qualname plus its rate), so stacked decorators are independent.
    With ``leaky_bucket`` and ``max_wait``, an admitted call first waits its
    ``delay`` (``asyncio.sleep`` in async views).
    """
    if callable(name) and not isinstance(name, str):
        # Used bare, as @rate_limit.
        return rate_limit()(name)
    cfg = config if config is not None else get_config()
    params = limit_params(
        requests, period, burst=burst, policy=policy, max_wait=max_wait or None
    )
    # Checked now, so that a bad argument fails where the decorator is written.
    native(cfg)[1].default_scope(name, params, None)
    cost = _cost(cost)
    identify = _key_function(key, cfg.ipv6_prefix)
    limiters: dict[str, RateLimiter] = {}
    # A limit taken from flux.toml as it is has the name for scope; one given
    # in code is the view's own.
    own = not name or bool(params.set)

    def limiter_for(func: Callable) -> RateLimiter:
        base = f"{func.__module__}.{func.__qualname__}" if own else None
        scope = native(cfg)[1].default_scope(name, params, base)
        # Two identical limits stacked on one view are still two limits.
        below = getattr(func, "_flux_scopes", ())
        n = 1
        while (scope if n == 1 else f"{scope}#{n}") in below:
            n += 1
        if n > 1:
            scope = f"{scope}#{n}"
        limiter = limiters.get(scope)
        if limiter is None:
            # Django's method_decorator decorates again on every call: reuse.
            limiter = limiters[scope] = RateLimiter._with_params(cfg, name, params, scope, None)
            limiter.check_cost(cost)
        return limiter

    def decorate(func: Callable) -> Callable:
        limiter = limiter_for(func)
        signature, injected = None, frozenset()
        if "starlette" in sys.modules:
            from .frameworks import starlette

            signature, injected = starlette.endpoint_signature(func)
        make = _async_wrapper if inspect.iscoroutinefunction(func) else _sync_wrapper
        wrapper = make(func, limiter, identify, cost, injected)
        wrapper.rate_limiter = limiter  # type: ignore[attr-defined]
        wrapper._flux_scopes = (*getattr(func, "_flux_scopes", ()), limiter.scope)  # type: ignore[attr-defined]
        if signature is not None:
            wrapper.__signature__ = signature  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _key_function(key: Any, ipv6_prefix: int) -> Callable[[Any, Any], Any]:
    """``(adapter, request) -> identity`` for the ``key`` argument."""
    if key is None:

        def by_peer(adapter, request):
            if adapter is None:
                return GLOBAL_KEY
            return client_key(adapter.peer(request), ipv6_prefix)

        return by_peer
    if isinstance(key, (str, bytes)):
        fixed = key
        return lambda adapter, request: fixed
    if not callable(key):
        raise TypeError(f"key must be a callable or a string, got {type(key).__name__}")
    takes_request = _takes_an_argument(key)
    if takes_request:
        return lambda adapter, request: key(request)
    return lambda adapter, request: key()


def _takes_an_argument(func: Callable) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params
    )


def _without(kwargs: dict, injected: frozenset) -> dict:
    """The endpoint's own keyword arguments: those this wrapper added are removed."""
    if injected and not injected.isdisjoint(kwargs):
        return {k: v for k, v in kwargs.items() if k not in injected}
    return kwargs


def _refuse(adapter, identity, result):
    if adapter is not None:
        return adapter.too_many_requests(result)
    raise RateLimitExceeded(identity, result.retry_after, result=result)


def _sync_wrapper(func, limiter, identify, cost, injected):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        adapter, request = frameworks.detect(args, kwargs)
        identity = identify(adapter, request)
        result = limiter.hit(identity, cost=cost)
        if not result.allowed:
            return _refuse(adapter, identity, result)
        if result.delay > 0:
            time.sleep(result.delay)
        response = func(*args, **_without(kwargs, injected))
        if adapter is not None:
            response = adapter.with_headers(response, result.to_headers(), kwargs)
        return response

    return wrapper


def _async_wrapper(func, limiter, identify, cost, injected):
    @functools.wraps(func)
    async def wrapper(*args, **kwargs):
        adapter, request = frameworks.detect(args, kwargs)
        identity = identify(adapter, request)
        if inspect.isawaitable(identity):
            identity = await identity
        result = await limiter.ahit(identity, cost=cost)
        if not result.allowed:
            return _refuse(adapter, identity, result)
        if result.delay > 0:
            await asyncio.sleep(result.delay)
        response = await func(*args, **_without(kwargs, injected))
        if adapter is not None:
            response = adapter.with_headers(response, result.to_headers(), kwargs)
        return response

    return wrapper


__all__ = ["rate_limit", "remote_address"]
