"""The one module that touches libflux_ffi.

It loads the library once, declares ``argtypes``, ``restype`` and an
``errcheck`` for every symbol it uses, and turns every ``flux_result`` code
into the mapped exception, so no other module ever sees an integer code.
Handles (:class:`Config`, :class:`Store`, :class:`Limiter`) are the ctypes
pointers themselves: passing one to a call keeps it alive for that call,
and it is freed once, when the last reference to it goes.

The library is looked up in ``$FLUX_LIB`` first, then beside this file (where
``pip install`` puts it), and refused unless its version is one this module
was written for. The names of policies and sources are read from it; the
codes and struct layouts below mirror include/flux.h, which
tests/test_header.py compares them with.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_double,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _ctypes import CFuncPtr

from .exceptions import ConfigError, ConnectionError, FluxError, LimitError, PoolExhaustedError

_LIB_NAMES = {"darwin": "libflux_ffi.dylib", "win32": "flux_ffi.dll"}
LIB_NAME = _LIB_NAMES.get(sys.platform, "libflux_ffi.so")


def _library_path() -> str:
    explicit = os.environ.get("FLUX_LIB")
    if explicit:
        if not Path(explicit).is_file():
            raise ImportError(f"FLUX_LIB={explicit!r} is not a file")
        return explicit
    bundled = Path(__file__).with_name(LIB_NAME)
    if bundled.is_file():
        return str(bundled)
    raise ImportError(
        f"{LIB_NAME} was not found beside {__file__}. Install the package with "
        "`pip install ./flux-py` (it builds the library with cargo), or point "
        "FLUX_LIB at a build (target/release/libflux_ffi.so)."
    )


LIB_PATH = _library_path()
# Calls that may wait on Redis release the GIL (CDLL). The memory store's
# decision takes well under a microsecond, less than giving up and taking back
# the GIL, so it is also bound through PyDLL, which keeps the GIL.
_lib = ctypes.CDLL(LIB_PATH)
_lib_gil = ctypes.PyDLL(LIB_PATH)

# The version of include/flux.h this module declares. The library must be of
# the same series (same major; for 0.x, same minor, as a 0.x release may break
# the ABI) and at least this, or it may lack a function or lay a struct out
# otherwise. Checked before anything else is read from the library.
EXPECTED_VERSION = "0.2.0"


def _check_version() -> str:
    try:
        read = _lib.flux_version
    except AttributeError:
        raise FluxError(f"{LIB_PATH} is not a Flux library: it has no flux_version") from None
    read.restype = c_char_p
    read.argtypes = []
    found = (read() or b"").decode("utf-8", "replace")
    want = _numbers(EXPECTED_VERSION)
    assert want is not None, "EXPECTED_VERSION is a release number"
    series = want[:2] if want[0] == 0 else want[:1]
    have = _numbers(found)
    if have is None or have[: len(series)] != series or have < want:
        raise FluxError(
            f"the Flux library {LIB_PATH} is version {found or '(none)'}, but this flux "
            f"package needs version {EXPECTED_VERSION} or a later "
            f"{'.'.join(map(str, series))}.x: reinstall the package (`pip install ./flux-py` "
            "builds its library), or point FLUX_LIB at a build of the same version"
        )
    return found


def _numbers(version: str) -> tuple[int, ...] | None:
    """(major, minor, patch) of "1.2.3", "1.2.3-rc.1" or "1.2.3+build"; None for others."""
    parts = version.split("-", 1)[0].split("+", 1)[0].split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return tuple(map(int, parts))


LIB_VERSION = _check_version()


# --- result codes (flux_result) ----------------------------------------------

OK = 0
PANIC = 1
NULL_ARGUMENT = 2
INVALID_UTF8 = 3
INVALID_ARGUMENT = 4
BUFFER_TOO_SMALL = 5
SHUT_DOWN = 6
CONFIG = 100
INVALID_LIMIT = 101
INVALID_COST = 102
UNKNOWN_LIMIT = 103
STORAGE = 200
TIMEOUT = 201
POOL = 202
UNAVAILABLE = 203

_EXCEPTION_FOR_CODE: dict[int, type[FluxError]] = {
    CONFIG: ConfigError,
    UNKNOWN_LIMIT: ConfigError,
    INVALID_ARGUMENT: LimitError,
    INVALID_LIMIT: LimitError,
    INVALID_COST: LimitError,
    STORAGE: ConnectionError,
    TIMEOUT: ConnectionError,
    POOL: PoolExhaustedError,
    UNAVAILABLE: ConnectionError,
}

def error_for(code: int, message: str | None = None) -> FluxError:
    """The exception for ``code``; ``message`` defaults to the thread's last error."""
    if message is None:
        message = last_error()
    if not message:  # every failing call leaves one: this is only a safety net
        message = f"flux failed with code {code} and no message"
    exc = _EXCEPTION_FOR_CODE.get(code, FluxError)(message)
    exc.code = code  # type: ignore[attr-defined]
    return exc


# What ctypes hands an ``errcheck``: the call's result as its ``restype``
# converts it (an int, bytes or None), the function, and the call's arguments.
_ErrCheck = Callable[[Any, "CFuncPtr", tuple[Any, ...]], Any]


def _check(result: int, func: CFuncPtr, args: tuple[Any, ...]) -> int:
    if result != OK:
        raise error_for(result)
    return result


# --- types -------------------------------------------------------------------


class _Opaque(Structure):
    """Base of the opaque handle types: only pointers to them exist."""


class flux_config(_Opaque):
    pass


class flux_store(_Opaque):
    pass


class flux_limiter(_Opaque):
    pass


class flux_completions(_Opaque):
    pass


ConfigPtr = POINTER(flux_config)
StorePtr = POINTER(flux_store)
LimiterPtr = POINTER(flux_limiter)
CompletionsPtr = POINTER(flux_completions)

# The handle classes below subclass these pointer types; mypy needs them
# spelled as classes.
if TYPE_CHECKING:
    _ConfigBase = ctypes._Pointer[flux_config]
    _StoreBase = ctypes._Pointer[flux_store]
    _LimiterBase = ctypes._Pointer[flux_limiter]
    _CompletionsBase = ctypes._Pointer[flux_completions]
else:
    _ConfigBase, _StoreBase, _LimiterBase = ConfigPtr, StorePtr, LimiterPtr
    _CompletionsBase = CompletionsPtr

PARAM_POLICY = 1
PARAM_REQUESTS = 2
PARAM_PERIOD = 4
PARAM_BURST = 8
PARAM_MAX_WAIT = 16
PARAM_RATE = 32
PARAM_SHADOW = 64

# flux_op: what flux_limiter_apply does.
OP_DECIDE = 0
OP_PEEK = 1
OP_REFUND = 2
STORAGE_MEMORY = 0
STORAGE_REDIS = 1
METRICS_PROMETHEUS = 0
METRICS_JSON = 1

LOG_LEVEL_ERROR = 1
LOG_LEVEL_WARN = 2
LOG_LEVEL_INFO = 3
LOG_LEVEL_DEBUG = 4
LOG_LEVEL_TRACE = 5


class flux_limit_params(Structure):
    _fields_ = [
        ("set", c_uint32),
        ("policy", c_uint32),
        ("requests", c_int64),
        ("period", c_double),
        ("burst", c_int64),
        ("max_wait", c_double),
        ("rate", c_char_p),
        ("shadow", c_bool),
    ]


class flux_quota_info(Structure):
    _fields_ = [
        ("policy", c_uint32),
        ("requests", c_uint64),
        ("period", c_double),
        ("burst", c_uint64),
        ("max_wait", c_double),
    ]


class flux_decision(Structure):
    _fields_ = [
        ("allowed", c_bool),
        ("limit", c_uint64),
        ("remaining", c_uint64),
        ("reset_after", c_double),
        ("retry_after", c_double),
        ("delay", c_double),
        ("source_code", c_uint32),
        ("quota_index", c_uint32),
    ]


# user_data, level (1 error .. 5 trace), message (valid during the call only)
flux_log_callback = CFUNCTYPE(None, c_void_p, c_uint32, c_char_p)


# --- symbols -----------------------------------------------------------------


def _declare(
    lib: ctypes.CDLL,
    name: str,
    restype: type[ctypes._CDataType] | None,
    argtypes: list[type[ctypes._CDataType]],
    errcheck: _ErrCheck | None = _check,
) -> CFuncPtr:
    try:
        func: CFuncPtr = getattr(lib, name)
    except AttributeError:
        raise FluxError(
            f"the Flux library {LIB_PATH} (version {LIB_VERSION}) has no function {name}, "
            f"which this flux package (written for {EXPECTED_VERSION}) calls: reinstall the "
            "package, or point FLUX_LIB at a build of the same sources"
        ) from None
    func.restype = restype
    func.argtypes = argtypes
    if errcheck is not None:
        func.errcheck = errcheck
    return func


def _decode_static(result: bytes | None, func: CFuncPtr, args: tuple[Any, ...]) -> str:
    return result.decode("utf-8") if result else ""


# Infallible functions return no code: they get no errcheck, or one that
# converts their value.
flux_last_error = _declare(_lib, "flux_last_error", c_size_t, [c_char_p, c_size_t], None)
flux_version = _declare(_lib, "flux_version", c_char_p, [], _decode_static)
flux_policy_name = _declare(_lib, "flux_policy_name", c_char_p, [c_uint32], None)
flux_source_name = _declare(_lib, "flux_source_name", c_char_p, [c_uint32], None)
# Through CDLL, which releases the GIL: unsetting waits for callbacks running
# on Flux's threads, which need the GIL to finish.
flux_set_log_callback = _declare(
    _lib, "flux_set_log_callback", c_uint32, [flux_log_callback, c_void_p]
)

flux_config_default = _declare(_lib, "flux_config_default", c_uint32, [POINTER(ConfigPtr)])
flux_config_from_file = _declare(
    _lib, "flux_config_from_file", c_uint32, [c_char_p, POINTER(ConfigPtr)]
)
flux_config_from_toml = _declare(
    _lib, "flux_config_from_toml", c_uint32, [c_char_p, c_size_t, c_char_p, POINTER(ConfigPtr)]
)
flux_config_from_json = _declare(
    _lib, "flux_config_from_json", c_uint32, [c_char_p, c_size_t, c_char_p, POINTER(ConfigPtr)]
)
flux_config_discover = _declare(_lib, "flux_config_discover", c_uint32, [POINTER(ConfigPtr)])
flux_config_to_json = _declare(
    _lib,
    "flux_config_to_json",
    c_uint32,
    [ConfigPtr, c_char_p, c_size_t, POINTER(c_size_t)],
    None,  # BUFFER_TOO_SMALL is part of the protocol: config_to_json() checks.
)
flux_config_free = _declare(_lib, "flux_config_free", None, [ConfigPtr], None)

flux_store_new = _declare(_lib, "flux_store_new", c_uint32, [ConfigPtr, POINTER(StorePtr)])
flux_store_preload = _declare(_lib, "flux_store_preload", c_uint32, [StorePtr])
flux_store_clear = _declare(_lib, "flux_store_clear", c_uint32, [StorePtr, POINTER(c_uint64)])
flux_store_kind = _declare(_lib, "flux_store_kind", c_uint32, [StorePtr], None)
flux_store_free = _declare(_lib, "flux_store_free", None, [StorePtr], None)
flux_store_metrics = _declare(
    _lib,
    "flux_store_metrics",
    c_uint32,
    [StorePtr, c_uint32, c_char_p, c_size_t, POINTER(c_size_t)],
    None,  # BUFFER_TOO_SMALL is part of the protocol: Store.metrics() checks.
)

flux_limiter_new = _declare(
    _lib,
    "flux_limiter_new",
    c_uint32,
    [StorePtr, ConfigPtr, c_char_p, c_char_p, POINTER(flux_limit_params), POINTER(LimiterPtr)],
)
flux_limiter_quota = _declare(
    _lib, "flux_limiter_quota", c_uint32, [LimiterPtr, POINTER(flux_quota_info)]
)
flux_limiter_quotas = _declare(
    _lib,
    "flux_limiter_quotas",
    c_uint32,
    [LimiterPtr, POINTER(flux_quota_info), c_size_t, POINTER(c_size_t)],
    None,  # BUFFER_TOO_SMALL tells the count: Limiter.quotas() checks.
)
flux_redact_url = _declare(
    _lib, "flux_redact_url", c_uint32, [c_char_p, c_char_p, c_size_t, POINTER(c_size_t)], None
)
flux_default_scope = _declare(
    _lib,
    "flux_default_scope",
    c_uint32,
    [
        ConfigPtr,
        c_char_p,
        POINTER(flux_limit_params),
        c_char_p,
        c_char_p,
        c_size_t,
        POINTER(c_size_t),
    ],
    None,  # BUFFER_TOO_SMALL is part of the protocol: _read_text() checks.
)
flux_policy_from_name = _declare(
    _lib, "flux_policy_from_name", c_uint32, [c_char_p, POINTER(c_uint32)]
)
flux_limiter_apply = _declare(
    _lib,
    "flux_limiter_apply",
    c_uint32,
    [
        LimiterPtr,
        c_uint32,
        c_char_p,
        c_size_t,
        c_char_p,
        c_size_t,
        c_uint64,
        POINTER(flux_decision),
    ],
)
flux_limiter_reset = _declare(
    _lib,
    "flux_limiter_reset",
    c_uint32,
    [LimiterPtr, c_char_p, c_size_t, c_char_p, c_size_t, POINTER(c_uint64)],
)
flux_limiter_free = _declare(_lib, "flux_limiter_free", None, [LimiterPtr], None)
flux_limiter_check_cost = _declare(_lib, "flux_limiter_check_cost", c_uint32, [LimiterPtr, c_uint64])

_DECIDE_ARGS: list[type[ctypes._CDataType]] = [LimiterPtr, c_char_p, c_size_t, c_uint64, POINTER(flux_decision)]
# The decision is the hot path, and an errcheck costs more than the decision
# itself: ctypes builds the tuple of converted arguments for it on every call
# (measured: 2.7 µs a call with it, 1.4 µs without). So the decide functions
# return their code, and their one caller (limiter.py) raises
# `decide_error(code, limiter)` when it is not OK.
# May wait on Redis: releases the GIL.
flux_limiter_decide = _declare(_lib, "flux_limiter_decide", c_uint32, _DECIDE_ARGS, None)
# For the memory store only: keeps the GIL (see above).
flux_limiter_decide_gil = _declare(_lib_gil, "flux_limiter_decide", c_uint32, _DECIDE_ARGS, None)
_DECIDE_ENDPOINT_ARGS: list[type[ctypes._CDataType]] = [
    LimiterPtr, c_char_p, c_size_t, c_char_p, c_size_t, c_uint64, POINTER(flux_decision)
]
flux_limiter_decide_endpoint = _declare(
    _lib, "flux_limiter_decide_endpoint", c_uint32, _DECIDE_ENDPOINT_ARGS, None
)
flux_limiter_decide_endpoint_gil = _declare(
    _lib_gil, "flux_limiter_decide_endpoint", c_uint32, _DECIDE_ENDPOINT_ARGS, None
)

# The same decision as it is called on the hot path: with no argtypes, ctypes
# passes each argument as it is (bytes as their pointer, a handle as its
# value, an int as a C int) instead of calling a converter per argument and
# building an object for each, which was 0.3 µs of a 0.85 µs call. Its
# callers pass the result by reference and only lengths and costs below
# 2**31: an int passed as a C int reaches a 64-bit parameter whole
# because libffi widens it into the 64-bit register it travels in, which
# holds on 64-bit platforms only. Elsewhere these are the declared functions
# above (which take the same arguments, the result by reference included).
_UNTYPED = ctypes.sizeof(c_void_p) == 8


def _untyped(lib: ctypes.CDLL, name: str, declared: Any) -> Any:
    if not _UNTYPED:
        return declared
    func = lib[name]  # a function object of its own, not the declared one
    func.restype = c_uint32
    return func


flux_limiter_decide_untyped = _untyped(_lib, "flux_limiter_decide", flux_limiter_decide)
flux_limiter_decide_gil_untyped = _untyped(_lib_gil, "flux_limiter_decide", flux_limiter_decide_gil)


def decide_error(code: int, limiter: object) -> FluxError:
    """What a decision that returned ``code`` (not OK) on ``limiter`` raises."""
    return closed_error() if limiter is None else error_for(code)


def policy_code(name: str) -> int:
    """The ``flux_policy`` value of a policy name; any other name raises the
    core's ``LimitError``, which lists the names."""
    code = c_uint32(0)
    flux_policy_from_name(name.encode("utf-8"), ctypes.byref(code))
    return code.value


def closed_error() -> FluxError:
    """What a call on a closed limiter raises."""
    return FluxError("this limiter was closed: it decides nothing more; make a new one")


flux_decide_packed_queued = _declare(
    _lib,
    "flux_decide_packed_queued",
    c_uint32,
    [
        POINTER(LimiterPtr),
        c_char_p,
        POINTER(c_size_t),
        POINTER(c_uint64),
        c_char_p,
        POINTER(c_size_t),
        c_size_t,
        CompletionsPtr,
        c_uint64,
    ],
)
flux_completions_new = _declare(
    _lib, "flux_completions_new", c_uint32, [POINTER(CompletionsPtr)]
)
flux_completions_fd = _declare(_lib, "flux_completions_fd", ctypes.c_int, [CompletionsPtr], None)
flux_completions_pop = _declare(
    _lib,
    "flux_completions_pop",
    c_uint32,
    [
        CompletionsPtr,
        POINTER(c_uint64),
        POINTER(flux_decision),
        POINTER(c_uint32),
        c_size_t,
        POINTER(c_size_t),
    ],
    None,  # BUFFER_TOO_SMALL is an answer: the batch waits for bigger arrays
)
flux_completions_error = _declare(
    _lib, "flux_completions_error", c_size_t, [CompletionsPtr, c_size_t, c_char_p, c_size_t], None
)
flux_completions_free = _declare(_lib, "flux_completions_free", None, [CompletionsPtr], None)


# --- helpers -----------------------------------------------------------------


def _message(read: Callable[..., int], *args: int) -> str:
    size = read(*args, None, 0)
    if size == 0:
        return ""
    buf = ctypes.create_string_buffer(size + 1)
    read(*args, buf, size + 1)
    return buf.value.decode("utf-8", "replace")


def last_error() -> str:
    """The calling thread's last error message from flux."""
    return _message(flux_last_error)


def completion_error(queue: Completions, index: int) -> str:
    """The message of request ``index`` of the batch ``queue`` gave last
    ("" when it succeeded)."""
    return _message(functools.partial(flux_completions_error, queue), index)


def _names(name_of: CFuncPtr) -> tuple[str, ...]:
    """The names the library gives the values 0, 1, 2, ... of one of its enums."""
    names: list[str] = []
    while (name := name_of(len(names))) is not None:
        names.append(name.decode("ascii"))
    return tuple(names)


#: Policy names by ``flux_policy`` value, and source names by ``flux_source``
#: value: the core's lists, read from the library.
POLICIES = _names(flux_policy_name)
SOURCES = _names(flux_source_name)


def version() -> str:
    found: str = flux_version()  # converted by _decode_static
    return found


def _read_text(
    fill: Callable[[ctypes.Array[ctypes.c_char], int, ctypes._CArgObject], int], size: int = 4096
) -> str:
    """The text a ``(buf, len, written) -> code`` function writes, in a
    buffer grown until it fits."""
    written = c_size_t(0)
    while True:
        buf = ctypes.create_string_buffer(size)
        code = fill(buf, size, ctypes.byref(written))
        if code == OK:
            return buf.raw[: written.value].decode("utf-8")
        if code != BUFFER_TOO_SMALL or written.value < size:
            raise error_for(code)
        # What it writes may grow between two calls: ask for some room beyond.
        size = written.value + 1024


def redact_url(url: str) -> str:
    """``url`` with its passwords hidden, as Flux's own messages show it."""
    raw = url.encode("utf-8")
    return _read_text(lambda buf, size, written: flux_redact_url(raw, buf, size, written), len(raw) + 8)


def _free_once(handle: ctypes._Pointer[Any], free: CFuncPtr) -> None:
    """Frees a handle that is no longer referenced (``__del__``)."""
    if handle:  # NULL when its constructor failed
        try:
            free(handle)
        except Exception:  # the interpreter is shutting down: nothing to call
            pass


class Config(_ConfigBase):
    """A ``flux_config``, freed when the last reference to it goes."""

    _type_ = flux_config

    def __del__(self) -> None:
        _free_once(self, flux_config_free)

    @classmethod
    def _make(cls, fill: Callable[[ctypes._CArgObject], object]) -> Config:
        handle = cls()
        fill(ctypes.byref(handle))
        return handle

    @classmethod
    def default(cls) -> Config:
        return cls._make(flux_config_default)

    @classmethod
    def discover(cls) -> Config:
        return cls._make(flux_config_discover)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Config:
        raw = os.fsencode(path)
        return cls._make(lambda out: flux_config_from_file(raw, out))

    @classmethod
    def from_toml(cls, text: str, origin: str | None = None) -> Config:
        raw = text.encode("utf-8")
        origin_raw = origin.encode("utf-8") if origin is not None else None
        return cls._make(lambda out: flux_config_from_toml(raw, len(raw), origin_raw, out))

    @classmethod
    def from_json(cls, text: str, origin: str | None = None) -> Config:
        raw = text.encode("utf-8")
        origin_raw = origin.encode("utf-8") if origin is not None else None
        return cls._make(lambda out: flux_config_from_json(raw, len(raw), origin_raw, out))

    def to_json(self) -> str:
        return _read_text(lambda buf, size, written: flux_config_to_json(self, buf, size, written))

    def default_scope(
        self, name: str | None, params: flux_limit_params | None, base: str | None
    ) -> str:
        """The scope a limiter of this limit is given when it has none of its own."""
        name_raw = name.encode("utf-8") if name is not None else None
        base_raw = base.encode("utf-8") if base is not None else None
        by_ref = ctypes.byref(params) if params is not None else None
        return _read_text(
            lambda buf, size, written: flux_default_scope(
                self, name_raw, by_ref, base_raw, buf, size, written
            ),
            256,
        )


class Store(_StoreBase):
    """A ``flux_store``, released when the last reference to it goes (its
    limiters keep the native store alive after that)."""

    _type_ = flux_store

    def __del__(self) -> None:
        _free_once(self, flux_store_free)

    @classmethod
    def new(cls, config: Config) -> Store:
        handle = cls()
        flux_store_new(config, ctypes.byref(handle))
        return handle

    @property
    def kind(self) -> str:
        return "redis" if flux_store_kind(self) == STORAGE_REDIS else "memory"

    def preload(self) -> None:
        flux_store_preload(self)

    def metrics(self, fmt: int = METRICS_PROMETHEUS) -> str:
        """The store's counters: Prometheus text, or with ``METRICS_JSON`` the
        JSON ``/metrics.json`` serves."""
        return _read_text(
            lambda buf, size, written: flux_store_metrics(self, fmt, buf, size, written), 8192
        )

    def clear(self) -> int:
        deleted = c_uint64(0)
        flux_store_clear(self, ctypes.byref(deleted))
        return deleted.value


class Completions(_CompletionsBase):
    """A ``flux_completions`` queue, freed when the last reference to it goes
    (batches still being decided keep what they need of it)."""

    _type_ = flux_completions

    def __del__(self) -> None:
        _free_once(self, flux_completions_free)

    @classmethod
    def new(cls) -> Completions:
        handle = cls()
        flux_completions_new(ctypes.byref(handle))
        return handle

    @property
    def fd(self) -> int:
        fd: int = flux_completions_fd(self)
        return fd


class Limiter(_LimiterBase):
    """A ``flux_limiter``, released when the last reference to it goes: a
    call that was given it, or a queued async request holding it, keeps it
    alive until done."""

    _type_ = flux_limiter
    address: int

    def __del__(self) -> None:
        _free_once(self, flux_limiter_free)

    @classmethod
    def new(
        cls,
        store: Store,
        config: Config,
        scope: str,
        name: str | None,
        params: flux_limit_params | None,
    ) -> Limiter:
        handle = cls()
        flux_limiter_new(
            store,
            config,
            scope.encode("utf-8"),
            name.encode("utf-8") if name is not None else None,
            ctypes.byref(params) if params is not None else None,
            ctypes.byref(handle),
        )
        #: The handle's address, as a packed batch carries it.
        handle.address = ctypes.cast(handle, c_void_p).value or 0
        return handle

    def quota(self) -> flux_quota_info:
        info = flux_quota_info()
        flux_limiter_quota(self, ctypes.byref(info))
        return info

    def quotas(self) -> list[flux_quota_info]:
        """Every quota of the limit, one per rate, in order."""
        count = c_size_t(0)
        code = flux_limiter_quotas(self, None, 0, ctypes.byref(count))
        if code not in (OK, BUFFER_TOO_SMALL):
            raise error_for(code)
        infos = (flux_quota_info * count.value)()
        code = flux_limiter_quotas(self, infos, count.value, ctypes.byref(count))
        if code != OK:
            raise error_for(code)
        return list(infos)
