"""flux.asgi.RateLimitMiddleware through Starlette's TestClient, on both
stores: FastAPI, Starlette and a bare ASGI app."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.websockets import WebSocketDisconnect

import flux
from flux import RateLimitExceeded, rate_limit
from flux.asgi import RateLimitMiddleware
from flux.exceptions import ConfigError, LimitError


def client_for(app, host="10.0.0.1", **kwargs):
    return TestClient(app, client=(host, 50000), **kwargs)


def statuses(client, path, n, **kwargs):
    return [client.get(path, **kwargs).status_code for _ in range(n)]


def fastapi_app(**settings):
    app = FastAPI()
    app.add_middleware(RateLimitMiddleware, **settings)

    @app.get("/a")
    def a():
        return {"route": "a"}

    @app.get("/b")
    async def b():
        return {"route": "b"}

    @app.get("/login")
    async def login():
        return {"route": "login"}

    @app.get("/api/items")
    async def items():
        return {"route": "items"}

    @app.get("/api/admin/users")
    async def users():
        return {"route": "users"}

    @app.get("/health")
    async def health():
        return {"ok": True}

    @app.get("/free")
    @flux.exempt
    async def free():
        return {"route": "free"}

    @app.post("/a")
    def post_a():
        return {"posted": True}

    return app


def test_the_default_applies_to_every_route_with_one_count(config):
    client = client_for(fastapi_app(rate="3/minute"))
    first = client.get("/a")
    assert first.json() == {"route": "a"}
    assert first.headers["X-RateLimit-Limit"] == "3"
    assert first.headers["X-RateLimit-Remaining"] == "2"
    assert first.headers["RateLimit-Policy"] == '"default";q=3;w=60'
    assert first.headers["RateLimit"] == '"default";r=2;t=20'
    assert client.get("/b").status_code == 200
    assert client.get("/login").status_code == 200
    refused = client.get("/a")
    assert refused.status_code == 429
    assert refused.json() == {
        "error": "Too Many Requests",
        "retry_after": 20,
        "detail": "Rate limit of 3 per 60 seconds exceeded; retry in 20 seconds.",
    }
    assert refused.headers["Retry-After"] == "20"
    assert refused.headers["content-type"] == "application/json"
    assert refused.headers["RateLimit"] == '"default";r=0;t=20'
    # Another client has its own count.
    assert client_for(client.app, "10.0.0.2").get("/a").status_code == 200


def test_rules_match_exact_paths_then_the_longest_prefix(prefix, config):
    config.rate_limits = {"api": {"rate": "4/minute"}}
    app = fastapi_app(
        rate="10/minute",
        rules={"/login": "1/minute", "/api/*": "api", "/api/admin/*": "2/minute", "/health": None},
        config=config,
    )
    client = client_for(app)
    assert statuses(client, "/login", 2) == [200, 429]
    assert statuses(client, "/api/items", 5) == [200] * 4 + [429]
    assert statuses(client, "/api/admin/users", 3) == [200, 200, 429]
    assert statuses(client, "/health", 20) == [200] * 20
    assert "X-RateLimit-Limit" not in client.get("/health").headers
    api = client.get("/api/items")
    assert api.headers["RateLimit-Policy"] == '"api";q=4;w=60'
    # The default counted none of the above.
    assert client.get("/a").headers["X-RateLimit-Remaining"] == "9"


def test_rules_alone_limit_only_their_paths(config):
    client = client_for(fastapi_app(rules={"/login": "1/minute"}))
    assert statuses(client, "/login", 2) == [200, 429]
    assert statuses(client, "/a", 30) == [200] * 30


def test_a_rule_may_choose_the_limit_per_request(config):
    plan = {"gold": "3/minute", "free": "1/minute"}
    app = fastapi_app(rules={"/api/*": lambda request: plan.get(request.headers.get("X-Plan"))})
    client = client_for(app)
    assert statuses(client, "/api/items", 4, headers={"X-Plan": "gold"}) == [200, 200, 200, 429]
    assert statuses(client, "/api/items", 2, headers={"X-Plan": "free"}) == [200, 429]
    assert statuses(client, "/api/items", 10, headers={"X-Plan": "staff"}) == [200] * 10


def test_exempt_routes_and_predicates(config):
    app = fastapi_app(
        rate="1/minute",
        exempt_when=lambda request: request.headers.get("X-Internal") == "yes",
        key=lambda request: request.headers.get("X-User"),
    )
    client = client_for(app)
    assert statuses(client, "/free", 5, headers={"X-User": "ann"}) == [200] * 5
    assert statuses(client, "/a", 3, headers={"X-User": "ann", "X-Internal": "yes"}) == [200] * 3
    assert statuses(client, "/a", 3) == [200] * 3  # no X-User: the key answers None
    assert statuses(client, "/a", 2, headers={"X-User": "ann"}) == [200, 429]
    assert statuses(client, "/b", 1, headers={"X-User": "ben"}) == [200]


def test_methods_limit_only_those_methods(config):
    client = client_for(fastapi_app(rate="1/minute", methods=["POST"]))
    assert statuses(client, "/a", 5) == [200] * 5
    assert [client.post("/a").status_code for _ in range(2)] == [200, 429]


def test_exempt_routes_inside_mounts(config):
    async def open_(request):
        return PlainTextResponse("open")

    async def shut(request):
        return PlainTextResponse("shut")

    inner = Starlette(routes=[Route("/open", flux.exempt(open_)), Route("/shut", shut)])
    app = Starlette(
        routes=[
            Mount("/app", app=inner),
            Mount("/sub", routes=[Route("/open", flux.exempt(open_)), Route("/shut", shut)]),
        ]
    )
    app.add_middleware(RateLimitMiddleware, rate="2/minute")
    client = client_for(app)
    assert statuses(client, "/app/open", 4) == [200] * 4
    assert statuses(client, "/sub/open", 4) == [200] * 4
    assert statuses(client, "/sub/shut", 1) == [200]
    assert statuses(client, "/app/shut", 2) == [200, 429]


def test_on_breach_answers_refusals(config):
    def busy(request, result):
        if request.url.path == "/b":
            return None  # the default 429
        return PlainTextResponse(f"slow down {result.retry_after:.0f}", status_code=503)

    client = client_for(fastapi_app(rate="1/minute", on_breach=busy))
    assert client.get("/a").status_code == 200
    refused = client.get("/a")
    assert (refused.status_code, refused.text) == (503, "slow down 60")
    assert client.get("/b").status_code == 429


def test_an_exception_handler_of_the_app_answers_refusals(config):
    app = fastapi_app(rate="1/minute")

    @app.exception_handler(RateLimitExceeded)
    async def too_many(request: Request, exc: RateLimitExceeded):
        return JSONResponse({"wait": round(exc.retry_after)}, status_code=429, headers=exc.to_headers())

    @app.get("/decorated")
    @rate_limit(rate="1/minute", key="shared")
    async def decorated():
        return {"ok": True}

    client = client_for(app)
    assert client.get("/a").status_code == 200
    refused = client.get("/a")
    assert (refused.status_code, refused.json()) == (429, {"wait": 60})
    assert refused.headers["Retry-After"] == "60"
    # The decorator lets RateLimitExceeded reach the handler too.
    other = client_for(app, "10.0.0.7")
    assert other.get("/decorated").status_code == 200
    refused = client_for(app, "10.0.0.8").get("/decorated")
    assert (refused.status_code, refused.json()) == (429, {"wait": 60})


def test_headers_off_means_none(config):
    client = client_for(fastapi_app(rate="1/minute", headers=False))
    allowed, refused = client.get("/a"), client.get("/a")
    assert refused.status_code == 429
    for response in (allowed, refused):
        assert not {"x-ratelimit-limit", "ratelimit", "ratelimit-policy", "retry-after"} & set(response.headers)


def test_middleware_and_decorator_on_one_view_are_two_limits(config):
    app = fastapi_app(rate="5/minute")

    @app.get("/both")
    @rate_limit(rate="2/minute")
    async def both():
        return {"ok": True}

    client = client_for(app)
    first = client.get("/both")
    # The decorator's limit is closer to refusing: its headers are sent.
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    assert statuses(client, "/both", 2) == [200, 429]
    refused = client.get("/both")
    assert refused.status_code == 429
    # The refusal is the decorator's, with its headers alone.
    assert refused.headers["RateLimit-Policy"] == '"default";q=2;w=60'
    assert refused.headers["X-RateLimit-Limit"] == "2"
    # The middleware counted only the two requests the view ran for.
    assert client.get("/a").headers["X-RateLimit-Remaining"] == str(5 - 3)


def test_websocket_over_its_limit_is_closed_with_1008(config):
    app = FastAPI()
    app.add_middleware(RateLimitMiddleware, rules={"/ws": "1/minute"})

    @app.websocket("/ws")
    async def ws(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    @app.websocket("/ws-decorated")
    @rate_limit(rate="1/minute")
    async def ws_decorated(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    client = client_for(app)
    for path in ("/ws", "/ws-decorated"):
        with client.websocket_connect(path) as socket:
            assert socket.receive_text() == "hello"
        with pytest.raises(WebSocketDisconnect) as closed:
            with client.websocket_connect(path) as socket:
                socket.receive_text()
        assert closed.value.code == 1008
        assert closed.value.reason == "rate limit exceeded; retry in 60 seconds"


def test_flux_toml_http_section_configures_the_middleware(prefix, config):
    config.rate_limits = {"api": {"rate": "2/minute"}}
    config.http = {"rate": "3/minute", "rules": {"/api/*": "api", "/health": None}}
    client = client_for(fastapi_app(config=config))
    assert statuses(client, "/api/items", 3) == [200, 200, 429]
    assert statuses(client, "/health", 5) == [200] * 5
    assert statuses(client, "/a", 4) == [200, 200, 200, 429]
    # What is given in code replaces the default and adds rules over the file's.
    other = client_for(fastapi_app(config=config, rate="1/minute", rules={"/health": "1/minute"}), "10.1.1.1")
    assert statuses(other, "/health", 2) == [200, 429]
    assert statuses(other, "/a", 2) == [200, 429]
    assert statuses(other, "/api/items", 3) == [200, 200, 429]


def test_added_twice_fails_at_startup(config):
    app = fastapi_app(rate="1/minute")
    app.add_middleware(RateLimitMiddleware, rate="5/minute")
    with pytest.raises(ConfigError, match="RateLimitMiddleware is added twice"):
        with client_for(app):
            pass


@pytest.mark.parametrize(
    "settings, error, message",
    [
        (
            {"rules": {"/api/*": "apii"}},
            ConfigError,
            r"rules\['/api/\*'\]: 'apii' is neither a limit under \[rate_limits\] "
            r"\(no limit is defined under \[rate_limits\]\) nor a rate: .*invalid rate",
        ),
        ({"rate": "10/fortnight"}, LimitError, r"RateLimitMiddleware: .*invalid rate \"10/fortnight\""),
        ({"name": "nope"}, ConfigError, r'no limit named "nope"'),
        ({"rules": {"api/*": "1/second"}}, ConfigError, r"rules\['api/\*'\] is not a path pattern"),
        ({"rules": {"/a": 5}}, LimitError, r"rules\['/a'\]: .*rate must be a rate string"),
        ({"rate": "1/second", "cost": 2}, LimitError, r"cost"),
        ({"bogus": 1}, ConfigError, r"unknown setting 'bogus'; allowed: rate, name, rules"),
    ],
)
def test_bad_configuration_fails_at_startup_naming_it(settings, error, message):
    with pytest.raises(error, match=message):
        with client_for(fastapi_app(**settings)):
            pass


def test_a_bare_asgi_app_without_starlette(tmp_path, redis_server):
    """Any ASGI app, in a process that never imports Starlette: callables get the scope."""
    script = textwrap.dedent(
        """
        import asyncio, json, sys
        from flux.asgi import RateLimitMiddleware
        from flux.config import FluxConfig

        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"hi"})

        async def call(middleware, path, user):
            scope = {"type": "http", "path": path, "method": "GET", "headers": [(b"x-user", user.encode())],
                      "client": ("10.0.0.1", 1)}
            sent = []
            async def receive():
                return {"type": "http.request"}
            async def send(message):
                sent.append(message)
            await middleware(scope, receive, send)
            start = sent[0]
            return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}

        async def main(url):
            cfg = FluxConfig(redis_url=url, key_prefix="bare:") if url else FluxConfig(key_prefix="bare:")
            middleware = RateLimitMiddleware(
                app, rate="2/minute", key=lambda scope: dict(scope["headers"])[b"x-user"], config=cfg
            )
            out = [await call(middleware, "/x", "ann") for _ in range(3)] + [await call(middleware, "/x", "ben")]
            print(json.dumps([[status, headers.get("x-ratelimit-remaining")] for status, headers in out]))
            assert "starlette" not in sys.modules

        asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
        """
    )
    path = tmp_path / "bare.py"
    path.write_text(script)
    for args in ([], [redis_server.url]):
        done = subprocess.run(
            [sys.executable, str(path), *args], capture_output=True, text=True, timeout=60, env=os.environ
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == '[[200, "1"], [200, "0"], [429, "0"], [200, "1"]]'
