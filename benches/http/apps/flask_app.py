"""The Flask app of the HTTP benchmark (served by gunicorn: 2 sync workers).

Flask-Limiter checks every request of its app (a ``before_request`` hook), so
it gets variants of its own rather than slowing the base app's other routes.
"""

from __future__ import annotations

from flask import Flask, abort, make_response, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse, storage, strategies

from common import BODY, FLOOR_HEADER, PERIOD, RATE_TEXT, REQUESTS, flux_config, redis_url
from common import only, redis_round_trip, route, unknown_variant, variant
from flux import RateLimiter, rate_limit
from flux.flask import Flux


def base(app: Flask) -> None:
    @app.get("/plain")
    def plain():
        return BODY

    @app.get("/floor")
    def floor():
        response = make_response(BODY)
        response.headers[FLOOR_HEADER] = request.remote_addr
        return response

    @app.get("/floor-round-trip")
    def floor_round_trip():
        redis_round_trip()
        return floor()

    flux_inline_route(app, "/flux-inline/memory", "memory")
    flux_inline_route(app, "/flux-inline/redis", "redis")

    @app.get("/flux/memory")
    @rate_limit(requests=REQUESTS, period=PERIOD, config=flux_config("memory"))
    def flux_memory():
        return BODY

    @app.get("/flux/redis")
    @rate_limit(requests=REQUESTS, period=PERIOD, config=flux_config("redis"))
    def flux_redis():
        return BODY

    limits_route(app, "/limits/memory", storage.MemoryStorage())
    limits_route(app, "/limits/redis", storage.RedisStorage(redis_url()))


def flux_inline_route(app: Flask, path: str, store: str) -> None:
    """Flux's limiter called inline, as `limits` is below: the floor plus one decision."""
    limiter = RateLimiter(REQUESTS, PERIOD, config=flux_config(store))

    @app.get(path, endpoint=path)
    def flux_inline():
        address = request.remote_addr
        if not limiter.hit(address).allowed:
            abort(429)
        response = make_response(BODY)
        response.headers[FLOOR_HEADER] = address
        return response


def limits_route(app: Flask, path: str, backend) -> None:
    """`limits` called inline, as a hand-written limiter would: the floor plus one decision."""
    limiter = strategies.FixedWindowRateLimiter(backend)
    item = parse(RATE_TEXT)

    @app.get(path, endpoint=path)
    def limits_inline():
        address = request.remote_addr
        if not limiter.hit(item, address):
            abort(429)
        response = make_response(BODY)
        response.headers[FLOOR_HEADER] = address
        return response


def flask_limiter(store: str):
    """The base app plus Flask-Limiter, its rate-limit headers on, on one route."""

    def install(app: Flask) -> None:
        base(app)
        uri = "memory://" if store == "memory" else redis_url()
        limiter = Limiter(get_remote_address, app=app, storage_uri=uri, headers_enabled=True)

        @app.get("/flask-limiter")
        @limiter.limit(RATE_TEXT)
        def flask_limited():
            return BODY

    return install


def flux_extension(store: str):
    """The base app with Flux's app-wide limit (``flux.flask.Flux``), at the benchmark's limit."""

    def install(app: Flask) -> None:
        base(app)
        Flux(app, rate=RATE_TEXT, config=flux_config(store))

    return install


VARIANTS = {
    "base": base,
    "flux-middleware-memory": flux_extension("memory"),
    "flux-middleware-redis": flux_extension("redis"),
    "flask-limiter-memory": flask_limiter("memory"),
    "flask-limiter-redis": flask_limiter("redis"),
}


def build(name: str, path: str | None = None) -> Flask:
    """The app of variant ``name``; with ``path``, that route alone."""
    if name not in VARIANTS:
        raise unknown_variant(name, VARIANTS)
    app = Flask(__name__)
    VARIANTS[name](app)
    if path is not None:
        url_map = app.url_map_class()
        for rule in only(list(app.url_map.iter_rules()), path, lambda r: r.rule):
            url_map.add(rule.empty())
        app.url_map = url_map
    return app


app = build(variant(), route())
