"""Flux's log records, from the library to the ``flux`` logger.

The Rust core decides what to say and how often (a failing Redis is said
once a minute per store, with what Redis answered); this module hands each
record to ``logging.getLogger("flux")``, whatever thread it comes from (a
thread deciding, or one of Flux's own: a store's async worker, its analytics
flusher, the metrics server).

At interpreter exit the callback is unset before the interpreter starts to
finalize: from then on records are dropped, and no thread of Flux calls into
Python again. Unsetting waits for any record being handed over meanwhile.
"""

from __future__ import annotations

import atexit
import logging
import threading

from . import _ffi

logger = logging.getLogger("flux")

_LEVELS = {
    _ffi.LOG_LEVEL_ERROR: logging.ERROR,
    _ffi.LOG_LEVEL_WARN: logging.WARNING,
    _ffi.LOG_LEVEL_INFO: logging.INFO,
    _ffi.LOG_LEVEL_DEBUG: logging.DEBUG,
    _ffi.LOG_LEVEL_TRACE: logging.DEBUG,
}


def _forward(user_data: int | None, level: int, message: bytes) -> None:
    # Never raise into the library: a broken handler is logging's business.
    try:
        logger.log(_LEVELS.get(level, logging.WARNING), "%s", message.decode("utf-8", "replace"))
    except Exception:  # pragma: no cover - logging reports its own handler errors
        pass


# Kept alive for as long as the library may call it.
_CALLBACK = _ffi.flux_log_callback(_forward)
_lock = threading.Lock()
_installed = False


def install() -> None:
    """Sends the library's records to the ``flux`` logger from now on (once per process)."""
    global _installed
    with _lock:
        if _installed:
            return
        _ffi.flux_set_log_callback(_CALLBACK, None)
        atexit.register(_uninstall)
        _installed = True


def _uninstall() -> None:
    # A NULL function pointer: no callback.
    _ffi.flux_set_log_callback(_ffi.flux_log_callback(), None)
