"""Limiters made before a fork (gunicorn --preload, multiprocessing, Celery
prefork) work in the children: each child connects to Redis and starts its
async thread by itself, and never reads or writes its parent's sockets.

Each child runs `decide_in_child` and writes what it saw to a JSON file; the
parent waits for every child with a deadline, then checks the answers: each
limiter reports its own limit (no reply read off another's socket), every
decision came from Redis (no fail-open), and a key shared by every child
admits exactly its bound in all.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from flux import RateLimiter
from flux.config import FluxConfig

pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")

# Generous for a loaded machine: a child that is still running then is stuck.
CHILD_DEADLINE = 120.0

# Limits the children check their answers against: all different.
LIMITS = {"unused": 11, "used_sync": 7, "used_sync_too": 9, "used_async": 13}
SHARED_BOUND = 20
WORKERS = 3  # per way of forking
SHARED_CALLS = 12  # per child, half sync and half async: 72 calls for 20 slots


def decide_in_child(limiters: dict[str, RateLimiter], shared: RateLimiter, out: Path) -> None:
    """Decides sync and async with every inherited limiter; writes a report."""
    report = {"pid": os.getpid(), "wrong": [], "admitted": 0, "error": None}

    def check(name: str, result) -> None:
        expected = SHARED_BOUND if name == "shared" else LIMITS[name]
        # A refusal may come from the process's deny cache; never a fail-open.
        decided = result.source == "storage" or (result.source == "local_cache" and not result.allowed)
        if result.limit != expected or not decided:
            report["wrong"].append([name, result.limit, result.source])

    async def decide_async() -> None:
        calls = [limiter.ahit(f"async-{os.getpid()}") for limiter in limiters.values()]
        calls += [shared.ahit("everyone") for _ in range(SHARED_CALLS // 2)]
        results = await asyncio.wait_for(asyncio.gather(*calls), CHILD_DEADLINE / 2)
        for name, result in zip(limiters, results, strict=False):  # then the shared calls
            check(name, result)
        for result in results[len(limiters):]:
            check("shared", result)
            report["admitted"] += result.allowed

    try:
        for i in range(10):
            for name, limiter in limiters.items():
                check(name, limiter.hit(f"sync-{os.getpid()}-{i}"))
        for _ in range(SHARED_CALLS // 2):
            result = shared.hit("everyone")
            check("shared", result)
            report["admitted"] += result.allowed
        asyncio.run(decide_async())
    except BaseException as exc:  # reported to the parent, which fails the test
        report["error"] = repr(exc)
    out.write_text(json.dumps(report))


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


def reports_of(paths: list[Path]) -> list[dict]:
    reports = []
    for path in paths:
        assert path.exists(), f"a child wrote no report ({path.name}): it died"
        reports.append(json.loads(path.read_text()))
    return reports


def test_children_of_a_process_with_redis_limiters_decide_on_their_own(
    redis_server, prefix, tmp_path
):
    # Seven processes share two cores: a slow answer must not read as Redis
    # failing (which would fail open).
    cfg = FluxConfig(
        redis_url=redis_server.url, key_prefix=prefix, jitter_enabled=False, timeout_ms=10_000
    )
    limiters = {
        name: RateLimiter(requests, 3600, config=cfg, scope=name)
        for name, requests in LIMITS.items()
    }
    shared = RateLimiter(SHARED_BOUND, 3600, config=cfg, scope="shared")
    # The parent leaves pooled connections and a running async thread behind.
    assert limiters["used_sync"].hit("parent").limit == LIMITS["used_sync"]
    assert limiters["used_sync_too"].hit("parent").limit == LIMITS["used_sync_too"]
    parent_async = asyncio.run(limiters["used_async"].ahit("parent"))
    assert parent_async.limit == LIMITS["used_async"]

    paths = [tmp_path / f"child{i}.json" for i in range(2 * WORKERS)]
    deadline = time.monotonic() + CHILD_DEADLINE
    pids = [fork_with_os(decide_in_child, limiters, shared, path) for path in paths[:WORKERS]]
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=decide_in_child, args=(limiters, shared, path))
        for path in paths[WORKERS:]
    ]
    for process in processes:
        process.start()
    for pid in pids:
        wait_pid(pid, deadline)
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
            pytest.fail(f"multiprocessing child {process.pid} did not finish: it hung")

    reports = reports_of(paths)
    for report in reports:
        assert report["error"] is None, report
        assert report["wrong"] == [], f"crossed or failed-open answers: {report}"
    assert sum(r["admitted"] for r in reports) == SHARED_BOUND
    # The parent's own connections and thread were left alone.
    for name in ("used_sync", "used_sync_too"):
        assert limiters[name].hit("parent-after").limit == LIMITS[name]
    after = asyncio.run(limiters["used_async"].ahit("parent-after"))
    assert (after.limit, after.source) == (LIMITS["used_async"], "storage")


def test_a_child_gets_a_copy_of_the_memory_store(memory_config, tmp_path):
    """In memory, limits are per process: a child starts from what its parent
    had counted when it forked, then counts on its own."""
    limiter = RateLimiter(5, 3600, config=memory_config)
    assert [limiter.hit("k").allowed for _ in range(2)] == [True, True]
    out = tmp_path / "child.json"

    def in_child() -> None:
        seen = [limiter.hit("k").allowed for _ in range(3)]
        seen.append(asyncio.run(limiter.ahit("k")).allowed)
        fresh = RateLimiter(1, 3600, config=memory_config, scope="made-in-child")
        seen += [fresh.hit("k").allowed, fresh.hit("k").allowed]
        out.write_text(json.dumps(seen))

    wait_pid(fork_with_os(in_child), time.monotonic() + CHILD_DEADLINE)
    assert json.loads(out.read_text()) == [True, True, True, False, True, False]
    # What the child used was its own copy.
    assert [limiter.hit("k").allowed for _ in range(4)] == [True, True, True, False]


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
    steps = [[b - a for a, b in zip(seq, seq[1:], strict=False)] for seq in (first, second)]
    assert max(abs(x - y) for x, y in zip(*steps, strict=True)) > 0.001, (first, second)


def test_locks_held_by_other_threads_at_the_fork_do_not_stop_the_child(prefix, tmp_path):
    """Another thread may be making a store or loading the configuration
    when the process forks: the child must not wait for it forever."""
    import flux._store
    import flux.config

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with flux._store._lock, flux.config._config_lock:
            held.set()
            release.wait(CHILD_DEADLINE)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(CHILD_DEADLINE)
    out = tmp_path / "child.json"

    def in_child() -> None:
        flux.config.set_config(None)  # the next limiter loads it again
        limiter = RateLimiter(3, 60, config=None, scope=f"{prefix}made-in-child")
        fresh = FluxConfig(key_prefix=f"{prefix}other:")  # a store not made yet
        other = RateLimiter(3, 60, config=fresh)
        out.write_text(json.dumps([limiter.hit("k").allowed, other.hit("k").allowed]))

    try:
        wait_pid(fork_with_os(in_child), time.monotonic() + CHILD_DEADLINE)
    finally:
        release.set()
        holder.join()
    assert json.loads(out.read_text()) == [True, True]
