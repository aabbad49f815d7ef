"""The framework-free core: a limiter decides, a result tells.

Every number here comes from the Rust core through ``flux_limiter_decide``;
Python only passes the key (as bytes and a length) and reads the answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import _ffi
from .config import FluxConfig, RateLimitPolicy, get_config, native
from .exceptions import LimitError, RateLimitExceeded
from .headers import rate_limit_headers
from ._store import Store, store_for


@dataclass(frozen=True)
class Quota:
    """A limiter's resolved quota, as Rust validated it."""

    policy: str
    requests: int
    period: float
    burst: int
    max_wait: float
    #: The name given in the IETF ``RateLimit-Policy`` header.
    policy_name: str = "default"


class RateLimitResult(_ffi.flux_decision):
    """One decision: ``allowed``, ``limit``, ``remaining``, ``reset_after``,
    ``retry_after`` and ``delay`` (seconds, floats) and ``source``.

    It is the C ``flux_decision`` itself, filled in place by the library, so a
    decision costs one allocation. ``quota`` is the limiter's quota.
    """

    quota: Quota = Quota("gcra", 0, 0.0, 0, 0.0)

    @property
    def source(self) -> str:
        """``"storage"``, or ``"fail_open"`` when Redis failed and the call was admitted."""
        code = self.source_code
        return _ffi.SOURCES[code] if code < len(_ffi.SOURCES) else f"unknown({code})"

    def to_headers(self) -> dict[str, str]:
        """``X-RateLimit-*``, IETF ``RateLimit``/``RateLimit-Policy`` and, when
        refused, ``Retry-After``."""
        return rate_limit_headers(self)

    def __bool__(self) -> bool:
        return bool(self.allowed)

    def _fields(self) -> tuple:
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


def _policy_code(policy: RateLimitPolicy | str) -> int | str:
    """The FFI code of a policy name; an unknown name is returned as is."""
    name = policy.value if isinstance(policy, RateLimitPolicy) else policy
    try:
        return _ffi.POLICIES.index(name)
    except ValueError:
        return name


def _limit_params(requests, period, burst, policy, max_wait) -> _ffi.flux_limit_params:
    """The explicit parts of a limit, for Rust to validate and complete.

    Only types are checked here, so a bad value reaches Rust, whose message
    names the argument."""
    params = _ffi.flux_limit_params()
    if policy is not None:
        code = _policy_code(policy)
        if isinstance(code, str):
            allowed = ", ".join(f'"{p}"' for p in _ffi.POLICIES)
            raise LimitError(f"policy must be one of {allowed}, got {code!r}")
        params.set |= _ffi.PARAM_POLICY
        params.policy = code
    if requests is not None:
        params.set |= _ffi.PARAM_REQUESTS
        params.requests = _whole("requests", requests)
    if period is not None:
        params.set |= _ffi.PARAM_PERIOD
        params.period = _seconds("period", period)
    if burst is not None:
        params.set |= _ffi.PARAM_BURST
        params.burst = _whole("burst", burst)
    if max_wait:
        params.set |= _ffi.PARAM_MAX_WAIT
        params.max_wait = _seconds("max_wait", max_wait)
    return params


def _whole(name: str, value: Any) -> int:
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


#: The widest cost the library takes (a uint64_t); ctypes wraps anything
#: wider silently, so that 2**64 + 1 would be decided as 1.
_MAX_COST = 2**64 - 1


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


class RateLimiter:
    """A limit on a store: ``hit(key)`` decides one call for ``key``.

    ``RateLimiter(100, 60)`` admits 100 calls per 60 s per key (a burst of
    100 by default). Arguments left out come from ``[rate_limit]`` of the
    configuration, or from ``[rate_limits.NAME]`` with ``name=`` (or
    :meth:`from_config`). Every argument is validated by the Rust core now,
    not at the first call: a bad one raises ``LimitError`` (a ``ValueError``)
    naming it.

    The store is the process-wide one of ``config`` (default: the loaded
    flux.toml), made on first use. ``scope`` is the namespace of this
    limiter's keys; limiters with the same scope and policy share state.
    """

    def __init__(
        self,
        requests: int | None = None,
        period: float | None = None,
        *,
        burst: int | None = None,
        policy: RateLimitPolicy | str | None = None,
        max_wait: float = 0,
        config: FluxConfig | None = None,
        name: str | None = None,
        scope: str | None = None,
    ) -> None:
        cfg = config if config is not None else get_config()
        _check_text("scope", scope)
        _check_text("name", name)
        params = _limit_params(requests, period, burst, policy, max_wait)
        _, config_handle = native(cfg)
        store = store_for(cfg)
        explicit = params.set != 0
        # Validate first under a throwaway scope to learn the resolved quota,
        # which names the default scope.
        handle = _ffi.Limiter.new(store.handle, config_handle, scope or "flux", name, params)
        info = handle.quota()
        quota = Quota(
            policy=_ffi.POLICIES[info.policy] if info.policy < len(_ffi.POLICIES) else str(info.policy),
            requests=info.requests,
            period=info.period,
            burst=info.burst,
            max_wait=info.max_wait,
            policy_name=name or "default",
        )
        if scope is None:
            scope = default_scope(name, quota if (explicit or name is None) else None)
            handle.close()
            handle = _ffi.Limiter.new(store.handle, config_handle, scope, name, params)
        self.name = name
        self.scope = scope
        self.quota = quota
        self.config = cfg
        self._store = store
        self._handle = handle
        self._ptr = handle.ptr
        self._remote = not store.is_memory
        self._decide = (
            _ffi.flux_limiter_decide_gil if store.is_memory else _ffi.flux_limiter_decide
        )
        self._decide_endpoint = (
            _ffi.flux_limiter_decide_endpoint_gil
            if store.is_memory
            else _ffi.flux_limiter_decide_endpoint
        )
        self._result_type = type(
            "RateLimitResult", (RateLimitResult,), {"quota": quota, "__module__": __name__}
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

        ``endpoint`` gives the key a separate limit per endpoint, on this one
        limiter (nothing is made per endpoint), and counts the decision under
        the endpoint's name in the metrics; ``None`` or ``""`` is the
        limiter's own limit, counted under its scope. Raises ``LimitError``
        (a ``ValueError``) for a cost the limit can never admit, and
        ``flux.exceptions.ConnectionError`` when Redis fails and
        ``fail_silently`` is false. Never sleeps: an admitted
        ``leaky_bucket`` call reports its wait in ``delay``.
        """
        cls = key.__class__
        if cls is str:
            key = key.encode()
        elif cls is not bytes:
            key = _key_bytes(key)
        if cost != 1:
            cost = self._cost(cost)
        result = self._result_type()
        if endpoint:
            self._decide_endpoint(self._ptr, _endpoint_bytes(endpoint), key, cost, result)
        else:
            self._decide(self._ptr, key, len(key), cost, result)
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
            key = key.encode()
        elif cls is not bytes:
            key = _key_bytes(key)
        if cost != 1:
            # Checked here, not in the batch, whose errors cannot carry the
            # library's message: a cost the limit never admits is the
            # caller's mistake, and its message says what is allowed.
            cost = self.check_cost(cost)
        return await self._store.submit(
            self._ptr, key, cost, self._result_type, _endpoint_bytes(endpoint) if endpoint else None
        )

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

    def check_cost(self, cost: Any) -> int:
        """Raises ``LimitError`` naming ``cost`` when no call of it can ever be admitted."""
        cost = self._cost(cost)
        _ffi.flux_limiter_check_cost(self._ptr, cost)
        return cost

    def _cost(self, cost: Any) -> int:
        """``cost`` as the library takes it; what it can weigh is Rust's to check."""
        if isinstance(cost, bool) or not isinstance(cost, int):
            raise LimitError(f"cost must be a whole number of at least 1, got {cost!r}")
        if cost < 1:
            raise LimitError(f"cost must be at least 1, got {cost}")
        if cost > _MAX_COST:
            # The burst in force is the most any policy holds at once (a
            # window policy's burst is its requests).
            raise LimitError(
                f"cost {cost} can never be admitted: the limit holds at most {self.quota.burst} at once"
            )
        return cost

    # --- lifetime ---

    def close(self) -> None:
        """Frees the native limiter now (it is also freed when collected)."""
        self._ptr = None
        self._handle.close()

    def __enter__(self) -> RateLimiter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        q = self.quota
        extra = f", name={self.name!r}" if self.name else ""
        return (
            f"RateLimiter(policy={q.policy!r}, requests={q.requests}, period={q.period:g}, "
            f"burst={q.burst}{extra}, scope={self.scope!r}, storage={self.storage!r})"
        )


def default_scope(name: str | None, quota: Quota | None, base: str | None = None) -> str:
    """The namespace of a limiter's keys: its name (or ``base``, a view's
    module.qualname), plus its rate when that was given in code, so two
    limits on one view never share state."""
    head = base or name or "default"
    if quota is None:
        return head
    rate = f"{quota.requests}/{_exact(quota.period)}s"
    if quota.burst != quota.requests:
        rate += f"+b{quota.burst}"
    if quota.max_wait:
        rate += f"+w{_exact(quota.max_wait)}"
    return f"{head}@{rate}"


def _exact(seconds: float) -> str:
    """``60`` for 60.0, ``0.5`` for 0.5: the shortest text that reads back as
    the same double, so two periods never share a scope (``:g`` kept six
    digits, and 1,000,000 s and 1,000,001 s both read ``1e+06``)."""
    return str(int(seconds)) if seconds.is_integer() else repr(seconds)


def preload_scripts(config: FluxConfig | None = None) -> None:
    """Loads the Lua scripts into Redis now rather than at the first call
    (a no-op on the memory store)."""
    store_for(config if config is not None else get_config()).handle.preload()


def store_of(limiter: RateLimiter) -> Store:
    return limiter._store


__all__ = ["RateLimiter", "RateLimitResult", "Quota", "preload_scripts", "default_scope"]
