"""User-facing errors: one clear message, exit code 2 from the command line, no traceback."""

from __future__ import annotations

import re

import numpy as np

_SPELLED = re.compile("\x00(.*?)\x01(.*?)\x02", re.S)


def option(api: str, flag: str) -> str:
    """An option in a message, said as the Python argument (`api`) by the library and as the
    flag (`flag`) by the command line: e.g. option("skip_bad=True", "--skip-bad")."""
    return f"\x00{api}\x01{flag}\x02"


def spelled(text: str, *, cli: bool) -> str:
    """`text` with its `option(...)` spellings as the command line (`cli`) or the library says
    them."""
    return _SPELLED.sub(r"\2" if cli else r"\1", text)


class XbandError(Exception):
    """A problem the user can fix (bad file, bad option, unsupported model).

    The message names the file, band, layer or argument at fault and what to try. `cli` is the
    same message as the command line says it (flags in place of arguments): given, or made
    from the `option(...)` spellings in the message.
    """

    def __init__(self, message: str, *, cli: str | None = None):
        if cli is None and "\x00" in message:
            cli = spelled(message, cli=True)
        super().__init__(spelled(message, cli=False))
        self.cli = cli


class BadValue(XbandError):
    """An argument whose value is out of range: `name` (the API argument), the value, and what
    it must be; the command line shows the same message under the option's flag."""

    def __init__(self, name: str, value, requirement: str):
        self.name, self.value, self.requirement = name, value, requirement
        super().__init__(self.named(name))

    def named(self, name: str) -> str:
        """The message with the argument called `name`."""
        return f"{name} must be {self.requirement}, not {self.value!r}."


def whole_number(value, name: str, *, minimum: int = 1) -> int:
    """`value` as an int of at least `minimum`; integral floats (R's numbers) are accepted."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise BadValue(name, value, f"a whole number of at least {minimum}")
    if isinstance(value, float | np.floating) and not float(value).is_integer():
        raise BadValue(name, value, f"a whole number of at least {minimum}")
    if int(value) < minimum:
        raise BadValue(name, int(value), f"at least {minimum}")
    return int(value)
