"""``python -m app.cli``: the ``trillm`` command."""

import sys

from app.cli.commands import main

sys.exit(main())
