"""The one error the converters raise: a model that cannot be read, converted, or shown to
compute the same function. Its message names the file and what to do; xband passes it on as
its own user-facing error."""


class ConversionError(Exception):
    """A model that cannot be read or converted, or whose conversion does not compute the same
    function; the message names the file and what to try."""
