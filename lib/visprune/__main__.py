"""``python -m visprune``: the engine's command line (:mod:`visprune.engine.cli`)."""

import sys

from visprune.engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
