"""Plain ASGI connection scopes (dicts), for apps that have no Starlette.

``flux.asgi.RateLimitMiddleware`` hands such a scope to the callables it is
given (``key``, ``exempt_when``, ...) when Starlette is not imported; the key
helpers (``forwarded_for``, ``remote_address``) read it through here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

# The ASGI interface's types, as the specification gives them (and Starlette
# spells them), so that a middleware typed with them is an ASGI app to others.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def owns(request: Any) -> bool:
    return isinstance(request, dict) and request.get("type") in ("http", "websocket")


def peer(scope: Mapping[str, Any]) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def method(scope: Mapping[str, Any]) -> str:
    method: str = scope.get("method", "GET")
    return method


def header_values(scope: Mapping[str, Any], name: str) -> list[str]:
    wanted = name.lower().encode("latin-1")
    return [value.decode("latin-1") for key, value in scope.get("headers", ()) if key.lower() == wanted]
