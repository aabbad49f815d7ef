"""Plain ASGI connection scopes (dicts), for apps that have no Starlette.

``flux.asgi.RateLimitMiddleware`` hands such a scope to the callables it is
given (``key``, ``exempt_when``, ...) when Starlette is not imported; the key
helpers (``forwarded_for``, ``remote_address``) read it through here.
"""

from __future__ import annotations

from typing import Any


def owns(request: Any) -> bool:
    return isinstance(request, dict) and request.get("type") in ("http", "websocket")


def peer(scope: dict) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def method(scope: dict) -> str:
    return scope.get("method", "GET")


def header_values(scope: dict, name: str) -> list[str]:
    wanted = name.lower().encode("latin-1")
    return [value.decode("latin-1") for key, value in scope.get("headers", ()) if key.lower() == wanted]
