"""One store per configuration per process, and the async batcher in front of it.

A store (the memory map, or the Redis pool and its worker thread) is made
lazily the first time a limiter needs it and shared by every limiter of the
same configuration. Its async side gathers the ``ahit`` calls made during one
iteration of an event loop into a single non-blocking FFI call, so many
coroutines cost one Redis pipeline rather than one round trip each.

Process life: a forked child keeps using the stores (the library gives it
its own connections and threads); what the parent had queued or in flight
is the parent's to answer, so the child forgets it. At exit, async
callbacks are stopped before the interpreter finalizes.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import itertools
import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING

from . import _ffi, _log
from .config import FluxConfig, native, redact_url
from .exceptions import FluxError

if TYPE_CHECKING:
    from .limiter import RateLimitResult

# One decision queued for a loop's next batch: the limiter, key, cost and
# endpoint it is asked of, the type its answer is made as, and the caller's future.
_Pending = tuple[
    _ffi.Limiter,
    bytes,
    int,
    "bytes | None",
    "type[RateLimitResult]",
    "asyncio.Future[RateLimitResult]",
]

logger = logging.getLogger("flux")


class Store:
    """A native store plus what Python keeps beside it."""

    def __init__(self, cfg: FluxConfig, config_handle: _ffi.Config) -> None:
        self.config = cfg
        self.config_handle = config_handle
        self.handle = _ffi.Store.new(config_handle)
        self.kind = self.handle.kind
        self.is_memory = self.kind == "memory"
        self.where = _describe(cfg) if not self.is_memory else "memory"
        # Per event loop, the decisions asked for during its current iteration.
        self._pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Pending]] = (
            weakref.WeakKeyDictionary()
        )

    # --- async batches ---

    def submit(
        self,
        limiter: _ffi.Limiter,
        key: bytes,
        cost: int,
        result_type: type[RateLimitResult],
        endpoint: bytes | None = None,
    ) -> asyncio.Future[RateLimitResult]:
        """Queues one decision for this loop iteration's batch; returns its
        future. The queue holds ``limiter`` until the batch is answered."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RateLimitResult] = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            # Runs in the loop's next iteration, after every coroutine that is
            # ready now has had its turn to add to the batch.
            loop.call_soon(self._flush, loop)
        pending.append((limiter, key, cost, endpoint, result_type, future))
        return future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        items = self._pending.pop(loop, None)
        if not items:
            return
        n = len(items)
        # The array keeps a reference to each key's and endpoint's bytes until
        # it is freed; the items, kept by the batch until its callback, hold
        # the limiters.
        requests = (_ffi.flux_request * n)(
            *[
                _ffi.flux_request(limiter, key, len(key), cost, endpoint, len(endpoint) if endpoint else 0)
                for limiter, key, cost, endpoint, _, _ in items
            ]
        )
        batch = _Batch(loop, items, requests)
        token = next(_tokens)
        _in_flight[token] = batch
        try:
            _ffi.flux_decide_batch_async(
                requests, n, batch.decisions, batch.results, _ON_BATCH_DONE, token
            )
        except FluxError as exc:
            _in_flight.pop(token, None)
            for *_, future in items:
                if not future.done():
                    future.set_exception(exc)


class _Batch:
    """Everything the FFI writes into or reads from until its callback runs."""

    __slots__ = ("loop", "items", "requests", "decisions", "results", "messages")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        items: list[_Pending],
        requests: ctypes.Array[_ffi.flux_request],
    ) -> None:
        n = len(items)
        self.loop = loop
        self.items = items
        self.requests = requests
        self.decisions = (_ffi.flux_decision * n)()
        self.results = (ctypes.c_uint32 * n)()
        # The message of each failed request, by index.
        self.messages: dict[int, str] = {}

    def read_messages(self) -> None:
        """In the batch's callback, the only time the library gives them:
        copies the message of each request that failed."""
        self.messages = {
            i: _ffi.batch_error(i) for i, code in enumerate(self.results) if code != _ffi.OK
        }

    def complete(self) -> None:
        """On the loop's thread: resolves each caller's future."""
        decisions, results = self.decisions, self.results
        size = ctypes.sizeof(_ffi.flux_decision)
        for i, (*_, result_type, future) in enumerate(self.items):
            if future.done():  # cancelled while waiting
                continue
            code = results[i]
            if code == _ffi.OK:
                future.set_result(result_type.from_buffer_copy(decisions, i * size))
            else:
                future.set_exception(_ffi.error_for(code, self.messages.get(i, "")))


_tokens = itertools.count(1)
_in_flight: dict[int, _Batch] = {}


def _on_batch_done(token: int | None) -> None:
    # Runs on a thread owned by Flux, with the GIL taken by ctypes.
    batch = _in_flight.pop(token or 0, None)
    if batch is None:
        return
    batch.read_messages()
    try:
        batch.loop.call_soon_threadsafe(batch.complete)
    except RuntimeError:
        pass  # the loop was closed while Redis answered; nobody is waiting


# Kept alive for the life of the process: the FFI may call it at any time.
_ON_BATCH_DONE = _ffi.flux_batch_callback(_on_batch_done)

# How long exit waits for a callback that another thread is running.
SHUTDOWN_WAIT_MS = 2000


def _stop_callbacks() -> None:
    # atexit runs before the interpreter finalizes: a callback after that
    # would call into a dead interpreter and abort the process. Flux's
    # threads may finish deciding what is in flight, but answer nobody.
    _ffi.flux_async_shutdown(SHUTDOWN_WAIT_MS)


atexit.register(_stop_callbacks)


def _describe(cfg: FluxConfig) -> str:
    if cfg.redis_url:
        return redact_url(cfg.redis_url)  # no password in log lines
    return f"{cfg.redis_host or '127.0.0.1'}:{cfg.redis_port or 6379}"


_lock = threading.Lock()
_stores: dict[str, Store] = {}


def store_for(cfg: FluxConfig) -> Store:
    """The process-wide store of ``cfg``'s configuration, made on first use."""
    text, handle = native(cfg)
    store = _stores.get(text)
    if store is None:
        with _lock:
            store = _stores.get(text)
            if store is None:
                _configure_logging(cfg)
                _log.install()
                store = _stores[text] = Store(cfg, handle)
    return store


def _forget_parent_work() -> None:
    # In a forked child: batches queued or in flight belong to the parent's
    # loop and thread and are answered there; a lock another thread held at
    # the fork would never be released here.
    global _lock
    _lock = threading.Lock()
    _in_flight.clear()
    for store in _stores.values():
        store._pending = weakref.WeakKeyDictionary()


os.register_at_fork(after_in_child=_forget_parent_work)


def _configure_logging(cfg: FluxConfig) -> None:
    """Applies ``console_logging`` and ``log_file`` to the ``flux`` logger, once each."""
    fmt = logging.Formatter("%(asctime)s flux %(levelname)s %(message)s")
    have = {getattr(h, "_flux_target", None) for h in logger.handlers}
    if cfg.console_logging and "console" not in have:
        handler: logging.Handler = logging.StreamHandler()
        handler._flux_target = "console"  # type: ignore[attr-defined]
        handler.setFormatter(fmt)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    if cfg.log_file and cfg.log_file not in have:
        handler = logging.FileHandler(cfg.log_file)
        handler._flux_target = cfg.log_file  # type: ignore[attr-defined]
        handler.setFormatter(fmt)
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
