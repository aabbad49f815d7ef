"""Redis failing in its many shapes, seen from Python, on a redis-server of
this module's own (its settings are bent on purpose).

An error reply by which Redis says it cannot serve (OOM, BUSY, LOADING,
READONLY, NOREPLICAS, MISCONF) is Redis failing: ``fail_silently = true``
admits the call and logs what Redis said, once; ``false`` raises
``ConnectionError``. The connection stays in use either way. A pool whose
every connection stays in use is back-pressure: ``PoolExhaustedError``,
never an admitted call.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import redis_command, start_redis

import flux._ffi as ffi
from flux import RateLimiter
from flux.config import FluxConfig
from flux.exceptions import ConnectionError, PoolExhaustedError


class Server:
    def __init__(self, port: int, process: subprocess.Popen, directory: str) -> None:
        self.port = port
        self.process = process
        self.dir = directory
        self.url = f"redis://127.0.0.1:{port}/0"
        self.nowhere = 0  # a port where no master answers, set by the fixture

    def command(self, *args: str) -> str:
        return redis_command(self.port, *args).decode().strip()

    def ok(self, *args: str) -> None:
        assert self.command(*args) == "+OK", args

    def background(self, *args: str) -> subprocess.Popen:
        """A command that blocks (a script, a reload), sent by redis-cli."""
        return subprocess.Popen(
            ["redis-cli", "-p", str(self.port), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_for(self, what: str, done) -> None:
        deadline = time.monotonic() + 20
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    def clients(self) -> set[str]:
        """Ids of the connected clients, but for the one asking."""
        reply = redis_command(self.port, "CLIENT", "LIST").decode()
        return {
            line.split()[0]
            for line in reply.splitlines()[1:]
            if line.startswith("id=") and "cmd=client|list" not in line
        }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("redis-errors"))
    port, process = start_redis(
        directory, "--enable-debug-command", "yes", "--enable-protected-configs", "yes"
    )
    server = Server(port, process, directory)
    # A master that is not there: a port held bound, never listening.
    with socket.socket() as nowhere:
        nowhere.bind(("127.0.0.1", 0))
        server.nowhere = nowhere.getsockname()[1]
        yield server
    process.send_signal(signal.SIGKILL)
    process.wait()


def _oom(s: Server):
    s.ok("CONFIG", "SET", "maxmemory-policy", "noeviction")
    s.ok("CONFIG", "SET", "maxmemory", "1")
    yield
    s.ok("CONFIG", "SET", "maxmemory", "0")


def _noreplicas(s: Server):
    s.ok("CONFIG", "SET", "min-replicas-to-write", "1")
    yield
    s.ok("CONFIG", "SET", "min-replicas-to-write", "0")


def _readonly(s: Server):
    # A replica of a master that is not there.
    s.ok("REPLICAOF", "127.0.0.1", str(s.nowhere))
    yield
    s.ok("REPLICAOF", "NO", "ONE")


def _misconf(s: Server):
    # Snapshots into a directory nobody can write: BGSAVE fails, writes stop.
    def bgsave_status(status):
        info = s.command("INFO", "persistence")
        return f"rdb_last_bgsave_status:{status}" in info and "rdb_bgsave_in_progress:0" in info

    s.ok("CONFIG", "SET", "save", "3600 1")
    s.ok("CONFIG", "SET", "dir", "/proc")
    s.command("BGSAVE")
    s.wait_for("a failed BGSAVE", lambda: bgsave_status("err"))
    yield
    s.ok("CONFIG", "SET", "dir", s.dir)
    s.command("BGSAVE")
    s.wait_for("a good BGSAVE", lambda: bgsave_status("ok"))
    s.ok("CONFIG", "SET", "save", "")


def _busy(s: Server):
    # A script that never ends: past the threshold, everyone else gets BUSY.
    s.ok("CONFIG", "SET", "busy-reply-threshold", "50")
    script = s.background("EVAL", "while true do end", "0")
    s.wait_for("BUSY", lambda: s.command("PING").startswith("-BUSY"))
    yield
    s.ok("SCRIPT", "KILL")
    script.wait(timeout=10)


def _loading(s: Server):
    # DEBUG RELOAD of 3000 keys at 1 ms each, answering LOADING meanwhile.
    s.ok("DEBUG", "POPULATE", "3000", "filler")
    s.ok("CONFIG", "SET", "loading-process-events-interval-bytes", "1024")
    s.ok("CONFIG", "SET", "key-load-delay", "1000")
    reload = s.background("DEBUG", "RELOAD")
    s.wait_for("LOADING", lambda: s.command("PING").startswith("-LOADING"))
    yield
    reload.wait(timeout=30)
    s.ok("CONFIG", "SET", "key-load-delay", "0")
    s.ok("FLUSHALL")


CASES = {
    "OOM": _oom,
    "NOREPLICAS": _noreplicas,
    "READONLY": _readonly,
    "MISCONF": _misconf,
    "BUSY": _busy,
    "LOADING": _loading,
}


@pytest.mark.parametrize("code", list(CASES))
def test_an_error_reply_fails_open_or_raises_and_keeps_the_connection(
    server, prefix, caplog, code
):
    def limiter(fail_silently: bool) -> RateLimiter:
        cfg = FluxConfig(
            redis_url=server.url, key_prefix=prefix, pool_size=1, timeout_ms=2000,
            fail_silently=fail_silently, jitter_enabled=False,
        )
        return RateLimiter(1000, 86400, config=cfg, scope="replies")

    opened, closed = limiter(True), limiter(False)
    assert opened.hit("warm").source == "storage"
    assert closed.hit("warm").source == "storage"
    connections = server.clients()
    caplog.set_level(logging.WARNING, logger="flux")

    condition = CASES[code](server)
    next(condition)
    try:
        # Fresh identities: the script has to write.
        results = [opened.hit(f"open-{i}") for i in range(3)]
        with pytest.raises(ConnectionError) as raised:
            closed.hit("closed")
    finally:
        next(condition, None)

    assert all(r.allowed and r.source == "fail_open" for r in results), results
    assert raised.value.code == ffi.UNAVAILABLE
    assert type(raised.value) is ConnectionError
    assert str(raised.value).startswith(f"Redis cannot serve now: {code} "), raised.value
    said = [r.getMessage() for r in caplog.records if r.name == "flux"]
    assert len(said) == 1, said
    assert said[0].startswith(
        f"Redis at {server.url} failed: Redis cannot serve now: {code} "
    ), said[0]
    assert "fail_silently = true" in said[0]
    assert caplog.records[0].levelno == logging.WARNING

    assert opened.hit("after").source == "storage"
    assert closed.hit("after").source == "storage"
    assert server.clients() == connections


@pytest.mark.parametrize("code", ["OOM", "READONLY"])
def test_ahit_raises_the_message_hit_raises(server, prefix, code):
    # A batch decided on the store's thread carries each call's own message
    # (Redis's reply) to the coroutine awaiting it.
    cfg = FluxConfig(
        redis_url=server.url, key_prefix=prefix, timeout_ms=2000, fail_silently=False,
        jitter_enabled=False,
    )
    limiter = RateLimiter(1000, 86400, config=cfg, scope="async-replies")
    assert limiter.hit("warm").source == "storage"

    async def both_ways():
        with pytest.raises(ConnectionError) as sync:
            limiter.hit("sync")
        with pytest.raises(ConnectionError) as batched:
            await limiter.ahit("async")
        return sync.value, batched.value

    condition = CASES[code](server)
    next(condition)
    try:
        sync, batched = asyncio.run(both_ways())
    finally:
        next(condition, None)

    assert str(sync).startswith(f"Redis cannot serve now: {code} "), sync
    assert (type(batched), batched.code, str(batched)) == (type(sync), sync.code, str(sync))


class SlowProxy:
    """Passes a client's bytes to Redis and holds each reply back for ``delay`` seconds."""

    def __init__(self, upstream: int, delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, 0), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, self.delay), daemon=True
            ).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, delay: float) -> None:
        try:
            while data := source.recv(65536):
                time.sleep(delay)
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_a_busy_pool_never_admits_beyond_the_limit(server, prefix, caplog):
    # One connection, 16 threads, each reply 40 ms late: most calls find the
    # connection in use for longer than timeout_ms.
    proxy = SlowProxy(server.port, 0.04)
    try:
        cfg = FluxConfig(
            redis_url=f"redis://127.0.0.1:{proxy.port}/0", key_prefix=prefix, pool_size=1,
            timeout_ms=150, fail_silently=True, jitter_enabled=False,
        )
        limiter = RateLimiter(10, 3600, config=cfg, scope="busy")
        # The connection is made first: the calls meet a busy pool, not a
        # pool still connecting to a Redis it never reached.
        assert limiter.hit("someone else").source == "storage"
        caplog.set_level(logging.WARNING, logger="flux")
        outcomes = {"admitted": 0, "refused": 0, "fail_open": 0, "busy": 0}
        lock = threading.Lock()
        start = threading.Barrier(16)

        def client() -> None:
            start.wait()
            for _ in range(40):
                try:
                    result = limiter.hit("one client")
                except PoolExhaustedError:
                    outcome = "busy"
                else:
                    if result.source == "fail_open":
                        outcome = "fail_open"
                    else:
                        outcome = "admitted" if result.allowed else "refused"
                with lock:
                    outcomes[outcome] += 1
                if outcome == "refused":
                    return

        threads = [threading.Thread(target=client) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        proxy.close()

    assert outcomes["fail_open"] == 0, outcomes
    assert outcomes["admitted"] == 10, outcomes
    assert outcomes["refused"] == 16, outcomes
    assert outcomes["busy"] > 0, outcomes
    said = [r.getMessage() for r in caplog.records if r.name == "flux"]
    assert len(said) == 1, said
    assert "stayed in use for 150 ms" in said[0] and "back-pressure" in said[0], said[0]


def test_records_from_flux_threads_reach_the_flux_logger_until_exit(dead_redis_url):
    # A fresh interpreter: the store's worker thread says Redis failed, then
    # the interpreter exits (the callback is unset first) without a word more.
    script = f"""
import asyncio, logging, sys
logging.basicConfig(stream=sys.stderr, format="%(name)s %(levelname)s %(threadName)s %(message)s")
from flux import RateLimiter
from flux.config import FluxConfig
cfg = FluxConfig(redis_url="{dead_redis_url}", key_prefix="exit:", fail_silently=True, timeout_ms=100)
async def main():
    return await RateLimiter(1, 60, config=cfg).ahit("k")
print(asyncio.run(main()).source)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "fail_open\n"), done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    # A thread Python did not start: the store's worker.
    assert lines[0].startswith("flux WARNING Dummy-"), lines
    assert f"Redis at {dead_redis_url} failed: Redis is unreachable" in lines[0], lines
