"""Thin adapters, one per framework, each importing its framework only inside itself.

An adapter is used only when its framework is already imported by the
application (it is in ``sys.modules``), so Flux never imports a framework
itself. Each adapter module offers the same functions:

``find_request(args, kwargs)``
    the framework's request among a view's arguments (or its context), or None
``owns(request)``
    whether ``request`` is this framework's
``peer(request)``
    the address of the peer the server saw
``header_values(request, name)``
    the values of a request header
``too_many_requests(result)``
    the framework's 429 response for a refused decision
``with_headers(response, headers, kwargs)``
    the view's response with rate-limit headers added, where it can carry them
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

# Order matters only for speed: request objects are found by type, Flask's by
# its context, which is checked last.
_FRAMEWORKS = (
    ("starlette", "flux.frameworks.starlette"),
    ("django", "flux.frameworks.django"),
    ("flask", "flux.frameworks.flask"),
)
_loaded: dict[str, ModuleType] = {}


def loaded() -> list[ModuleType]:
    """The adapters of the frameworks this process has imported."""
    adapters = []
    for framework, module in _FRAMEWORKS:
        adapter = _loaded.get(framework)
        if adapter is None:
            if framework not in sys.modules:
                continue
            adapter = _loaded[framework] = importlib.import_module(module)
        adapters.append(adapter)
    return adapters


def detect(args: tuple, kwargs: dict) -> tuple[ModuleType | None, Any]:
    """The adapter and request of a view call, from the call itself."""
    for adapter in loaded():
        request = adapter.find_request(args, kwargs)
        if request is not None:
            return adapter, request
    return None, None


def adapter_for(request: Any) -> ModuleType | None:
    for adapter in loaded():
        if adapter.owns(request):
            return adapter
    return None


def keeps_existing(existing_remaining: str | None, ours: dict[str, str]) -> bool:
    """With stacked limits the response reports the one closest to refusing:
    an inner limit's headers stay when it has no more remaining than ours."""
    if existing_remaining is None:
        return False
    try:
        return int(existing_remaining) <= int(ours["X-RateLimit-Remaining"])
    except (KeyError, ValueError):
        return False
