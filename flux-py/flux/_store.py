"""One store per configuration per process, and the async batcher in front of it.

A store (the memory map, or the Redis pool and its worker thread) is made
lazily the first time a limiter needs it and shared by every limiter of the
same configuration. Its async side gathers the ``ahit`` calls made during one
iteration of an event loop into a single non-blocking FFI call, so many
coroutines cost one Redis pipeline rather than one round trip each.

Process life: a forked child keeps using the stores (the library gives it
its own connections and threads); what the parent had queued or in flight
is the parent's to answer, so the child forgets it. No Python runs on
Flux's threads for an async decision (see ``_Answers``), so an interpreter
exiting with decisions in flight has nothing to stop.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import operator
import os
import threading
import weakref
from array import array
from collections.abc import Iterable
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
        # Per event loop, the decisions asked for during its current
        # iteration, until its next takes them. (A weak key would not let a
        # loop go sooner: the callers' futures hold it.)
        self._pending: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}

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
        # Laid out as the library's packed batch: filling one record per
        # call would cost more than the rest of the call's Python together.
        # The items keep the limiters alive during the call, which copies
        # what it is given.
        limiters, keys, costs, endpoints, _, _ = zip(*items, strict=True)
        n = len(items)
        sizes = ctypes.c_size_t * n
        key_lens = sizes.from_buffer(_sizes(map(len, keys)))
        addresses = (_ffi.LimiterPtr * n).from_buffer(_sizes(map(_address, limiters)))
        cost_array = None if costs.count(1) == n else (ctypes.c_uint64 * n).from_buffer(array("Q", costs))
        endpoint_bytes, endpoint_lens = None, None
        if any(endpoints):
            present = [endpoint or b"" for endpoint in endpoints]
            endpoint_bytes, endpoint_lens = b"".join(present), sizes.from_buffer(_sizes(map(len, present)))
        answers = _answers_of(loop)
        token = answers.expect(items)
        try:
            _ffi.flux_decide_packed_queued(
                addresses,
                b"".join(keys),
                key_lens,
                cost_array,
                endpoint_bytes,
                endpoint_lens,
                n,
                answers.queue,
                token,
            )
        except FluxError as exc:
            answers.forget(token)
            for *_, future in items:
                if not future.done():
                    future.set_exception(exc)


class _Answers:
    """One event loop's completion queue. Flux's thread answers the loop's
    batches into it and makes its descriptor readable; the loop, watching
    the descriptor, takes the answers on its own thread and resolves the
    callers' futures. No Python runs on Flux's thread, so it never waits
    for the GIL, and the answers stay in the library until taken, so a
    loop that goes away with batches in flight leaves nothing to write into."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queue = _ffi.Completions.new()
        # By token, the decisions asked for in each batch not yet answered.
        self.in_flight: dict[int, list[_Pending]] = {}
        self._grow(64)
        loop.add_reader(self.queue.fd, self.drain)

    def _grow(self, size: int) -> None:
        self.size = size
        self.decisions = (_ffi.flux_decision * size)()
        self.results = (ctypes.c_uint32 * size)()

    def expect(self, items: list[_Pending]) -> int:
        """Registers a batch about to be queued; returns its token."""
        token = next(_tokens)
        self.in_flight[token] = items
        if len(items) > self.size:
            self._grow(max(len(items), 2 * self.size))
        return token

    def forget(self, token: int) -> None:
        self.in_flight.pop(token, None)

    def drain(self) -> None:
        """On the loop's thread, when the descriptor is readable: resolves the
        futures of every batch answered so far."""
        token, n = ctypes.c_uint64(0), ctypes.c_size_t(0)
        record = ctypes.sizeof(_ffi.flux_decision)
        while True:
            code = _ffi.flux_completions_pop(
                self.queue, _byref(token), self.decisions, self.results, self.size, _byref(n)
            )
            if code == _ffi.BUFFER_TOO_SMALL:
                self._grow(n.value)
                continue
            if code != _ffi.OK:
                raise _ffi.error_for(code)
            if not token.value:
                return
            items = self.in_flight.pop(token.value, None)
            if items is None:
                continue
            decisions, results = self.decisions, self.results
            for i, item in enumerate(items):
                future = item[5]
                if future.done():  # cancelled while waiting
                    continue
                code = results[i]
                if code == _ffi.OK:
                    future.set_result(item[4].from_buffer_copy(decisions, i * record))
                else:
                    future.set_exception(_ffi.error_for(code, _ffi.completion_error(self.queue, i)))


_byref = ctypes.byref
_address = operator.attrgetter("address")


def _sizes(values: Iterable[int]) -> array[int]:
    """``values`` as ``size_t`` (and pointers, as wide) in memory a ctypes
    array can be made on: built at C speed."""
    return array(_SIZE_T, values)


_SIZE_T = "Q" if ctypes.sizeof(ctypes.c_size_t) == 8 else "I"
_tokens = itertools.count(1)
# Per event loop, the queue its batches are answered into.
_answers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Answers] = weakref.WeakKeyDictionary()


def _answers_of(loop: asyncio.AbstractEventLoop) -> _Answers:
    answers = _answers.get(loop)
    if answers is None:
        answers = _answers[loop] = _Answers(loop)
    return answers


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
    # loop and thread and are answered there, into the parent's queues,
    # which the child leaves alone (not even closing its copies of their
    # descriptors, which a loop it inherited may still watch); a lock
    # another thread held at the fork would never be released here.
    global _lock, _answers
    _lock = threading.Lock()
    _parents_answers.extend(_answers.values())
    _answers = weakref.WeakKeyDictionary()
    for store in _stores.values():
        store._pending = {}


# The queues a forked child inherited, kept from being freed.
_parents_answers: list[_Answers] = []


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
