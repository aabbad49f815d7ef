"""The FastAPI app of the HTTP benchmark (served by uvicorn: 1 worker, uvloop, httptools).

Every endpoint is async, as a FastAPI app written for speed has them (a sync
endpoint costs a thread hand-off of its own).
"""

from __future__ import annotations

import asyncio
import collections
import urllib.parse
import weakref

from fastapi import FastAPI, HTTPException, Request, Response
from limits import parse
from limits.aio import storage as aio_storage
from limits.aio import strategies as aio_strategies
from slowapi import Limiter
from slowapi.util import get_remote_address

from common import BODY, FLOOR_HEADER, PERIOD, RATE_LIMIT_HEADERS_RAW, RATE_TEXT, REQUESTS, flux_config, redis_url
from common import only, route, unknown_variant, variant
from flux import RateLimiter, rate_limit
from flux.asgi import RateLimitMiddleware


def base(app: FastAPI) -> None:
    @app.get("/plain")
    async def plain():
        return BODY

    @app.get("/floor")
    async def floor(request: Request, response: Response):
        response.headers[FLOOR_HEADER] = request.client.host
        return BODY

    @app.get("/floor-round-trip")
    async def floor_round_trip(request: Request, response: Response):
        await redis_round_trip()
        response.headers[FLOOR_HEADER] = request.client.host
        return BODY

    @app.get("/floor-headers")
    async def floor_headers(request: Request, response: Response):
        response.headers[FLOOR_HEADER] = request.client.host
        response.raw_headers.extend(RATE_LIMIT_HEADERS_RAW)
        return BODY

    flux_inline_route(app, "/flux-inline/memory", "memory")
    flux_inline_route(app, "/flux-inline/redis", "redis")

    @app.get("/flux/memory")
    @rate_limit(requests=REQUESTS, period=PERIOD, config=flux_config("memory"))
    async def flux_memory():
        return BODY

    @app.get("/flux/redis")
    @rate_limit(requests=REQUESTS, period=PERIOD, config=flux_config("redis"))
    async def flux_redis():
        return BODY

    limits_route(app, "/limits/memory", aio_storage.MemoryStorage())
    limits_route(
        app, "/limits/redis", aio_storage.RedisStorage(f"async+{redis_url()}", implementation="redispy")
    )
    slowapi_route(app, "/slowapi/memory", "memory://")
    slowapi_route(app, "/slowapi/redis", redis_url())


class Pings(asyncio.Protocol):
    """Redis PINGs on a connection the event loop owns: the PINGs asked for
    during one loop iteration go out in one write, and each answer wakes its
    caller. The least an async app can spend waiting for Redis."""

    def __init__(self) -> None:
        self.asked: list[asyncio.Future[None]] = []
        self.sent: collections.deque[asyncio.Future[None]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.received = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def ping(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self.asked:
            loop.call_soon(self.send)
        self.asked.append(future)
        return future

    def send(self) -> None:
        asked, self.asked = self.asked, []
        self.sent.extend(asked)
        self.transport.write(b"PING\r\n" * len(asked))

    def data_received(self, data: bytes) -> None:
        # Every answer is the 7 bytes "+PONG\r\n"; one may come in two reads.
        self.received += len(data)
        for _ in range(self.received // 7):
            future = self.sent.popleft()
            if not future.done():
                future.set_result(None)
        self.received %= 7


#: Each event loop's connection.
_pings: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pings] = weakref.WeakKeyDictionary()


async def redis_round_trip() -> None:
    loop = asyncio.get_running_loop()
    pings = _pings.get(loop)
    if pings is None:
        url = urllib.parse.urlsplit(redis_url())
        _, pings = await loop.create_connection(Pings, url.hostname, url.port)
        _pings[loop] = pings
    await pings.ping()


def flux_inline_route(app: FastAPI, path: str, store: str) -> None:
    """Flux's limiter called inline, as `limits` is below: the floor plus one decision."""
    limiter = RateLimiter(REQUESTS, PERIOD, config=flux_config(store))

    @app.get(path)
    async def flux_inline(request: Request, response: Response):
        address = request.client.host
        if not (await limiter.ahit(address)).allowed:
            raise HTTPException(429)
        response.headers[FLOOR_HEADER] = address
        return BODY


def limits_route(app: FastAPI, path: str, backend) -> None:
    """`limits` called inline, as a hand-written limiter would: the floor plus one decision."""
    limiter = aio_strategies.FixedWindowRateLimiter(backend)
    item = parse(RATE_TEXT)

    @app.get(path)
    async def limits_inline(request: Request, response: Response):
        address = request.client.host
        if not await limiter.hit(item, address):
            raise HTTPException(429)
        response.headers[FLOOR_HEADER] = address
        return BODY


def slowapi_route(app: FastAPI, path: str, storage_uri: str) -> None:
    """slowapi with its rate-limit headers on: it needs ``request``, and ``response``
    to put them on a returned dict. Nothing is refused, so no 429 handler."""
    limiter = Limiter(key_func=get_remote_address, storage_uri=storage_uri, headers_enabled=True)

    @app.get(path)
    @limiter.limit(RATE_TEXT)
    async def slowapi_limited(request: Request, response: Response):
        return BODY


class RoundTripFirst:
    """Waits for one Redis round trip (on the loop's own connection, as the
    floor route does) before the app, then adds the floor's header: what an
    app-wide limiter that asks Redis cannot go below."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        await redis_round_trip()
        client = scope.get("client")
        header = (FLOOR_HEADER.lower().encode(), (client[0] if client else "").encode())

        async def send_with_header(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_header)


def round_trip_middleware(app: FastAPI) -> None:
    base(app)
    app.add_middleware(RoundTripFirst)


def flux_middleware(store: str):
    """The base app behind Flux's app-wide middleware, at the benchmark's limit."""

    def install(app: FastAPI) -> None:
        base(app)
        app.add_middleware(RateLimitMiddleware, rate=RATE_TEXT, config=flux_config(store))

    return install


VARIANTS = {
    "base": base,
    "flux-middleware-memory": flux_middleware("memory"),
    "flux-middleware-redis": flux_middleware("redis"),
    "floor-round-trip-middleware": round_trip_middleware,
}


def build(name: str, path: str | None = None) -> FastAPI:
    """The app of variant ``name``; with ``path``, that route alone."""
    if name not in VARIANTS:
        raise unknown_variant(name, VARIANTS)
    app = FastAPI()
    VARIANTS[name](app)
    if path is not None:
        app.router.routes[:] = only(app.router.routes, path, lambda r: getattr(r, "path", None))
    return app


app = build(variant(), route())
