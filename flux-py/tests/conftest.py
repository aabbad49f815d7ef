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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_command(port: int, *args: str, timeout: float = 5.0) -> bytes:
    """One command over a raw socket, in RESP; returns the raw reply."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args
    )
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(payload)
        return conn.recv(65536)


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
def redis_server():
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (make deps installs it)")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--enable-debug-command", "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            if redis_command(port, "PING", timeout=0.5).startswith(b"+PONG"):
                break
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            os.kill(process.pid, signal.SIGKILL)
            pytest.fail("redis-server did not start")
        time.sleep(0.05)
    yield RedisServer(port, process)
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


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
def dead_redis_url() -> str:
    """A Redis URL where nothing listens."""
    return f"redis://127.0.0.1:{free_port()}/0"
