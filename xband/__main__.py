"""`python -m xband …`: the command line, as the `xband` command runs it."""

import sys

from xband.cli import main

sys.exit(main())
