"""HTTP headers and the 429 body for a decision.

Only formatting lives here: every number comes from the Rust decision and the
limiter's resolved quota. HTTP wants whole seconds, so durations are rounded
up (a client told to come back in 0 s would come back too early).

* ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` (seconds until the key
  is back to full), the de-facto headers.
* ``RateLimit-Policy: "name";q=<requests>;w=<period>``, one item per quota
  (``"10per1";q=10;w=1, "1000per86400";q=1000;w=86400``), and
  ``RateLimit: "name";r=<remaining>;t=<seconds>`` for the quota the
  decision reports, the IETF draft-ietf-httpapi-ratelimit-headers
  structured fields. On a refusal ``t`` is the wait before this call would
  be admitted; otherwise the time until the quota is whole again.
* ``Retry-After`` on refusals: at least 1 and never earlier than ``t``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .limiter import RateLimitResult


def whole_seconds(seconds: float) -> int:
    return max(0, math.ceil(seconds - 1e-9))


def retry_after_seconds(result: RateLimitResult) -> int:
    return max(1, whole_seconds(result.retry_after))


def sf_string(name: str) -> str:
    # Structured-field strings allow printable ASCII with \\ and \" escaped.
    safe = "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in name)
    return '"' + safe.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rate_limit_headers(result: RateLimitResult) -> dict[str, str]:
    name = sf_string(result.quota.policy_name)
    headers = {
        "X-RateLimit-Limit": str(result.limit),
        "X-RateLimit-Remaining": str(result.remaining),
        "X-RateLimit-Reset": str(whole_seconds(result.reset_after)),
        "RateLimit-Policy": result.policy_header,
    }
    if result.allowed:
        headers["RateLimit"] = f"{name};r={result.remaining};t={whole_seconds(result.reset_after)}"
    else:
        retry = retry_after_seconds(result)
        headers["RateLimit"] = f"{name};r={result.remaining};t={retry}"
        headers["Retry-After"] = str(retry)
    return headers


def too_many_requests_body(result: RateLimitResult) -> dict[str, object]:
    quota = result.quota
    retry = retry_after_seconds(result)
    period = f"{quota.period:g}"
    unit = "second" if period == "1" else "seconds"
    return {
        "error": "Too Many Requests",
        "retry_after": retry,
        "detail": (
            f"Rate limit of {quota.requests} per {period} {unit} exceeded; "
            f"retry in {retry} second{'s' if retry != 1 else ''}."
        ),
    }
