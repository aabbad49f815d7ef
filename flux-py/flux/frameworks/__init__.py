"""Thin adapters, one per framework, each importing its framework only inside itself.

An adapter is used only when its framework is already imported by the
application (it is in ``sys.modules``), so Flux never imports a framework
itself. Each adapter module offers the same functions:

``find_request(args, kwargs)``
    the framework's request among a view's arguments (or its context), or None
``owns(request)``
    whether ``request`` is this framework's
``peer(request)``
    the address of the peer the server saw
``method(request)``
    the request's HTTP method (``"GET"`` for a WebSocket handshake)
``header_values(request, name)``
    the values of a request header
``too_many_requests(result, headers)``
    the framework's 429 response for a refused decision, with the rate-limit
    headers when ``headers`` is true
``as_response(value)``
    what a view returned, as the response object that will be sent where the
    framework builds it only later from a plain value (Flask); else ``value``
``with_headers(response, result, replace, kwargs, sub)``
    the view's response with the rate-limit headers of ``result`` added (in
    place of those it has when ``replace``), where it can carry them;
    ``kwargs`` are the view's keyword arguments and ``sub`` the Response
    parameter added for FastAPI, where a returned plain value's headers go
``raises_exceeded(request)``
    whether a refusal should raise :class:`RateLimitExceeded` for the
    application's own handler of it (FastAPI/Starlette exception handlers)
``is_websocket(request)`` / ``close(request, result)``
    a WebSocket connection, and closing it for a refusal (code 1008)

Plain ASGI scopes (dicts) have an adapter of their own, :mod:`.asgi`, which
needs no framework: it serves ``flux.asgi.RateLimitMiddleware`` in apps
without Starlette and the key helpers given such a scope.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..limiter import RateLimitResult


class RequestReader(Protocol):
    """What every adapter reads from a request, :mod:`.asgi` included."""

    def owns(self, request: Any) -> bool: ...
    def peer(self, request: Any) -> str | None: ...
    def method(self, request: Any) -> str: ...
    def header_values(self, request: Any, name: str) -> list[str]: ...


class Adapter(RequestReader, Protocol):
    """A framework's adapter module, as the module docstring describes it.
    ``close`` is called only when ``is_websocket`` answered true, which only
    Starlette's adapter does."""

    def find_request(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...
    def too_many_requests(self, result: RateLimitResult, headers: bool = True) -> Any: ...
    def as_response(self, value: Any) -> Any: ...
    def with_headers(
        self, response: Any, result: RateLimitResult, replace: bool, kwargs: dict[str, Any], sub: Any
    ) -> Any: ...
    def raises_exceeded(self, request: Any) -> bool: ...
    def is_websocket(self, request: Any) -> bool: ...
    async def close(self, websocket: Any, result: RateLimitResult) -> None: ...


# Order matters only for speed: request objects are found by type, Flask's by
# its context, which is checked last.
_FRAMEWORKS = (
    ("starlette", "flux.frameworks.starlette"),
    ("django", "flux.frameworks.django"),
    ("flask", "flux.frameworks.flask"),
)
_loaded: dict[str, Adapter] = {}


def loaded() -> list[Adapter]:
    """The adapters of the frameworks this process has imported."""
    adapters: list[Adapter] = []
    for framework, module in _FRAMEWORKS:
        adapter = _loaded.get(framework)
        if adapter is None:
            if framework not in sys.modules:
                continue
            adapter = _loaded[framework] = importlib.import_module(module)
        adapters.append(adapter)
    return adapters


def detect(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Adapter | None, Any]:
    """The adapter and request of a view call, from the call itself."""
    for adapter in loaded():
        request = adapter.find_request(args, kwargs)
        if request is not None:
            return adapter, request
    return None, None


def adapter_for(request: Any) -> RequestReader | None:
    for adapter in loaded():
        if adapter.owns(request):
            return adapter
    from . import asgi

    return asgi if asgi.owns(request) else None
