"""Flask through its own test client."""

from __future__ import annotations

import pytest
from flask import Flask, jsonify

from flux import rate_limit


@pytest.fixture
def app(config):
    app = Flask(__name__)

    @app.route("/login")
    @rate_limit(requests=2, period=10)
    def login():
        return "Login Page"

    @app.route("/json")
    @rate_limit(requests=2, period=10)
    def as_json():
        return jsonify(ok=True)

    @app.route("/tuple")
    @rate_limit(requests=2, period=10)
    def as_tuple():
        return {"created": True}, 201

    @app.route("/async")
    @rate_limit(requests=1, period=10)
    async def async_view():
        return "async"

    return app


def get(app, path, addr="10.0.0.1"):
    return app.test_client().get(path, environ_base={"REMOTE_ADDR": addr})


def test_view_is_limited_per_client_with_a_json_429(app):
    assert get(app, "/login").status_code == 200
    assert get(app, "/login").status_code == 200
    refused = get(app, "/login")
    assert refused.status_code == 429
    assert refused.get_json() == {
        "error": "Too Many Requests",
        "retry_after": 5,
        "detail": "Rate limit of 2 per 10 seconds exceeded; retry in 5 seconds.",
    }
    assert refused.headers["Retry-After"] == "5"
    assert refused.headers["RateLimit"] == '"default";r=0;t=5'
    assert refused.headers["RateLimit-Policy"] == '"default";q=2;w=10'
    assert get(app, "/login", "10.0.0.2").status_code == 200


def test_allowed_responses_of_every_shape_carry_the_headers(app):
    text = get(app, "/login")
    assert text.get_data(as_text=True) == "Login Page"
    assert text.headers["X-RateLimit-Remaining"] == "1"
    assert get(app, "/json").headers["X-RateLimit-Limit"] == "2"
    created = get(app, "/tuple")
    assert created.status_code == 201 and created.get_json() == {"created": True}
    assert created.headers["X-RateLimit-Remaining"] == "1"


def test_async_view(app):
    assert get(app, "/async").get_data(as_text=True) == "async"
    assert get(app, "/async").status_code == 429


def test_decorator_options_through_flask(config):
    app = Flask(__name__)

    @app.route("/login", methods=["POST"])
    @rate_limit(rate="2/minute", deduct_when=lambda response: response.status_code >= 400)
    def login():
        from flask import request

        return ("welcome", 200) if request.form.get("password") == "secret" else ("wrong", 401)

    @app.route("/write", methods=["GET", "POST"])
    @rate_limit(rate="1/minute", methods=["POST"])
    def write():
        return "ok"

    @app.route("/stacked")
    @rate_limit(rate="5/minute")
    @rate_limit(rate="2/minute")
    def stacked():
        return "ok"

    client = app.test_client()
    good = {"password": "secret"}
    assert [client.post("/login", data=good).status_code for _ in range(4)] == [200] * 4
    assert [client.post("/login").status_code for _ in range(2)] == [401, 401]
    assert client.post("/login", data=good).status_code == 429
    assert [client.get("/write").status_code for _ in range(3)] == [200] * 3
    assert [client.post("/write").status_code for _ in range(2)] == [200, 429]
    assert [client.get("/stacked").status_code for _ in range(5)] == [200, 200, 429, 429, 429]
    assert stacked.rate_limiter.peek("127.0.0.1").remaining == 5 - 2 - 1
