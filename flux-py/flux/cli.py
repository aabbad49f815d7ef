"""Flux's commands: ``flux init``, ``flux clear`` and ``flux monitor``.

One parser serves the ``flux`` console script, ``python -m flux`` and
``python -m flux.cli``, so each offers every command with the same options.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import monitor
from .exceptions import FluxError


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
    deleted = store.handle.clear()
    if store.is_memory:
        print(
            "the configuration uses the memory store, which lives inside each process: "
            "there is nothing shared to clear (0 keys). Set [redis] to use Redis."
        )
    else:
        print(f"deleted {deleted} key{'s' if deleted != 1 else ''} under {cfg.key_prefix!r} at {store.where}")
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
    init.add_argument("path", nargs="?", default="flux.toml", metavar="PATH", help="where to write (default: ./flux.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(run=_init)
    clear = commands.add_parser(
        "clear", help="delete Flux's keys in Redis", description="Delete every key under key_prefix "
        "in Redis (SCAN, never KEYS)."
    )
    clear.add_argument(
        "--config", default=os.environ.get("FLUX_CONFIG") or None, metavar="FILE",
        help="flux.toml to use (default: $FLUX_CONFIG, ./flux.toml, ./config/flux.toml)",
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
        return args.run(args)
    except FluxError as exc:
        print(f"flux: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(prog="python -m flux.cli"))
