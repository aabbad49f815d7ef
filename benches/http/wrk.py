"""One wrk run against one URL, and what it measured."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from servers import pinned


@dataclass(frozen=True)
class Load:
    """How wrk loads a server: its threads, open connections and seconds per run."""

    threads: int
    connections: int
    duration: int
    cpus: str | None


def wrk_binary() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk is not installed (make bench-http installs it)")
    return binary


@dataclass(frozen=True)
class Measured:
    requests_per_second: float
    requests: int
    #: wrk's "Socket errors" line (connect, read, write, timeout), if it had one.
    socket_errors: str | None


def measure(url: str, load: Load, seconds: int | None = None) -> Measured:
    """What wrk measured against ``url``; raises when a response was not 2xx/3xx
    (a limiter that refused or failed: the row would not measure what it says)."""
    argv = [
        wrk_binary(),
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{seconds or load.duration}s",
        "--timeout", "10s",
        url,
    ]
    run = subprocess.run(pinned(argv, load.cpus), capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"wrk failed on {url}: {run.stderr.strip() or run.stdout.strip()}")
    out = run.stdout
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if rate is None:
        raise RuntimeError(f"no Requests/sec in wrk's output for {url}:\n{out}")
    refused = re.search(r"Non-2xx or 3xx responses: \d+", out)
    if refused:
        raise RuntimeError(f"{url}: {refused.group(0)}")
    errors = re.search(r"Socket errors: (.*)", out)
    requests = re.search(r"^\s*(\d+) requests in", out, re.M)
    return Measured(
        float(rate.group(1)), int(requests.group(1)) if requests else 0, errors.group(1).strip() if errors else None
    )
