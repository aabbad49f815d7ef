"""A guard: one limit put on calls, with everything that says how it applies.

Which limiter decides a call (one, or one per answer of a callable of the
request), who the call counts for (``key``), what it weighs (``cost``), and
when it is not limited at all (``methods``, ``exempt_when``, a ``key`` or a
limit callable answering None). ``@rate_limit`` and the app-wide
middlewares build the same guards from the same arguments, so an argument
means the same wherever it is given.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypedDict

from .config import FluxConfig, RateLimitPolicy, native
from .exceptions import FluxError, LimitError, RateLimitExceeded
from .keys import client_key
from .limiter import RateLimiter, RateLimitResult, _cost, limit_params

if TYPE_CHECKING:
    from .frameworks import Adapter, RequestReader

#: ``(adapter, request, first) -> identity``: see :func:`identity_function`.
Identify = Callable[["RequestReader | None", Any, Any], Any]

logger = logging.getLogger("flux")

#: The identity of calls made outside any framework with no ``key``: one
#: limit shared by every caller of the function.
GLOBAL_KEY = b"global"

#: Native limiters kept per limit callable, one per distinct answer. A
#: callable answers from a few plans or tiers; beyond this many answers the
#: oldest limiter is let go (its state stays in the store, so a limiter made
#: again for the same answer counts on).
MAX_CHOICES = 256


class LimitArgs(TypedDict, total=False):
    """The arguments of a limit besides its rate or name (see :func:`limit_params`)."""

    requests: int | None
    period: float | None
    burst: int | None
    policy: RateLimitPolicy | str | None
    max_wait: float | None
    shadow: bool | None


class GuardOptions(TypedDict, total=False):
    """The arguments of a :class:`Guard` besides its limit."""

    key: Callable[..., Any] | str | bytes | None
    cost: int
    methods: Iterable[str] | None
    exempt_when: Callable[[Any], bool] | None
    deduct_when: Callable[[Any], bool] | None
    on_breach: Callable[[Any, Any], Any] | None
    headers: bool


def split_limit(cfg: FluxConfig, value: Any) -> tuple[str | None, Any]:
    """A limit given as one value, as ``(name, rate)``: a string that names a
    limit of ``[rate_limits]`` is that limit, any other value is rates."""
    if isinstance(value, str) and value in cfg.rate_limits:
        return value, None
    return None, value


def _is_function(value: Any) -> bool:
    return callable(value) and not isinstance(value, (str, bytes))


class LimitChoice:
    """Which limiter decides a call: the same one every time, or the one of
    what a callable of the request answers (a rate, a limit's name, or None
    for no limit).

    Limiters are made once per distinct answer and kept (at most
    :data:`MAX_CHOICES`), so a call never builds one. ``fixed`` are the
    other arguments of the limit (``policy``, ``burst``, ``shadow``, ...),
    applied over every answer. ``base`` is what the scope of a limit given
    in code starts with (the view, or the middleware's rule); ``scope``
    overrides the scope of a fixed limit.
    """

    def __init__(
        self,
        cfg: FluxConfig,
        *,
        name: Any = None,
        rate: Any = None,
        fixed: LimitArgs | None = None,
        base: str | None = None,
        scope: str | None = None,
        where: str = "rate_limit",
    ) -> None:
        self.cfg = cfg
        self.base = base
        self.where = where
        self.fixed: LimitArgs = fixed or {}
        choose = name if _is_function(name) else rate if _is_function(rate) else None
        if choose is not None and name is not None and rate is not None:
            raise LimitError(
                f"{where}: give rate= or name=, not both, when one of them is a callable "
                "(its answer is the whole limit: a rate, a limit's name, or None)"
            )
        self.choose: Callable[[Any], Any] | None = choose
        self.limiter: RateLimiter | None = None
        self._made: dict[Any, RateLimiter] = {}
        self._warned = False
        if choose is None:
            params = limit_params(rate=rate, **self.fixed)
            self.limiter = RateLimiter._with_params(cfg, name, params, scope, base)
        else:
            # What is fixed is checked now, where it is written.
            native(cfg)[1].default_scope(None, limit_params(**self.fixed), None)

    def limiters(self) -> list[RateLimiter]:
        """The limiters made so far."""
        return [self.limiter] if self.limiter is not None else list(self._made.values())

    def for_request(self, request: Any) -> RateLimiter | None:
        """The limiter of ``request``, or None when the callable answers None."""
        answer = self.choose(request)  # type: ignore[misc]
        if answer is None:
            return None
        made = self._made.get(answer if answer.__class__ is str else _hashable(answer, self.where))
        return made if made is not None else self._make(answer)

    def _make(self, answer: Any) -> RateLimiter:
        key = answer if answer.__class__ is str else _hashable(answer, self.where)
        name, rate = split_limit(self.cfg, answer)
        try:
            params = limit_params(rate=rate, **self.fixed)
            limiter = RateLimiter._with_params(self.cfg, name, params, None, self.base)
        except FluxError as exc:
            raise type(exc)(f"{self.where}: the callable answered {answer!r}: {exc}") from exc
        made = self._made
        if len(made) >= MAX_CHOICES:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "flux: %s answered more than %d different limits; limiters are now made "
                    "again as answers come back. Answer from a few plans or tiers, and "
                    "count per user with key=.",
                    self.where,
                    MAX_CHOICES,
                )
            try:
                made.pop(next(iter(made)), None)
            except (StopIteration, RuntimeError):  # emptied, or changed by another thread
                pass
        made[key] = limiter
        return limiter


def _hashable(answer: Any, where: str) -> tuple[str, ...]:
    if isinstance(answer, (list, tuple)) and all(isinstance(a, str) for a in answer):
        return tuple(answer)
    raise LimitError(
        f"{where}: a limit callable must answer a rate (\"10/second\", or a list of rates), "
        f"a limit's name, or None; got {answer!r}"
    )


def identity_function(key: Any, ipv6_prefix: int) -> Identify:
    """``(adapter, request, first) -> identity`` for the ``key`` argument;
    ``first`` is the first positional argument of a call made outside any
    framework. None means the call is not limited."""
    if key is None:

        def by_peer(adapter: RequestReader | None, request: Any, first: Any) -> Any:
            if adapter is None:
                return GLOBAL_KEY
            return client_key(adapter.peer(request), ipv6_prefix)

        return by_peer
    if isinstance(key, (str, bytes)):
        fixed = key
        return lambda adapter, request, first: fixed
    if not callable(key):
        raise TypeError(f"key must be a callable or a string, got {type(key).__name__}")
    if _takes_an_argument(key):
        return lambda adapter, request, first: key(request if adapter is not None else first)
    return lambda adapter, request, first: key()


def _takes_an_argument(func: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params
    )


def _methods(methods: Iterable[str] | None) -> frozenset[str] | None:
    if methods is None:
        return None
    if isinstance(methods, str):
        methods = [methods]
    names = []
    for method in methods:
        if not isinstance(method, str) or not method.isalpha():
            raise LimitError(f'methods must be HTTP method names such as ["POST"], got {method!r}')
        names.append(method.upper())
    return frozenset(names)


def _callable_or_none(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a callable or None, got {type(value).__name__}")
    return value


class Guard:
    """One limit put on calls: the limiter choice, ``key``, ``cost``,
    ``methods``, ``exempt_when``, ``deduct_when``, ``on_breach`` and
    ``headers``. All arguments are checked when it is made."""

    __slots__ = (
        "choice",
        "limiter",
        "identify",
        "cost",
        "methods",
        "exempt_when",
        "deduct_when",
        "on_breach",
        "headers",
        "plain",
    )

    def __init__(
        self,
        choice: LimitChoice,
        *,
        key: Any = None,
        cost: Any = 1,
        methods: Iterable[str] | None = None,
        exempt_when: Callable[[Any], bool] | None = None,
        deduct_when: Callable[[Any], bool] | None = None,
        on_breach: Callable[[Any, Any], Any] | None = None,
        headers: bool = True,
    ) -> None:
        if not isinstance(headers, bool):
            raise TypeError(f"headers must be True or False, got {headers!r}")
        self.choice = choice
        #: The limiter, when it is the same for every call.
        self.limiter = choice.limiter
        self.identify = identity_function(key, choice.cfg.ipv6_prefix)
        self.cost = _cost(cost)
        for limiter in choice.limiters():
            limiter.check_cost(self.cost)
        self.methods = _methods(methods)
        self.exempt_when = _callable_or_none("exempt_when", exempt_when)
        self.deduct_when = _callable_or_none("deduct_when", deduct_when)
        self.on_breach = _callable_or_none("on_breach", on_breach)
        self.headers = headers
        #: Every call is limited, by the fixed limiter, per peer: the fast path.
        self.plain = (
            self.limiter is not None and key is None and self.methods is None and exempt_when is None
        )

    def resolve(self, adapter: RequestReader | None, request: Any, first: Any) -> tuple[RateLimiter, Any] | None:
        """The limiter and identity a call is decided by, or None when it is
        not limited. The identity may be awaitable (an async ``key``), and
        None once awaited means not limited too."""
        if self.plain and adapter is not None:
            # The common call: the one limiter, keyed by the peer.
            return self.limiter, self.identify(adapter, request, first)  # type: ignore[return-value]
        subject = request if adapter is not None else first
        if self.methods is not None and adapter is not None and adapter.method(request) not in self.methods:
            return None
        if self.exempt_when is not None and self.exempt_when(subject):
            return None
        limiter = self.limiter
        if limiter is None:
            limiter = self.choice.for_request(subject)
            if limiter is None:
                return None
        identity = self.identify(adapter, request, first)
        if identity is None:
            return None
        return limiter, identity

    def breach(self, adapter: object, request: Any, first: Any, result: RateLimitResult) -> Any:
        """What ``on_breach`` answers a refused call (None: the default; it
        may be awaitable)."""
        if self.on_breach is None:
            return None
        return self.on_breach(request if adapter is not None else first, result)

    def refusal(self, adapter: Adapter | None, request: Any, identity: Any, result: RateLimitResult) -> Any:
        """The default answer to a refused call: the framework's 429, or
        :class:`RateLimitExceeded` raised outside a framework and for an
        application that handles it itself."""
        if adapter is None or adapter.raises_exceeded(request):
            raise RateLimitExceeded(identity, result.retry_after, result=result)
        return adapter.too_many_requests(result, self.headers)
