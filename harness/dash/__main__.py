"""`python -m harness.dash`: the dashboard without the rest of the CLI."""

import sys

from harness.dash._cli import main

if __name__ == "__main__":
    sys.exit(main())
