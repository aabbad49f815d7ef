"""FastAPI and Starlette through Starlette's TestClient (a real ASGI app)."""

from __future__ import annotations

import time

import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from flux import forwarded_for, rate_limit


def client_for(app, host="10.0.0.1"):
    return TestClient(app, client=(host, 50000))


def make_app():
    app = FastAPI()

    @app.get("/with-request")
    @rate_limit(requests=2, period=10)
    async def with_request(request: Request):
        return {"ok": True}

    @app.get("/no-request")
    @rate_limit(requests=2, period=10)
    async def no_request():
        return {"ok": True}

    @app.get("/sync-no-request/{item}")
    @rate_limit(requests=2, period=10)
    def sync_no_request(item: int, q: str = "x"):
        return {"item": item, "q": q}

    @app.get("/response-object")
    @rate_limit(requests=5, period=10)
    async def response_object():
        return PlainTextResponse("plain")

    @app.get("/stacked")
    @rate_limit(requests=3, period=10)
    @rate_limit(requests=1, period=1)
    async def stacked():
        return {"ok": True}

    @app.get("/own-response")
    @rate_limit(requests=2, period=10)
    async def own_response(response: Response):
        response.headers["X-Mine"] = "yes"
        return {"ok": True}

    @app.get("/forwarded")
    @rate_limit(requests=1, period=10, key=forwarded_for(hops=1))
    async def forwarded():
        return {"ok": True}

    @app.get("/leaky")
    @rate_limit(requests=10, period=1, burst=1, policy="leaky_bucket", max_wait=1)
    async def leaky():
        return {"ok": True}

    @app.get("/by-user")
    @rate_limit(requests=1, period=10, key=lambda request: request.headers.get("X-User", "anon"))
    def by_user():
        return {"ok": True}

    return app


@pytest.fixture
def app(config):
    return make_app()


def test_async_endpoint_with_request_is_limited_with_exact_429(app):
    client = client_for(app)
    assert client.get("/with-request").status_code == 200
    assert client.get("/with-request").status_code == 200
    refused = client.get("/with-request")
    assert refused.status_code == 429
    assert refused.json() == {
        "error": "Too Many Requests",
        "retry_after": 5,
        "detail": "Rate limit of 2 per 10 seconds exceeded; retry in 5 seconds.",
    }
    assert refused.headers["Retry-After"] == "5"
    assert refused.headers["X-RateLimit-Limit"] == "2"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.headers["X-RateLimit-Reset"] == "10"
    assert refused.headers["RateLimit-Policy"] == '"default";q=2;w=10'
    assert refused.headers["RateLimit"] == '"default";r=0;t=5'


def test_allowed_dict_responses_carry_the_headers(app):
    response = client_for(app).get("/with-request")
    assert response.json() == {"ok": True}
    assert response.headers["X-RateLimit-Limit"] == "2"
    assert response.headers["X-RateLimit-Remaining"] == "1"
    assert response.headers["RateLimit"] == '"default";r=1;t=5'
    assert "Retry-After" not in response.headers


def test_allowed_response_objects_carry_the_headers(app):
    response = client_for(app).get("/response-object")
    assert response.text == "plain"
    assert response.headers["X-RateLimit-Remaining"] == "4"


def test_endpoint_without_request_is_limited_per_client(app):
    alice, bob = client_for(app, "10.0.0.1"), client_for(app, "10.0.0.2")
    assert [alice.get("/no-request").status_code for _ in range(3)] == [200, 200, 429]
    assert [bob.get("/no-request").status_code for _ in range(3)] == [200, 200, 429]


def test_sync_endpoint_without_request_keeps_its_parameters(app):
    client = client_for(app)
    response = client.get("/sync-no-request/7?q=hello")
    assert response.json() == {"item": 7, "q": "hello"}
    assert response.headers["X-RateLimit-Remaining"] == "1"
    assert client.get("/sync-no-request/8").status_code == 200
    assert client.get("/sync-no-request/9").status_code == 429
    assert client_for(app, "10.0.0.9").get("/sync-no-request/9").status_code == 200
    # The added parameters are not part of the API FastAPI describes.
    schema = app.openapi()["paths"]["/sync-no-request/{item}"]["get"]
    assert {p["name"] for p in schema["parameters"]} == {"item", "q"}


def test_stacked_decorators_are_two_limits(app):
    client = client_for(app)
    first = client.get("/stacked")
    assert first.status_code == 200
    # The inner 1-per-second limit is the one closest to refusing.
    assert first.headers["X-RateLimit-Remaining"] == "0"
    # Refused by the inner limit: the outer one gives its charge back.
    assert client.get("/stacked").status_code == 429
    time.sleep(1.05)
    assert client.get("/stacked").status_code == 200
    time.sleep(1.05)
    assert client.get("/stacked").status_code == 200
    time.sleep(1.05)
    # Three calls were admitted by both: the outer 3-per-10s limit refuses now.
    refused = client.get("/stacked")
    assert refused.status_code == 429
    assert refused.headers["RateLimit-Policy"] == '"default";q=3;w=10'


def test_endpoint_with_its_own_response_keeps_it(app):
    response = client_for(app).get("/own-response")
    assert response.headers["X-Mine"] == "yes"
    assert response.headers["X-RateLimit-Remaining"] == "1"


def test_forwarded_for_is_used_only_through_the_helper(app):
    client = client_for(app, "10.9.9.9")  # the proxy
    one = {"X-Forwarded-For": "6.6.6.6, 1.1.1.1"}
    two = {"X-Forwarded-For": "6.6.6.6, 2.2.2.2"}
    assert client.get("/forwarded", headers=one).status_code == 200
    assert client.get("/forwarded", headers=one).status_code == 429
    assert client.get("/forwarded", headers=two).status_code == 200  # another client behind the proxy
    # Without the helper the header means nothing: one peer, one limit.
    assert client.get("/no-request", headers=one).status_code == 200
    assert client.get("/no-request", headers=two).status_code == 200
    assert client.get("/no-request", headers={"X-Forwarded-For": "3.3.3.3"}).status_code == 429


def test_custom_key_function(app):
    client = client_for(app)
    assert client.get("/by-user", headers={"X-User": "ann"}).status_code == 200
    assert client.get("/by-user", headers={"X-User": "ann"}).status_code == 429
    assert client.get("/by-user", headers={"X-User": "ben"}).status_code == 200


def test_leaky_bucket_waits_its_delay(app):
    client = client_for(app)
    started = time.monotonic()
    assert client.get("/leaky").status_code == 200
    assert client.get("/leaky").status_code == 200  # admitted 0.1 s after the first
    assert time.monotonic() - started >= 0.095


def test_plain_starlette_endpoint(config):
    @rate_limit(requests=1, period=10)
    async def home(request):
        return PlainTextResponse("home")

    @rate_limit(requests=1, period=10)
    def sync_home(request):
        return PlainTextResponse("sync")

    app = Starlette(routes=[Route("/", home), Route("/sync", sync_home)])
    client = client_for(app)
    assert client.get("/").status_code == 200
    assert client.get("/").status_code == 429
    assert client.get("/sync").headers["X-RateLimit-Remaining"] == "0"
    assert client.get("/sync").status_code == 429


def test_several_rates_list_every_policy_in_the_headers(config):
    app = FastAPI()

    @app.get("/multi")
    @rate_limit(rate="10/second;1000/day")
    async def multi():
        return {"ok": True}

    response = client_for(app).get("/multi")
    assert response.headers["RateLimit-Policy"] == '"10per1";q=10;w=1, "1000per86400";q=1000;w=86400'
    # The quota closest to refusing reports.
    assert response.headers["RateLimit"] == '"10per1";r=9;t=1'
    assert response.headers["X-RateLimit-Limit"] == "10"


def test_decorator_options_through_fastapi(config):
    from fastapi import HTTPException

    app = FastAPI()

    @app.post("/login")
    @rate_limit(rate="2/minute", deduct_when=lambda r: getattr(r, "status_code", 200) >= 400)
    async def login(password: str = ""):
        if password != "secret":
            raise HTTPException(status_code=401, detail="wrong password")
        return {"ok": True}

    @app.api_route("/write", methods=["GET", "POST"])
    @rate_limit(rate="1/minute", methods=["POST"], headers=False)
    def write():
        return {"ok": True}

    @app.get("/plan")
    @rate_limit(
        rate=lambda request: {"gold": "3/minute"}.get(request.headers.get("X-Plan"), "1/minute"),
        exempt_when=lambda request: request.headers.get("X-Internal") == "yes",
        on_breach=lambda request, result: PlainTextResponse("upgrade your plan", status_code=402),
    )
    async def plan(request: Request):
        return {"ok": True}

    client = client_for(app)
    # Good passwords give their charge back; the two bad ones use the limit up.
    assert [client.post("/login?password=secret").status_code for _ in range(4)] == [200] * 4
    assert [client.post("/login").status_code for _ in range(2)] == [401, 401]
    assert client.post("/login?password=secret").status_code == 429

    assert [client.get("/write").status_code for _ in range(3)] == [200] * 3
    posts = [client.post("/write") for _ in range(2)]
    assert [p.status_code for p in posts] == [200, 429]
    assert "X-RateLimit-Limit" not in posts[0].headers and "Retry-After" not in posts[1].headers

    gold = {"X-Plan": "gold"}
    assert [client.get("/plan", headers=gold).status_code for _ in range(4)] == [200, 200, 200, 402]
    assert [client.get("/plan").status_code for _ in range(2)] == [200, 402]
    assert client.get("/plan").text == "upgrade your plan"
    assert client.get("/plan", headers={"X-Internal": "yes"}).status_code == 200


def test_stacked_endpoints_count_exactly(config):
    app = FastAPI()

    @app.get("/sync")
    @rate_limit(rate="5/minute")
    @rate_limit(rate="2/minute")
    def sync_view():
        return {"ok": True}

    @app.get("/async")
    @rate_limit(rate="5/minute")
    @rate_limit(rate="2/minute")
    async def async_view():
        return {"ok": True}

    client = client_for(app)
    for path, view in (("/sync", sync_view), ("/async", async_view)):
        assert [client.get(path).status_code for _ in range(6)] == [200, 200, 429, 429, 429, 429]
        # The outer limit was charged for the two calls that ran only.
        assert view.rate_limiter.peek("10.0.0.1").remaining == 5 - 2 - 1


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("included", [False, True], ids=["app", "included-router"])
def test_a_redis_limit_keyed_by_the_peer_is_decided_before_the_dependencies(redis_config, sync, included):
    # Before FastAPI solves the dependencies and builds the request's objects,
    # from the route's second request on (the first finds the route): what a
    # dependency reads shows the call already counted. (``peek`` answers what
    # the next call would be told.)
    seen = []

    def remaining_now():
        seen.append(view.rate_limiter.peek("10.0.0.1").remaining)

    def endpoint():
        return {"ok": True}

    async def async_endpoint():
        return {"ok": True}

    app = FastAPI()
    router = APIRouter(prefix="/api") if included else app
    limited = rate_limit(rate="5/minute", config=redis_config)(endpoint if sync else async_endpoint)
    view = router.get("/", dependencies=[Depends(remaining_now)])(limited)
    if included:
        app.include_router(router)
    client = client_for(app)
    responses = [client.get("/api/" if included else "/") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.headers["X-RateLimit-Remaining"] for r in responses] == ["4", "3", "2"]
    assert seen == [4, 2, 1]
    assert view.rate_limiter.peek("10.0.0.1").remaining == 1


def test_a_request_a_dependency_refuses_is_not_counted(config):
    def token(x_token: str | None = Header(None)):
        if x_token != "ok":
            raise HTTPException(401)

    app = FastAPI()

    @app.get("/private", dependencies=[Depends(token)])
    @rate_limit(rate="3/minute")
    async def private(n: int = 0):
        return {"n": n}

    client, ok = client_for(app), {"X-Token": "ok"}
    assert client.get("/private", headers=ok).status_code == 200
    # Refused by the dependency, or by FastAPI's validation of the query: the
    # endpoint never ran, so the limit is not charged (on Redis it was, and
    # got the charge back).
    assert [client.get("/private").status_code for _ in range(4)] == [401] * 4
    assert [client.get("/private?n=x", headers=ok).status_code for _ in range(4)] == [422] * 4
    assert private.rate_limiter.peek("10.0.0.1").remaining == 1
    assert [client.get("/private", headers=ok).status_code for _ in range(3)] == [200, 200, 429]
