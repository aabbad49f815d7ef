"""What the HTTP benchmark measures: per framework, its rows.

A row is one route of one server. Most rows are routes of a framework's
``base`` app; what acts on every route of an app (Flask-Limiter's hooks,
django-ratelimit's cache setting, an app-wide middleware) is a variant of
that app, started as a server of its own, and its row is measured there.

Every row is compared with the ``plain`` route of the base app in the same
round; limiter rows also with the ``floor`` route (what any limiter needs,
without the limiter). The "inline" rows are the floor plus one decision,
Flux's ``RateLimiter`` beside `limits`: the decorator's row less its inline
row is what the decorator itself costs (its headers included).

FastAPI and Django also have the floor route sending, as constants, the five
rate-limit headers Flux sends (``floor-headers``): what the headers alone
cost the server, below which no limiter that sends them can go; and the
floor route awaiting one Redis round trip made the cheapest way an async
app can (``floor-round-trip``: a PING on a connection the event loop owns,
every PING of one loop iteration in one write, no limiter): what waiting
for Redis alone costs, below which no limiter that asks Redis can go.
FastAPI's has a second one for the app-wide limits: the plain route behind
a middleware that waits for that round trip and adds the floor's header.
Flask and Django have the route's row too, the PING on a blocking socket of
the worker (one write, one read).

Flux's app-wide limits (``flux.asgi.RateLimitMiddleware``, Flask's
``flux.flask.Flux``, ``flux.django.RateLimitMiddleware``) act on every
route, so each app has the variants ``flux-middleware-memory`` and
``flux-middleware-redis``: the base app with them installed at the
benchmark's limit, measured on its plain route.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from apps.common import FLOOR_HEADER

PLAIN, FLOOR, INLINE, DECORATOR, MIDDLEWARE, PEER = "plain", "floor", "inline", "decorator", "middleware", "peer"
#: The floor route sending Flux's five rate-limit headers as constants, no limiter.
FLOOR_HEADERS = "floor-headers"
#: The floor route waiting for one Redis round trip (a PING), no limiter.
FLOOR_ROUND_TRIP = "floor-round-trip"
#: The plain route behind a middleware waiting for one Redis round trip, no limiter.
FLOOR_ROUND_TRIP_MIDDLEWARE = "floor-round-trip-middleware"
#: The rows every selection keeps: what the others are read against.
REFERENCES = (PLAIN, FLOOR, FLOOR_HEADERS, FLOOR_ROUND_TRIP, FLOOR_ROUND_TRIP_MIDDLEWARE)
#: The rows compared with the floor route as well as with the plain one.
LIMITERS = (INLINE, DECORATOR, PEER, FLOOR_ROUND_TRIP)

#: The header every Flux response carries (and Flask-Limiter's and slowapi's
#: with headers on): its presence shows the limiter ran.
RATE_LIMIT_HEADER = "X-RateLimit-Remaining"


@dataclass(frozen=True)
class Row:
    label: str
    path: str
    kind: str
    variant: str = "base"
    #: A header the route's response must carry, checked before measuring.
    header: str | None = None
    #: Why the row is not measured yet; None: it is.
    pending: str | None = None
    #: Served with another copy of Flux (``BENCH_BASELINE``), beside this one.
    baseline: bool = False


def flux_middleware(store: str) -> Row:
    return Row(
        f"Flux middleware, {store}",
        "/plain",
        MIDDLEWARE,
        variant=f"flux-middleware-{store.lower()}",
        header=RATE_LIMIT_HEADER,
    )


def blocking_round_trip() -> Row:
    return Row(
        "floor, one Redis round trip on a blocking socket (no limiter)",
        "/floor-round-trip",
        FLOOR_ROUND_TRIP,
        header=FLOOR_HEADER,
    )


def common_rows(hit: str, limits: str) -> list[Row]:
    """The rows every framework has, in the order they are printed; ``hit`` and
    ``limits`` name what its app calls inline."""
    return [
        Row("plain", "/plain", PLAIN),
        Row("floor (no limiter)", "/floor", FLOOR, header=FLOOR_HEADER),
        Row(f"Flux {hit} inline, memory", "/flux-inline/memory", INLINE, header=FLOOR_HEADER),
        Row(f"Flux {hit} inline, Redis", "/flux-inline/redis", INLINE, header=FLOOR_HEADER),
        Row("Flux decorator, memory", "/flux/memory", DECORATOR, header=RATE_LIMIT_HEADER),
        Row("Flux decorator, Redis", "/flux/redis", DECORATOR, header=RATE_LIMIT_HEADER),
        flux_middleware("memory"),
        flux_middleware("Redis"),
        Row(f"{limits} inline, memory", "/limits/memory", PEER, header=FLOOR_HEADER),
        Row(f"{limits} inline, Redis", "/limits/redis", PEER, header=FLOOR_HEADER),
    ]


ROWS: dict[str, list[Row]] = {
    "fastapi": [
        *common_rows("ahit", "limits.aio")[:2],
        Row("floor, Flux's five headers (no limiter)", "/floor-headers", FLOOR_HEADERS, header=RATE_LIMIT_HEADER),
        Row(
            "floor, one Redis round trip on the loop's socket (no limiter)",
            "/floor-round-trip",
            FLOOR_ROUND_TRIP,
            header=FLOOR_HEADER,
        ),
        Row(
            "floor, one Redis round trip in a middleware (no limiter)",
            "/plain",
            FLOOR_ROUND_TRIP_MIDDLEWARE,
            variant=FLOOR_ROUND_TRIP_MIDDLEWARE,
            header=FLOOR_HEADER,
        ),
        *common_rows("ahit", "limits.aio")[2:],
        Row("slowapi, memory", "/slowapi/memory", PEER, header=RATE_LIMIT_HEADER),
        Row("slowapi, Redis", "/slowapi/redis", PEER, header=RATE_LIMIT_HEADER),
    ],
    "flask": [
        *common_rows("hit", "limits")[:2],
        blocking_round_trip(),
        *common_rows("hit", "limits")[2:],
        Row(
            "Flask-Limiter, memory",
            "/flask-limiter",
            PEER,
            variant="flask-limiter-memory",
            header=RATE_LIMIT_HEADER,
        ),
        Row(
            "Flask-Limiter, Redis",
            "/flask-limiter",
            PEER,
            variant="flask-limiter-redis",
            header=RATE_LIMIT_HEADER,
        ),
    ],
    "django": [
        *common_rows("hit", "limits")[:2],
        Row("floor, Flux's five headers (no limiter)", "/floor-headers", FLOOR_HEADERS, header=RATE_LIMIT_HEADER),
        blocking_round_trip(),
        *common_rows("hit", "limits")[2:],
        # django-ratelimit sends no headers.
        Row("django-ratelimit, memory (LocMemCache)", "/django-ratelimit", PEER),
        Row("django-ratelimit, Redis (RedisCache)", "/django-ratelimit", PEER, variant="django-ratelimit-redis"),
    ],
}


def selected(framework: str, names: list[str], baseline: bool) -> list[Row]:
    """The rows of ``framework`` to measure, in the order they are printed:
    those whose label contains one of ``names`` (all when it is empty), and
    always the reference rows, which the others are compared with; with
    ``baseline``, each Flux row followed by its twin served with the
    baseline's Flux."""
    rows = []
    for row in ROWS[framework]:
        if names and row.kind not in REFERENCES and not any(n in row.label for n in names):
            continue
        rows.append(row)
        if baseline and row.label.startswith("Flux") and row.pending is None:
            rows.append(replace(row, label=f"{row.label} (baseline)", baseline=True))
    return rows
