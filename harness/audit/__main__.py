"""`python -m harness.audit PATH`: the audit without the rest of the CLI."""

import sys

from harness.audit._cli import main

if __name__ == "__main__":
    sys.exit(main(["audit", *sys.argv[1:]]))
