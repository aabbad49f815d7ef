"""Django: function views, class-based view methods (``method_decorator``) and async views."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponseBase, JsonResponse

from ..headers import header_items, too_many_requests_body

if TYPE_CHECKING:
    from ..limiter import RateLimitResult
# Django's response headers check and convert every value set through
# ``response[name] = value`` (2 µs for the five rate-limit headers), then
# keep it in ``headers._store`` by lowercase name: the values Flux writes
# are digits and sanitised structured-field strings, so they are stored
# there directly. Should a Django keep its headers otherwise, the public
# way is used.
try:
    from django.http.response import ResponseHeaders
except ImportError:  # pragma: no cover - a Django before 3.2
    ResponseHeaders = None
_STORE = ResponseHeaders is not None and isinstance(getattr(ResponseHeaders({}), "_store", None), dict)
_LOWER: dict[str, str] = {}


def set_headers(response: HttpResponseBase, items: list[tuple[str, str]]) -> None:
    """Sets ``items`` (from :func:`flux.headers.header_items`) on ``response``,
    in place of any it has of the same names."""
    headers = response.headers if _STORE else None
    if headers is None or headers.__class__ is not ResponseHeaders:
        for name, value in items:
            response[name] = value
        return
    store = headers._store
    for name, value in items:
        lower = _LOWER.get(name)
        if lower is None:
            lower = _LOWER[name] = name.lower()
        store[lower] = (name, value)



def find_request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> HttpRequest | None:
    # A function view gets (request, ...); a method decorated without
    # method_decorator gets (self, request, ...).
    for arg in args[:2]:
        if isinstance(arg, HttpRequest):
            return arg
    return None


def owns(request: Any) -> bool:
    return isinstance(request, HttpRequest)


def peer(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def method(request: HttpRequest) -> str:
    return request.method or "GET"


def header_values(request: HttpRequest, name: str) -> list[str]:
    value = request.headers.get(name)
    return [value] if value else []


def too_many_requests(result: RateLimitResult, headers: bool = True) -> JsonResponse:
    response = JsonResponse(too_many_requests_body(result), status=429)
    if headers:
        set_headers(response, header_items(result))
    return response


def as_response(value: Any) -> Any:
    return value


def with_headers(response: Any, result: RateLimitResult, replace: bool, kwargs: dict[str, Any], sub: Any) -> Any:
    if isinstance(response, HttpResponseBase):
        set_headers(response, header_items(result))
    return response


def raises_exceeded(request: Any) -> bool:
    return False


def is_websocket(request: Any) -> bool:
    return False
