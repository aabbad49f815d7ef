"""`make demo`: a real server, two clients, and what Flux did to each.

Starts examples/fastapi_app.py under uvicorn on a free port, then sends a
burst of requests from two clients that connect from different loopback
addresses (127.0.0.2 and 127.0.0.3), so the server sees two peers, as it
would see two machines. Prints what was allowed and blocked per client and
the headers one client got back.

Runs on the memory store unless FLUX_REDIS_URL or a flux.toml with [redis]
says otherwise.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
CLIENTS = [("alice", "127.0.0.2", 8), ("bob", "127.0.0.3", 4)]
PATH = "/"  # @rate_limit(requests=5, period=10): a burst of 5, then 1 every 2 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "uvicorn", "fastapi_app:app",
        "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning",
    ]
    return subprocess.Popen(command, cwd=HERE)


def wait_ready(base: str, server: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the example server exited; see its output above")
        try:
            return httpx.get(base + "/health", timeout=1).json()
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the example server did not start within 30 s")


def client_from(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=5)


def main() -> int:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(port)
    try:
        health = wait_ready(base, server)
        print(f"examples/fastapi_app.py is serving on {base} ({health['storage']} store)")
        print(f"GET {PATH} is limited to 5 requests per 10 s per client (gcra)\n")
        clients = {name: client_from(addr) for name, addr, _ in CLIENTS}
        outcomes: dict[str, list[int]] = {name: [] for name, _, _ in CLIENTS}
        seen_headers: list[tuple[int, httpx.Headers]] = []
        # Interleave the two clients, as concurrent users would be.
        for i in range(max(n for _, _, n in CLIENTS)):
            for name, _, n in CLIENTS:
                if i < n:
                    response = clients[name].get(base + PATH)
                    outcomes[name].append(response.status_code)
                    if name == "alice":
                        seen_headers.append((response.status_code, response.headers))

        print(f"{'client':<8} {'address':<11} {'sent':>4} {'allowed':>8} {'blocked':>8}  statuses")
        for name, addr, n in CLIENTS:
            codes = outcomes[name]
            print(
                f"{name:<8} {addr:<11} {n:>4} {codes.count(200):>8} {codes.count(429):>8}  "
                + " ".join(str(c) for c in codes)
            )

        wanted = [
            "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
            "RateLimit-Policy", "RateLimit", "Retry-After",
        ]
        for label, status in (("first allowed", 200), ("first blocked", 429)):
            match = next((h for s, h in seen_headers if s == status), None)
            if match is None:
                continue
            print(f"\nalice, {label} response ({status}):")
            for name in wanted:
                if name in match:
                    print(f"  {name}: {match[name]}")
        blocked = next((h for s, h in seen_headers if s == 429), None)
        if blocked is not None:
            body = clients["alice"].get(base + PATH).text
            print(f"  body: {body}")
        for client in clients.values():
            client.close()
        ok = 429 in outcomes["alice"] and 200 in outcomes["bob"]
        print(
            "\nalice went over her limit; bob, counted apart, was not slowed by her."
            if ok
            else "\nUnexpected: alice was never blocked, or bob was blocked by alice's traffic."
        )
        return 0 if ok else 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
