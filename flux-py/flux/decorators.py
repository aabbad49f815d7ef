"""``@rate_limit``: one decorator for plain functions and Django, Flask and
Starlette/FastAPI views, sync or async; and ``@exempt``, which keeps a view
out of the app-wide limits.

The framework is recognised from the first call that carries a request (a
Django ``HttpRequest`` or a Starlette ``Request`` among the arguments, or
Flask's request context), and only frameworks the application imported are
looked for; later calls look only where that framework puts its request. A
refused call gets that framework's 429 response (a WebSocket is closed with
code 1008); outside a framework it raises :class:`RateLimitExceeded`.

Everything that does not change between calls (the limiter, the identity
function, the headers' constant parts, whether other limits are nested
inside) is settled when the view is decorated, so a call does what it must
and no more.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from . import _stack, frameworks
from ._guard import GLOBAL_KEY, Guard, GuardOptions, LimitArgs, LimitChoice
from .config import FluxConfig, RateLimitPolicy, get_config, native
from .keys import remote_address
from .limiter import Rate, RateLimiter, RateLimitResult, limit_params

if TYPE_CHECKING:
    from . import _ffi
    from .frameworks import Adapter

_View = TypeVar("_View", bound=Callable[..., Any])

#: ``(request, endpoint, guard) -> (limiter, identity, result) | None``: the
#: decision made for a call before the framework's handler of its route ran,
#: if any (:func:`flux.frameworks.starlette.decided`).
Decided = Callable[[Any, Any, Guard], "tuple[RateLimiter, Any, RateLimitResult] | None"]

__all__ = ["rate_limit", "exempt", "is_exempt", "remote_address", "GLOBAL_KEY"]


def rate_limit(
    view_or_name: str | Callable[..., Any] | None = None,
    /,
    *,
    name: str | Callable[[Any], Any] | None = None,
    rate: Rate | Callable[[Any], Any] | None = None,
    requests: int | None = None,
    period: float | None = None,
    burst: int | None = None,
    policy: RateLimitPolicy | str | None = None,
    key: Callable[..., Any] | str | bytes | None = None,
    cost: int = 1,
    max_wait: float = 0,
    shadow: bool | None = None,
    methods: Iterable[str] | None = None,
    exempt_when: Callable[[Any], bool] | None = None,
    deduct_when: Callable[[Any], bool] | None = None,
    on_breach: Callable[[Any, Any], Any] | None = None,
    headers: bool = True,
    config: FluxConfig | None = None,
) -> Callable[..., Any]:
    """Limits calls to the decorated function or view.

    The limit: ``name`` (or the first argument) picks ``[rate_limits.NAME]``
    from flux.toml; ``rate`` (``"10/second"``, ``"10/second;1000/day"`` or a
    list) and the other limit arguments override it; with neither,
    ``[rate_limit]`` applies. ``rate=`` or ``name=`` may instead be a
    callable of the request answering a rate, a limit's name, or None (the
    call is not limited): a limiter is made once per distinct answer.

    ``key`` is what a limit is counted per: a callable taking the request (or
    nothing), or a fixed string; by default the peer address the server saw
    (see :func:`flux.keys.forwarded_for` for apps behind proxies). A key
    callable answering None leaves the call unlimited. Outside a framework
    the callable gets the call's first positional argument.

    ``methods`` (e.g. ``["POST"]``) limits only those HTTP methods;
    ``exempt_when(request)`` true leaves a call unlimited;
    ``deduct_when(response)`` false gives the call's charge back once the
    view has run (it gets the exception instead when the view raised);
    ``on_breach(request, result)`` answers refused calls (None: the default
    429); ``headers=False`` sends no rate-limit headers; ``shadow=True``
    refuses nothing and reports what it would have refused.

    Every argument is checked now, by the Rust core: a bad one raises
    ``ValueError`` naming it. Each decorated view has its own limit (its
    scope is the limit's name, or its module.qualname plus its rate), so
    stacked decorators are independent limits; a call refused by an inner
    one leaves the outer ones uncharged.
    """
    if view_or_name is not None:
        if callable(view_or_name) and not isinstance(view_or_name, str):
            # Used bare, as @rate_limit.
            view: Callable[..., Any] = rate_limit()(view_or_name)
            return view
        if name is not None:
            raise TypeError("rate_limit: give the limit's name once, as the first argument or as name=")
        name = view_or_name
    cfg = config if config is not None else get_config()
    fixed: LimitArgs = {
        "requests": requests,
        "period": period,
        "burst": burst,
        "policy": policy,
        "max_wait": max_wait or None,
        "shadow": shadow,
    }
    options: GuardOptions = {
        "key": key,
        "cost": cost,
        "methods": methods,
        "exempt_when": exempt_when,
        "deduct_when": deduct_when,
        "on_breach": on_breach,
        "headers": headers,
    }
    # Checked now, so that a bad argument fails where the decorator is
    # written; the scope tells each view's limit apart.
    params: _ffi.flux_limit_params | None = None
    if not callable(name) and not callable(rate):
        params = limit_params(rate=rate, **fixed)
        native(cfg)[1].default_scope(name, params, None)
    # Per view: Django's method_decorator decorates again on every call.
    guards: dict[str, Guard] = {}

    def guard_for(func: Callable[..., Any]) -> Guard:
        base = f"{func.__module__}.{func.__qualname__}"
        below = getattr(func, "_flux_scopes", ())
        if params is None:
            # Two limits stacked on one view are still two limits.
            scope = f"{base}#{len(below) + 1}" if below else base
            guard = guards.get(scope)
            if guard is None:
                choice = LimitChoice(
                    cfg, name=name, rate=rate, fixed=fixed, base=scope, where=f"rate_limit of {base}"
                )
                guard = guards[scope] = Guard(choice, **options)
            return guard
        assert not callable(name)  # a limit callable has no params
        scope = native(cfg)[1].default_scope(name, params, base)
        n = 1
        while (scope if n == 1 else f"{scope}#{n}") in below:
            n += 1
        if n > 1:
            scope = f"{scope}#{n}"
        guard = guards.get(scope)
        if guard is None:
            choice = LimitChoice(cfg, name=name, rate=rate, fixed=fixed, scope=scope)
            guard = guards[scope] = Guard(choice, **options)
        return guard

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        guard = guard_for(func)
        _stack.inner_limits = True
        scope = guard.limiter.scope if guard.limiter is not None else guard.choice.base
        signature, injected, given, early = None, _Injected(), None, None
        if "starlette" in sys.modules and not isinstance(func, functools.partial):
            from .frameworks import starlette

            signature, added = starlette.endpoint_signature(func, response=headers)
            injected = _Injected(
                starlette.REQUEST_PARAM if starlette.REQUEST_PARAM in added else None,
                starlette.RESPONSE_PARAM if starlette.RESPONSE_PARAM in added else None,
            )
            given = starlette if injected.request is not None else None
            if given is not None and guard.plain and guard.limiter is not None and guard.limiter._remote:
                early = starlette.decided
        nested = _wraps_a_limit(func)
        make = _async_wrapper if inspect.iscoroutinefunction(func) else _sync_wrapper
        wrapper = make(func, guard, injected, given, early, nested)
        wrapper.rate_limiter = guard.limiter  # type: ignore[attr-defined]
        wrapper._flux_scopes = (*getattr(func, "_flux_scopes", ()), scope)  # type: ignore[attr-defined]
        if signature is not None:
            wrapper.__signature__ = signature  # type: ignore[attr-defined]
        return wrapper

    return decorate


def exempt(view: _View) -> _View:
    """Keeps ``view`` out of the app-wide limits (``flux.asgi``,
    ``flux.flask``, ``flux.django``); its own ``@rate_limit`` still applies.
    On a Django class-based view, decorate the class."""
    view._flux_exempt = True  # type: ignore[attr-defined]
    return view


def is_exempt(view: Any) -> bool:
    """Whether ``view`` (or the class of a Django ``as_view()`` view) was marked :func:`exempt`."""
    return bool(
        getattr(view, "_flux_exempt", False)
        or getattr(getattr(view, "view_class", None), "_flux_exempt", False)
    )


def _wraps_a_limit(func: object) -> bool:
    """Whether ``func`` is, or wraps (through ``__wrapped__``), a view with a limit."""
    seen = 0
    while func is not None and seen < 100:
        if getattr(func, "_flux_scopes", None):
            return True
        func = getattr(func, "__wrapped__", None) or getattr(func, "func", None)
        seen += 1
    return False


class _Injected:
    """The parameters a wrapper's signature added for FastAPI to fill (see
    :mod:`flux.frameworks.starlette`): taken out of the call's keyword
    arguments before the endpoint gets them."""

    __slots__ = ("request", "response")

    def __init__(self, request: str | None = None, response: str | None = None) -> None:
        self.request = request
        self.response = response


def _locate(
    adapter: Adapter | None, injected: _Injected, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Adapter | None, Any, Any]:
    """The framework, request and injected response of a call, taking the
    parameters the wrapper added out of ``kwargs``: looked for where the
    framework of an earlier call (``adapter``) puts them, else in any."""
    found = adapter
    if injected.request is not None:
        request = kwargs.pop(injected.request, None)
    else:
        request = found.find_request(args, kwargs) if found is not None else None
    sub = kwargs.pop(injected.response, None) if injected.response is not None else None
    if request is None:
        found, request = frameworks.detect(args, kwargs)
    return found, request, sub


def _sync_wrapper(
    func: Callable[..., Any],
    guard: Guard,
    injected: _Injected,
    given: Adapter | None,
    early: Decided | None,
    nested: bool,
) -> Callable[..., Any]:
    adapter = given  # the framework of the first call that carried a request
    cost, deduct_when, headers = guard.cost, guard.deduct_when, guard.headers

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal adapter
        found, request, sub = _locate(adapter, injected, args, kwargs)
        if found is not None:
            adapter = found
        made = early(request, wrapper, guard) if early is not None and found is given else None
        if made is not None:
            limiter, identity, result = made
        else:
            subject = guard.resolve(found, request, args[0] if args else None)
            if subject is None:
                return func(*args, **kwargs)
            limiter, identity = subject
            result = limiter.hit(identity, None, cost)
        if not result.allowed:
            _stack.refused()
            answer = guard.breach(found, request, args[0] if args else None, result)
            if answer is not None:
                return answer
            return guard.refusal(found, request, identity, result)
        if result.delay > 0:
            time.sleep(result.delay)
        frame = _stack.Frame() if nested else None
        token = _stack.current.set(frame) if nested else None
        try:
            response = func(*args, **kwargs)
        except Exception as exc:
            if token is not None:
                _stack.current.reset(token)
                token = None
            if _given_back(frame, deduct_when, exc):
                limiter.refund(identity, cost)
            raise
        finally:
            if token is not None:
                _stack.current.reset(token)
        response, give_back, reporter = _after_view(frame, found, deduct_when, response)
        if give_back:
            result = limiter.refund(identity, cost)
        if reporter is not None and headers:
            response = _report(reporter, response, result, kwargs, sub, frame)
        return response

    return wrapper


def _async_wrapper(
    func: Callable[..., Any],
    guard: Guard,
    injected: _Injected,
    given: Adapter | None,
    early: Decided | None,
    nested: bool,
) -> Callable[..., Any]:
    adapter = given  # the framework of the first call that carried a request
    cost, deduct_when, headers = guard.cost, guard.deduct_when, guard.headers

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal adapter
        found, request, sub = _locate(adapter, injected, args, kwargs)
        if found is not None:
            adapter = found
        made = early(request, wrapper, guard) if early is not None and found is given else None
        if made is not None:
            limiter, identity, result = made
        else:
            subject = guard.resolve(found, request, args[0] if args else None)
            if subject is None:
                return await func(*args, **kwargs)
            limiter, identity = subject
            if identity.__class__ is not str and inspect.isawaitable(identity):
                identity = await identity
                if identity is None:
                    return await func(*args, **kwargs)
            if limiter._remote:
                result = await limiter.ahit(identity, None, cost)
            else:
                result = limiter.hit(identity, None, cost)
        if not result.allowed:
            _stack.refused()
            answer = guard.breach(found, request, args[0] if args else None, result)
            if inspect.isawaitable(answer):
                answer = await answer
            if answer is not None:
                return answer
            if found is not None and found.is_websocket(request):
                return await found.close(request, result)
            return guard.refusal(found, request, identity, result)
        if result.delay > 0:
            await asyncio.sleep(result.delay)
        frame = _stack.Frame() if nested else None
        token = _stack.current.set(frame) if nested else None
        try:
            response = await func(*args, **kwargs)
        except Exception as exc:
            if token is not None:
                _stack.current.reset(token)
                token = None
            if _given_back(frame, deduct_when, exc):
                await limiter.arefund(identity, cost)
            raise
        finally:
            if token is not None:
                _stack.current.reset(token)
        response, give_back, reporter = _after_view(frame, found, deduct_when, response)
        if give_back:
            result = await limiter.arefund(identity, cost)
        if reporter is not None and headers:
            response = _report(reporter, response, result, kwargs, sub, frame)
        return response

    return wrapper


def _after_view(
    frame: _stack.Frame | None, found: Adapter | None, deduct_when: Callable[[Any], bool] | None, response: Any
) -> tuple[Any, bool, Adapter | None]:
    """Once the view answered ``response``: the response to go on with,
    whether the call's charge goes back (a limit inside refused the call,
    which the enclosing limits are then told, or ``deduct_when`` does not
    count it), and the framework that puts this limit's headers on the
    response (None: no headers, outside a framework or when a limit inside
    refused the call)."""
    if frame is not None and frame.refused:
        _stack.refused()
        return response, True, None
    if deduct_when is None:
        return response, False, found
    if found is not None:
        response = found.as_response(response)
    return response, not deduct_when(response), found


def _given_back(
    frame: _stack.Frame | None, deduct_when: Callable[[Any], bool] | None, exc: Exception
) -> bool:
    """After the view raised ``exc``: whether the call's charge goes back,
    because a limit inside refused it (which the enclosing limits are then
    told) or ``deduct_when`` does not count it."""
    if frame is not None and frame.refused:
        _stack.refused()
        return True
    return deduct_when is not None and not deduct_when(exc)


def _report(
    adapter: Adapter,
    response: Any,
    result: RateLimitResult,
    kwargs: dict[str, Any],
    sub: Any,
    frame: _stack.Frame | None,
) -> Any:
    """``response`` with the headers of the limit closest to refusing: ours,
    unless a limit inside set some with no more remaining."""
    if frame is not None and _stack.keeps_inner(frame, result.remaining):
        _stack.reported(frame.remaining)  # type: ignore[arg-type]
        return response
    _stack.reported(result.remaining)
    replace = frame is not None and frame.remaining is not None
    return adapter.with_headers(response, result, replace, kwargs, sub)
