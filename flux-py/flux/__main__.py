"""``python -m flux``: the ``flux`` command (see :mod:`flux.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m flux"))
