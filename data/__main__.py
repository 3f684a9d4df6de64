"""``python -m data fetch|build|verify ...``: the ``pgolf data`` commands without the harness."""

import sys

from .cli import main

sys.exit(main())
