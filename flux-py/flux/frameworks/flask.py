"""Flask: views get no request argument; the request comes from Flask's context."""

from __future__ import annotations

from typing import Any

import flask

from ..headers import too_many_requests_body
from . import keeps_existing


def find_request(args: tuple, kwargs: dict) -> Any:
    if flask.has_request_context():
        return flask.request._get_current_object()
    return None


def owns(request: Any) -> bool:
    return isinstance(request, flask.Request)


def peer(request: flask.Request) -> str | None:
    return request.remote_addr or None


def header_values(request: flask.Request, name: str) -> list[str]:
    return request.headers.getlist(name)


def too_many_requests(result) -> flask.Response:
    response = flask.jsonify(too_many_requests_body(result))
    response.status_code = 429
    response.headers.update(result.to_headers())
    return response


def with_headers(response: Any, headers: dict[str, str], kwargs: dict) -> flask.Response:
    # A view may return a string, a dict, a tuple...: make_response turns each
    # into the Response Flask would have built, which can carry headers.
    response = flask.make_response(response)
    if not keeps_existing(response.headers.get("X-RateLimit-Remaining"), headers):
        response.headers.update(headers)
    return response
