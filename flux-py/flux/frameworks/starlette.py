"""Starlette and FastAPI endpoints, sync or async.

A FastAPI endpoint that declares no ``Request`` still needs one to find the
client: the wrapper's ``__signature__`` adds a keyword-only
``HTTPConnection`` parameter (a Request, or the WebSocket of a WebSocket
route), and a ``Response`` one, whose headers FastAPI copies onto the
response it builds from a returned dict, so FastAPI's dependency injection
hands them over; the wrapper removes them before calling the endpoint.
"""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from ..exceptions import RateLimitExceeded
from ..headers import close_reason, raw_header_items, set_raw_headers, too_many_requests_body
from . import asgi as scope_adapter
from .asgi import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from .._guard import Guard
    from ..limiter import RateLimiter, RateLimitResult

REQUEST_PARAM = "flux_request_"
RESPONSE_PARAM = "flux_response_"


def find_request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> HTTPConnection | None:
    for arg in args:
        if isinstance(arg, HTTPConnection):
            return arg
    for arg in kwargs.values():
        if isinstance(arg, HTTPConnection):
            return arg
    return None


def connection(scope: Scope) -> HTTPConnection:
    """The request object of an ASGI scope, for callables given to the
    middleware: a ``Request`` for HTTP (without its body, which is the
    app's to read), an ``HTTPConnection`` for a WebSocket (whose messages
    are the app's)."""
    return Request(scope) if scope["type"] == "http" else HTTPConnection(scope)


def owns(request: Any) -> bool:
    return isinstance(request, HTTPConnection)


def peer(request: HTTPConnection) -> str | None:
    # From the scope: request.client builds an Address for every call.
    client = request.scope.get("client")
    return client[0] if client else None


def method(request: HTTPConnection) -> str:
    method: str = request.scope.get("method", "GET")
    return method


def header_values(request: HTTPConnection, name: str) -> list[str]:
    return request.headers.getlist(name)


def too_many_requests(result: RateLimitResult, headers: bool = True) -> JSONResponse:
    response = JSONResponse(too_many_requests_body(result), status_code=429)
    if headers:
        response.raw_headers.extend(raw_header_items(result))
    return response


def as_response(value: Any) -> Any:
    return value


def with_headers(
    response: Any, result: RateLimitResult, replace: bool, kwargs: dict[str, Any], sub: Response | None
) -> Any:
    # A plain value is turned into a response by FastAPI, which copies onto
    # it the headers of the Response parameter the endpoint was given: the
    # one the wrapper added (``sub``), or the endpoint's own.
    target = response if isinstance(response, Response) else sub
    if target is None:
        target = next((v for v in kwargs.values() if isinstance(v, Response)), None)
    if target is not None:
        set_raw_headers(target.raw_headers, result)
    return response


def raises_exceeded(request: HTTPConnection) -> bool:
    """Whether the application has an exception handler for
    :class:`RateLimitExceeded` (``app.exception_handler(RateLimitExceeded)``)."""
    handlers = getattr(request.scope.get("app"), "exception_handlers", None)
    return bool(handlers and RateLimitExceeded in handlers)


def is_websocket(request: Any) -> bool:
    return isinstance(request, WebSocket)


async def close(websocket: WebSocket, result: RateLimitResult) -> None:
    """Closes a WebSocket over its limit with code 1008 (policy violation)
    and the reason. It is accepted first: a close before the handshake
    completes reaches the client as an HTTP 403 and an abnormal closure
    (1006), with neither the code nor the reason."""
    await websocket.accept()
    await websocket.close(code=1008, reason=close_reason(result))


#: The scope key of a decision made before a route's handler ran: the guard,
#: the limiter, the identity and the result, waiting for the endpoint's wrapper.
DECIDED = "flux.decided"


def decided(
    request: HTTPConnection, endpoint: Any, guard: Guard
) -> tuple[RateLimiter, Any, RateLimitResult] | None:
    """The limiter, identity and result of ``guard``'s decision made for
    this request before its route's handler ran (see :func:`_deciding`),
    taken out of the scope; None when there is none. The route that answers
    with ``endpoint`` gets its decisions made that way from its next
    request on.

    The decorator asks this of a limit on Redis keyed by the peer
    (:attr:`Guard.plain`), whose decision needs only the scope: its round
    trip is then awaited before FastAPI solves the dependencies and builds
    the ``Request`` and ``Response``, rather than with them alive. Some 30
    requests suspended with those alive outgrow the first generation of
    CPython's cyclic collector, and every collection walks them: measured
    in process, 12 µs of CPU per request, against 4 µs suspended before
    them and none for a request that never suspends."""
    scope = request.scope
    made = scope.get(DECIDED)
    if made is not None and made[0] is guard:
        del scope[DECIDED]
        return made[1:]  # type: ignore[no-any-return]
    if made is None and scope["type"] == "http":
        route = scope.get("route")
        if route is not None and getattr(route, "endpoint", None) is endpoint:
            handler = _handler_of(scope, route)
            # Once per handler, whichever thread gets here first (atomic
            # under the GIL); a handler that takes no attributes is left alone.
            mine, fields = object(), getattr(handler, "__dict__", None)
            if fields is not None and fields.setdefault("_flux_decides", mine) is mine:
                try:
                    handler.app = _deciding(handler.app, guard)
                except (AttributeError, TypeError):
                    pass
    return None


def _handler_of(scope: Scope, route: Any) -> Any:
    """What holds the route's handler as ``.app``: the route, or for a
    route of a router included in a FastAPI app, the context FastAPI built
    for it in that inclusion (FastAPI 0.16x calls that context's handler,
    not the route's; found through FastAPI's own lookup, and when that is
    gone, the route is used and the wrapper decides)."""
    lookup = getattr(sys.modules.get("fastapi.routing"), "_get_scope_effective_route_context", None)
    context = lookup(scope) if lookup is not None else None
    if getattr(context, "original_route", None) is route and hasattr(context, "app"):
        return context
    return route


def _deciding(app: ASGIApp, guard: Guard) -> ASGIApp:
    """``app``, the handler of a route, with ``guard``'s decision made
    before it runs. When the endpoint's wrapper does not take the decision
    (a dependency or the request's validation answered first), the charge
    is given back: a request the endpoint never saw is not counted, as
    when the wrapper decides."""
    cost = guard.cost

    async def decide_then_handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        # A plain guard: its one limiter, the peer from the scope.
        limiter, identity = guard.resolve(scope_adapter, scope, None)  # type: ignore[misc]
        result = await limiter.ahit(identity, None, cost)
        scope[DECIDED] = (guard, limiter, identity, result)
        try:
            await app(scope, receive, send)
        finally:
            if scope.pop(DECIDED, None) is not None and result.allowed:
                await limiter.arefund(identity, cost)

    return decide_then_handle


def _is(annotation: Any, cls: type) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, cls)


def endpoint_signature(
    func: Callable[..., Any], response: bool = True
) -> tuple[inspect.Signature | None, frozenset[str]]:
    """``func``'s signature with annotations resolved, plus the connection
    (Request or WebSocket) and, with ``response``, the Response parameters it
    lacks, and the names of those added; (None, {}) when it needs neither.

    A function that already takes them (an endpoint that declares them, or
    another Flux wrapper, which added them) gets them passed through."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None, frozenset()
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # an annotation that cannot be resolved here: leave it
        hints = {}
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
    added = []
    if not any(_is(p.annotation, HTTPConnection) for p in params):
        added.append(
            inspect.Parameter(REQUEST_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=HTTPConnection)
        )
    if response and not any(_is(p.annotation, Response) for p in params):
        added.append(inspect.Parameter(RESPONSE_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Response))
    if not added:
        return None, frozenset()
    if params and params[-1].kind is inspect.Parameter.VAR_KEYWORD:
        params[-1:-1] = added
    else:
        params.extend(added)
    signature = signature.replace(
        parameters=params, return_annotation=hints.get("return", signature.return_annotation)
    )
    return signature, frozenset(p.name for p in added)
