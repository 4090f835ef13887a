"""The one exception type of the data layer."""

from __future__ import annotations


class DataError(ValueError):
    """A corpus file is missing, unreadable or malformed, or a data setting is not supported.

    The message names the file(s) or the config field, the offending value and what was expected.
    """
