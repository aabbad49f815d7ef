"""App-wide limits for Flask.

    from flux.flask import Flux

    flux = Flux(app, rate="100/minute", rules={"/login": "5/minute", "/health": None})

    # or, with an application factory:
    flux = Flux(rate="100/minute")
    def create_app():
        app = Flask(__name__)
        flux.init_app(app)
        return app

Every request is decided before its view runs (see :mod:`flux._app_limits`
for the default and the rules); a view marked ``@flux.exempt`` is not
limited. Settings not given in code are read from ``app.config["FLUX"]`` (a
dict of the same names), then from ``[http]`` of flux.toml. A refused
request gets the 429 ``@rate_limit`` sends, or what ``on_breach`` answers;
an admitted response carries the rate-limit headers.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

import flask

from . import _stack
from ._app_limits import AppLimits
from ._guard import Guard
from .decorators import is_exempt
from .exceptions import ConfigError
from .frameworks import flask as adapter
from .headers import header_items
from .keys import client_key
from .limiter import RateLimiter, RateLimitResult

__all__ = ["Flux"]

class Flux:
    """The Flask extension: ``Flux(app, **settings)`` or ``Flux(**settings)``
    then ``init_app(app)``. The settings are those of
    ``flux.asgi.RateLimitMiddleware``: ``rate`` or ``name``, ``rules``,
    ``key``, ``cost``, ``methods``, ``exempt_when``, ``on_breach``,
    ``headers``, ``shadow`` and ``config``."""

    def __init__(self, app: flask.Flask | None = None, **settings: Any) -> None:
        self.settings = settings
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Limits ``app``'s requests. Bad settings raise ``ConfigError``
        (or ``LimitError``) now, naming what is wrong."""
        if "flux" in app.extensions:
            raise ConfigError(
                f"flux.flask.Flux is set up twice on the app {app.name!r}: every request would "
                "be counted twice. Set it up once, with every rule in it."
            )
        settings = {**app.config.get("FLUX", {}), **self.settings}
        gate = _Gate(app, AppLimits(settings, "flux.flask.Flux"))
        app.extensions["flux"] = gate
        app.before_request(gate.before)
        app.after_request(gate.after)
        app.teardown_request(gate.teardown)


class _Gate:
    """One app's limits, applied around its views. A request's decision
    waits for its response in a context variable (Flask runs a request's
    hooks and view in one context), which costs less than its proxies."""

    def __init__(self, app: flask.Flask, limits: AppLimits) -> None:
        self.app = app
        self.limits = limits
        self.ipv6_prefix = limits.config.ipv6_prefix

    def before(self) -> Any:
        request = flask.request._get_current_object()  # type: ignore[attr-defined]
        guard = self.limits.guard_for(request.path)
        if guard is None or is_exempt(self.app.view_functions.get(request.endpoint)):
            return None
        if guard.plain:
            limiter = guard.limiter
            assert limiter is not None  # a plain guard has its one limiter
            identity = client_key(request.remote_addr, self.ipv6_prefix)
        else:
            subject = guard.resolve(adapter, request, None)
            if subject is None:
                return None
            limiter, identity = subject
        result = limiter.hit(identity, None, guard.cost)
        if not result.allowed:
            answer = guard.breach(adapter, request, None, result)
            return answer if answer is not None else adapter.too_many_requests(result, guard.headers)
        frame = token = None
        if _stack.inner_limits:
            frame = _stack.Frame()
            token = _stack.current.set(frame)
        _decision.set((guard, limiter, identity, result, frame, token))
        return None

    def after(self, response: flask.Response) -> flask.Response:
        state = _decision.get()
        if state is None:
            return response
        guard, limiter, identity, result, frame, _ = state
        if frame is not None:
            if frame.refused:
                limiter.refund(identity, guard.cost)
                return response
            if _stack.keeps_inner(frame, result.remaining):
                return response
        if guard.headers:
            if frame is not None and frame.remaining is not None:  # an inner limit's, replaced
                for name, value in header_items(result):
                    response.headers.set(name, value)
            else:
                response.headers.extend(header_items(result))
        return response

    def teardown(self, exc: BaseException | None) -> None:
        state = _decision.get()
        if state is not None:
            _decision.set(None)
            if state[5] is not None:
                _stack.current.reset(state[5])


#: The decision of the request running now, until its teardown: its guard,
#: limiter, identity and result, and the frame of the limits inside its view
#: with the token that closes it.
_Decision = tuple[Guard, RateLimiter, Any, RateLimitResult, "_stack.Frame | None", "Token[_stack.Frame | None] | None"]
_decision: ContextVar[_Decision | None] = ContextVar("flux_flask_decision", default=None)
