"""Who a call is counted for.

The default identity is the address of the peer the server saw, as a
client key:

* an IPv6 address counts as its network of ``[flux] ipv6_prefix`` bits (64
  by default): providers hand a client a whole /64 (or more), so the full
  address would let it rotate through 2**64 keys of its own;
* an IPv4-mapped IPv6 address (``::ffff:10.0.0.1``, what a dual-stack socket
  reports) counts as the IPv4 address;
* a request with no peer address at all (a server on a unix socket, or an
  ASGI server that does not pass one) counts as ``"unknown"``: every such
  request shares that one limit, and the first one is logged as a warning.
  Sharing keeps the limit's total bound; refusing would take the app down and
  exempting would switch limiting off, both silently for a deployment detail.
  Behind a proxy, say where the client address is (below).

Behind reverse proxies the peer is the proxy, and the client's address is in
``X-Forwarded-For``; but a client can send that header itself, so it is
trusted only when the application says how many proxies it runs behind:

    @rate_limit(requests=100, period=60, key=forwarded_for(hops=1))
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from . import frameworks

logger = logging.getLogger("flux")

#: The identity of every request that has no peer address.
NO_PEER = "unknown"

_no_peer_said = False


def client_key(address: str | None, ipv6_prefix: int) -> str:
    """The identity ``address`` counts as (see the module's text)."""
    if not address:
        _say_no_peer()
        return NO_PEER
    if ":" not in address:
        return address  # IPv4, or a name such as Starlette's "testclient"
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    # The zone (fe80::1%eth0) names the server's interface, not the client.
    bits = int(ip) >> (128 - ipv6_prefix) << (128 - ipv6_prefix)
    if ipv6_prefix == 128:
        return str(ipaddress.IPv6Address(bits))
    return f"{ipaddress.IPv6Address(bits)}/{ipv6_prefix}"


def _say_no_peer() -> None:
    global _no_peer_said
    if not _no_peer_said:
        _no_peer_said = True
        logger.warning(
            "flux: a request came with no peer address (a server on a unix socket, or one "
            "that does not pass the client's address): every such request shares one limit "
            "(as %r). Behind a proxy, key by the address it forwards: "
            "key=flux.forwarded_for(hops=N). This is logged once.",
            NO_PEER,
        )


def _check_prefix(ipv6_prefix: Any) -> int | None:
    if ipv6_prefix is None:
        return None
    if isinstance(ipv6_prefix, bool) or not isinstance(ipv6_prefix, int) or not 1 <= ipv6_prefix <= 128:
        raise ValueError(f"ipv6_prefix must be a whole number from 1 to 128, got {ipv6_prefix!r}")
    return ipv6_prefix


def _configured_prefix() -> int:
    from .config import get_config

    return get_config().ipv6_prefix


def _adapter(request: Any) -> frameworks.RequestReader:
    adapter = frameworks.adapter_for(request)
    if adapter is None:
        raise TypeError(f"not a Django, Flask or Starlette request: {type(request).__name__}")
    return adapter


def remote_address(request: Any, ipv6_prefix: int | None = None) -> str:
    """The client key of the peer the server saw: what ``@rate_limit``
    counts by default. ``ipv6_prefix`` defaults to ``[flux] ipv6_prefix``
    of the process's configuration."""
    prefix = _check_prefix(ipv6_prefix) or _configured_prefix()
    return client_key(_adapter(request).peer(request), prefix)


def forwarded_for(
    hops: int = 1, header: str = "X-Forwarded-For", ipv6_prefix: int | None = None
) -> Callable[[Any], str]:
    """A key function reading the client address from ``header``.

    ``hops`` is the number of proxies you run in front of the app, each of
    which appends the address it received from: the client is then the
    ``hops``-th address from the right, and anything a client wrote further
    left is ignored. When the header has fewer addresses (the request did not
    pass through all the proxies) the peer address is used. Either is keyed
    as the default identity is (an IPv6 client by its network of
    ``ipv6_prefix`` bits, by default ``[flux] ipv6_prefix``).
    """
    if isinstance(hops, bool) or not isinstance(hops, int) or hops < 1:
        raise ValueError(f"hops must be a whole number of at least 1, got {hops!r}")
    prefix = _check_prefix(ipv6_prefix)

    def client_address(request: Any) -> str:
        adapter = _adapter(request)
        addresses = [
            part.strip()
            for value in adapter.header_values(request, header)
            for part in value.split(",")
            if part.strip()
        ]
        address = addresses[-hops] if len(addresses) >= hops else adapter.peer(request)
        return client_key(address, prefix or _configured_prefix())

    return client_address


__all__ = ["remote_address", "forwarded_for", "client_key", "NO_PEER"]
