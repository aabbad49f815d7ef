"""An application process for the dashboard's browser test: it decides calls
when told to, and its metrics server (``[analytics] enabled``) serves the
dashboard.

    python dashboard_feeder.py --port PORT --prefix PREFIX [--redis URL]

Each line of standard input is a JSON script step::

    {"endpoint": "login", "calls": 8, "requests": 5}
    {"endpoint": "payments", "calls": 3, "store": "dead"}

``calls`` decisions for one client on the limit named ``endpoint``, which
admits ``requests`` calls an hour (default 1000); ``"store": "dead"`` puts
that limit on a Redis where nothing listens, so its calls fail open. Each
step is answered with one JSON line of what the limit decided:
``{"allowed": 5, "blocked": 3, "fail_open": 0}``. The first line written is
``{"ready": true}``, once the metrics server listens. The process exits at
the end of its input; it is a separate process so that a test can stop the
server under the page.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from flux import RateLimiter
from flux.config import FluxConfig


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True, help="where the metrics server listens")
    parser.add_argument("--prefix", required=True, help="key prefix (and stream name) of this test")
    parser.add_argument("--redis", help="decide on this Redis (default: the memory store)")
    args = parser.parse_args()

    main_store = FluxConfig(
        redis_url=args.redis,
        key_prefix=args.prefix,
        jitter_enabled=False,
        timeout_ms=1000,
        analytics_enabled=True,
        analytics_port=args.port,
        analytics_stream=f"{args.prefix}events",
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead_store = FluxConfig(
        redis_url=f"redis://127.0.0.1:{dead_port}/0",
        key_prefix=args.prefix,
        jitter_enabled=False,
        timeout_ms=200,
        fail_silently=True,
    )
    limits: dict[tuple[str, str], RateLimiter] = {}

    # The store, and with it the metrics server, starts with the first limiter.
    RateLimiter(1, 1, scope="ready", config=main_store)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                print(json.dumps({"error": f"no metrics server on port {args.port}"}), flush=True)
                return 1
            time.sleep(0.05)
    print(json.dumps({"ready": True}), flush=True)

    for line in sys.stdin:
        step = json.loads(line)
        store = step.get("store", "main")
        limit_key = (step["endpoint"], store)
        if limit_key not in limits:
            limits[limit_key] = RateLimiter(
                step.get("requests", 1000),
                3600,
                scope=step["endpoint"],
                config=dead_store if store == "dead" else main_store,
            )
        outcome = {"allowed": 0, "blocked": 0, "fail_open": 0}
        for _ in range(step["calls"]):
            result = limits[limit_key].hit(step.get("key", "client"))
            if result.source == "fail_open":
                outcome["fail_open"] += 1
            else:
                outcome["allowed" if result.allowed else "blocked"] += 1
        print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
