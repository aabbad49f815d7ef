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

from typing import Any

import flask

from . import _stack
from ._app_limits import AppLimits
from ._guard import Guard
from .decorators import is_exempt
from .exceptions import ConfigError
from .frameworks import flask as adapter
from .headers import header_items
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
        gate = _Gate(app, AppLimits(settings, "flux.flask.Flux"), app.wsgi_app)
        app.extensions["flux"] = gate
        app.before_request(gate.before)
        app.wsgi_app = gate  # type: ignore[method-assign]


class _Gate:
    """One app's limits, applied around its views: a request is decided in a
    ``before_request`` hook, once Flask knows its view, and its headers are
    added where the response is sent, as WSGI middleware around the app.

    The decision waits for its response in the request's WSGI environ. Two
    Flask hooks after the view (``after_request`` and ``teardown_request``)
    cost 1 µs a request in Flask's checks of each hook, and headers added
    to the ``Response`` are checked again when Werkzeug copies them for the
    server (2 µs for the five): here they are appended to the list the
    server gets, once."""

    def __init__(self, app: flask.Flask, limits: AppLimits, wsgi_app: Any) -> None:
        self.app = app
        self.limits = limits
        self.wsgi_app = wsgi_app
        # Whether each endpoint's view is marked @flux.exempt, found once.
        self._exempt: dict[str | None, bool] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        frame, token = _stack.open_frame()

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            state = environ.pop(_STATE, None)
            if state is not None:
                _report(state, headers, frame)
            return start_response(status, headers, exc_info)

        try:
            return self.wsgi_app(environ, start)
        finally:
            if token is not None:
                _stack.current.reset(token)

    def before(self) -> Any:
        request = flask.request._get_current_object()  # type: ignore[attr-defined]
        guard = self.limits.guard_for(request.path)
        if guard is None:
            return None
        endpoint = request.endpoint
        exempt = self._exempt.get(endpoint)
        if exempt is None:
            view = self.app.view_functions.get(endpoint)
            exempt = is_exempt(view)
            if view is not None:  # a view added later under a name seen before is asked anew
                self._exempt[endpoint] = exempt
        if exempt:
            return None
        subject = guard.resolve(adapter, request, None)
        if subject is None:
            return None
        limiter, identity = subject
        result = limiter.hit(identity, None, guard.cost)
        if not result.allowed:
            answer = guard.breach(adapter, request, None, result)
            return answer if answer is not None else adapter.too_many_requests(result, guard.headers)
        request.environ[_STATE] = (guard, limiter, identity, result)
        return None


def _report(state: _Decision, headers: list[tuple[str, str]], frame: _stack.Frame | None) -> None:
    """Adds the headers of an admitted request's decision to the WSGI
    ``headers`` of its response, unless a limit inside refused the call
    (which gives this one's charge back) or reported a limit closer to
    refusing."""
    guard, limiter, identity, result = state
    if frame is not None:
        if frame.refused:
            limiter.refund(identity, guard.cost)
            return
        if _stack.keeps_inner(frame, result.remaining):
            return
    if not guard.headers:
        return
    items = header_items(result)
    if frame is not None and frame.remaining is not None:  # an inner limit's, replaced
        names = {name.lower() for name, _ in items}
        headers[:] = [item for item in headers if item[0].lower() not in names]
    headers.extend(items)


#: Where a request's decision waits for its response, in its WSGI environ:
#: its guard, limiter, identity and result.
_STATE = "flux.decision"
_Decision = tuple[Guard, RateLimiter, Any, RateLimitResult]
