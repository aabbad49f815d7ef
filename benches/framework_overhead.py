"""What Flux's decorator and middlewares add to a request, in process.

Each app is called directly (ASGI for FastAPI, WSGI for Flask and Django),
with no server, socket or client, so what is left is the framework's own
work and Flux's: the number is Flux's cost per request, not a throughput.
Rows are interleaved round by round so every row sees the same load. The
table gives, per request, the process's CPU time (which other processes
on a shared machine do not inflate) and the elapsed time, and Flux's
CPU cost against the row it adds to, taken within each round (the
decorator against the "floor" route, which takes the parameters and sets
the one header a limiter needs; a middleware against the plain route). The limits are ones no
request reaches. Redis rows run against a redis-server the script starts.

    python benches/framework_overhead.py [--rounds 15] [--requests 2000]

End-to-end numbers, through a real server and a load generator, are
``make bench-http``'s.
"""


# No "from __future__ import annotations": FastAPI reads the endpoints' annotations,
# which name classes imported inside the functions below.
import argparse
import asyncio
import io
import os
import statistics
import sys
import time

from redis_server import redis_server

RATE = "1000000/second"


# --- FastAPI, called as ASGI -------------------------------------------------


def fastapi_apps(cfg, where: str) -> dict[str, object]:
    from fastapi import FastAPI, Request, Response

    from flux import rate_limit
    from flux.asgi import RateLimitMiddleware

    plain = FastAPI()

    @plain.get("/")
    async def home():
        return {"ok": True}

    floor = FastAPI()

    @floor.get("/")
    async def floor_home(request: Request, response: Response):
        response.headers["X-RateLimit-Remaining"] = "1"
        return {"ok": True}

    decorated = FastAPI()

    @decorated.get("/")
    @rate_limit(rate=RATE, config=cfg)
    async def decorated_home():
        return {"ok": True}

    middleware = FastAPI()
    middleware.add_middleware(RateLimitMiddleware, rate=RATE, config=cfg)

    @middleware.get("/")
    async def middleware_home():
        return {"ok": True}

    apps = {f"fastapi decorator, {where}": (decorated, "floor"), f"fastapi middleware, {where}": (middleware, "plain")}
    if where == "memory":
        apps = {"fastapi plain": (plain, None), "fastapi floor": (floor, None), **apps}
    return apps


def asgi_runner(app):
    template = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench")],
        "client": ("10.0.0.1", 50000),
        "server": ("bench", 80),
    }

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise SystemExit(f"status {message['status']}")

    async def run(n):
        for _ in range(n):
            await app(dict(template), receive, send)

    loop = asyncio.new_event_loop()
    return lambda n: loop.run_until_complete(run(n))


# --- Flask and Django, called as WSGI ----------------------------------------


def wsgi_runner(app, path="/"):
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.1",
        "HTTP_HOST": "bench",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }

    def start_response(status, headers, exc_info=None):
        if not status.startswith("200"):
            raise SystemExit(f"status {status}")

    def run(n):
        for _ in range(n):
            for _ in app(dict(environ), start_response):
                pass

    return run


def flask_apps(cfg, where: str) -> dict[str, object]:
    from flask import Flask, make_response

    from flux import rate_limit
    from flux.flask import Flux

    plain = Flask("plain")
    plain.add_url_rule("/", "home", lambda: "ok")
    floor = Flask("floor")

    def floor_home():
        response = make_response("ok")
        response.headers["X-RateLimit-Remaining"] = "1"
        return response

    floor.add_url_rule("/", "home", floor_home)
    decorated = Flask("decorated")
    decorated.add_url_rule("/", "home", rate_limit(rate=RATE, config=cfg)(lambda: "ok"))
    extension = Flask("extension")
    extension.add_url_rule("/", "home", lambda: "ok")
    Flux(extension, rate=RATE, config=cfg)
    apps = {f"flask decorator, {where}": (decorated, "floor"), f"flask extension, {where}": (extension, "plain")}
    if where == "memory":
        apps = {"flask plain": (plain, None), "flask floor": (floor, None), **apps}
    return apps


def django_apps(cfg, where: str) -> dict[str, object]:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False, SECRET_KEY="bench", ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__,
            MIDDLEWARE=[], INSTALLED_APPS=[], DATABASES={}, USE_TZ=True,
        )
        django.setup()
    from django.core.handlers.wsgi import WSGIHandler
    from django.http import HttpResponse
    from django.test import override_settings
    from django.urls import path

    from flux import rate_limit

    def plain(request):
        return HttpResponse("ok")

    def floor(request):
        response = HttpResponse("ok")
        response["X-RateLimit-Remaining"] = "1"
        return response

    urlpatterns[:] = [
        *urlpatterns,
        path("plain", plain),
        path("floor", floor),
        path(f"decorated-{where}", rate_limit(rate=RATE, config=cfg)(plain)),
    ]
    handler = WSGIHandler()
    with override_settings(MIDDLEWARE=["flux.django.RateLimitMiddleware"], FLUX={"rate": RATE, "config": cfg}):
        limited = WSGIHandler()  # loads its middleware now
    apps = {
        f"django decorator, {where}": (wsgi_runner(handler, f"/decorated-{where}"), "floor"),
        f"django middleware, {where}": (wsgi_runner(limited, "/plain"), "plain"),
    }
    if where == "memory":
        apps = {
            "django plain": (wsgi_runner(handler, "/plain"), None),
            "django floor": (wsgi_runner(handler, "/floor"), None),
            **apps,
        }
    return apps


urlpatterns: list = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    from flux.config import FluxConfig

    with redis_server() as port:
        url = f"redis://127.0.0.1:{port}/0"
        memory = FluxConfig(key_prefix="bench:")
        shared = FluxConfig(redis_url=url, key_prefix="bench:")
        groups = []
        for make, runner in ((fastapi_apps, asgi_runner), (flask_apps, wsgi_runner), (django_apps, None)):
            # Django's rows come with their runners (one handler serves several paths).
            rows = {**make(memory, "memory"), **make(shared, "redis")}
            runs = {
                name: (runner(app) if runner else app, base) for name, (app, base) in rows.items()
            }
            groups.append(runs)
        times: dict[str, list[float]] = {name: [] for runs in groups for name in runs}
        walls: dict[str, list[float]] = {name: [] for runs in groups for name in runs}
        for runs in groups:  # warm up
            for run, _ in runs.values():
                run(200)
        for i in range(args.rounds):
            for runs in groups:
                order = list(runs.items())
                if i % 2:
                    order.reverse()
                for name, (run, _) in order:
                    wall, cpu = time.perf_counter(), time.process_time()
                    run(args.requests)
                    times[name].append((time.process_time() - cpu) / args.requests * 1e6)
                    walls[name].append((time.perf_counter() - wall) / args.requests * 1e6)
        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {args.rounds} rounds "
              f"of {args.requests} requests per row. CPU: the process's CPU time per request (its "
              "threads included, Redis's not), which other processes on the machine do not "
              "inflate; wall: elapsed time, Redis's round trip included. Medians over rounds; "
              "Flux's cost and the ratio are taken within each round against the row's base\n")
        print(f"| {'row':<28} | {'CPU µs':>7} | {'wall µs':>7} | {'Flux adds, CPU µs':>17} | {'base / row, CPU':>15} |")
        print(f"|{'-' * 30}|{'-' * 8}:|{'-' * 8}:|{'-' * 18}:|{'-' * 16}:|")
        for runs in groups:
            framework = next(iter(runs)).split()[0]
            for name, (_, base) in runs.items():
                cpu, wall = statistics.median(times[name]), statistics.median(walls[name])
                if base is None:
                    print(f"| {name:<28} | {cpu:>7.1f} | {wall:>7.1f} | {'':>17} | {'':>15} |")
                    continue
                pairs = list(zip(times[name], times[f"{framework} {base}"]))
                added = statistics.median(row - ref for row, ref in pairs)
                ratio = statistics.median(ref / row for row, ref in pairs)
                print(f"| {name:<28} | {cpu:>7.1f} | {wall:>7.1f} | {added:>17.1f} | {ratio:>15.2f} |")


if __name__ == "__main__":
    main()
