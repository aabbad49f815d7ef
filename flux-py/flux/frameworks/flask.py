"""Flask: views get no request argument; the request comes from Flask's context."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import flask
from werkzeug.datastructures import Headers

from ..headers import header_items, too_many_requests_body

if TYPE_CHECKING:
    from ..limiter import RateLimitResult
# Werkzeug's Headers keep their (name, value) pairs in a list, ``_list``, and
# check every value added through ``extend`` (1.9 µs for the five rate-limit
# headers, a tenth of that appended): the values Flux writes are digits and
# sanitised structured-field strings, so they are appended. Should a Werkzeug
# keep its headers otherwise, the public method is used.
_HEADERS_LIST = isinstance(getattr(Headers(), "_list", None), list)


def add_headers(headers: Headers, items: list[tuple[str, str]]) -> None:
    """Adds ``items`` (from :func:`flux.headers.header_items`) to ``headers``."""
    if _HEADERS_LIST and headers.__class__ is Headers:
        headers._list.extend(items)
    else:
        headers.extend(items)



def find_request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if flask.has_request_context():
        # Flask types its request proxy as the Request it stands for; the
        # proxy's own method gives that Request.
        return flask.request._get_current_object()  # type: ignore[attr-defined]
    return None


def owns(request: Any) -> bool:
    return isinstance(request, flask.Request)


def peer(request: flask.Request) -> str | None:
    return request.remote_addr or None


def method(request: flask.Request) -> str:
    return request.method


def header_values(request: flask.Request, name: str) -> list[str]:
    return request.headers.getlist(name)


def too_many_requests(result: RateLimitResult, headers: bool = True) -> flask.Response:
    response = flask.jsonify(too_many_requests_body(result))
    response.status_code = 429
    if headers:
        add_headers(response.headers, header_items(result))
    return response


def as_response(value: Any) -> flask.Response:
    # A view may return a string, a dict, a tuple...: make_response turns each
    # into the Response Flask would have built, which can carry headers.
    return flask.make_response(value)


def with_headers(
    response: object, result: RateLimitResult, replace: bool, kwargs: dict[str, Any], sub: Any
) -> flask.Response:
    response = flask.make_response(response)
    if replace:
        for name, value in header_items(result):
            response.headers.set(name, value)
    else:
        add_headers(response.headers, header_items(result))
    return response


def raises_exceeded(request: Any) -> bool:
    return False


def is_websocket(request: Any) -> bool:
    return False
