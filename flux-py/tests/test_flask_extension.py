"""flux.flask.Flux through Flask's own test client, on both stores."""

from __future__ import annotations

import pytest
from flask import Flask, jsonify

import flux
from flux import rate_limit
from flux.exceptions import ConfigError, LimitError
from flux.flask import Flux


def make_app():
    app = Flask(__name__)

    @app.route("/a")
    def a():
        return "a"

    @app.route("/b", methods=["GET", "POST"])
    def b():
        return {"route": "b"}

    @app.route("/login")
    def login():
        return "login"

    @app.route("/api/items")
    def items():
        return jsonify(items=[])

    @app.route("/health")
    def health():
        return "ok"

    @app.route("/free")
    @flux.exempt
    def free():
        return "free"

    @app.route("/both")
    @rate_limit(rate="2/minute")
    def both():
        return "both"

    return app


def get(app, path, addr="10.0.0.1", **kwargs):
    return app.test_client().get(path, environ_base={"REMOTE_ADDR": addr}, **kwargs)


def statuses(app, path, n, **kwargs):
    return [get(app, path, **kwargs).status_code for _ in range(n)]


def test_the_default_applies_to_every_route(config):
    app = make_app()
    Flux(app, rate="3/minute")
    first = get(app, "/a")
    assert first.get_data(as_text=True) == "a"
    assert first.headers["X-RateLimit-Remaining"] == "2"
    assert first.headers["RateLimit-Policy"] == '"default";q=3;w=60'
    assert get(app, "/b").headers["X-RateLimit-Remaining"] == "1"
    assert get(app, "/login").status_code == 200
    refused = get(app, "/a")
    assert refused.status_code == 429
    assert refused.get_json() == {
        "error": "Too Many Requests",
        "retry_after": 20,
        "detail": "Rate limit of 3 per 60 seconds exceeded; retry in 20 seconds.",
    }
    assert refused.headers["Retry-After"] == "20"
    assert get(app, "/a", "10.0.0.2").status_code == 200


def test_rules_exemptions_and_predicates(config):
    config.rate_limits = {"api": {"rate": "2/minute"}}
    app = make_app()
    Flux(
        app,
        rate="5/minute",
        rules={"/login": "1/minute", "/api/*": "api", "/health": None},
        exempt_when=lambda request: request.headers.get("X-Internal") == "yes",
        config=config,
    )
    assert statuses(app, "/login", 2) == [200, 429]
    assert statuses(app, "/api/items", 3) == [200, 200, 429]
    assert statuses(app, "/health", 10) == [200] * 10
    assert statuses(app, "/free", 10) == [200] * 10
    assert statuses(app, "/a", 3, headers={"X-Internal": "yes"}) == [200] * 3
    assert get(app, "/a").headers["X-RateLimit-Remaining"] == "4"


def test_init_app_and_the_flux_config_key(config):
    extension = Flux(rate="1/minute", methods=["POST"])
    app = make_app()
    app.config["FLUX"] = {"rate": "100/minute", "headers": False}
    extension.init_app(app)
    assert statuses(app, "/b", 3) == [200] * 3  # only POST is limited
    client = app.test_client()
    posts = [client.post("/b", environ_base={"REMOTE_ADDR": "10.0.0.1"}) for _ in range(2)]
    assert [p.status_code for p in posts] == [200, 429]
    # Code wins over app.config for the rate, app.config gives the rest.
    assert "X-RateLimit-Limit" not in posts[0].headers and "Retry-After" not in posts[1].headers


def test_on_breach_and_a_key_answering_none(config):
    app = make_app()
    Flux(
        app,
        rate="1/minute",
        key=lambda request: request.headers.get("X-User"),
        on_breach=lambda request, result: ("come back later", 503),
    )
    assert statuses(app, "/a", 3) == [200] * 3  # no user: not limited
    assert statuses(app, "/a", 2, headers={"X-User": "ann"}) == [200, 503]
    assert get(app, "/a", headers={"X-User": "ann"}).get_data(as_text=True) == "come back later"


def test_extension_and_decorator_on_one_view_are_two_limits(config):
    app = make_app()
    Flux(app, rate="5/minute")
    first = get(app, "/both")
    assert first.headers["X-RateLimit-Limit"] == "2"  # the decorator's, closer to refusing
    assert statuses(app, "/both", 2) == [200, 429]
    refused = get(app, "/both")
    assert refused.status_code == 429
    assert refused.headers.getlist("RateLimit-Policy") == ['"default";q=2;w=60']
    # The refusals by the decorator left the app-wide limit uncharged.
    assert get(app, "/a").headers["X-RateLimit-Remaining"] == str(5 - 3)


def test_the_extensions_headers_replace_a_decorators_further_from_refusing(config):
    app = Flask(__name__)

    @app.route("/loose")
    @rate_limit(rate="10/minute")
    def loose():
        return "loose"

    Flux(app, rate="2/minute")
    response = get(app, "/loose")
    # Each header once, the app-wide limit's: it is closer to refusing.
    assert response.headers.getlist("X-RateLimit-Limit") == ["2"]
    assert response.headers.getlist("X-RateLimit-Remaining") == ["1"]
    assert response.headers.getlist("RateLimit-Policy") == ['"default";q=2;w=60']
    assert response.get_data(as_text=True) == "loose"


def test_set_up_twice_or_badly_fails_at_once(config):
    app = make_app()
    Flux(app, rate="1/minute")
    with pytest.raises(ConfigError, match="flux.flask.Flux is set up twice"):
        Flux(app, rate="1/minute")
    with pytest.raises(ConfigError, match=r"rules\['/x'\]: 'nope' is neither a limit"):
        Flux(make_app(), rules={"/x": "nope"})
    with pytest.raises(LimitError, match="invalid rate"):
        Flux(make_app(), rate="1/fortnight")
