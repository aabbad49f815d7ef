"""App-wide limits: one limit for every request, and rules per path.

The framework entry points (``flux.asgi``, ``flux.flask``, ``flux.django``)
each hold one :class:`AppLimits`, built at startup from what the application
gives in code (or in its framework's settings) over ``[http]`` of flux.toml,
so a bad rule fails before the first request. Per request they ask it for
the guard of the request's path and decide with it; everything else about a
request (where its peer address is, how a response is sent) is theirs.

A rule's pattern is a path (``"/login"``) or a prefix ending in ``*``
(``"/api/*"``, which matches ``/api/`` and everything under it). An exact
pattern wins over prefixes and a longer prefix over a shorter one, whatever
the order the rules are written in; a path no rule matches gets the default
limit (``rate=`` or ``name=``), or none. A rule's value is a rate, the name
of a limit of ``[rate_limits]`` (a string that names one is that limit), a
list of rates, a callable of the request answering one of those, or None
(the path is not limited).

Each rule counts its requests apart (a client's ``/login`` calls do not use
up its ``/api/*`` quota), and all the paths one rule matches count together,
the default's too: raw paths come from the client, and a counter per path
would let it make new ones at will. A limit given by name is the same limit
wherever that name is used, decorators included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._guard import Guard, LimitArgs, LimitChoice, split_limit
from .config import FluxConfig, get_config
from .exceptions import ConfigError, FluxError

#: What an app-wide limit may be given in code (and in Django's ``FLUX``
#: setting or Flask's ``app.config["FLUX"]``).
SETTINGS = (
    "rate",
    "name",
    "rules",
    "key",
    "cost",
    "methods",
    "exempt_when",
    "on_breach",
    "headers",
    "shadow",
    "config",
)

_MISSING = object()


def check_pattern(pattern: Any, where: str) -> str:
    """A rule's pattern: a path, or a path prefix ending in ``*``."""
    if isinstance(pattern, str) and pattern.startswith("/"):
        star = pattern.find("*")
        if star < 0 or star == len(pattern) - 1:
            return pattern
    raise ConfigError(
        f"{where}: rules[{pattern!r}] is not a path pattern: a rule's pattern is a path "
        '("/login") or a path prefix ending in * ("/api/*"), starting with / and with no other *'
    )


class AppLimits:
    """The guards of an application's requests, by path."""

    def __init__(self, settings: Mapping[str, Any], where: str) -> None:
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ConfigError(f"{where}: unknown setting {unknown[0]!r}; allowed: {', '.join(SETTINGS)}")
        cfg: FluxConfig = settings.get("config") or get_config()
        self.config = cfg
        http = cfg.http
        rate, name = settings.get("rate"), settings.get("name")
        if rate is None and name is None:
            rate, name = http.get("rate"), http.get("name")
        rules: dict[str, Any] = dict(http.get("rules") or {})
        given = settings.get("rules")
        if given is not None:
            if not isinstance(given, Mapping):
                raise ConfigError(f"{where}: rules must be a dict of path patterns, got {given!r}")
            rules.update(given)
        options = {
            k: settings[k]
            for k in ("key", "cost", "methods", "exempt_when", "on_breach", "headers")
            if k in settings
        }
        fixed: LimitArgs = {"shadow": settings.get("shadow")}

        def guard(base: str, what: str, **limit: Any) -> Guard:
            choice = LimitChoice(cfg, fixed=fixed, base=base, where=what, **limit)
            return Guard(choice, **options)

        #: The limit of requests no rule matches (None: not limited).
        self.default: Guard | None = None
        if rate is not None or name is not None:
            try:
                self.default = guard("http", where, rate=rate, name=name)
            except FluxError as exc:
                raise type(exc)(f"{where}: {exc}") from exc
        self.exact: dict[str, Guard | None] = {}
        prefixes: list[tuple[str, Guard | None]] = []
        for pattern, value in rules.items():
            check_pattern(pattern, where)
            what = f"{where}: rules[{pattern!r}]"
            rule = None if value is None or value is False else self._rule(guard, pattern, what, value)
            if pattern.endswith("*"):
                prefixes.append((pattern[:-1], rule))
            else:
                self.exact[pattern] = rule
        prefixes.sort(key=lambda item: len(item[0]), reverse=True)
        self.prefixes = tuple(prefixes)
        #: No rules: every path gets the default.
        self._default_only = not self.exact and not self.prefixes

    def _rule(self, guard: Callable[..., Guard], pattern: str, what: str, value: Any) -> Guard:
        base = f"http:{pattern}"
        if callable(value):
            return guard(base, what, rate=value)
        name, rate = split_limit(self.config, value)
        try:
            return guard(base, what, name=name, rate=rate)
        except FluxError as exc:
            if name is not None or not isinstance(value, str):
                raise type(exc)(f"{what}: {exc}") from exc
            names = ", ".join(f'"{n}"' for n in self.config.rate_limits)
            defined = f"defined: {names}" if names else "no limit is defined under [rate_limits]"
            raise ConfigError(
                f"{what}: {value!r} is neither a limit under [rate_limits] ({defined}) nor a rate: {exc}"
            ) from exc

    def guard_for(self, path: str) -> Guard | None:
        """The guard of the requests to ``path``, or None when they are not limited."""
        if self._default_only:
            return self.default
        rule = self.exact.get(path, _MISSING)
        if rule is not _MISSING:
            return rule  # type: ignore[return-value]
        for prefix, rule in self.prefixes:
            if path.startswith(prefix):
                return rule
        return self.default

    def guards(self) -> list[Guard]:
        every = [self.default, *self.exact.values(), *(rule for _, rule in self.prefixes)]
        return [g for g in every if g is not None]
