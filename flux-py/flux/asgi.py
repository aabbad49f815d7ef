"""App-wide limits for any ASGI application: Starlette, FastAPI and others.

    from flux.asgi import RateLimitMiddleware

    app.add_middleware(RateLimitMiddleware, rate="100/minute",
                       rules={"/login": "5/minute", "/api/*": "api", "/health": None})

Every HTTP request and WebSocket handshake is decided before the
application sees it (see :mod:`flux._app_limits` for the default and the
rules). A refused request gets a 429 with a JSON body, or what ``on_breach``
answers, or what the application's own ``RateLimitExceeded`` exception
handler answers; a refused WebSocket is accepted and closed at once with
code 1008 (policy violation) and the reason, so the client learns why. An
admitted response carries the rate-limit headers.

The middleware speaks ASGI itself: it builds its 429 and adds its headers
on the raw messages, and makes a Starlette ``Request`` only for the
callables it was given (``key``, ``exempt_when``, ``on_breach``, a rule's),
or hands them the ASGI scope in an app without Starlette.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from . import _stack
from ._app_limits import AppLimits
from ._guard import Guard
from .decorators import is_exempt
from .exceptions import ConfigError, RateLimitExceeded
from .frameworks import RequestReader
from .frameworks import asgi as scope_adapter
from .frameworks.asgi import ASGIApp, Message, Receive, Scope, Send
from .headers import close_reason, raw_header_items, set_raw_headers, too_many_requests_body
from .limiter import RateLimitResult

__all__ = ["RateLimitMiddleware"]

#: Routes seen per (method, path) before the cache of exempt routes starts again.
_EXEMPT_CACHE_SIZE = 4096


class RateLimitMiddleware:
    """Limits every request of an ASGI app; see the module's text.

    Arguments (all optional; what is not given comes from ``[http]`` of
    flux.toml): ``rate`` or ``name``, the limit of every request no rule
    matches; ``rules``, path patterns to a rate, a limit's name, a callable
    of the request, or None; ``key``, ``cost``, ``methods``,
    ``exempt_when``, ``on_breach``, ``headers`` and ``shadow`` as for
    ``@rate_limit``; ``config``, a ``FluxConfig``.
    """

    def __init__(self, app: ASGIApp, **settings: Any) -> None:
        inner: object = app
        for _ in range(100):
            if isinstance(inner, RateLimitMiddleware):
                raise ConfigError(
                    "flux.asgi.RateLimitMiddleware is added twice to one app: every request "
                    "would be counted twice. Add it once, with every rule in it."
                )
            inner = getattr(inner, "app", None)
            if inner is None:
                break
        self.app = app
        self.limits = AppLimits(settings, "flux.asgi.RateLimitMiddleware")
        # The app's routes, read at its first request for those marked
        # @flux.exempt; then whether each (method, path) goes to one of them.
        self._routes: list[Any] | None = None
        self._exempt: dict[tuple[str, str], bool] | None = None
        self._routes_read = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            return await self.app(scope, receive, send)
        if not self._routes_read:
            self._read_routes(scope)
        guard = self.limits.guard_for(scope["path"])
        if guard is None or self._exempt is not None and self._exempted(scope):
            return await self.app(scope, receive, send)
        request = None
        if guard.plain:
            # Keyed by the peer: the scope is all it needs (no request object).
            limiter, identity = guard.resolve(scope_adapter, scope, None)  # type: ignore[misc]
        else:
            adapter, request = _connection(scope)
            subject = guard.resolve(adapter, request, None)
            if subject is None:
                return await self.app(scope, receive, send)
            limiter, identity = subject
            if identity.__class__ is not str and hasattr(identity, "__await__"):
                identity = await identity
                if identity is None:
                    return await self.app(scope, receive, send)
        if limiter._remote:
            result = await limiter.ahit(identity, None, guard.cost)
        else:
            result = limiter.hit(identity, None, guard.cost)
        if not result.allowed:
            return await self._refuse(guard, scope, receive, send, request, identity, result)
        frame, token = _stack.open_frame()
        try:
            if not guard.headers or kind == "websocket":
                await self.app(scope, receive, send)
            else:
                await self.app(scope, receive, _with_headers(send, result, frame))
        finally:
            if token is not None:
                _stack.current.reset(token)
            if frame is not None and frame.refused:
                await limiter.arefund(identity, guard.cost)

    async def _refuse(
        self,
        guard: Guard,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: Any,
        identity: Any,
        result: RateLimitResult,
    ) -> None:
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1008, "reason": close_reason(result)})
            return
        response: ASGIApp | None = None
        if guard.on_breach is not None:
            if request is None:
                request = _connection(scope)[1]
            response = await _settled(guard.on_breach(request, result))
        if response is None:
            handlers = getattr(scope.get("app"), "exception_handlers", None)
            handler = handlers.get(RateLimitExceeded) if handlers else None
            if handler is not None:
                if request is None:
                    request = _connection(scope)[1]
                exc = RateLimitExceeded(identity, result.retry_after, result=result)
                response = await _settled(handler(request, exc))
        if response is not None:
            return await response(scope, receive, send)
        body = json.dumps(too_many_requests_body(result)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if guard.headers:
            headers += raw_header_items(result)
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _read_routes(self, scope: Scope) -> None:
        """Finds the app's routes marked ``@flux.exempt`` (Starlette and FastAPI)."""
        self._routes_read = True
        routes = getattr(getattr(scope.get("app"), "router", None), "routes", None)
        if routes and _any_exempt(routes):
            self._routes, self._exempt = routes, {}

    def _exempted(self, scope: Scope) -> bool:
        """Whether the route that will answer this request is marked
        ``@flux.exempt``: found as the router finds it, and remembered per
        method and path."""
        exempt, routes = self._exempt, self._routes
        assert exempt is not None and routes is not None  # both set by _read_routes
        where = (scope.get("method", "GET"), scope["path"])
        found = exempt.get(where)
        if found is None:
            if len(exempt) >= _EXEMPT_CACHE_SIZE:
                exempt.clear()
            found = exempt[where] = is_exempt(_endpoint(routes, scope))
        return found


async def _settled(answer: Any) -> Any:
    return await answer if hasattr(answer, "__await__") else answer


def _with_headers(send: Send, result: RateLimitResult, frame: _stack.Frame | None) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start" and not (
            frame is not None and (frame.refused or _stack.keeps_inner(frame, result.remaining))
        ):
            if frame is not None and frame.remaining is not None:  # an inner limit's, replaced
                headers = list(message.get("headers") or ())
                set_raw_headers(headers, result)
                message["headers"] = headers
            else:
                message["headers"] = [*message.get("headers", ()), *raw_header_items(result)]
        await send(message)

    return send_with_headers


def _connection(scope: Scope) -> tuple[RequestReader, Any]:
    """The adapter and request object the callables get: Starlette's (see
    :func:`flux.frameworks.starlette.connection`) when Starlette is
    imported, else the scope itself."""
    if "starlette" in sys.modules:
        from .frameworks import starlette

        return starlette, starlette.connection(scope)
    return scope_adapter, scope


def _any_exempt(routes: list[Any]) -> bool:
    for route in routes:
        if is_exempt(getattr(route, "endpoint", None)):
            return True
        inner = getattr(route, "routes", None)
        if inner and _any_exempt(inner):
            return True
    return False


def _endpoint(routes: list[Any], scope: Scope) -> Any:
    """The endpoint of the first route that fully matches ``scope``, as
    Starlette's router picks it (into mounted apps' routes)."""
    from starlette.routing import Match

    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            inner = getattr(route, "routes", None)
            if inner:
                return _endpoint(inner, {**scope, **child})
            return getattr(route, "endpoint", None)
    return None
