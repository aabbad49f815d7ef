"""Who a call is counted for by default, through each framework's own test
client: IPv6 clients by their /64 (the prefix is configurable), IPv4-mapped
addresses as IPv4, and requests with no peer address in one shared limit,
said once in the log."""

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

import flux.keys
from flux import forwarded_for, rate_limit
from flux.config import FluxConfig, validate
from flux.exceptions import ConfigError

# (first caller, second caller, whether the second shares the first's limit)
SAME_OR_NOT = [
    ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", True),  # one /64
    ("2001:db8:1:2::1", "2001:DB8:1:2::1", True),  # the same address, written otherwise
    ("2001:db8:1:2::1", "2001:db8:1:3::1", False),  # the next /64
    ("::ffff:10.0.0.1", "10.0.0.1", True),  # IPv4-mapped is IPv4
    ("10.0.0.1", "10.0.0.2", False),
    ("fe80::1%eth0", "fe80::2%eth1", True),  # a zone does not make a client
]


def django_get(cfg, addr):
    @rate_limit(requests=1, period=60, config=cfg)
    def view(request):
        return HttpResponse("ok")

    django_urls.urlpatterns[:] = [path("v", view)]
    clear_url_caches()
    try:
        yield lambda a: Client(REMOTE_ADDR=a).get("/v").status_code
    finally:
        django_urls.urlpatterns[:] = []
        clear_url_caches()


def flask_get(cfg):
    app = Flask(__name__)

    @app.route("/v")
    @rate_limit(requests=1, period=60, config=cfg)
    def view():
        return "ok"

    client = app.test_client()
    return lambda a: client.get("/v", environ_base={"REMOTE_ADDR": a}).status_code


def starlette_get(cfg, key=None):
    app = FastAPI()

    @app.get("/v")
    @rate_limit(requests=1, period=60, config=cfg, key=key)
    async def view():
        return {"ok": True}

    def get(addr, headers=None):
        client = TestClient(app, client=None if addr is None else (addr, 50000))
        return client.get("/v", headers=headers or {}).status_code

    return get


@pytest.fixture(params=["django", "flask", "starlette"])
def get(request, memory_config):
    """``get(address)``: one call to a 1-per-minute view from that peer address."""
    if request.param == "django":
        gen = django_get(memory_config, None)
        yield next(gen)
        gen.close()
    elif request.param == "flask":
        yield flask_get(memory_config)
    else:
        yield starlette_get(memory_config)


@pytest.mark.parametrize("first, second, shared", SAME_OR_NOT)
def test_ipv6_clients_are_counted_by_their_64(get, first, second, shared):
    assert get(first) == 200
    assert get(second) == (429 if shared else 200)


def test_the_prefix_comes_from_flux_toml(prefix):
    wide = FluxConfig(key_prefix=prefix, ipv6_prefix=48)
    get = flask_get(wide)
    assert get("2001:db8:1:2::1") == 200
    assert get("2001:db8:1:ffff::1") == 429
    exact = FluxConfig(key_prefix=prefix + "x", ipv6_prefix=128)
    get = flask_get(exact)
    assert get("2001:db8:1:2::1") == 200
    assert get("2001:db8:1:2::2") == 200
    assert get("2001:db8:1:2:0::1") == 429


@pytest.mark.parametrize("bad", [0, 129, -1, True, "64"])
def test_a_bad_prefix_names_the_key_or_argument(bad, prefix):
    if not isinstance(bad, (bool, str)):
        with pytest.raises(ConfigError, match=r"flux\.ipv6_prefix: must be a prefix length from 1 to 128"):
            validate(FluxConfig(key_prefix=prefix, ipv6_prefix=bad))
    with pytest.raises(ValueError, match=r"^ipv6_prefix must be a whole number from 1 to 128, got"):
        forwarded_for(hops=1, ipv6_prefix=bad)


def test_forwarded_for_keys_ipv6_clients_by_their_64_too(memory_config):
    get = starlette_get(memory_config, key=forwarded_for(hops=1))
    assert get("10.9.9.9", {"X-Forwarded-For": "2001:db8:1:2::1"}) == 200
    assert get("10.9.9.9", {"X-Forwarded-For": "2001:db8:1:2::2"}) == 429
    assert get("10.9.9.9", {"X-Forwarded-For": "::ffff:192.0.2.7"}) == 200
    assert get("10.9.9.9", {"X-Forwarded-For": "192.0.2.7"}) == 429
    exact = starlette_get(memory_config, key=forwarded_for(hops=1, ipv6_prefix=128))
    assert exact("10.9.9.9", {"X-Forwarded-For": "2001:db8:1:2::1"}) == 200
    assert exact("10.9.9.9", {"X-Forwarded-For": "2001:db8:1:2::2"}) == 200


@pytest.fixture
def no_peer_said(monkeypatch, caplog):
    """The no-peer warning as if not yet said in this process; returns what was logged."""
    monkeypatch.setattr(flux.keys, "_no_peer_said", False)
    caplog.set_level(logging.WARNING, logger="flux")
    return lambda: [r.getMessage() for r in caplog.records if "no peer address" in r.getMessage()]


@pytest.mark.parametrize("framework", ["django", "flask", "starlette"])
def test_calls_without_a_peer_address_share_one_limit_said_once(framework, memory_config, no_peer_said):
    if framework == "django":
        gen = django_get(memory_config, None)
        get = next(gen)
        missing = ""
    elif framework == "flask":
        get, missing = flask_get(memory_config), ""
    else:
        get, missing = starlette_get(memory_config), None
    assert get(missing) == 200
    assert get(missing) == 429  # another client without an address: the same limit
    assert get("10.0.0.1") == 200
    said = no_peer_said()
    assert len(said) == 1, said
    assert "shares one limit" in said[0] and "forwarded_for" in said[0]
    if framework == "django":
        gen.close()


def test_forwarded_for_without_the_header_or_a_peer_shares_the_no_peer_limit(memory_config, no_peer_said):
    get = starlette_get(memory_config, key=forwarded_for(hops=2))
    assert get(None, {"X-Forwarded-For": "192.0.2.1"}) == 200  # one hop short, and no peer
    assert get(None) == 429
    assert len(no_peer_said()) == 1


# --- X-Forwarded-For, through each framework's own test client ----------------


@pytest.fixture(params=["django", "flask", "starlette"])
def behind_proxies(request, memory_config):
    """``make(key)``: a 1-per-minute view keyed by ``key``, returned as
    ``get(peer, forwarded=None)``, the status of one call from the peer
    ``peer`` with that ``X-Forwarded-For`` header (none when None)."""
    framework = request.param
    made = []

    def make(key):
        made.append(key)
        if framework == "django":

            @rate_limit(requests=1, period=60, config=memory_config, key=key)
            def view(request):
                return HttpResponse("ok")

            django_urls.urlpatterns[:] = [path(f"v{len(made)}", view)]
            clear_url_caches()
            url = f"/v{len(made)}"

            def get(peer, forwarded=None):
                extra = {} if forwarded is None else {"HTTP_X_FORWARDED_FOR": forwarded}
                return Client(REMOTE_ADDR=peer).get(url, **extra).status_code

            return get
        if framework == "flask":
            app = Flask(__name__)

            @app.route("/v")
            @rate_limit(requests=1, period=60, config=memory_config, key=key)
            def view():
                return "ok"

            client = app.test_client()

            def get(peer, forwarded=None):
                headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
                return client.get("/v", environ_base={"REMOTE_ADDR": peer}, headers=headers).status_code

            return get
        starlette = starlette_get(memory_config, key=key)
        return lambda peer, forwarded=None: starlette(
            peer, None if forwarded is None else {"X-Forwarded-For": forwarded}
        )

    yield make
    if framework == "django":
        django_urls.urlpatterns[:] = []
        clear_url_caches()


def test_one_proxy_keys_by_the_address_it_appended_whatever_the_client_wrote(behind_proxies):
    get = behind_proxies(forwarded_for(hops=1))
    # The proxy (10.9.9.9) appends the address it received from; a client
    # wrote the rest. Another spoofed left part is still the same client...
    assert get("10.9.9.9", "6.6.6.6, 1.1.1.1") == 200
    assert get("10.9.9.9", "7.7.7.7, 1.1.1.1") == 429
    assert get("10.9.9.9", "1.1.1.1") == 429
    # ...and the same spoofed left part is not the same client.
    assert get("10.9.9.9", "6.6.6.6, 2.2.2.2") == 200
    assert get("10.9.9.9", "1.1.1.1, 3.3.3.3") == 200


def test_two_proxies_key_by_the_second_address_from_the_right(behind_proxies):
    get = behind_proxies(forwarded_for(hops=2))
    # client, then the first proxy's address; the peer is the second proxy.
    assert get("10.9.9.9", "6.6.6.6, 1.1.1.1, 10.0.0.1") == 200
    # The same client through the other first proxy, with another spoof.
    assert get("10.9.9.8", "7.7.7.7, 1.1.1.1, 10.0.0.2") == 429
    # Another client through the same proxies: not the last, nor the first address.
    assert get("10.9.9.9", "1.1.1.1, 2.2.2.2, 10.0.0.1") == 200
    assert get("10.9.9.9", "2.2.2.2, 10.0.0.1") == 429


def test_a_header_shorter_than_hops_falls_back_to_the_peer(behind_proxies):
    get = behind_proxies(forwarded_for(hops=2))
    # One address where two proxies append two: it did not pass both, so
    # the peer is the client, whatever the header says.
    assert get("10.9.9.9", "1.1.1.1") == 200
    assert get("10.9.9.9") == 429
    assert get("10.9.9.9", "5.5.5.5") == 429
    assert get("10.9.9.8", "1.1.1.1") == 200


@pytest.mark.parametrize("hops", [0, -1, True, False, 1.0, "1", None])
def test_hops_must_be_a_whole_number_of_at_least_one(hops):
    with pytest.raises(ValueError) as raised:
        forwarded_for(hops=hops)
    assert str(raised.value) == f"hops must be a whole number of at least 1, got {hops!r}"
