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

What does not change between a limiter's decisions (the policy header, each
quota's name as a structured-field string) is written once per limiter, by
:func:`constant_parts`; a decision only formats its numbers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .limiter import Quota, RateLimitResult

LIMIT = "X-RateLimit-Limit"
REMAINING = "X-RateLimit-Remaining"
RESET = "X-RateLimit-Reset"
POLICY = "RateLimit-Policy"
RATELIMIT = "RateLimit"
RETRY_AFTER = "Retry-After"

# As ASGI carries them: lowercase bytes.
_LIMIT_RAW = LIMIT.lower().encode()
_REMAINING_RAW = REMAINING.lower().encode()
_RESET_RAW = RESET.lower().encode()
_POLICY_RAW = POLICY.lower().encode()
_RATELIMIT_RAW = RATELIMIT.lower().encode()
_RETRY_AFTER_RAW = RETRY_AFTER.lower().encode()
_NAMES_RAW = frozenset(
    (_LIMIT_RAW, _REMAINING_RAW, _RESET_RAW, _POLICY_RAW, _RATELIMIT_RAW, _RETRY_AFTER_RAW)
)


def whole_seconds(seconds: float) -> int:
    return max(0, math.ceil(seconds - 1e-9))


def retry_after_seconds(result: RateLimitResult) -> int:
    return max(1, whole_seconds(result.retry_after))


def sf_string(name: str) -> str:
    # Structured-field strings allow printable ASCII with \\ and \" escaped.
    safe = "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in name)
    return '"' + safe.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_header(quotas: tuple[Quota, ...]) -> str:
    """The IETF ``RateLimit-Policy`` header of a limiter: every quota, by
    name, with its requests (``q``) and window in whole seconds (``w``)."""
    return ", ".join(
        f"{sf_string(q.policy_name)};q={q.requests};w={max(1, whole_seconds(q.period))}"
        for q in quotas
    )


def constant_parts(quotas: tuple[Quota, ...]) -> dict[str, object]:
    """What every decision of a limiter of ``quotas`` shares, as class
    attributes of its result type: the policy header and, per quota, the
    start of its ``RateLimit`` header (``"name";r=``), as text and as bytes."""
    policy = policy_header(quotas)
    heads = tuple(f"{sf_string(q.policy_name)};r=" for q in quotas)
    return {
        "policy_header": policy,
        "_policy_raw": policy.encode("latin-1"),
        "_ratelimit_heads": heads,
        "_ratelimit_heads_raw": tuple(head.encode("latin-1") for head in heads),
    }


def header_items(result: RateLimitResult) -> list[tuple[str, str]]:
    """The rate-limit headers of ``result`` as (name, value) pairs."""
    # Written out rather than shared with raw_header_items: on every
    # response, a helper call or a list grown item by item is a measurable
    # part of what the headers cost.
    remaining = str(result.remaining)
    seconds = result.reset_after
    reset = str(math.ceil(seconds - 1e-9)) if seconds > 1e-9 else "0"
    head = result._ratelimit_heads[result.quota_index]
    if result.allowed:
        return [
            (LIMIT, str(result.limit)),
            (REMAINING, remaining),
            (RESET, reset),
            (POLICY, result.policy_header),
            (RATELIMIT, f"{head}{remaining};t={reset}"),
        ]
    retry = str(retry_after_seconds(result))
    return [
        (LIMIT, str(result.limit)),
        (REMAINING, remaining),
        (RESET, reset),
        (POLICY, result.policy_header),
        (RATELIMIT, f"{head}{remaining};t={retry}"),
        (RETRY_AFTER, retry),
    ]


def raw_header_items(result: RateLimitResult) -> list[tuple[bytes, bytes]]:
    """:func:`header_items` as ASGI carries headers: lowercase names, bytes."""
    remaining = b"%d" % result.remaining
    seconds = result.reset_after
    reset = b"%d" % math.ceil(seconds - 1e-9) if seconds > 1e-9 else b"0"
    head = result._ratelimit_heads_raw[result.quota_index]
    if result.allowed:
        return [
            (_LIMIT_RAW, b"%d" % result.limit),
            (_REMAINING_RAW, remaining),
            (_RESET_RAW, reset),
            (_POLICY_RAW, result._policy_raw),
            (_RATELIMIT_RAW, head + remaining + b";t=" + reset),
        ]
    retry = b"%d" % retry_after_seconds(result)
    return [
        (_LIMIT_RAW, b"%d" % result.limit),
        (_REMAINING_RAW, remaining),
        (_RESET_RAW, reset),
        (_POLICY_RAW, result._policy_raw),
        (_RATELIMIT_RAW, head + remaining + b";t=" + retry),
        (_RETRY_AFTER_RAW, retry),
    ]


def set_raw_headers(raw: list[tuple[bytes, bytes]], result: RateLimitResult) -> None:
    """Sets the headers of ``result`` in an ASGI header list, in place of
    any rate-limit headers it has."""
    for name, _ in raw:
        if name in _NAMES_RAW:
            raw[:] = [item for item in raw if item[0] not in _NAMES_RAW]
            break
    raw.extend(raw_header_items(result))


def rate_limit_headers(result: RateLimitResult) -> dict[str, str]:
    return dict(header_items(result))


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


def close_reason(result: RateLimitResult) -> str:
    """Why a WebSocket over its limit is closed (code 1008), in the close
    frame's reason (at most 123 bytes)."""
    retry = retry_after_seconds(result)
    return f"rate limit exceeded; retry in {retry} second{'s' if retry != 1 else ''}"
