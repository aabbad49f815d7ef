"""Headless Chromium from the system's packages, driven from the standard library.

Chromium speaks the DevTools protocol on a pipe (``--remote-debugging-pipe``:
it reads commands from fd 3 and writes replies and events to fd 4, one JSON
message per NUL-terminated record), so a test needs neither a websocket nor a
browser package: it opens a page, lets its scripts run, and reads the DOM
back with ``Runtime.evaluate``.

The flags keep a browser without a network from stalling on what it would
fetch at start (updates, sync, metrics), and a fresh profile per browser
keeps runs apart. The process is ended by its own pid.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserError(Exception):
    """The browser answered a command with an error, or did not answer."""


class Chromium:
    """One headless browser with one page; a context manager."""

    def __init__(self, width: int = 1280, height: int = 800, timeout: float = 30.0) -> None:
        binary = chromium_binary()
        if binary is None:
            raise BrowserError("chromium is not installed (make deps installs it)")
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._profile = tempfile.mkdtemp(prefix="flux-chromium-")
        self._log = open(os.path.join(self._profile, "chromium.log"), "wb")
        # The shell only moves the pipes to fd 3 and 4, then becomes Chromium.
        self._process = subprocess.Popen(
            ["sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null', binary, *FLAGS,
             f"--user-data-dir={self._profile}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._buffer = b""
        self._next_id = 0
        self._session: str | None = None
        try:
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Network", "Log"):
                self.send(f"{domain}.enable")
            self.resize(width, height)
        except BaseException:
            self.close()
            raise

    # --- the protocol ---

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Sends one command (to the page, once there is one) and returns its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self._session is not None:
            message["sessionId"] = self._session
        self._process.stdin.write(json.dumps(message).encode() + b"\0")
        self._process.stdin.flush()
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline, method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def _receive(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self._process.stdout], [], [], max(left, 0))
            if not readable:
                raise BrowserError(f"no answer to {waiting_for} within {self.timeout} s")
            chunk = os.read(self._process.stdout.fileno(), 1 << 16)
            if not chunk:
                raise BrowserError(f"chromium exited while waiting for {waiting_for}")
            self._buffer += chunk
        record, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(record)

    # --- what a test does with a page ---

    def resize(self, width: int, height: int) -> None:
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def open(self, url: str) -> None:
        """Loads ``url`` and returns once its document has loaded."""
        self.events.clear()
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited, as JSON)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"{expression!r} threw: {details.get('exception', {}).get('description') or details}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15.0, poll: float = 0.1) -> Any:
        """Evaluates ``expression`` until it is truthy; returns that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"still false after {timeout} s: {expression}")
            time.sleep(poll)

    def type_text(self, selector: str, text: str) -> None:
        """Focuses the element and types ``text`` as a user would (input events and all)."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)

    def screenshot(self, path: str) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as out:
            out.write(base64.b64decode(data))

    def requests(self) -> list[tuple[str, str]]:
        """(method, url) of every request the page sent since it was opened."""
        return [(e["params"]["request"]["method"], e["params"]["request"]["url"])
                for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def console_problems(self) -> list[str]:
        """Errors the page logged or threw (a Content-Security-Policy violation is one)."""
        problems = []
        for e in self.events:
            if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error":
                problems.append(e["params"]["entry"]["text"])
            elif e.get("method") == "Runtime.exceptionThrown":
                problems.append(str(e["params"]["exceptionDetails"].get("text")))
        return problems

    def drain_events(self) -> None:
        """Takes in the events sent since the last command."""
        self.evaluate("0")

    def idle(self, seconds: float) -> None:
        """Lets the page run for ``seconds``, reading what the browser sends
        meanwhile (so the pipe never fills) and keeping none of it."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 1.0))
            self.drain_events()
            self.events.clear()

    # --- ending ---

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                self._session = None
                self.timeout = 5.0
                self.send("Browser.close")
            except (BrowserError, OSError, ValueError):
                pass
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self._process.pid, signal.SIGKILL)
                self._process.wait()
        for stream in (self._process.stdin, self._process.stdout, self._log):
            stream.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
