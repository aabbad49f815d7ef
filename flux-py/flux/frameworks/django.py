"""Django: function views, class-based view methods (``method_decorator``) and async views."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponseBase, JsonResponse

from ..headers import header_items, too_many_requests_body

if TYPE_CHECKING:
    from ..limiter import RateLimitResult


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
        for name, value in header_items(result):
            response[name] = value
    return response


def as_response(value: Any) -> Any:
    return value


def with_headers(response: Any, result: RateLimitResult, replace: bool, kwargs: dict[str, Any], sub: Any) -> Any:
    if isinstance(response, HttpResponseBase):
        for name, value in header_items(result):
            response[name] = value
    return response


def raises_exceeded(request: Any) -> bool:
    return False


def is_websocket(request: Any) -> bool:
    return False
