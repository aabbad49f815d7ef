"""Makes docs/dashboard.png and docs/monitor.txt from a live application (`make screenshots`).

Two application processes (this file with ``--app``) decide calls on a
redis-server started here, with ``[analytics] enabled``, for about two
minutes: a few endpoints with traffic that rises and falls, clients that
hit their limits, and one limit on a Redis that is down for a while, so
its calls fail open. The first process serves the dashboard; headless
Chromium watches it for the whole run (the page keeps its own 5 minutes of
rates) and takes the screenshot at the end. ``python -m flux monitor`` runs
in a tmux pane meanwhile, and the pane is captured as text.

Every process started here is ended by its pid; tmux runs on a socket of
its own.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "flux-py" / "tests"))

from chromium import Chromium  # noqa: E402

RUN_SECONDS = float(os.environ.get("SCREENSHOT_SECONDS", "120"))
TICK = 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"screenshots: {what} did not listen on port {port}")
            time.sleep(0.1)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


# --- one application process ---------------------------------------------


def app(port: int, redis_url: str, seconds: float, share: float) -> None:
    """Decides calls for ``seconds``; ``share`` scales this process's traffic."""
    from flux import RateLimiter
    from flux.config import FluxConfig

    cfg = FluxConfig(
        redis_url=redis_url, key_prefix="demo:", jitter_enabled=False, timeout_ms=200,
        analytics_enabled=True, analytics_port=port,
    )
    down = FluxConfig(redis_url=f"redis://127.0.0.1:{free_port()}/0", key_prefix="demo:",
                      jitter_enabled=False, timeout_ms=50, fail_silently=True)
    limits = {
        "api.v1.search": RateLimiter(120, 60, scope="api.v1.search", config=cfg),
        "login": RateLimiter(5, 60, scope="login", config=cfg),
        "checkout": RateLimiter(30, 60, scope="checkout", config=cfg),
        "export.csv": RateLimiter(2, 60, scope="export.csv", config=cfg),
        "webhooks.payments": RateLimiter(600, 60, scope="webhooks.payments", config=down),
    }

    def calls_per_second(name: str, t: float) -> float:
        wave = 1 + math.sin(t / 9)
        return share * {
            "api.v1.search": 25 * wave,
            "login": 4 + (10 if 40 < t < 75 else 0),  # a credential-stuffing spell
            "checkout": 3 * wave,
            "export.csv": 0.6,
            "webhooks.payments": 6 if 55 < t < 85 else 0,  # only while its Redis is down
        }[name]

    start = time.monotonic()
    owed = dict.fromkeys(limits, 0.0)
    n = 0
    while (t := time.monotonic() - start) < seconds:
        for name, limiter in limits.items():
            owed[name] += calls_per_second(name, t) * TICK
            while owed[name] >= 1:
                owed[name] -= 1
                n += 1
                limiter.hit(f"client-{n % 7}")
        time.sleep(TICK)


# --- the run -----------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", nargs=4, metavar=("PORT", "REDIS_URL", "SECONDS", "SHARE"))
    args = parser.parse_args()
    if args.app:
        port, redis_url, seconds, share = args.app
        app(int(port), redis_url, float(seconds), float(share))
        return 0

    redis_port, port = free_port(), free_port()
    redis_dir = tempfile.mkdtemp(prefix="flux-screenshots-")
    tmux = ["tmux", "-L", f"flux-screenshots-{os.getpid()}"]
    processes: list[subprocess.Popen] = []
    try:
        processes.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", redis_dir],
            stdout=subprocess.DEVNULL,
        ))
        wait_listening(redis_port, "redis-server")
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        for serve_port, share in ((port, 1.0), (free_port(), 0.6)):
            processes.append(subprocess.Popen(
                [sys.executable, __file__, "--app", str(serve_port), redis_url, str(RUN_SECONDS), str(share)]
            ))
        wait_listening(port, "the application's metrics server")

        with Chromium(width=1280, height=800) as browser:
            browser.open(f"http://127.0.0.1:{port}/")
            print(f"screenshots: watching the dashboard for {RUN_SECONDS:.0f} s of traffic", flush=True)
            subprocess.run([*tmux, "new-session", "-d", "-s", "monitor", "-x", "100", "-y", "30",
                            f"{sys.executable} -m flux monitor --port {port}"], check=True)
            # Should the monitor stop, its pane (and last words) stay to be captured.
            subprocess.run([*tmux, "set-option", "-t", "monitor", "remain-on-exit", "on"], check=True)
            browser.idle(max(RUN_SECONDS - 3, 3))
            capture = subprocess.run([*tmux, "capture-pane", "-p", "-t", "monitor"], check=True, capture_output=True, text=True)
            dead = subprocess.run([*tmux, "display-message", "-p", "-t", "monitor", "#{pane_dead}"],
                                  check=True, capture_output=True, text=True)
            if dead.stdout.strip() == "1":
                raise SystemExit(f"screenshots: the monitor stopped:\n{capture.stdout}")
            (DOCS / "monitor.txt").write_text(capture.stdout.rstrip() + "\n")
            height = browser.evaluate("document.documentElement.scrollHeight")
            browser.resize(1280, height)
            browser.idle(1.2)  # one redraw at that size
            browser.screenshot(str(DOCS / "dashboard.png"))
        print("screenshots: wrote docs/dashboard.png and docs/monitor.txt")
    finally:
        subprocess.run([*tmux, "kill-server"], stderr=subprocess.DEVNULL)
        for process in reversed(processes):
            stop(process)
        shutil.rmtree(redis_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
