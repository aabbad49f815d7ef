"""Starlette and FastAPI endpoints, sync or async.

A FastAPI endpoint that declares no ``Request`` still needs one to find the
client: the wrapper's ``__signature__`` adds a keyword-only ``Request``
parameter (and a ``Response`` one, whose headers FastAPI copies onto the
response it builds from a returned dict), so FastAPI's dependency injection
hands them over; the wrapper removes them before calling the endpoint.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from ..headers import too_many_requests_body
from . import keeps_existing

REQUEST_PARAM = "flux_request_"
RESPONSE_PARAM = "flux_response_"


def find_request(args: tuple, kwargs: dict) -> HTTPConnection | None:
    request = kwargs.get(REQUEST_PARAM)
    if request is not None:
        return request
    for arg in args:
        if isinstance(arg, HTTPConnection):
            return arg
    for arg in kwargs.values():
        if isinstance(arg, HTTPConnection):
            return arg
    return None


def owns(request: Any) -> bool:
    return isinstance(request, HTTPConnection)


def peer(request: HTTPConnection) -> str | None:
    client = request.client
    return client.host if client else None


def header_values(request: HTTPConnection, name: str) -> list[str]:
    return request.headers.getlist(name)


def too_many_requests(result) -> JSONResponse:
    return JSONResponse(too_many_requests_body(result), status_code=429, headers=result.to_headers())


def with_headers(response: Any, headers: dict[str, str], kwargs: dict) -> Any:
    target = response if isinstance(response, Response) else kwargs.get(RESPONSE_PARAM)
    if target is None:
        target = next((v for v in kwargs.values() if isinstance(v, Response)), None)
    if target is not None and not keeps_existing(
        target.headers.get("X-RateLimit-Remaining"), headers
    ):
        target.headers.update(headers)
    return response


def _is(annotation: Any, cls: type) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, cls)


def endpoint_signature(func: Callable) -> tuple[inspect.Signature | None, frozenset[str]]:
    """``func``'s signature with annotations resolved, plus the Request and
    Response parameters it lacks, and the names of those added; (None, {})
    when it needs neither.

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
        added.append(inspect.Parameter(REQUEST_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Request))
    if not any(_is(p.annotation, Response) for p in params):
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
