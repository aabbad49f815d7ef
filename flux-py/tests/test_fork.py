"""Processes forked after limiters were made: each child decides on its own.

A child runs a function and writes what it saw to a JSON file; the parent
waits for it with a deadline, then checks the answers.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from flux import RateLimiter
from flux.config import FluxConfig

pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")

# Generous for a loaded machine: a child that is still running then is stuck.
CHILD_DEADLINE = 120.0


def fork_with_os(target, *args) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            target(*args)
        finally:
            os._exit(0)
    return pid


def wait_pid(pid: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"os.fork child {pid} did not finish within {CHILD_DEADLINE:.0f} s: it hung")


def test_children_draw_their_own_retry_after_jitter(prefix, tmp_path):
    """A refused call's retry_after carries a random jitter so that refused
    clients do not all come back at once; sibling workers must not draw the
    same jitter in the same order."""
    cfg = FluxConfig(key_prefix=prefix, jitter_enabled=True, jitter_max_ms=500)
    limiter = RateLimiter(1, 3600, config=cfg)
    limiter.hit("k")
    assert not limiter.hit("k").allowed  # the forking thread has drawn already

    def refusals(out: Path) -> None:
        out.write_text(json.dumps([limiter.hit("k").retry_after for _ in range(8)]))

    paths = [tmp_path / f"child{i}.json" for i in range(2)]
    for path in paths:
        wait_pid(fork_with_os(refusals, path), time.monotonic() + CHILD_DEADLINE)
    first, second = (json.loads(path.read_text()) for path in paths)
    # retry_after is the time left (which moves on between the two children)
    # plus the jitter; the steps from one call to the next are the jitters'.
    steps = [[b - a for a, b in zip(seq, seq[1:])] for seq in (first, second)]
    assert max(abs(x - y) for x, y in zip(*steps)) > 0.001, (first, second)
