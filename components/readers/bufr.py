"""BUFR readers: SYNOP, TEMP and aircraft reports to an *observation table*.

Decoding is done by pdbufr (ECMWF, on top of eccodes); this module only picks
the keys, converts units, renames to CF standard names, derives wind
components and filters to a time window. Readers never do quality control:
every row pdbufr returns is kept (see :mod:`components.qc`).

Observation table
-----------------
A :class:`pandas.DataFrame`, one row per report (SYNOP, aircraft) or per
reported level (TEMP), sorted stably by ``time``, with a fresh
``RangeIndex`` and these columns, in this order (see :data:`COLUMNS`):

===================  ==============  =======  ====================================
column               dtype           units    notes
===================  ==============  =======  ====================================
time                 datetime64[ns]  UTC      tz-naive; from pdbufr ``data_datetime``
latitude             float64         degree   north positive; rounded to 1e-9
longitude            float64         degree   east positive, normalised to [-180, 180)
station_id           object (str)             WMO ``block*1000+station`` (SYNOP,
                                              TEMP), e.g. ``"40340"``; flight number
                                              (aircraft); ``""`` when not reported
surface_altitude     float64         m        SYNOP only
pressure             float32         Pa       TEMP, aircraft (NaN for heights)
height               float32         m        aircraft only (NaN for ACARS 145)
<variables>          float32         CF unit  see below
===================  ==============  =======  ====================================

Variables per kind (BUFR key -> column): SYNOP ``airTemperatureAt2M`` ->
``air_temperature``, ``dewpointTemperatureAt2M`` -> ``dew_point_temperature``,
``pressureReducedToMeanSeaLevel`` -> ``air_pressure_at_mean_sea_level``,
``windSpeedAt10M`` -> ``wind_speed``, ``windDirectionAt10M`` ->
``wind_from_direction``; TEMP ``airTemperature``, ``dewpointTemperature``,
``nonCoordinateGeopotential`` / g0 -> ``geopotential_height`` [m],
``windSpeed``, ``windDirection``; aircraft ``airTemperature``, ``windSpeed``,
``windDirection``. All kinds with wind also get ``eastward_wind`` and
``northward_wind`` (see :func:`wind_components`). Missing values are NaN.

Row counts equal those of ``pdbufr.read_bufr(path, columns=BUFR_KEYS[kind],
required_columns=False)``. With the default ``required_columns=True`` pdbufr
silently drops report rows that lack any requested key (191 TEMP levels of
the sample file), which is why it is not used.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import eccodes
import numpy as np
import pandas as pd
import pdbufr

from components.errors import InputError
from components.variables import G0

__all__ = [
    "BUFR_KEYS",
    "COLUMNS",
    "READERS",
    "Window",
    "normalise_window",
    "read_aircraft",
    "read_observations",
    "read_synop",
    "read_temp",
    "wind_components",
]

#: A time window: ``None`` or a ``(start, end)`` pair meaning ``(start, end]``.
Window = tuple[Any, Any] | None

_COORDS = ("time", "latitude", "longitude", "station_id")

#: Output columns of the observation table per kind, in order.
COLUMNS: dict[str, tuple[str, ...]] = {
    "synop": _COORDS + (
        "surface_altitude",
        "air_temperature",
        "dew_point_temperature",
        "air_pressure_at_mean_sea_level",
        "wind_speed",
        "wind_from_direction",
        "eastward_wind",
        "northward_wind",
    ),
    "temp": _COORDS + (
        "pressure",
        "air_temperature",
        "dew_point_temperature",
        "geopotential_height",
        "wind_speed",
        "wind_from_direction",
        "eastward_wind",
        "northward_wind",
    ),
    "aircraft": _COORDS + (
        "pressure",
        "height",
        "air_temperature",
        "wind_speed",
        "wind_from_direction",
        "eastward_wind",
        "northward_wind",
    ),
}

# Observed variables: output column -> BUFR key (ecCodes element names).
_OBSERVED: dict[str, dict[str, str]] = {
    "synop": {
        "air_temperature": "airTemperatureAt2M",
        "dew_point_temperature": "dewpointTemperatureAt2M",
        "air_pressure_at_mean_sea_level": "pressureReducedToMeanSeaLevel",
        "wind_speed": "windSpeedAt10M",
        "wind_from_direction": "windDirectionAt10M",
    },
    "temp": {
        "air_temperature": "airTemperature",
        "dew_point_temperature": "dewpointTemperature",
        "geopotential_height": "nonCoordinateGeopotential",
        "wind_speed": "windSpeed",
        "wind_from_direction": "windDirection",
    },
    "aircraft": {
        "air_temperature": "airTemperature",
        "wind_speed": "windSpeed",
        "wind_from_direction": "windDirection",
    },
}

# Station altitude: WMO template key first, ECMWF edition-3 local key second
# (the sample perf_synop.bufr only has ``heightOfStation``).
_SYNOP_ALTITUDE_KEYS = ("heightOfStationGroundAboveMeanSeaLevel", "heightOfStation")

# Decimals kept in latitude/longitude (BUFR carries at most 1e-7 degree).
_DEGREE_DECIMALS = 9

_STATION_KEY = {"synop": "WMO_station_id", "temp": "WMO_station_id", "aircraft": "aircraftFlightNumber"}
_VERTICAL_KEYS = {"synop": (), "temp": ("pressure",), "aircraft": ("pressure", "height")}

#: The pdbufr ``columns`` each reader asks for (with ``required_columns=False``).
BUFR_KEYS: dict[str, tuple[str, ...]] = {
    kind: ("data_datetime", _STATION_KEY[kind], "latitude", "longitude")
    + (_SYNOP_ALTITUDE_KEYS if kind == "synop" else ())
    + _VERTICAL_KEYS[kind]
    + tuple(_OBSERVED[kind].values())
    for kind in ("synop", "temp", "aircraft")
}


def normalise_window(window: Window) -> tuple[np.datetime64, np.datetime64] | None:
    """Validate a time window and convert it to two UTC ``datetime64[ns]``.

    Parameters
    ----------
    window : None or (start, end)
        Bounds as numpy ``datetime64``, :class:`pandas.Timestamp`,
        :class:`datetime.datetime` or ISO strings. Timezone-aware bounds are
        converted to UTC; naive ones are taken as UTC. The window is the
        half-open interval ``(start, end]``.

    Returns
    -------
    tuple of numpy.datetime64 or None
        ``(start, end)`` as tz-naive UTC ``datetime64[ns]``, or ``None``.

    Raises
    ------
    ValueError
        If ``window`` is not a pair, a bound is not a time (or NaT), or
        ``start >= end``.
    """
    if window is None:
        return None
    try:
        start, end = window
    except (TypeError, ValueError):
        raise ValueError(f"window must be None or a (start, end) pair, got {window!r}") from None
    bounds = []
    for bound in (start, end):
        try:
            ts = pd.Timestamp(bound)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"window bound {bound!r} is not a time: {exc}") from None
        if pd.isna(ts):
            raise ValueError("window bounds must not be NaT")
        if ts.tzinfo is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        bounds.append(np.datetime64(ts.as_unit("ns").to_datetime64(), "ns"))
    if not bounds[0] < bounds[1]:
        raise ValueError(f"window start {bounds[0]} must be before end {bounds[1]}")
    return bounds[0], bounds[1]


def wind_components(
    speed: np.ndarray, direction: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Eastward and northward wind from speed and meteorological direction.

    Parameters
    ----------
    speed : numpy.ndarray
        Wind speed, shape (n,), m s-1.
    direction : numpy.ndarray
        Direction the wind blows *from*, degrees clockwise from true north,
        shape (n,).

    Returns
    -------
    u, v : numpy.ndarray
        Eastward and northward components, shape (n,), m s-1, float64;
        NaN where either input is NaN.

    Notes
    -----
    ``u = -speed * sin(direction)``, ``v = -speed * cos(direction)``: the
    meteorological convention: direction is where the wind blows *from*, in
    degrees true (WMO-No. 306 *Manual on Codes*, BUFR Table B element
    0 11 001; WMO-No. 8, Vol. I, Ch. 5). A north wind (360 deg) gives
    ``v < 0``; a west wind (270 deg) ``u > 0``.
    """
    speed = np.asarray(speed, dtype=np.float64)
    rad = np.deg2rad(np.asarray(direction, dtype=np.float64))
    return -speed * np.sin(rad), -speed * np.cos(rad)


def _check_file(path: str | os.PathLike[str]) -> None:
    if not os.path.exists(path):
        raise InputError(path, "file", "an existing BUFR file", found="no such file")
    if not os.path.isfile(path):
        raise InputError(path, "file", "an existing BUFR file", found="not a regular file")


def _read_pdbufr(path: str | os.PathLike[str], kind: str) -> pd.DataFrame:
    """Run pdbufr, turning every decoding failure into :class:`InputError`."""
    _check_file(path)
    try:
        return pdbufr.read_bufr(os.fspath(path), columns=BUFR_KEYS[kind], required_columns=False)
    except eccodes.CodesInternalError as exc:  # PrematureEndOfFileError and co.
        what = (
            "end of file inside a message (truncated)"
            if isinstance(exc, eccodes.PrematureEndOfFileError)
            else f"eccodes error: {exc}"
        )
        raise InputError(path, "BUFR message", "a complete BUFR message", found=what) from exc
    except (OSError, ValueError, KeyError, IndexError, TypeError, UnicodeError) as exc:
        raise InputError(
            path, "BUFR message", "a complete BUFR message", found=f"{type(exc).__name__}: {exc}"
        ) from exc


def _require(df: pd.DataFrame, path: str | os.PathLike[str], kind: str) -> None:
    """Raise InputError when the pdbufr result lacks the keys a kind needs."""
    label = kind.upper() if kind != "aircraft" else "aircraft"
    if len(df.columns) == 0:
        raise InputError(
            path, "BUFR message", f"at least one {label} BUFR message", found="no decodable message"
        )
    for key in ("data_datetime", "latitude", "longitude", _STATION_KEY[kind]):
        if key not in df.columns:
            raise InputError(
                path, key, f"a {label} report key present in at least one message",
                found=f"absent from all {len(df)} rows",
            )
    groups = [tuple(_OBSERVED[kind].values())]
    if _VERTICAL_KEYS[kind]:
        groups.insert(0, _VERTICAL_KEYS[kind])
    for keys in groups:
        if not any(k in df.columns for k in keys):
            raise InputError(
                path, keys[0], f"at least one of the {label} keys {list(keys)}",
                found=f"none of them in {len(df)} rows",
            )


def _station_ids(values: pd.Series | None, n: int) -> np.ndarray:
    """Identifiers as an object array of Python str ("" where missing)."""
    out = np.full(n, "", dtype=object)
    if values is None:
        return out
    for i, v in enumerate(values.to_numpy(dtype=object)):
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            continue
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        out[i] = str(v).strip()
    return out


def _float(df: pd.DataFrame, key: str, dtype: type = np.float32) -> np.ndarray:
    if key not in df.columns:
        return np.full(len(df), np.nan, dtype=dtype)
    return pd.to_numeric(df[key], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan).astype(dtype)


def _normalise_longitude(lon: np.ndarray) -> np.ndarray:
    """Longitudes [degree] to [-180, 180): 180 maps to -180, NaN stays NaN."""
    out = np.round(np.mod(lon + 180.0, 360.0) - 180.0, _DEGREE_DECIMALS) + 0.0  # no -0.0
    with np.errstate(invalid="ignore"):
        return np.where(out >= 180.0, out - 360.0, out)


def _read(path: str | os.PathLike[str], kind: str, window: Window) -> pd.DataFrame:
    """Validate the window, decode with pdbufr, build the observation table."""
    bounds = normalise_window(window)  # before the (slow) decode
    df = _read_pdbufr(path, kind)
    _require(df, path, kind)
    n = len(df)
    time = pd.to_datetime(df["data_datetime"], errors="coerce").to_numpy(dtype="datetime64[ns]")
    # Round away decoding noise (pdbufr gives -90.00000000000001 for the
    # South Pole, station 89009); 1e-9 degree is far below any BUFR scale.
    lat = np.round(_float(df, "latitude", np.float64), _DEGREE_DECIMALS)
    lon = np.round(_float(df, "longitude", np.float64), _DEGREE_DECIMALS)
    cols: dict[str, np.ndarray] = {
        "time": time,
        "latitude": lat,
        "longitude": _normalise_longitude(lon),
        "station_id": _station_ids(df.get(_STATION_KEY[kind]), n),
    }
    if kind == "synop":
        alt = np.full(n, np.nan)
        for key in _SYNOP_ALTITUDE_KEYS:  # first key wins where both exist
            alt = np.where(np.isnan(alt), _float(df, key, np.float64), alt)
        cols["surface_altitude"] = alt
    for key in _VERTICAL_KEYS[kind]:
        cols[key] = _float(df, key)
    for column, key in _OBSERVED[kind].items():
        values = _float(df, key, np.float64)
        if column == "geopotential_height":
            values = values / G0  # m2 s-2 -> m (WMO standard gravity)
        cols[column] = values.astype(np.float32)
    u, v = wind_components(cols["wind_speed"], cols["wind_from_direction"])
    cols["eastward_wind"] = (u + 0.0).astype(np.float32)  # + 0.0 turns -0.0 into 0.0
    cols["northward_wind"] = (v + 0.0).astype(np.float32)

    table = pd.DataFrame({c: cols[c] for c in COLUMNS[kind]})
    table["station_id"] = table["station_id"].astype(object)
    if bounds is not None:
        t = table["time"].to_numpy()
        table = table[(t > bounds[0]) & (t <= bounds[1])]
    return table.sort_values("time", kind="stable").reset_index(drop=True)


def read_synop(path: str | os.PathLike[str], window: Window = None) -> pd.DataFrame:
    """Read land SYNOP reports from a BUFR file.

    Parameters
    ----------
    path : str or os.PathLike
        BUFR file with surface land reports (ECMWF subtypes 1-4 or WMO
        templates using the ``...At2M``/``...At10M`` element names).
    window : None or (start, end), optional
        Keep only reports with ``start < time <= end`` (UTC); see
        :func:`normalise_window`.

    Returns
    -------
    pandas.DataFrame
        Observation table (see module docstring), shape (n_reports, 12), one
        row per BUFR message/subset, *including* supplementary messages whose
        core values are all NaN (QC quarantines them). ``surface_altitude``
        comes from ``heightOfStationGroundAboveMeanSeaLevel`` or, in ECMWF
        edition-3 messages, ``heightOfStation``.

    Raises
    ------
    InputError
        File missing; truncated or corrupt BUFR (``'a complete BUFR
        message'``); no message decodable; ``data_datetime``, ``latitude``,
        ``longitude`` or ``WMO_station_id`` absent from every message; or
        none of the SYNOP variable keys present.
    ValueError
        Invalid ``window``.
    """
    return _read(path, "synop", window)


def read_temp(path: str | os.PathLike[str], window: Window = None) -> pd.DataFrame:
    """Read radiosonde (TEMP) profiles from a BUFR file, one row per level.

    Parameters
    ----------
    path : str or os.PathLike
        BUFR file with TEMP soundings (ECMWF subtype 101 or equivalent).
    window : None or (start, end), optional
        Keep only levels of soundings with ``start < time <= end`` (UTC).

    Returns
    -------
    pandas.DataFrame
        Observation table, shape (n_levels, 13). ``time``, ``latitude``,
        ``longitude`` are the launch values of the message header (no drift).
        ``pressure`` [Pa] is the vertical coordinate; ``geopotential_height``
        [m] is ``nonCoordinateGeopotential`` [m2 s-2] divided by
        g0 = 9.80665 m s-2 (WMO standard gravity).

    Raises
    ------
    InputError
        File missing; truncated or corrupt BUFR; no message decodable; a
        position/time/``WMO_station_id`` key absent from every message; no
        ``pressure`` key or none of the TEMP variables present.
    ValueError
        Invalid ``window``.
    """
    return _read(path, "temp", window)


def read_aircraft(path: str | os.PathLike[str], window: Window = None) -> pd.DataFrame:
    """Read aircraft reports (AIREP/AMDAR/ACARS) from a BUFR file.

    Parameters
    ----------
    path : str or os.PathLike
        BUFR file with single-level aircraft reports.
    window : None or (start, end), optional
        Keep only reports with ``start < time <= end`` (UTC).

    Returns
    -------
    pandas.DataFrame
        Observation table, shape (n_reports, 11). ``station_id`` is
        ``aircraftFlightNumber`` stripped of blanks. ``height`` [m above MSL]
        is set for ECMWF subtypes 142/144 (template 311001) and ``pressure``
        [Pa] for 145 (ACARS); the other is NaN.

    Raises
    ------
    InputError
        File missing; truncated or corrupt BUFR; no message decodable; a
        position/time/``aircraftFlightNumber`` key absent from every
        message; neither ``pressure`` nor ``height``, or none of the
        aircraft variables present.
    ValueError
        Invalid ``window``.
    """
    return _read(path, "aircraft", window)


#: Reader per observation kind.
READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "synop": read_synop,
    "temp": read_temp,
    "aircraft": read_aircraft,
}


def read_observations(
    kind: str, path: str | os.PathLike[str], window: Window = None
) -> pd.DataFrame:
    """Read a BUFR file with the reader for ``kind``.

    Parameters
    ----------
    kind : {"synop", "temp", "aircraft"}
        Observation kind (case-insensitive).
    path : str or os.PathLike
        BUFR file.
    window : None or (start, end), optional
        Time filter ``(start, end]``, UTC.

    Returns
    -------
    pandas.DataFrame
        Observation table of that kind (see :data:`COLUMNS`).

    Raises
    ------
    InputError
        Unknown ``kind`` (field ``'kind'``), or any error of the reader.
    ValueError
        Invalid ``window``.
    """
    reader = READERS.get(str(kind).lower())
    if reader is None:
        raise InputError(path, "kind", f"one of {sorted(READERS)}", found=repr(kind))
    return reader(path, window)
