"""Redis down, through each framework's decorator and its own test client:
``fail_silently = true`` runs the view and answers 200 with the headers of a
whole quota (and logs one warning for all the calls); ``false`` raises
``flux.exceptions.ConnectionError`` before the view runs, which the framework
answers as any error of the app (a 500, or the app's own handler)."""

from __future__ import annotations

import logging

import django_urls
import pytest
from django.http import HttpResponse
from django.test import Client
from django.urls import clear_url_caches, path
from fastapi import FastAPI
from fastapi.testclient import TestClient
from flask import Flask

import flux._ffi as ffi
import flux.exceptions
from flux import rate_limit
from flux.config import FluxConfig

# What a fail-open call reports: the quota whole, nothing to wait for.
FAIL_OPEN_HEADERS = {
    "X-RateLimit-Limit": "2",
    "X-RateLimit-Remaining": "2",
    "X-RateLimit-Reset": "0",
    "RateLimit-Policy": '"default";q=2;w=10',
    "RateLimit": '"default";r=2;t=0',
}


@pytest.fixture(params=["django", "flask", "starlette"])
def view_on(request):
    """``make(cfg)``: a view limited to 2 per 10 s on ``cfg`` (async on
    Starlette, so the batch path decides), returned as ``(get, ran)``:
    ``get()`` calls it and returns (status, headers); ``ran`` counts the
    times the view itself ran."""
    framework = request.param

    def make(cfg):
        ran = []
        if framework == "django":

            @rate_limit(requests=2, period=10, config=cfg)
            def view(request):
                ran.append(1)
                return HttpResponse("ok")

            django_urls.urlpatterns[:] = [path("v", view)]
            clear_url_caches()

            def get():
                response = Client(REMOTE_ADDR="10.0.0.1").get("/v")
                return response.status_code, response.headers

        elif framework == "flask":
            app = Flask(__name__)
            app.testing = True  # errors reach the test, as in Django's and Starlette's clients

            @app.route("/v")
            @rate_limit(requests=2, period=10, config=cfg)
            def view():
                ran.append(1)
                return "ok"

            client = app.test_client()

            def get():
                response = client.get("/v", environ_base={"REMOTE_ADDR": "10.0.0.1"})
                return response.status_code, response.headers

        else:
            app = FastAPI()

            @app.get("/v")
            @rate_limit(requests=2, period=10, config=cfg)
            async def view():
                ran.append(1)
                return {"ok": True}

            client = TestClient(app, client=("10.0.0.1", 50000))

            def get():
                response = client.get("/v")
                return response.status_code, response.headers

        return get, ran

    make.is_async = framework == "starlette"
    yield make
    django_urls.urlpatterns[:] = []
    clear_url_caches()


def test_fail_open_runs_the_view_with_the_headers_of_a_whole_quota(view_on, dead_redis_url, prefix, caplog):
    caplog.set_level(logging.WARNING, logger="flux")
    cfg = FluxConfig(redis_url=dead_redis_url, key_prefix=prefix, fail_silently=True, timeout_ms=100)
    get, ran = view_on(cfg)
    # Over the limit of 2, and each call admitted: nothing is counted.
    answers = [get() for _ in range(3)]
    assert [status for status, _ in answers] == [200, 200, 200]
    assert len(ran) == 3
    for _, headers in answers:
        assert {k: headers.get(k) for k in FAIL_OPEN_HEADERS} == FAIL_OPEN_HEADERS
        assert "Retry-After" not in headers
    said = [r.getMessage() for r in caplog.records if r.name == "flux"]
    assert len(said) == 1, said
    assert said[0].startswith(f"Redis at {dead_redis_url} failed: Redis is unreachable: "), said[0]
    assert said[0].endswith("(fail_silently = true). Said at most once every 60 s."), said[0]


def test_fail_closed_raises_before_the_view_runs(view_on, dead_redis_url, prefix, caplog):
    caplog.set_level(logging.WARNING, logger="flux")
    cfg = FluxConfig(redis_url=dead_redis_url, key_prefix=prefix, fail_silently=False, timeout_ms=100)
    get, ran = view_on(cfg)
    for _ in range(2):
        with pytest.raises(flux.exceptions.ConnectionError) as raised:
            get()
        assert type(raised.value) is flux.exceptions.ConnectionError
        assert isinstance(raised.value, ConnectionError)  # the builtin, for generic handlers
        assert raised.value.code == ffi.STORAGE
        # The same words on the batch path (Starlette's async view) as on a
        # single call: Redis's own reason.
        why = "Redis is unreachable: Connection refused"
        assert str(raised.value).startswith(why), raised.value
    assert ran == []
    # Raising is the answer: nothing is logged for it.
    assert [r.getMessage() for r in caplog.records if r.name == "flux"] == []
