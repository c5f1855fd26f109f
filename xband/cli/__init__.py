"""The `xband` command line: `main` runs it; `options` declares what it takes."""

from xband.cli.main import main

__all__ = ["main"]
