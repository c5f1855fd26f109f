"""User-facing errors: one clear message, exit code 2 from the command line, no traceback."""

from __future__ import annotations


class XbandError(Exception):
    """A problem the user can fix (bad file, bad option, unsupported model).

    The message names the file, band, layer or argument at fault and what to try. `cli`, when
    given, is the same message as the command line says it (flags in place of arguments).
    """

    def __init__(self, message: str, *, cli: str | None = None):
        super().__init__(message)
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
