"""BUFR edition 4 writing of observation tables (the OSSE's simulated observations).

:func:`write_bufr` encodes a table of the layout of :mod:`obscast.components.obs.readers.bufr`
as compressed multi-subset BUFR messages (one per 6-hour slot, at most ``max_subsets`` subsets
each) that the readers, pdbufr and eccodes read back.
"""

from __future__ import annotations

import os
from typing import Any

import eccodes
import numpy as np
import pandas as pd
from obscast.components.obs.readers.bufr import SATELLITE_NAMES
from obscast.components.obs.variables import G0

__all__ = ["BUFR_TEMPLATES", "PACKING_PRECISION", "write_bufr"]

#: Half a synoptic slot: reports in ``[t - 3 h, t + 3 h)`` go into the message of slot ``t``.
_HALF = pd.Timedelta(hours=3)

#: BUFR edition-4 templates (unexpanded descriptors, WMO Table B/D of master
#: table version 24) and section-1 data category per kind. One subset per
#: table row, delayed replications of 307080 set to 0 (a TEMP level and a
#: satellite channel are one subset each), so compressed multi-subset messages
#: need no per-subset structure. SYNOP: WMO template 307080 (below); the other
#: kinds:
#: 0 01 001/0 01 002 WMO block/station number; 0 01 006 aircraft flight
#: number; 0 01 007 satellite identifier (Common Code Table C-5); 3 01 011
#: year, month, day; 3 01 012 hour, minute; 3 01 013 hour, minute, second;
#: 3 01 021 latitude/longitude (high accuracy); 0 07 004 pressure; 0 07 002 height; 0 12 101
#: temperature; 0 10 008 geopotential (``nonCoordinateGeopotential``);
#: 0 11 001/0 11 002 wind direction/speed; 0 05 042 channel number; 0 12 163
#: brightness temperature.
BUFR_TEMPLATES: dict[str, tuple[int, ...]] = {
    # WMO template 3 07 080 (SYNOP, TM 307080): 2 m temperature as 0 12 101 under
    # 0 07 032 sensor height = 2 m, wind as 0 11 001/0 11 002 under sensor height = 10 m and
    # 0 04 025 time period = -10 min (sequences 3 02 032 and 3 02 042), the qualifier layout
    # the readers select by; every other element of the template is encoded as missing.
    "synop": (307080,),
    "temp": (1001, 1002, 301011, 301012, 301021, 7004, 12101, 10008, 11001, 11002),
    "aircraft": (1006, 301011, 301013, 301021, 7002, 7004, 12101, 11001, 11002),
    "satellite": (1007, 301011, 301013, 301021, 5042, 12163),
}

# (data category, international sub-category) of BUFR Table A / Common Code Table C-13.
_CATEGORY = {"synop": (0, 2), "temp": (2, 4), "aircraft": (4, 1), "satellite": (3, 255)}

# BUFR key -> (table column, factor) per kind (float elements).
_ELEMENTS: dict[str, dict[str, tuple[str, float]]] = {
    "synop": {
        "heightOfStationGroundAboveMeanSeaLevel": ("surface_altitude", 1.0),
        "nonCoordinatePressure": ("surface_air_pressure", 1.0),
        "#1#airTemperature": ("air_temperature", 1.0),
        "#1#windDirection": ("wind_from_direction", 1.0),
        "#1#windSpeed": ("wind_speed", 1.0),
    },
    "temp": {
        "pressure": ("pressure", 1.0),
        "airTemperature": ("air_temperature", 1.0),
        "nonCoordinateGeopotential": ("geopotential_height", G0),
        "windDirection": ("wind_from_direction", 1.0),
        "windSpeed": ("wind_speed", 1.0),
    },
    "aircraft": {
        "height": ("height", 1.0),
        "pressure": ("pressure", 1.0),
        "airTemperature": ("air_temperature", 1.0),
        "windDirection": ("wind_from_direction", 1.0),
        "windSpeed": ("wind_speed", 1.0),
    },
    "satellite": {
        "channelNumber": ("channel", 1.0),
        "brightnessTemperature": ("brightness_temperature", 1.0),
    },
}

#: Packing precision (half of it is the largest round-trip error) per column
#: and kind, from the Table B scales of :data:`BUFR_TEMPLATES`.
PACKING_PRECISION: dict[str, dict[str, float]] = {
    "synop": {"latitude": 1e-5, "longitude": 1e-5, "surface_altitude": 0.1, "surface_air_pressure": 10.0,
              "air_temperature": 0.01, "wind_from_direction": 1.0, "wind_speed": 0.1},
    "temp": {"latitude": 1e-5, "longitude": 1e-5, "pressure": 10.0, "air_temperature": 0.01,
             "geopotential_height": 1.0 / G0, "wind_from_direction": 1.0, "wind_speed": 0.1},
    "aircraft": {"latitude": 1e-5, "longitude": 1e-5, "height": 10.0, "pressure": 10.0,
                 "air_temperature": 0.01, "wind_from_direction": 1.0, "wind_speed": 0.1},
    "satellite": {"latitude": 1e-5, "longitude": 1e-5, "brightness_temperature": 0.01},
}

_SATELLITE_CODES = {name: code for code, name in SATELLITE_NAMES.items()}


def _long(values: np.ndarray) -> np.ndarray:
    """Integers for a long element, CODES_MISSING_LONG where NaN."""
    v = np.asarray(values, dtype=np.float64)
    return np.where(np.isnan(v), eccodes.CODES_MISSING_LONG, np.round(np.nan_to_num(v))).astype(np.int64)


def _double(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return np.where(np.isnan(v), eccodes.CODES_MISSING_DOUBLE, v)


def _station_numbers(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    try:
        numbers = np.array([int(s) for s in ids], dtype=np.int64)
    except ValueError as exc:
        raise ValueError(f"WMO station_id must be a number block*1000+station: {exc}") from None
    if ((numbers < 0) | (numbers > 99999)).any():
        raise ValueError("WMO station_id must lie in 0..99999")
    return numbers // 1000, numbers % 1000


def satellite_codes(ids: np.ndarray, codes: dict[str, int] | None = None) -> np.ndarray:
    """BUFR Common Code Table C-5 satellite identifiers (0 01 007) of satellite names.

    Parameters
    ----------
    ids : numpy.ndarray
        (n,) names (keys of ``codes``) or decimal C-5 codes as text.
    codes : dict, optional
        Name -> code (default: the polar orbiters of
        :data:`obscast.components.obs.readers.bufr_schema.SATELLITE_NAMES`).

    Returns
    -------
    numpy.ndarray
        (n,) int64 codes.

    Raises
    ------
    ValueError
        An id that is neither a known name nor a number.
    """
    codes = _SATELLITE_CODES if codes is None else codes
    out = []
    for s in ids:
        if s in codes:
            out.append(codes[s])
        elif str(s).isdigit():
            out.append(int(s))
        else:
            raise ValueError(f"unknown satellite {s!r}; expected one of {sorted(codes)} or a C-5 code")
    return np.asarray(out, dtype=np.int64)


#: SYNOP qualifiers written (307080): (qualifier, the element it qualifies, value): the sensor
#: height of the temperature group (2 m), of the wind group (10 m), and the wind's time period
#: (-10 min, the standard 10-minute mean).
_SYNOP_QUALIFIERS: tuple[tuple[str, str, float], ...] = (
    ("heightOfSensorAboveLocalGroundOrDeckOfMarinePlatform", "airTemperature", 2.0),
    ("heightOfSensorAboveLocalGroundOrDeckOfMarinePlatform", "windSpeed", 10.0),
    ("timePeriod", "windSpeed", -10.0),
)


def _qualifier_key(handle, qualifier: str, element: str) -> str:
    """The ranked key of the last ``qualifier`` before the first ``element`` of the message."""
    last = None
    it = eccodes.codes_bufr_keys_iterator_new(handle)
    try:
        while eccodes.codes_bufr_keys_iterator_next(it):
            name = eccodes.codes_bufr_keys_iterator_get_name(it)
            if name.endswith("#" + qualifier):
                last = name
            elif name == f"#1#{element}":
                break
    finally:
        eccodes.codes_bufr_keys_iterator_delete(it)
    if last is None:
        raise ValueError(f"template {BUFR_TEMPLATES['synop']} has no {qualifier} before {element}")
    return last


def _encode(rows: pd.DataFrame, kind: str) -> bytes:
    """One compressed BUFR4 message with one subset per row."""
    n = len(rows)
    time = pd.DatetimeIndex(rows["time"])
    h = eccodes.codes_bufr_new_from_samples("BUFR4")
    try:
        category, sub = _CATEGORY[kind]
        first = time.min()
        for key, value in (
            ("bufrHeaderCentre", 255), ("dataCategory", category), ("internationalDataSubCategory", sub),
            ("dataSubCategory", 255), ("typicalYear", first.year), ("typicalMonth", first.month),
            ("typicalDay", first.day), ("typicalHour", first.hour), ("typicalMinute", first.minute),
            ("typicalSecond", first.second), ("numberOfSubsets", n), ("observedData", 1), ("compressedData", 1),
        ):
            eccodes.codes_set(h, key, value)
        eccodes.codes_set_array(h, "unexpandedDescriptors", list(BUFR_TEMPLATES[kind]))
        if kind == "synop":
            for qualifier, element, value in _SYNOP_QUALIFIERS:
                eccodes.codes_set_double_array(h, _qualifier_key(h, qualifier, element), np.full(n, value))
        ids = rows["station_id"].to_numpy(dtype=object)
        if kind in ("synop", "temp"):
            block, station = _station_numbers(ids)
            eccodes.codes_set_long_array(h, "blockNumber", block)
            eccodes.codes_set_long_array(h, "stationNumber", station)
        elif kind == "aircraft":
            eccodes.codes_set_string_array(h, "aircraftFlightNumber", [str(s) for s in ids])
        else:
            eccodes.codes_set_long_array(h, "satelliteIdentifier", satellite_codes(ids))
        parts = {"year": time.year, "month": time.month, "day": time.day, "hour": time.hour, "minute": time.minute}
        if kind in ("aircraft", "satellite"):
            parts["second"] = time.second
        for key, value in parts.items():
            eccodes.codes_set_long_array(h, key, np.asarray(value, dtype=np.int64))
        eccodes.codes_set_double_array(h, "latitude", _double(rows["latitude"]))
        eccodes.codes_set_double_array(h, "longitude", _double(rows["longitude"]))
        for key, (column, factor) in _ELEMENTS[kind].items():
            values = rows[column].to_numpy(dtype=np.float64, na_value=np.nan) * factor
            if key == "channelNumber":
                eccodes.codes_set_long_array(h, key, _long(values))
            else:
                eccodes.codes_set_double_array(h, key, _double(values))
        eccodes.codes_set(h, "pack", 1)
        return eccodes.codes_get_message(h)
    finally:
        eccodes.codes_release(h)


def write_bufr(
    table: pd.DataFrame, kind: str, path: str | os.PathLike[str], *, max_subsets: int = 10000
) -> int:
    """Write an observation table as BUFR edition 4, compressed, many subsets per message.

    Parameters
    ----------
    table : pandas.DataFrame
        Observation table of ``kind`` (columns of
        :data:`obscast.components.obs.readers.bufr.COLUMNS`; only those of
        :data:`BUFR_TEMPLATES` are written: SYNOP dew point and MSLP, and
        ``eastward_wind``/``northward_wind`` of every kind, are not; the
        readers derive ``u, v`` from speed and direction; SYNOP uses WMO template
        307080 with the 2 m temperature and the 10 m, 10-minute wind under their
        sensor-height and time-period qualifiers). NaN is encoded as
        BUFR missing. ``station_id`` must be a WMO number (SYNOP, TEMP), a
        flight number of at most 8 characters (aircraft) or a satellite name
        of :data:`obscast.components.obs.readers.bufr.SATELLITE_NAMES` (or a C-5 code).
    kind : {"synop", "temp", "aircraft", "satellite"}
        Template to use (:data:`BUFR_TEMPLATES`).
    path : str or os.PathLike
        Output file (overwritten).
    max_subsets : int, optional
        Largest number of subsets per message (BUFR allows 65535).

    Returns
    -------
    int
        Number of messages written: one per synoptic time (rows grouped by
        the 6-hourly time nearest to ``time``, i.e. per nature time), split
        into chunks of at most ``max_subsets`` rows.

    Raises
    ------
    ValueError
        Unknown kind, missing column, bad ``station_id``, NaT time.
    eccodes.CodesInternalError
        A value does not fit its element (e.g. a temperature above 655.35 K).

    Notes
    -----
    Rows are written in the order of a stable sort by time, so reading the
    file back with :func:`obscast.components.obs.readers.bufr.read_observations` gives the
    rows in the table's (time-sorted) order. Packing precision per column:
    :data:`PACKING_PRECISION` (values are rounded to the nearest multiple);
    times are encoded to the minute (SYNOP, TEMP: 3 01 012) or second
    (aircraft, satellite: 3 01 013).
    """
    if kind not in BUFR_TEMPLATES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(BUFR_TEMPLATES)}")
    needed = ["time", "latitude", "longitude", "station_id"] + [c for c, _ in _ELEMENTS[kind].values()]
    return write_messages(table, needed, path, lambda rows: _encode(rows, kind), max_subsets, kind)


def write_messages(table: pd.DataFrame, needed: list[str], path: Any, encode: Any, max_subsets: int, label: str) -> int:
    """Write ``table`` as BUFR messages of at most ``max_subsets`` subsets, one 6 h slot per message.

    Parameters
    ----------
    table : pandas.DataFrame
        Reports; rows are written in a stable sort by time.
    needed : list of str
        Columns the table must have.
    path : path-like
        Output file (overwritten).
    encode : callable
        Rows (DataFrame) -> the bytes of one BUFR message.
    max_subsets : int
        1..65535.
    label : str
        The kind, for error messages.

    Returns
    -------
    int
        Messages written.

    Raises
    ------
    ValueError
        A needed column is missing, a time is NaT, or ``max_subsets`` is out of range.
    """
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"{label} table lacks column(s) {missing}")
    if table["time"].isna().any():
        raise ValueError("time must not be NaT")
    if not 1 <= max_subsets <= 65535:
        raise ValueError("max_subsets must be in 1..65535")
    rows = table.sort_values("time", kind="stable").reset_index(drop=True)
    slot = ((rows["time"] + _HALF).dt.floor("6h")).to_numpy()
    n_messages = 0
    with open(path, "wb") as f:
        if len(rows):
            bounds = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1], True])
            for a, b in zip(bounds[:-1], bounds[1:]):
                for c in range(a, b, max_subsets):
                    f.write(encode(rows.iloc[c:min(b, c + max_subsets)]))
                    n_messages += 1
    return n_messages
