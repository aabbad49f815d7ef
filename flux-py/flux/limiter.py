"""The framework-free core: a limiter decides, a result tells.

Every number here comes from the Rust core through ``flux_limiter_decide``;
Python only passes the key (as bytes and a length) and reads the answer.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
from dataclasses import dataclass
from typing import Any

from . import _ffi
from ._store import Store, store_for
from .config import FluxConfig, RateLimitPolicy, get_config, native
from .exceptions import LimitError, RateLimitExceeded
from .headers import constant_parts, rate_limit_headers


@dataclass(frozen=True)
class Quota:
    """One quota of a limiter (one per rate), as Rust resolved it."""

    policy: str
    requests: int
    period: float
    burst: int
    max_wait: float
    #: Its name in the IETF ``RateLimit-Policy`` header: the limit's name
    #: (``"default"`` without one) for a limit of one rate, else the rate's
    #: label, e.g. ``"10per1"``.
    policy_name: str = "default"


class RateLimitResult(_ffi.flux_decision):
    """One decision: ``allowed``, ``limit``, ``remaining``, ``reset_after``,
    ``retry_after`` and ``delay`` (seconds, floats) and ``source``.

    It is the C ``flux_decision`` itself, filled in place by the library, so a
    decision costs one allocation. ``quotas`` are the limiter's; ``quota`` is
    the one the decision reports (for a limit of several rates, the closest
    to refusing, or the one that refused).
    """

    quotas: tuple[Quota, ...] = (Quota("gcra", 0, 0.0, 0, 0.0),)
    #: The ``RateLimit-Policy`` header, the same for every decision of a limiter.
    policy_header: str = ""
    # The rest of what headers.constant_parts writes once per limiter.
    _policy_raw: bytes = b""
    _ratelimit_heads: tuple[str, ...] = ('"default";r=',)
    _ratelimit_heads_raw: tuple[bytes, ...] = (b'"default";r=',)

    @property
    def quota(self) -> Quota:
        quotas = self.quotas
        index = self.quota_index
        return quotas[index] if index < len(quotas) else quotas[0]

    @property
    def source(self) -> str:
        """``"storage"``; ``"fail_open"`` when Redis failed and the call was
        admitted; ``"shadow"`` when a shadow limit would have refused it."""
        code = self.source_code
        return _ffi.SOURCES[code] if code < len(_ffi.SOURCES) else f"unknown({code})"

    def to_headers(self) -> dict[str, str]:
        """``X-RateLimit-*``, IETF ``RateLimit``/``RateLimit-Policy`` and, when
        refused, ``Retry-After``."""
        return rate_limit_headers(self)

    def __bool__(self) -> bool:
        return bool(self.allowed)

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.allowed,
            self.limit,
            self.remaining,
            self.reset_after,
            self.retry_after,
            self.delay,
            self.source,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RateLimitResult):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"RateLimitResult(allowed={self.allowed}, limit={self.limit}, "
            f"remaining={self.remaining}, reset_after={self.reset_after:.6f}, "
            f"retry_after={self.retry_after:.6f}, delay={self.delay:.6f}, "
            f"source={self.source!r})"
        )


#: What a limit may be given as: a rate string (``"10/second"``, several
#: joined by ``;``) or a list of them.
Rate = str | list[str] | tuple[str, ...]


def limit_params(
    requests: Any = None,
    period: Any = None,
    *,
    rate: Rate | None = None,
    burst: Any = None,
    policy: RateLimitPolicy | str | None = None,
    max_wait: Any = None,
    shadow: bool | None = None,
) -> _ffi.flux_limit_params:
    """The parts of a limit given in code, for Rust to validate and complete
    over the configured limit. Only what C cannot carry is checked here (a
    type, a whole number beyond 64 bits, a NUL); every value is Rust's to
    judge, and its message names the argument."""
    params = _ffi.flux_limit_params()
    if policy is not None:
        name = policy.value if isinstance(policy, RateLimitPolicy) else policy
        if not isinstance(name, str):
            raise LimitError(f"policy must be a policy name, got {policy!r}")
        _check_text("policy", name)
        params.set |= _ffi.PARAM_POLICY
        params.policy = _ffi.policy_code(name)
    if rate is not None:
        params.set |= _ffi.PARAM_RATE
        params.rate = _rate_text(rate).encode("utf-8")
    if requests is not None:
        params.set |= _ffi.PARAM_REQUESTS
        params.requests = _whole("requests", requests)
    if period is not None:
        params.set |= _ffi.PARAM_PERIOD
        params.period = _seconds("period", period)
    if burst is not None:
        params.set |= _ffi.PARAM_BURST
        params.burst = _whole("burst", burst)
    if max_wait is not None:
        params.set |= _ffi.PARAM_MAX_WAIT
        params.max_wait = _seconds("max_wait", max_wait)
    if shadow is not None:
        if not isinstance(shadow, bool):
            raise LimitError(f"shadow must be True or False, got {shadow!r}")
        params.set |= _ffi.PARAM_SHADOW
        params.shadow = shadow
    return params


def _rate_text(rate: Any) -> str:
    if isinstance(rate, str):
        text = rate
    elif isinstance(rate, (list, tuple)) and all(isinstance(r, str) for r in rate):
        text = ";".join(rate)
    else:
        raise LimitError(
            f'rate must be a rate string such as "10/second" or a list of them, got {rate!r}'
        )
    _check_text("rate", text)
    return text


def _whole(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise LimitError(f"{name} must be a whole number, got {value!r}")
    # Below 1 is Rust's to refuse (its message says what is allowed); beyond
    # an int64, ctypes would wrap the number instead.
    if not -(2**63) <= value < 2**63:
        raise LimitError(f"{name} must be a whole number from 1 to 2**63 - 1, got {value}")
    return value


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LimitError(f"{name} must be a number of seconds, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int beyond any double: Rust refuses inf, naming the argument
        return math.inf


_byref = ctypes.byref
#: What an int passed to an untyped call may reach (see _ffi): a C int.
_UNTYPED_LIMIT = 2**31

#: The widest cost the library takes (a uint64_t); ctypes wraps anything
#: wider silently, so that 2**64 + 1 would be decided as 1.
_MAX_COST = 2**64 - 1


def _cost(cost: Any) -> int:
    """``cost`` as C carries it; whether a limit can ever admit it is Rust's
    to say, when the call is decided."""
    if isinstance(cost, bool) or not isinstance(cost, int):
        raise LimitError(f"cost must be a whole number of at least 1, got {cost!r}")
    if cost < 0:
        raise LimitError(f"cost must be at least 1, got {cost}")
    if cost > _MAX_COST:
        raise LimitError(f"cost must be a whole number from 1 to 2**64 - 1, got {cost}")
    return cost


def _check_text(name: str, value: str | None) -> None:
    """A name handed to C as a NUL-terminated string: a NUL inside would cut it short."""
    if value is not None and "\0" in value:
        raise LimitError(f"{name} must not contain a NUL character, got {value!r}")


def _endpoint_bytes(endpoint: Any) -> bytes:
    if endpoint.__class__ is str:
        return endpoint.encode()
    raise TypeError(f"endpoint must be a str, got {type(endpoint).__name__}")


def _key_bytes(key: Any) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key).encode("ascii")
    raise TypeError(f"a rate limit key must be str or bytes, got {type(key).__name__}")


def _label(info: _ffi.flux_quota_info) -> str:
    """A rate's label, as Rust writes it in keys: ``10per1``, ``2per0.5``."""
    period = info.period
    return f"{info.requests}per{int(period) if period.is_integer() else repr(period)}"


class RateLimiter:
    """A limit on a store: ``hit(key)`` decides one call for ``key``.

    ``RateLimiter(100, 60)`` admits 100 calls per 60 s per key (a burst of
    100 by default); ``RateLimiter(rate="10/second;1000/day")`` admits a call
    only when every rate does, and then charges every one. Arguments left
    out come from ``[rate_limit]`` of the configuration, or from
    ``[rate_limits.NAME]`` with ``name=`` (or :meth:`from_config`). Every
    argument is validated by the Rust core now, not at the first call: a bad
    one raises ``LimitError`` (a ``ValueError``) naming it.

    ``shadow=True`` admits every call, charging only those the limit would
    admit; the others say ``source == "shadow"``.

    The store is the process-wide one of ``config`` (default: the loaded
    flux.toml), made on first use. ``scope`` is the namespace of this
    limiter's keys; limiters with the same scope and policy share state. By
    default it is the limit's name, tagged with its numbers when they were
    given in code.
    """

    def __init__(
        self,
        requests: int | None = None,
        period: float | None = None,
        *,
        rate: Rate | None = None,
        burst: int | None = None,
        policy: RateLimitPolicy | str | None = None,
        max_wait: float | None = None,
        shadow: bool | None = None,
        config: FluxConfig | None = None,
        name: str | None = None,
        scope: str | None = None,
    ) -> None:
        params = limit_params(
            requests,
            period,
            rate=rate,
            burst=burst,
            policy=policy,
            max_wait=max_wait or None,
            shadow=shadow,
        )
        self._build(config, name, params, scope, None)

    @classmethod
    def _with_params(
        cls,
        config: FluxConfig | None,
        name: str | None,
        params: _ffi.flux_limit_params,
        scope: str | None,
        base: str | None,
    ) -> RateLimiter:
        """A limiter of ``params`` (see :func:`limit_params`), in ``scope``,
        or by default in ``base`` (e.g. the function it guards) tagged with
        the limit's numbers."""
        limiter = cls.__new__(cls)
        limiter._build(config, name, params, scope, base)
        return limiter

    def _build(
        self,
        config: FluxConfig | None,
        name: str | None,
        params: _ffi.flux_limit_params,
        scope: str | None,
        base: str | None,
    ) -> None:
        cfg = config if config is not None else get_config()
        _check_text("scope", scope)
        _check_text("name", name)
        _, config_handle = native(cfg)
        store = store_for(cfg)
        if scope is None:
            scope = config_handle.default_scope(name, params, base)
        handle = _ffi.Limiter.new(store.handle, config_handle, scope, name, params)
        infos = handle.quotas()
        quotas = tuple(
            Quota(
                policy=_ffi.POLICIES[info.policy] if info.policy < len(_ffi.POLICIES) else str(info.policy),
                requests=info.requests,
                period=info.period,
                burst=info.burst,
                max_wait=info.max_wait,
                policy_name=(name or "default") if len(infos) == 1 else _label(info),
            )
            for info in infos
        )
        self.name = name
        self.scope = scope
        self.quotas = quotas
        self.quota = quotas[0]
        self.config = cfg
        self._store = store
        # The native limiter, passed as is to every call (which keeps it
        # alive until the call returns); None once closed.
        self._handle: _ffi.Limiter | None = handle
        self._remote = not store.is_memory
        self._decide = (
            _ffi.flux_limiter_decide_gil if store.is_memory else _ffi.flux_limiter_decide
        )
        self._decide_endpoint = (
            _ffi.flux_limiter_decide_endpoint_gil
            if store.is_memory
            else _ffi.flux_limiter_decide_endpoint
        )
        self._decide_untyped = (
            _ffi.flux_limiter_decide_gil_untyped if store.is_memory else _ffi.flux_limiter_decide_untyped
        )
        self._result_type: type[RateLimitResult] = type(
            "RateLimitResult",
            (RateLimitResult,),
            {"quotas": quotas, "__module__": __name__, **constant_parts(quotas)},
        )

    @classmethod
    def from_config(cls, name: str, config: FluxConfig | None = None) -> RateLimiter:
        """The limit ``[rate_limits.NAME]`` of the configuration."""
        return cls(name=name, config=config)

    # --- properties ---

    @property
    def policy(self) -> str:
        return self.quota.policy

    @property
    def requests(self) -> int:
        return self.quota.requests

    @property
    def period(self) -> float:
        return self.quota.period

    @property
    def burst(self) -> int:
        return self.quota.burst

    @property
    def max_wait(self) -> float:
        return self.quota.max_wait

    @property
    def storage(self) -> str:
        """``"memory"`` or ``"redis"``."""
        return self._store.kind

    # --- deciding ---

    def hit(self, key: str | bytes, endpoint: str | None = None, cost: int = 1) -> RateLimitResult:
        """Decides one call of ``cost`` for ``key`` (and counts it when admitted).

        ``endpoint`` gives ``key`` a separate limit per endpoint on this one
        limiter, counted in the metrics under the endpoint's name. Several
        rates decide together: admitted only when every one admits the call,
        and then charged to every one; a refusal charges none.
        """
        cls = key.__class__
        if cls is str:
            key = key.encode()  # type: ignore[union-attr]
        elif cls is not bytes:
            key = _key_bytes(key)
        result = self._result_type()
        size = len(key)
        if cost.__class__ is int and cost == 1 and not endpoint and size < _UNTYPED_LIMIT:
            # The common call, through the untyped function (see _ffi).
            code = self._decide_untyped(self._handle, key, size, 1, _byref(result))
            if code:
                raise _ffi.decide_error(code, self._handle)
            return result
        handle = self._handle
        if cost != 1 or cost.__class__ is not int:
            cost = _cost(cost)
        if endpoint:
            ep = _endpoint_bytes(endpoint)
            code = self._decide_endpoint(handle, ep, len(ep), key, size, cost, result)
        else:
            code = self._decide(handle, key, size, cost, result)
        if code:
            raise _ffi.decide_error(code, handle)
        return result

    async def ahit(
        self, key: str | bytes, endpoint: str | None = None, cost: int = 1
    ) -> RateLimitResult:
        """:meth:`hit` for async code: never blocks the event loop.

        On Redis the decision goes through the non-blocking FFI, batched with
        every other ``ahit`` of the same loop iteration into one pipeline; on
        the memory store it is decided inline (well under a microsecond).
        """
        if not self._remote:
            return self.hit(key, endpoint, cost)
        cls = key.__class__
        if cls is str:
            key = key.encode()  # type: ignore[union-attr]
        elif cls is not bytes:
            key = _key_bytes(key)
        if cost != 1 or cost.__class__ is not int:
            cost = _cost(cost)
        handle = self._handle
        if handle is None:
            raise _ffi.closed_error()
        # Bytes by now, which the class checks above do not tell mypy (and a
        # call of typing.cast would cost every decision).
        return await self._store.submit(
            handle,
            key,  # type: ignore[arg-type]
            cost,
            self._result_type,
            _endpoint_bytes(endpoint) if endpoint else None,
        )

    def peek(self, key: str | bytes, endpoint: str | None = None, cost: int = 1) -> RateLimitResult:
        """What :meth:`hit` would answer now, without charging anything (and
        without counting a decision in the metrics)."""
        return self._apply(_ffi.OP_PEEK, key, endpoint, cost)

    def refund(self, key: str | bytes, cost: int = 1, endpoint: str | None = None) -> RateLimitResult:
        """Gives ``cost`` back to every rate of ``key``'s limit, never below
        empty (a refund cannot admit more than the limit), and answers what
        the next call of cost 1 would be told."""
        return self._apply(_ffi.OP_REFUND, key, endpoint, cost)

    async def arefund(
        self, key: str | bytes, cost: int = 1, endpoint: str | None = None
    ) -> RateLimitResult:
        """:meth:`refund` for async code: on Redis it runs on a worker thread,
        so the event loop never waits on the round trip."""
        if not self._remote:
            return self.refund(key, cost, endpoint)
        return await asyncio.to_thread(self.refund, key, cost, endpoint)

    def reset(self, key: str | bytes, endpoint: str | None = None) -> int:
        """Forgets ``key``'s state (for ``endpoint``) under every rate: its
        next call is decided as its first. Returns how many keys held one."""
        key = _key_bytes(key)
        ep = _endpoint_bytes(endpoint) if endpoint else None
        removed = ctypes.c_uint64(0)
        _ffi.flux_limiter_reset(
            self._live(), ep, len(ep) if ep else 0, key, len(key), ctypes.byref(removed)
        )
        return removed.value

    def _apply(self, op: int, key: Any, endpoint: str | None, cost: Any) -> RateLimitResult:
        key = _key_bytes(key)
        ep = _endpoint_bytes(endpoint) if endpoint else None
        result = self._result_type()
        _ffi.flux_limiter_apply(
            self._live(), op, ep, len(ep) if ep else 0, key, len(key), _cost(cost), ctypes.byref(result)
        )
        return result

    def _live(self) -> _ffi.Limiter:
        handle = self._handle
        if handle is None:
            raise _ffi.closed_error()
        return handle

    def is_allowed(self, key: str | bytes, endpoint: str | None = None, cost: int = 1) -> bool:
        return bool(self.hit(key, endpoint, cost).allowed)

    def check(self, key: str | bytes, endpoint: str | None = None, cost: int = 1) -> RateLimitResult:
        """Same as :meth:`hit` (the flux-limiter 0.1 name)."""
        return self.hit(key, endpoint, cost)

    def require(self, key: str | bytes, endpoint: str | None = None, cost: int = 1) -> RateLimitResult:
        """:meth:`hit`, raising :class:`RateLimitExceeded` when refused."""
        result = self.hit(key, endpoint, cost)
        if not result.allowed:
            raise RateLimitExceeded(key, result.retry_after, result=result)
        return result

    async def arequire(
        self, key: str | bytes, endpoint: str | None = None, cost: int = 1
    ) -> RateLimitResult:
        result = await self.ahit(key, endpoint, cost)
        if not result.allowed:
            raise RateLimitExceeded(key, result.retry_after, result=result)
        return result

    def check_cost(self, cost: object) -> int:
        """Raises ``LimitError`` naming ``cost`` when no call of it can ever be admitted."""
        cost = _cost(cost)
        _ffi.flux_limiter_check_cost(self._live(), cost)
        return cost

    # --- lifetime ---

    def close(self) -> None:
        """Lets go of the native limiter: later calls raise ``FluxError``.

        Calls still running, on other threads or queued by ``ahit``, finish
        with it first: it is freed when the last of them returns. Closing
        twice, or from two threads at once, is harmless; a limiter that is
        collected is closed the same way.
        """
        self._handle = None

    def __enter__(self) -> RateLimiter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        q = self.quota
        extra = f", name={self.name!r}" if self.name else ""
        return (
            f"RateLimiter(policy={q.policy!r}, requests={q.requests}, period={q.period:g}, "
            f"burst={q.burst}{extra}, scope={self.scope!r}, storage={self.storage!r})"
        )


def preload_scripts(config: FluxConfig | None = None) -> None:
    """Loads the Lua scripts into Redis now rather than at the first call
    (a no-op on the memory store)."""
    store_for(config if config is not None else get_config()).handle.preload()


def store_of(limiter: RateLimiter) -> Store:
    return limiter._store


__all__ = ["RateLimiter", "RateLimitResult", "Quota", "preload_scripts", "limit_params"]
