"""``python -m flux.cli init [PATH] [--force]`` and ``python -m flux.cli clear``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flux.cli", description="Flux rate limiter")
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="write a flux.toml with every option explained")
    init.add_argument("path", nargs="?", default="flux.toml", help="where to write (default: ./flux.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(run=_init)
    clear = commands.add_parser("clear", help="delete every key under key_prefix in Redis (SCAN, never KEYS)")
    clear.add_argument(
        "--config", default=os.environ.get("FLUX_CONFIG") or None, help="flux.toml to use (default: discovered)"
    )
    clear.set_defaults(run=_clear)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except FluxError as exc:
        print(f"flux: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
