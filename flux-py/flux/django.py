"""App-wide limits for Django.

    MIDDLEWARE = [..., "flux.django.RateLimitMiddleware"]
    FLUX = {"rate": "100/minute", "rules": {"/login": "5/minute", "/health": None}}

Every request is decided once Django knows its view, before the view runs
(see :mod:`flux._app_limits` for the default and the rules); a view marked
``@flux.exempt`` (on a class-based view, the class) is not limited. The
``FLUX`` setting takes the settings of ``flux.asgi.RateLimitMiddleware``;
what it leaves out comes from ``[http]`` of flux.toml. A refused request
gets the 429 ``@rate_limit`` sends, or what ``on_breach`` answers; an
admitted response carries the rate-limit headers. Works under WSGI and
ASGI (sync and async), and rules match ``request.path_info``, the path
Django's URL patterns match.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest

from . import _stack
from ._app_limits import AppLimits
from .decorators import is_exempt
from .exceptions import ConfigError
from .frameworks import django as adapter

__all__ = ["RateLimitMiddleware"]

PATH = "flux.django.RateLimitMiddleware"
#: Where a request's decision waits for its response.
_STATE = "_flux_decision"
#: Views remembered as exempt or not before the memory starts again.
_EXEMPT_CACHE_SIZE = 4096


class RateLimitMiddleware:
    """Django middleware: add ``"flux.django.RateLimitMiddleware"`` to
    ``MIDDLEWARE`` once, and configure it with the ``FLUX`` setting. Bad
    settings raise ``ConfigError`` (or ``LimitError``) when Django loads its
    middleware, naming what is wrong."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        if list(getattr(settings, "MIDDLEWARE", ())).count(PATH) > 1:
            raise ConfigError(
                f"{PATH} is listed twice in MIDDLEWARE: every request would be counted twice. "
                "List it once, and put every rule in the FLUX setting."
            )
        given = getattr(settings, "FLUX", None) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"settings.FLUX must be a dict of {PATH}'s settings, got {given!r}")
        self.get_response = get_response
        self.limits = AppLimits(given, "settings.FLUX")
        # Views marked @flux.exempt, by view, found once each.
        self._exempt: dict[Any, bool] = {}
        # Asked once: the answer does not change, and asking costs a
        # microsecond a request.
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)
            self.process_view = self._aprocess_view  # type: ignore[method-assign]

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self._acall(request)
        frame, token = _stack.open_frame()
        try:
            response = self.get_response(request)
        finally:
            if token is not None:
                _stack.current.reset(token)
        state = request.__dict__.pop(_STATE, None)
        if state is None:
            return response
        guard, limiter, identity, result = state
        if frame is not None and frame.refused:
            limiter.refund(identity, guard.cost)
            return response
        return _reported(guard, response, result, frame)

    async def _acall(self, request: HttpRequest) -> Any:
        frame, token = _stack.open_frame()
        try:
            response = await self.get_response(request)
        finally:
            if token is not None:
                _stack.current.reset(token)
        state = request.__dict__.pop(_STATE, None)
        if state is None:
            return response
        guard, limiter, identity, result = state
        if frame is not None and frame.refused:
            await limiter.arefund(identity, guard.cost)
            return response
        return _reported(guard, response, result, frame)

    def _subject(self, request: HttpRequest, view: Callable[..., Any]) -> tuple[Any, Any, Any] | None:
        guard = self.limits.guard_for(request.path_info)
        if guard is None:
            return None
        exempt = self._exempt.get(view)
        if exempt is None:
            if len(self._exempt) >= _EXEMPT_CACHE_SIZE:
                self._exempt.clear()
            exempt = self._exempt[view] = is_exempt(view)
        if exempt:
            return None
        subject = guard.resolve(adapter, request, None)
        return None if subject is None else (guard, *subject)

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        subject = self._subject(request, view)
        if subject is None:
            return None
        guard, limiter, identity = subject
        result = limiter.hit(identity, None, guard.cost)
        if not result.allowed:
            answer = guard.breach(adapter, request, None, result)
            return answer if answer is not None else adapter.too_many_requests(result, guard.headers)
        request.__dict__[_STATE] = (guard, limiter, identity, result)
        return None

    async def _aprocess_view(
        self, request: HttpRequest, view: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        subject = self._subject(request, view)
        if subject is None:
            return None
        guard, limiter, identity = subject
        if hasattr(identity, "__await__"):
            identity = await identity
            if identity is None:
                return None
        if limiter._remote:
            result = await limiter.ahit(identity, None, guard.cost)
        else:
            result = limiter.hit(identity, None, guard.cost)
        if not result.allowed:
            answer = guard.breach(adapter, request, None, result)
            if hasattr(answer, "__await__"):
                answer = await answer
            return answer if answer is not None else adapter.too_many_requests(result, guard.headers)
        request.__dict__[_STATE] = (guard, limiter, identity, result)
        return None


def _reported(guard: Any, response: Any, result: Any, frame: _stack.Frame | None) -> Any:
    if not guard.headers or frame is not None and _stack.keeps_inner(frame, result.remaining):
        return response
    return adapter.with_headers(response, result, True, {}, None)
