"""The exceptions Flux raises: one tree under FluxError.

Where a builtin means the same thing, the exception inherits it too, so code
that already catches ``ValueError`` or ``ConnectionError`` keeps working.
"""

from __future__ import annotations

import builtins
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .limiter import RateLimitResult


class FluxError(Exception):
    """Base of every error Flux raises."""


class ConfigError(FluxError, ValueError):
    """A configuration or a limit that the Rust schema refused.

    The message names the file (or where the configuration came from), the
    key and what is allowed.
    """


class LimitError(FluxError, ValueError):
    """A limit or a cost that can never work: ``requests <= 0``, an unknown
    policy, a cost above what the limit can ever admit. The message names the
    argument and what is allowed."""


class RateLimitExceeded(FluxError):
    """A call was refused by its rate limit.

    ``retry_after`` is the number of seconds until the same call would be
    admitted; ``result`` is the full decision when one is known. ``key`` is
    the identity the call was counted for, as flux-limiter 0.1 had it: it is
    kept on the exception for the code that catches it, but never put in its
    message, so a logged traceback holds no client address or user id.
    """

    def __init__(
        self,
        key: str | bytes,
        retry_after: float = 0.0,
        message: str | None = None,
        *,
        result: RateLimitResult | None = None,
    ) -> None:
        self.key = key
        self.retry_after = retry_after
        self.result = result
        if message is None:
            message = "Rate limit exceeded"
            if retry_after > 0:
                message += f"; retry after {retry_after:.2f}s"
        super().__init__(message)

    def to_headers(self) -> dict[str, str]:
        """The HTTP headers of a 429 answer to this call."""
        if self.result is not None:
            return self.result.to_headers()
        return {
            "Retry-After": str(max(1, math.ceil(self.retry_after))),
            "X-RateLimit-Remaining": "0",
        }


class ConnectionError(FluxError, builtins.ConnectionError):  # noqa: A001 - the seed's name
    """Redis failed and ``fail_silently`` is false: it could not be reached,
    did not answer within ``timeout_ms``, or answered that it cannot serve
    now (OOM, BUSY, LOADING, READONLY, NOREPLICAS, MISCONF; the message has
    its reply)."""


class PoolExhaustedError(ConnectionError):
    """Every Redis connection of the process's pool (``pool_size``) stayed in
    use while the call waited its turn for ``timeout_ms``.

    Back-pressure, not Redis failing: it is raised whatever ``fail_silently``
    says, since admitting the call could admit beyond the limit. Answer it
    like an overload (e.g. HTTP 503 with ``Retry-After``), or raise
    ``pool_size``.
    """


__all__ = [
    "FluxError",
    "ConfigError",
    "LimitError",
    "RateLimitExceeded",
    "ConnectionError",
    "PoolExhaustedError",
]
