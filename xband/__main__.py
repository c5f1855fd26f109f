"""`python -m xband …`: the command line, as the `xband` command runs it."""

import sys

from xband.cli import main

if __name__ == "__main__":  # importing the module (as documentation tools do) runs nothing
    sys.exit(main())
