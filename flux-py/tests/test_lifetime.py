"""A limiter outlives the calls made with it, and the process can exit with
calls in flight.

The scenarios in in_flight.py run in a child interpreter, so that a crash
fails one test instead of the run, with ``MALLOC_PERTURB_`` set and glibc's
per-thread cache off: memory freed while a call still used it is then
overwritten at once, and reading it shows (a crash, a wrong answer, a hang)
instead of finding the old values intact.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flux import FluxError, RateLimiter

SCENARIOS = Path(__file__).with_name("in_flight.py")
# Far above what any scenario takes, even on a loaded machine.
DEADLINE = 120


def run_scenario(name: str, port: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, MALLOC_PERTURB_="165", GLIBC_TUNABLES="glibc.malloc.tcache_count=0")
    try:
        return subprocess.run(
            [sys.executable, str(SCENARIOS), name, str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} did not finish within {DEADLINE} s: a call hung")


def wait_until_awake(redis_server) -> None:
    """A stalled Redis answers again (scenarios leave it sleeping)."""
    assert redis_server.command("PING", timeout=30).startswith(b"+PONG")


@pytest.mark.parametrize(
    "scenario",
    ["close_during_hit", "drop_during_hit", "close_with_ahit_in_flight", "close_from_two_threads"],
)
def test_calls_in_flight_keep_their_limiter(scenario, redis_server):
    done = run_scenario(scenario, redis_server.port)
    wait_until_awake(redis_server)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]


@pytest.mark.parametrize("run", range(3))
def test_the_process_exits_cleanly_with_ahit_in_flight(run, redis_server):
    done = run_scenario("exit_with_ahit_in_flight", redis_server.port)
    wait_until_awake(redis_server)
    assert "FATAL" not in done.stderr, done.stderr[-2000:]
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]


def test_a_closed_limiter_says_so(config):
    limiter = RateLimiter(5, 60, config=config)
    limiter.hit("k", endpoint="e")
    limiter.close()
    for call in (
        lambda: limiter.hit("k"),
        lambda: limiter.hit("k", endpoint="e"),
        lambda: limiter.hit("k", endpoint="never-used"),
        lambda: limiter.check_cost(1),
        lambda: asyncio.run(limiter.ahit("k")),
    ):
        with pytest.raises(FluxError, match="limiter was closed"):
            call()
    limiter.close()  # a second close does nothing

