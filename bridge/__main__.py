"""`python -m bridge` is the same as the `pop3bridge` console script."""

import sys

from bridge.cli import main

sys.exit(main())
