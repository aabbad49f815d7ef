"""flux.django.RateLimitMiddleware through Django's own test clients (sync
and async), on both stores; settings are configured in conftest."""

from __future__ import annotations

import asyncio

import django_urls
import pytest
from django.http import HttpResponse, JsonResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import clear_url_caches, path
from django.views import View

import flux
from flux import rate_limit
from flux.exceptions import ConfigError

MIDDLEWARE = ["flux.django.RateLimitMiddleware"]


@pytest.fixture
def urls(config):
    def a(request):
        return HttpResponse("a")

    def login(request):
        return HttpResponse("login")

    def items(request):
        return JsonResponse({"items": []})

    @flux.exempt
    def free(request):
        return HttpResponse("free")

    @flux.exempt
    class Health(View):
        def get(self, request):
            return HttpResponse("ok")

    @rate_limit(rate="2/minute")
    def both(request):
        return HttpResponse("both")

    async def async_view(request):
        return HttpResponse("async")

    django_urls.urlpatterns[:] = [
        path("a", a),
        path("login", login),
        path("api/items", items),
        path("free", free),
        path("health", Health.as_view()),
        path("both", both),
        path("async", async_view),
    ]
    clear_url_caches()
    yield
    django_urls.urlpatterns[:] = []
    clear_url_caches()


def statuses(client, url, n, **kwargs):
    return [client.get(url, **kwargs).status_code for _ in range(n)]


def test_the_default_rules_and_exempt_views(urls, config):
    config.rate_limits = {"api": {"rate": "2/minute"}}
    flux_settings = {"rate": "3/minute", "rules": {"/login": "1/minute", "/api/*": "api"}, "config": config}
    with override_settings(MIDDLEWARE=MIDDLEWARE, FLUX=flux_settings):
        client = Client(REMOTE_ADDR="10.0.0.1")
        first = client.get("/a")
        assert first.content == b"a"
        assert first.headers["X-RateLimit-Remaining"] == "2"
        assert first.headers["RateLimit-Policy"] == '"default";q=3;w=60'
        assert statuses(client, "/login", 2) == [200, 429]
        assert statuses(client, "/api/items", 3) == [200, 200, 429]
        assert statuses(client, "/free", 5) == [200] * 5
        assert statuses(client, "/health", 5) == [200] * 5  # an exempt class-based view
        assert statuses(client, "/a", 3) == [200, 200, 429]
        refused = client.get("/a")
        assert refused.json() == {
            "error": "Too Many Requests",
            "retry_after": 20,
            "detail": "Rate limit of 3 per 60 seconds exceeded; retry in 20 seconds.",
        }
        assert refused.headers["Retry-After"] == "20"
        assert Client(REMOTE_ADDR="10.0.0.2").get("/a").status_code == 200


def test_async_requests(urls, config):
    with override_settings(MIDDLEWARE=MIDDLEWARE, FLUX={"rate": "2/minute"}):
        client = AsyncClient(REMOTE_ADDR="10.0.0.1")

        async def main():
            return [(await client.get("/async")).status_code for _ in range(3)] + [
                (await client.get("/a")).status_code
            ]

        assert asyncio.run(main()) == [200, 200, 429, 429]


def test_middleware_and_decorator_on_one_view_are_two_limits(urls):
    for make in (Client, AsyncClient):
        with override_settings(MIDDLEWARE=MIDDLEWARE, FLUX={"rate": "5/minute"}):
            client = make(REMOTE_ADDR=f"10.0.0.{3 if make is Client else 4}")

            async def get(url, client=client, make=make):
                response = client.get(url)
                return await response if make is AsyncClient else response

            async def main():
                first = await get("/both")
                assert first.headers["X-RateLimit-Limit"] == "2"
                codes = [(await get("/both")).status_code for _ in range(2)]
                refused = await get("/both")
                assert refused.headers["RateLimit-Policy"] == '"default";q=2;w=60'
                return [*codes, refused.status_code], (await get("/a")).headers["X-RateLimit-Remaining"]

            codes, remaining = asyncio.run(main())
            assert codes == [200, 429, 429]
            # Only the two requests the view ran for were charged app-wide.
            assert remaining == str(5 - 3)


def test_headers_off_on_breach_and_exempt_when(urls):
    settings = {
        "rate": "1/minute",
        "headers": False,
        "exempt_when": lambda request: request.GET.get("internal") == "1",
        "on_breach": lambda request, result: HttpResponse("later", status=503),
    }
    with override_settings(MIDDLEWARE=MIDDLEWARE, FLUX=settings):
        client = Client(REMOTE_ADDR="10.0.0.1")
        assert statuses(client, "/a", 3, data={"internal": "1"}) == [200] * 3
        allowed, refused = client.get("/a"), client.get("/a")
        assert (refused.status_code, refused.content) == (503, b"later")
        assert "X-RateLimit-Limit" not in allowed.headers


def test_listed_twice_or_bad_settings_fail_when_django_loads_it(urls):
    with override_settings(MIDDLEWARE=MIDDLEWARE * 2, FLUX={"rate": "1/minute"}):
        with pytest.raises(ConfigError, match="listed twice in MIDDLEWARE"):
            Client().get("/a")
    with override_settings(MIDDLEWARE=MIDDLEWARE, FLUX={"rules": {"/a": "nope"}}):
        with pytest.raises(ConfigError, match=r"settings.FLUX: rules\['/a'\]: 'nope' is neither"):
            Client().get("/a")
    with override_settings(MIDDLEWARE=MIDDLEWARE, FLUX={"rate": "1/minute", "rulez": {}}):
        with pytest.raises(ConfigError, match="unknown setting 'rulez'"):
            Client().get("/a")
