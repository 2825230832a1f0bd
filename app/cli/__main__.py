"""``python -m app.cli``: the ``trillm`` command."""

import sys

from app.cli.commands import main

if __name__ == "__main__":  # not when a worker process re-imports the main module
    sys.exit(main())
