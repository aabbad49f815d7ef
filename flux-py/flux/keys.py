"""Who a call is counted for.

The default identity is the address of the peer the server saw. Behind
reverse proxies that peer is the proxy, and the client's address is in
``X-Forwarded-For``; but a client can send that header itself, so it is
trusted only when the application says how many proxies it runs behind:

    @rate_limit(requests=100, period=60, key=forwarded_for(hops=1))
"""

from __future__ import annotations

from typing import Any, Callable

from . import frameworks


def remote_address(request: Any) -> str:
    """The peer address of ``request`` as the server saw it ("unknown" if none)."""
    adapter = frameworks.adapter_for(request)
    if adapter is None:
        raise TypeError(f"not a Django, Flask or Starlette request: {type(request).__name__}")
    return adapter.peer(request) or "unknown"


def forwarded_for(hops: int = 1, header: str = "X-Forwarded-For") -> Callable[[Any], str]:
    """A key function reading the client address from ``header``.

    ``hops`` is the number of proxies you run in front of the app, each of
    which appends the address it received from: the client is then the
    ``hops``-th address from the right, and anything a client wrote further
    left is ignored. When the header has fewer addresses (the request did not
    pass through all the proxies) the peer address is used.
    """
    if isinstance(hops, bool) or not isinstance(hops, int) or hops < 1:
        raise ValueError(f"hops must be a whole number of at least 1, got {hops!r}")

    def client_address(request: Any) -> str:
        adapter = frameworks.adapter_for(request)
        if adapter is None:
            raise TypeError(f"not a Django, Flask or Starlette request: {type(request).__name__}")
        addresses = [
            part.strip()
            for value in adapter.header_values(request, header)
            for part in value.split(",")
            if part.strip()
        ]
        if len(addresses) >= hops:
            return addresses[-hops]
        return adapter.peer(request) or "unknown"

    return client_address


__all__ = ["remote_address", "forwarded_for"]
