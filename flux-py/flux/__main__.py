"""``python -m flux``: the commands Flux has."""

import sys

USAGE = """\
usage: python -m flux.cli init [PATH] [--force]   write a flux.toml with every option explained
       python -m flux.cli clear                   delete Flux's keys in Redis
       python -m flux monitor [--host H] [--port N] [--once]
                                                  live view of a running app's limits
                                                  (needs [analytics] enabled = true in the app)
"""


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("init", "clear"):
        from .cli import main as cli_main

        return cli_main(argv)
    if argv and argv[0] == "monitor":
        from .monitor import main as monitor_main

        return monitor_main(argv[1:])
    print(USAGE, end="")
    return 0 if not argv or argv[0] in ("-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
