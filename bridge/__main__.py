"""`python -m bridge` is the same as the `pop3bridge` console script."""

import sys

from bridge.cli import main

if __name__ == "__main__":  # parse worker processes import this module under another name
    sys.exit(main())
