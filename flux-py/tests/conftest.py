"""Test infrastructure: a redis-server of our own, configs per test, Django settings.

Each test gets its own ``key_prefix``, so no two tests share limiter state on
either store. The Redis server is started once per session on a free port
(with DEBUG enabled, to stall it on purpose) and killed by its pid.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid

import django
import pytest
from django.conf import settings

# Django needs settings before any view module of a test is imported.
if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="flux-tests",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="django_urls",
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()

import flux.config
from flux.config import FluxConfig


def free_port() -> int:
    """A port nothing listens on now, for a server about to bind it (which
    must be ready to find it taken meanwhile: see ``start_redis``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_command(port: int, *args: str, timeout: float = 5.0) -> bytes:
    """One command over a raw socket, in RESP; returns the raw reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        return _command(conn, args)


def _command(conn: socket.socket, args) -> bytes:
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args
    )
    conn.sendall(payload)
    return conn.recv(65536)


def _pongs(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(0.5)
            conn.connect(path)
            return _command(conn, ("PING",)).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(directory: str, *args: str) -> tuple[int, subprocess.Popen]:
    """A redis-server with ``args`` on a free port, its files in ``directory``;
    returns its port and process.

    Tests run beside other processes that take ports too: a port found free
    may be taken before redis-server binds it. So the server also listens on
    a unix socket in ``directory``, which no other process answers on; it is
    ready when that socket answers PING (redis-server binds its ports first),
    and one that exits before (its port was taken) is started on another."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (make deps installs it)")
    unix = os.path.join(directory, "redis.sock")
    for _ in range(20):
        port = free_port()
        process = subprocess.Popen(
            [
                binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", directory, "--unixsocket", unix, *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while process.poll() is None and not _pongs(unix):
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("redis-server did not answer PING")
            time.sleep(0.01)
        if process.poll() is None:
            return port, process
    pytest.fail("redis-server did not start on any of 20 free ports")


def stop_redis(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


class RedisServer:
    def __init__(self, port: int, process: subprocess.Popen) -> None:
        self.port = port
        self.process = process
        self.url = f"redis://127.0.0.1:{port}/0"

    def command(self, *args: str, timeout: float = 5.0) -> bytes:
        return redis_command(self.port, *args, timeout=timeout)

    def keys(self, pattern: str) -> list[str]:
        reply = self.command("KEYS", pattern).decode()
        return [line for line in reply.split("\r\n")[1:] if line and not line.startswith("$")]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("redis"))
    port, process = start_redis(directory, "--enable-debug-command", "yes")
    yield RedisServer(port, process)
    stop_redis(process)


_counter = itertools.count()


@pytest.fixture
def prefix() -> str:
    return f"t{next(_counter)}-{uuid.uuid4().hex[:6]}:"


@pytest.fixture
def memory_config(prefix) -> FluxConfig:
    return FluxConfig(key_prefix=prefix, jitter_enabled=False)


@pytest.fixture
def redis_config(redis_server, prefix) -> FluxConfig:
    return FluxConfig(
        redis_url=redis_server.url, key_prefix=prefix, jitter_enabled=False, timeout_ms=1000
    )


@pytest.fixture(params=["memory", "redis"])
def config(request, prefix) -> FluxConfig:
    """The test runs once on each store."""
    if request.param == "memory":
        return request.getfixturevalue("memory_config")
    return request.getfixturevalue("redis_config")


@pytest.fixture(autouse=True)
def default_config(request, prefix):
    """Decorators without ``config=`` use the process config: a fresh one per test.

    A test that uses the ``config`` fixture gets it as the process config too."""
    if "config" in request.fixturenames:
        cfg = request.getfixturevalue("config")
    else:
        cfg = FluxConfig(key_prefix=prefix, jitter_enabled=False)
    flux.config.set_config(cfg)
    yield cfg
    flux.config.set_config(None)


@pytest.fixture
def dead_redis_url():
    """A Redis URL where nothing listens: a port held bound (never listening)
    for the test, so connecting is refused and no server can take it."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"redis://127.0.0.1:{held.getsockname()[1]}/0"
