"""Django: function views, class-based view methods (``method_decorator``) and async views."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponseBase, JsonResponse

from ..headers import too_many_requests_body
from . import keeps_existing


def find_request(args: tuple, kwargs: dict) -> HttpRequest | None:
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


def header_values(request: HttpRequest, name: str) -> list[str]:
    value = request.headers.get(name)
    return [value] if value else []


def too_many_requests(result) -> JsonResponse:
    response = JsonResponse(too_many_requests_body(result), status=429)
    for name, value in result.to_headers().items():
        response[name] = value
    return response


def with_headers(response: Any, headers: dict[str, str], kwargs: dict) -> Any:
    if isinstance(response, HttpResponseBase) and not keeps_existing(
        response.get("X-RateLimit-Remaining"), headers
    ):
        for name, value in headers.items():
            response[name] = value
    return response
