"""What every benchmark app shares: the limit, the body, the floor's header, the stores.

The runner starts one server per row, with three environment variables:
``BENCH_VARIANT`` (which of the app's variants to build; ``base`` serves
most rows, a variant holds what acts on every route of its app, such as
Flask-Limiter), ``BENCH_ROUTE`` (the row's path: the server keeps that route
alone, because FastAPI and Django try routes in order, and each route tried
before the right one cost 0.7 µs in FastAPI) and ``BENCH_REDIS_URL`` (the
redis-server of this run).
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from typing import Callable, TypeVar

from flux.config import FluxConfig

#: A limit nothing reaches, so every request takes a limiter's whole
#: admitting path: 10**9 per hour is 277,000 requests per second.
REQUESTS = 1_000_000_000
PERIOD = 3600
#: The same limit as the peers write it.
RATE_TEXT = f"{REQUESTS}/hour"

#: Every route answers this JSON body.
BODY = {"message": "hello"}

#: The floor route's one header: a limiter must read the client's address
#: and set a header, and this is the least that does both.
FLOOR_HEADER = "X-Client-Address"

#: The five rate-limit headers Flux sends at this limit while nothing comes
#: near it, as ASGI carries them: the "floor, five headers" row sends them
#: as constants, to show what sending them costs a server by itself.
RATE_LIMIT_HEADERS_RAW = [
    (b"x-ratelimit-limit", b"%d" % REQUESTS),
    (b"x-ratelimit-remaining", b"%d" % (REQUESTS - 1)),
    (b"x-ratelimit-reset", b"1"),
    (b"ratelimit-policy", b'"default";q=%d;w=%d' % (REQUESTS, PERIOD)),
    (b"ratelimit", b'"default";r=%d;t=1' % (REQUESTS - 1)),
]

#: Keys of this benchmark in its own redis-server.
KEY_PREFIX = "bench:"


def variant() -> str:
    return os.environ.get("BENCH_VARIANT", "base")


def route() -> str | None:
    return os.environ.get("BENCH_ROUTE") or None


Route = TypeVar("Route")


def only(routes: list[Route], path: str, path_of: Callable[[Route], str | None]) -> list[Route]:
    """The routes of ``path``: what a server keeps of its app."""
    kept = [r for r in routes if path_of(r) == path]
    if not kept:
        raise ValueError(f"BENCH_ROUTE: the app has no route {path!r}")
    return kept


def redis_url() -> str:
    url = os.environ.get("BENCH_REDIS_URL")
    if not url:
        raise RuntimeError(
            "BENCH_REDIS_URL is not set: the apps are started by benches/http/run.py, "
            "which starts a redis-server and passes its URL"
        )
    return url


def flux_config(store: str) -> FluxConfig:
    """Flux on ``"memory"`` or ``"redis"``. Redis failing fails the request
    (instead of admitting it unseen), so a Redis row always measures Redis;
    its timeout is long, so that a stall of a busy machine slows a row rather
    than failing the run (at the default 200 ms, some calls timed out when
    the machine's load average was 10)."""
    if store == "memory":
        return FluxConfig(storage="memory", key_prefix=KEY_PREFIX)
    return FluxConfig(redis_url=redis_url(), key_prefix=KEY_PREFIX, fail_silently=False, timeout_ms=5000)


class BlockingPing:
    """Redis PINGs on a blocking socket of this process: one write, then
    reads until the answer is whole. The least a sync app can spend waiting
    for Redis (Flux's sync call makes the same two system calls, from Rust).
    A worker forked with the socket open makes its own."""

    def __init__(self) -> None:
        self.pid = 0
        self.sock: socket.socket | None = None

    def __call__(self) -> None:
        if self.pid != os.getpid():
            url = urllib.parse.urlsplit(redis_url())
            self.sock = socket.create_connection((url.hostname, url.port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.pid = os.getpid()
        assert self.sock is not None
        self.sock.sendall(b"PING\r\n")
        answer = self.sock.recv(16)
        while not answer.endswith(b"\r\n"):
            answer += self.sock.recv(16)


#: The floor round trip of the sync apps (Flask, Django).
redis_round_trip = BlockingPing()


def unknown_variant(name: str, known) -> ValueError:
    return ValueError(f"BENCH_VARIANT must be one of {', '.join(sorted(known))}, got {name!r}")
