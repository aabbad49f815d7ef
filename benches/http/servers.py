"""The processes of a benchmark run: one redis-server and the app servers.

Each is started on a free loopback port, optionally pinned to CPUs with
``taskset``, waited for until it answers, and stopped by its pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

APPS = Path(__file__).resolve().parent / "apps"

#: How each framework is served, as a command for (port); the app module reads
#: its variant, route and Redis URL from the environment (apps/common.py).
SERVERS = {
    "fastapi": (
        "uvicorn, 1 worker, uvloop, httptools",
        lambda port: [
            "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(APPS),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ],
    ),
    "flask": ("gunicorn, 2 sync workers", lambda port: gunicorn("flask_app:app", port)),
    "django": ("gunicorn, 2 sync workers", lambda port: gunicorn("django_app:application", port)),
}


def gunicorn(app: str, port: int) -> list[str]:
    return [
        "-m", "gunicorn", app, "--chdir", str(APPS), "--bind", f"127.0.0.1:{port}",
        "--workers", "2", "--worker-class", "sync", "--log-level", "warning",
        # Workers signal they are alive through a file; keep that off the disk.
        "--worker-tmp-dir", "/dev/shm",
        # One control socket path is shared by every gunicorn of the user: the
        # servers of a run would fight over it (and the benchmark needs none).
        "--no-control-socket",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(argv: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


@dataclass
class Process:
    name: str
    port: int
    popen: subprocess.Popen

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the process and every process under it
        (gunicorn's workers), all threads included."""
        ticks, pids = 0, [self.popen.pid]
        while pids:
            pid = pids.pop()
            try:
                # Fields after the command's closing parenthesis; utime and stime are 14th and 15th.
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pids += map(int, (task / "children").read_text().split())
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited meanwhile
        return ticks / os.sysconf("SC_CLK_TCK")

    def wait_until_answering(self, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if self.popen.poll() is not None:
                raise SystemExit(f"{self.name} exited with code {self.popen.returncode} at start")
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{self.name} did not answer within {timeout:g} s")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        os.kill(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


def start_redis(cpus: str | None) -> Process:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (make deps installs it)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = Process("redis-server", port, subprocess.Popen(pinned(argv, cpus), stdout=subprocess.DEVNULL))
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    return process
        except OSError:
            pass
        if time.monotonic() > deadline or process.popen.poll() is not None:
            process.stop()
            raise SystemExit("redis-server did not start")
        time.sleep(0.05)


def start_app(
    framework: str, variant: str, path: str, redis_url: str, cpus: str | None, flux_path: str | None = None
) -> Process:
    """A server of the framework's app in ``variant`` keeping the route ``path`` alone, as the
    benchmark serves it; call :meth:`Process.wait_until_answering` before using it. With
    ``flux_path``, a directory holding another copy of the ``flux`` package (its library
    beside it), the app imports that one."""
    port = free_port()
    _, command = SERVERS[framework]
    env = {**os.environ, "BENCH_VARIANT": variant, "BENCH_ROUTE": path, "BENCH_REDIS_URL": redis_url}
    if flux_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (flux_path, env.get("PYTHONPATH")) if p)
    argv = pinned([sys.executable, *command(port)], cpus)
    return Process(f"{framework} ({variant}) {path}", port, subprocess.Popen(argv, env=env))
