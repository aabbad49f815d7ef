"""The child that test_signals.py stops and continues while it decides.

Run as ``python stopped.py MODE REDIS_URL KEY_PREFIX LIMIT FAIL_SILENTLY``:
``MODE`` is ``hit`` (one call at a time) or ``ahit`` (batches of 50 through
the async path). It decides against a limit of ``LIMIT`` per day, prints
``ready`` once its first call is decided, keeps calling until its stdin
closes, then prints what its calls got as JSON: ``allowed`` and ``refused``
(decided by Redis), ``fail_open`` (admitted without Redis) and ``errors``
(the messages of the calls that raised).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading

from flux import RateLimiter
from flux.config import FluxConfig

MODE, URL, PREFIX, LIMIT, FAIL_SILENTLY = sys.argv[1:6]
BATCH = 50

limiter = RateLimiter(
    int(LIMIT),
    86400,
    config=FluxConfig(
        redis_url=URL,
        key_prefix=PREFIX,
        jitter_enabled=False,
        timeout_ms=1000,
        # Every call goes to Redis: refusals too, none answered in-process.
        local_cache_size=0,
        fail_silently=FAIL_SILENTLY == "true",
    ),
    scope="stopped",
)
outcomes: dict = {"allowed": 0, "refused": 0, "fail_open": 0, "errors": []}


def count(result) -> None:
    if isinstance(result, BaseException):
        outcomes["errors"].append(f"{type(result).__name__}: {result}")
    elif result.source != "storage":
        outcomes[result.source] += 1
    else:
        outcomes["allowed" if result.allowed else "refused"] += 1


done = threading.Event()


def wait_for_eof() -> None:
    sys.stdin.read()
    done.set()


# The first call connects; the test starts stopping this process after it.
limiter.peek("caller")
threading.Thread(target=wait_for_eof, daemon=True).start()
print("ready", flush=True)

if MODE == "hit":
    while not done.is_set():
        try:
            count(limiter.hit("caller"))
        except Exception as exc:
            count(exc)
else:

    async def calls() -> None:
        while not done.is_set():
            batch = [limiter.ahit("caller") for _ in range(BATCH)]
            for result in await asyncio.gather(*batch, return_exceptions=True):
                count(result)

    asyncio.run(calls())

print(json.dumps(outcomes), flush=True)
