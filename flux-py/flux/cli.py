"""Flux's commands: ``flux init``, ``flux clear`` and ``flux monitor``.

One parser serves the ``flux`` console script, ``python -m flux`` and
``python -m flux.cli``, so each offers every command with the same options.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import monitor
from .exceptions import FluxError

if TYPE_CHECKING:
    from .config import FluxConfig


def _init(args: argparse.Namespace) -> int:
    from ._template import TEMPLATE

    path = Path(args.path)
    if path.is_dir():
        path = path / "flux.toml"
    if path.exists() and not args.force:
        print(f"{path} already exists; use --force to overwrite it", file=sys.stderr)
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATE, encoding="utf-8")
    print(f"wrote {path}")
    return 0


def _clear(args: argparse.Namespace) -> int:
    from ._store import store_for
    from .config import load_config

    cfg = load_config(args.config)
    store = store_for(cfg)
    if store.is_memory:
        print(
            "the configuration uses the memory store, which lives inside each process: "
            "there is nothing shared to clear (0 keys). Set [redis] to use Redis."
        )
        return 0
    if args.key is not None:
        return _reset_key(cfg, args.key, args.limit)
    if args.limit is not None:
        # A limit's keys are {key_prefix}{scope}:...: the store clears under that prefix.
        prefix = f"{cfg.key_prefix}{args.limit}:"
        deleted = store_for(dataclasses.replace(cfg, key_prefix=prefix)).handle.clear()
        keys = f"{deleted} key{'s' if deleted != 1 else ''}"
        print(f"deleted {keys} of the limit {args.limit!r} at {store.where}")
        return 0
    deleted = store.handle.clear()
    print(f"deleted {deleted} key{'s' if deleted != 1 else ''} under {cfg.key_prefix!r} at {store.where}")
    return 0


def _reset_key(cfg: FluxConfig, key: str, limit: str | None) -> int:
    """Forgets ``key``'s state under ``limit``, or under every limit the
    configuration defines: ``[rate_limits.NAME]`` and the limits of ``[http]``."""
    from ._app_limits import AppLimits
    from .limiter import RateLimiter

    if limit is not None:
        if limit not in cfg.rate_limits:
            names = ", ".join(repr(n) for n in cfg.rate_limits) or "none"
            print(
                f"flux: --key with --limit needs a limit flux.toml defines under [rate_limits] "
                f"(defined: {names}), got {limit!r}. A limit given in code is reset from code: "
                "limiter.reset(key), or view.rate_limiter.reset(key) for a decorated view.",
                file=sys.stderr,
            )
            return 2
        limiters = [RateLimiter.from_config(limit, cfg)]
    else:
        limiters = [RateLimiter.from_config(name, cfg) for name in cfg.rate_limits]
        for guard in AppLimits({"config": cfg}, "[http]").guards():
            limiters += guard.choice.limiters()
    removed = sum(limiter.reset(key) for limiter in limiters)
    scopes = ", ".join(sorted({limiter.scope for limiter in limiters})) or "none"
    print(f"reset the key under {len(limiters)} limit{'s' if len(limiters) != 1 else ''} ({scopes}): "
          f"removed {removed} key{'s' if removed != 1 else ''}")
    return 0


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; ``prog`` is how the user called it
    (by default the name of the running script, e.g. ``flux``)."""
    top = argparse.ArgumentParser(prog=prog, description="Flux rate limiter")
    commands = top.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    init = commands.add_parser(
        "init", help="write a flux.toml with every option explained", description="Write a flux.toml "
        "with every option explained; never overwrites a file without --force."
    )
    init.add_argument(
        "path", nargs="?", default="flux.toml", metavar="PATH", help="where to write (default: ./flux.toml)"
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(run=_init)
    clear = commands.add_parser(
        "clear",
        help="delete Flux's keys in Redis: all, one limit's, or one caller's",
        description="Delete every key under key_prefix in Redis (SCAN, never KEYS), or with "
        "--limit one limit's, or with --key one caller's state.",
    )
    clear.add_argument(
        "--config", default=os.environ.get("FLUX_CONFIG") or None, metavar="FILE",
        help="flux.toml to use (default: $FLUX_CONFIG, ./flux.toml, ./config/flux.toml)",
    )
    clear.add_argument(
        "--limit",
        metavar="NAME",
        help="only this limit's keys: a name of [rate_limits], or any limiter's scope (limiter.scope)",
    )
    clear.add_argument(
        "--key",
        metavar="KEY",
        help="only this caller's state (the identity the app counts, e.g. an IP address), under --limit "
        "or under every limit flux.toml defines",
    )
    clear.set_defaults(run=_clear)
    live = commands.add_parser(
        "monitor", help="live view of a running app's limits (needs [analytics] enabled = true in the app)",
        description=monitor.DESCRIPTION,
    )
    monitor.add_arguments(live)
    live.set_defaults(run=monitor.run)
    # The usage line of each command, so a bare call shows how to use them all.
    top.usage = "\n       ".join(
        sub.format_usage().removeprefix("usage: ").strip() for sub in (init, clear, live)
    )
    return top


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    commands = parser(prog)
    args = commands.parse_args(argv)
    if args.command is None:
        commands.print_help()
        return 0
    try:
        code: int = args.run(args)  # the subcommand's function, set by parser()
        return code
    except FluxError as exc:
        print(f"flux: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(prog="python -m flux.cli"))
