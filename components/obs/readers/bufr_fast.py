"""The fast BUFR path: compressed multi-subset messages decoded with eccodes' array API.

:func:`read_fast` returns the frame pdbufr would return for the same keys, or None for a
message it does not support (the caller then falls back on pdbufr); see the module docstring
of :mod:`obscast.components.obs.readers.bufr`. Also the decoding-error helpers shared by both
paths.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import eccodes
import numpy as np
import pandas as pd

from obscast.components.errors import InputError

# Satellite channel number: ATOVS code table 0 02 150 first (EUMETSAT/NOAA
# HIRS, AMSU, MHS level-1 files), generic 0 05 042 second; first key wins.
_CHANNEL_KEYS = ("tovsOrAtovsOrAvhrrInstrumentationChannelNumber", "channelNumber")


# pdbufr computed keys -> the BUFR elements they are built from (pdbufr
# core/keys.py: data_datetime from year..second, hour/minute/second optional;
# WMO_station_id = blockNumber * 1000 + stationNumber).
_TIME_ELEMENTS = ("year", "month", "day", "hour", "minute", "second")
_COMPUTED_ELEMENTS = {
    "data_datetime": _TIME_ELEMENTS,
    "WMO_station_id": ("blockNumber", "stationNumber"),
}
# Elements decoded as text by the fast path.
_STRING_ELEMENTS = frozenset({"aircraftFlightNumber"})
# Per kind, the element whose every occurrence within a subset starts a new row.
_LEVEL_ELEMENTS: dict[str, tuple[str, ...]] = {"temp": ("pressure",), "satellite": _CHANNEL_KEYS}



def _check_file(path: str | os.PathLike[str]) -> None:
    if not os.path.exists(path):
        raise InputError(path, "file", "an existing BUFR file", found="no such file")
    if not os.path.isfile(path):
        raise InputError(path, "file", "an existing BUFR file", found="not a regular file")


def _decode_error(path: str | os.PathLike[str], exc: Exception) -> InputError:
    """The InputError for a decoding failure of pdbufr or eccodes."""
    if isinstance(exc, eccodes.CodesInternalError):  # PrematureEndOfFileError and co.
        what = (
            "end of file inside a message (truncated)"
            if isinstance(exc, eccodes.PrematureEndOfFileError)
            else f"eccodes error: {exc}"
        )
        return InputError(path, "BUFR message", "a complete BUFR message", found=what)
    return InputError(
        path, "BUFR message", "a complete BUFR message", found=f"{type(exc).__name__}: {exc}"
    )


_DECODE_ERRORS = (eccodes.CodesInternalError, OSError, ValueError, KeyError, IndexError, TypeError, UnicodeError)



class _Unsupported(Exception):
    """A message the fast path does not decode (see the module docstring)."""


def _primary_data_keys(handle: Any) -> list[tuple[str, int]]:
    """``(element, rank)`` of the data keys of an unpacked message before the first operator.

    Attribute keys (``#1#x->percentConfidence``) are skipped; the key list of a
    compressed message is the same for every subset.
    """
    out: list[tuple[str, int]] = []
    it = eccodes.codes_bufr_keys_iterator_new(handle)
    try:
        while eccodes.codes_bufr_keys_iterator_next(it):
            name = eccodes.codes_bufr_keys_iterator_get_name(it)
            if name == "operator":
                break
            if name.startswith("#") and "->" not in name:
                _, rank, element = name.split("#", 2)
                out.append((element, int(rank)))
    finally:
        eccodes.codes_bufr_keys_iterator_delete(it)
    return out


def bufr_messages(path: str | os.PathLike[str]) -> Iterator[Any]:
    """The ecCodes handles of a BUFR file's messages, in order, each released once the caller
    moves on (or stops). ecCodes' decoding errors propagate: callers turn them into
    :class:`~obscast.components.errors.InputError` with :func:`_decode_error`."""
    with open(path, "rb") as f:
        while True:
            handle = eccodes.codes_bufr_new_from_file(f)
            if handle is None:
                return
            try:
                yield handle
            finally:
                eccodes.codes_release(handle)


def _fetch(handle: Any, element: str, rank: int, n_subsets: int) -> np.ndarray:
    """Values of ``#rank#element`` for all subsets, shape (n_subsets,); NaN/"" where missing."""
    key = f"#{rank}#{element}"
    if element in _STRING_ELEMENTS:
        values = np.asarray(eccodes.codes_get_string_array(handle, key), dtype=object)
    else:
        values = np.asarray(eccodes.codes_get_double_array(handle, key), dtype=np.float64)
        values[values == eccodes.CODES_MISSING_DOUBLE] = np.nan
    if values.size == 1:  # compressed element with the same value in every subset
        values = np.repeat(values, n_subsets)
    if values.size != n_subsets:
        raise _Unsupported(f"{key} has {values.size} values for {n_subsets} subsets")
    return values


def _message_columns(handle: Any, kind: str, elements: tuple[str, ...]) -> tuple[dict[str, np.ndarray], int]:
    """Decode one compressed message: element -> values (one per row), and the row count.

    Raises
    ------
    _Unsupported
        Message not compressed, or an element repeated outside the row
        pattern of ``kind`` (see module docstring).
    """
    if eccodes.codes_get(handle, "compressedData") != 1:
        raise _Unsupported("not compressed")
    n_sub = int(eccodes.codes_get(handle, "numberOfSubsets"))
    eccodes.codes_set(handle, "unpack", 1)
    wanted = set(elements)
    occurrences: dict[str, list[tuple[int, int]]] = {}
    for pos, (element, rank) in enumerate(_primary_data_keys(handle)):
        if element in wanted:
            occurrences.setdefault(element, []).append((pos, rank))
    levels = [e for e in _LEVEL_ELEMENTS.get(kind, ()) if e in occurrences]
    if len(levels) > 1:
        raise _Unsupported(f"more than one level element {levels}")
    level_pos = [pos for pos, _ in occurrences[levels[0]]] if levels else []
    n_levels = max(len(level_pos), 1)
    columns: dict[str, np.ndarray] = {}
    for element, occ in occurrences.items():
        groups = [int(np.searchsorted(level_pos, pos, side="right")) - 1 for pos, _ in occ]
        if element in levels:
            groups = list(range(len(occ)))
        if len(set(groups)) != len(groups) or (-1 in groups and len(groups) > 1):
            raise _Unsupported(f"{element} repeated {len(occ)} times")
        if element in _STRING_ELEMENTS:
            block = np.full((n_sub, n_levels), "", dtype=object)
        else:
            block = np.full((n_sub, n_levels), np.nan)
        for (_, rank), group in zip(occ, groups):
            values = _fetch(handle, element, rank, n_sub)
            if group < 0:  # before the first level occurrence: applies to every level
                block[:] = values[:, None]
            else:
                block[:, group] = values
        columns[element] = block.reshape(-1)  # subset-major, levels in order (as pdbufr)
    return columns, n_sub * n_levels


def _datetimes(parts: dict[str, np.ndarray], n: int) -> np.ndarray:
    """``datetime64[us]`` from year..second arrays, exactly as pdbufr's ``datetime_from_bufr``.

    Hour, minute and second default to 0; seconds are split into whole
    seconds and ``int(seconds * 1e6) % 1e6`` microseconds (truncation, as in
    pdbufr). NaT where a component is missing.
    """
    year, month, day = (parts[k] for k in _TIME_ELEMENTS[:3])
    hour, minute, second = (parts.get(k, np.zeros(n)) for k in _TIME_ELEMENTS[3:])
    ok = ~(np.isnan(year) | np.isnan(month) | np.isnan(day) | np.isnan(hour) | np.isnan(minute) | np.isnan(second))
    def whole(x: np.ndarray) -> np.ndarray:
        return np.where(ok, x, 1).astype(np.int64)
    second = np.where(ok, second, 0.0)
    value = (whole(year) - 1970).astype("datetime64[Y]") + (whole(month) - 1).astype("timedelta64[M]")
    value = (
        value.astype("datetime64[D]").astype("datetime64[us]")
        + (whole(day) - 1).astype("timedelta64[D]")
        + whole(hour).astype("timedelta64[h]")
        + whole(minute).astype("timedelta64[m]")
        + second.astype(np.int64).astype("timedelta64[s]")
        + ((second * 1_000_000).astype(np.int64) % 1_000_000).astype("timedelta64[us]")
    )
    return np.where(ok, value, np.datetime64("NaT", "us"))


def read_fast(path: str | os.PathLike[str], kind: str, keys: tuple[str, ...]) -> pd.DataFrame | None:
    """Decode a file of compressed messages with eccodes: the frame pdbufr would return.

    Returns
    -------
    pandas.DataFrame or None
        Columns named as ``keys`` (pdbufr keys of :data:`~obscast.components.obs.readers.bufr.BUFR_KEYS`; those present in at least one
        message), one row per report/level; ``None`` when the file has no
        message or a message the fast path does not support.

    Raises
    ------
    InputError
        Truncated or corrupt BUFR.
    """
    elements = tuple(dict.fromkeys(e for k in keys for e in _COMPUTED_ELEMENTS.get(k, (k,))))
    frames: list[pd.DataFrame] = []
    try:
        for handle in bufr_messages(path):
            try:
                columns, n = _message_columns(handle, kind, elements)
            except _Unsupported:
                return None
            out: dict[str, Any] = {}
            if all(k in columns for k in _TIME_ELEMENTS[:3]):
                out["data_datetime"] = _datetimes(columns, n)
            if "blockNumber" in columns and "stationNumber" in columns:
                out["WMO_station_id"] = columns["blockNumber"] * 1000.0 + columns["stationNumber"]
            out.update({k: columns[k] for k in keys if k in columns})
            frames.append(pd.DataFrame(out))
    except _DECODE_ERRORS as exc:
        raise _decode_error(path, exc) from exc
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
