"""Django through its own test Client (settings are configured in conftest)."""

from __future__ import annotations

import django_urls
import pytest
from django.http import HttpResponse, JsonResponse
from django.test import Client
from django.urls import clear_url_caches, path
from django.utils.decorators import method_decorator
from django.views import View

from flux import rate_limit


@pytest.fixture
def urls(config):
    @rate_limit(requests=2, period=10)
    def function_view(request):
        return JsonResponse({"ok": True})

    class ClassView(View):
        @method_decorator(rate_limit(requests=1, period=10))
        def get(self, request):
            return HttpResponse("get")

        @rate_limit(requests=1, period=10)
        def post(self, request):
            return HttpResponse("post")

    @method_decorator(rate_limit(requests=1, period=10), name="dispatch")
    class WholeView(View):
        def get(self, request):
            return HttpResponse("whole")

    @rate_limit(requests=1, period=10)
    async def async_view(request):
        return HttpResponse("async")

    django_urls.urlpatterns[:] = [
        path("fn", function_view),
        path("cbv", ClassView.as_view()),
        path("whole", WholeView.as_view()),
        path("async", async_view),
    ]
    clear_url_caches()
    yield
    django_urls.urlpatterns[:] = []
    clear_url_caches()


def client(addr="10.0.0.1"):
    return Client(REMOTE_ADDR=addr)


def test_function_view(urls):
    assert client().get("/fn").status_code == 200
    allowed = client().get("/fn")
    assert allowed.headers["X-RateLimit-Remaining"] == "0"
    refused = client().get("/fn")
    assert refused.status_code == 429
    assert refused.json() == {
        "error": "Too Many Requests",
        "retry_after": 5,
        "detail": "Rate limit of 2 per 10 seconds exceeded; retry in 5 seconds.",
    }
    assert refused.headers["Retry-After"] == "5"
    assert refused.headers["X-RateLimit-Limit"] == "2"
    assert refused.headers["RateLimit-Policy"] == '"default";q=2;w=10'
    assert client("10.0.0.2").get("/fn").status_code == 200


def test_class_based_view_methods(urls):
    assert client().get("/cbv").content == b"get"
    assert client().get("/cbv").status_code == 429
    # post has its own limit, decorated without method_decorator.
    assert client().post("/cbv").content == b"post"
    assert client().post("/cbv").status_code == 429
    assert client("10.0.0.3").get("/cbv").status_code == 200


def test_method_decorator_on_dispatch(urls):
    assert client().get("/whole").content == b"whole"
    assert client().get("/whole").status_code == 429


def test_async_view(urls):
    assert client().get("/async").content == b"async"
    assert client().get("/async").status_code == 429


def test_decorator_options_through_django(config):
    @rate_limit(rate="2/minute", deduct_when=lambda response: response.status_code >= 400)
    def login(request):
        ok = request.POST.get("password") == "secret"
        return HttpResponse("welcome" if ok else "wrong", status=200 if ok else 401)

    @rate_limit(rate="1/minute", methods=["POST"])
    def write(request):
        return HttpResponse("ok")

    @rate_limit(rate="5/minute")
    @rate_limit(rate="2/minute")
    def stacked(request):
        return HttpResponse("ok")

    django_urls.urlpatterns[:] = [path("login", login), path("write", write), path("stacked", stacked)]
    clear_url_caches()
    try:
        c = client()
        good = {"password": "secret"}
        assert [c.post("/login", good).status_code for _ in range(4)] == [200] * 4
        assert [c.post("/login").status_code for _ in range(2)] == [401, 401]
        assert c.post("/login", good).status_code == 429
        assert [c.get("/write").status_code for _ in range(3)] == [200] * 3
        assert [c.post("/write").status_code for _ in range(2)] == [200, 429]
        assert [c.get("/stacked").status_code for _ in range(5)] == [200, 200, 429, 429, 429]
        assert stacked.rate_limiter.peek("10.0.0.1").remaining == 5 - 2 - 1
    finally:
        django_urls.urlpatterns[:] = []
        clear_url_caches()
