"""Exception hierarchy shared by every obscast component.

All errors that obscast raises on purpose derive from :class:`ObscastError`, so
callers (flows, the CLI, the API) can catch one class and show a one-line
message instead of a traceback from a third-party library (eccodes, cfgrib,
pdbufr, earthkit-data).
"""

from __future__ import annotations

from os import PathLike
from typing import Any

__all__ = ["ObscastError", "InputError", "ConfigError"]


class ObscastError(Exception):
    """Base class of every error raised deliberately by obscast."""


class InputError(ObscastError):
    """An input file is missing, unreadable, truncated or lacks a needed field.

    Parameters
    ----------
    path : str or os.PathLike
        The file as the caller gave it (not resolved), shown first in the
        message.
    field : str
        The field, key or part of the file that is wrong, e.g. ``"file"``,
        ``"airTemperatureAt2M"``, ``"shortName"`` or ``"message"``.
    expected : str
        What obscast needs there, in words, e.g. ``"an existing BUFR file"``.
    found : object, optional
        What was found instead; left out of the message when ``None``.

    Attributes
    ----------
    path, field, expected, found
        The constructor arguments, kept for programmatic handling.

    Notes
    -----
    ``str(err)`` is always a single line of the form
    ``"<path>: field '<field>': expected <expected>, found <found>"``; line breaks
    in any part are replaced by spaces so log lines stay one per error.

    Examples
    --------
    >>> str(InputError("perf_synop.bufr", "airTemperatureAt2M", "a value in K", found="none"))
    "perf_synop.bufr: field 'airTemperatureAt2M': expected a value in K, found none"
    """

    def __init__(
        self,
        path: str | PathLike[str],
        field: str,
        expected: str,
        found: Any = None,
    ) -> None:
        self.path = path
        self.field = field
        self.expected = expected
        self.found = found
        message = f"{path}: field {field!r}: expected {expected}"
        if found is not None:
            message += f", found {found}"
        message = message.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
        super().__init__(message)


class ConfigError(ObscastError):
    """A configuration value is missing or invalid.

    Parameters
    ----------
    message : str
        Human-readable, one-line description of the problem.
    """
