"""The exception the project raises for a weights file it cannot accept."""


class WeightsFormatError(ValueError):
    """A weights file is unreadable, malformed, or does not compute what it claims.

    The message names the file, the part of it that is wrong (a layer, an array) and what was expected.
    """
