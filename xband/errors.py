"""User-facing errors: one clear message, exit code 2 from the command line, no traceback."""


class XbandError(Exception):
    """A problem the user can fix (bad file, bad option, unsupported model).

    The message names the file, band, layer or option at fault and what to try.
    """
