"""BUFR readers: SYNOP, TEMP, aircraft and satellite reports to an *observation table*.

Decoding is done with eccodes, selecting repeated elements by their
qualifiers (see *Selection by qualifier*), or by pdbufr (satellite files and
layouts the eccodes walk does not support; see *Decoding engines* below);
this module picks the keys, converts units, renames to CF standard
names, derives wind components and filters to a time window. Readers never
do quality control: every decoded row is kept (see
:mod:`obscast.components.obs.qc`), except satellite rows without a channel number.

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
                                              (aircraft); satellite name (satellite,
                                              :data:`SATELLITE_NAMES`, e.g.
                                              ``"metop-a"``); ``""`` when not reported
surface_altitude     float64         m        SYNOP only
pressure             float32         Pa       TEMP, aircraft (NaN for heights)
height               float32         m        aircraft only (NaN for ACARS 145)
channel              int64                    satellite only: instrument channel
<variables>          float32         CF unit  see below
===================  ==============  =======  ====================================

Variables per kind (BUFR key -> column): SYNOP 2 m temperature ->
``air_temperature``, 2 m dew point -> ``dew_point_temperature``,
``pressureReducedToMeanSeaLevel`` -> ``air_pressure_at_mean_sea_level``,
``nonCoordinatePressure`` (0 10 004, station-level pressure) ->
``surface_air_pressure``, 10 m wind speed/direction -> ``wind_speed`` /
``wind_from_direction``; TEMP ``airTemperature``, ``dewpointTemperature``,
``nonCoordinateGeopotential`` / g0 (or ``nonCoordinateGeopotentialHeight``,
templates 309052/309057) -> ``geopotential_height`` [m], ``windSpeed``,
``windDirection``; aircraft ``airTemperature``, ``windSpeed``,
``windDirection``, ``pressure`` (or, AMDAR 311010, the ICAO standard-atmosphere
pressure of ``flightLevel``,
:func:`obscast.components.obs.conversions.pressure_from_flight_level`);
satellite ``brightnessTemperature`` -> ``brightness_temperature`` with the
channel from ``tovsOrAtovsOrAvhrrInstrumentationChannelNumber`` (0 02 150,
ATOVS files) or ``channelNumber`` (0 05 042). All kinds with wind also get
``eastward_wind`` and ``northward_wind`` (see :func:`wind_components`).
Missing values are NaN.

Selection by qualifier (SYNOP, TEMP, aircraft)
----------------------------------------------
WMO templates repeat an element within a subset under qualifiers that precede
it, so the first occurrence is not always the wanted one: in DWD's national
10-minute reports (307086 plus national additions) ``airTemperature`` comes
at 2 m and at 5 cm, ``windSpeed`` as a 10-minute mean and as gusts. These
kinds are decoded by
:func:`obscast.components.obs.readers.bufr_qualified.read_qualified`, which walks each
subset's data keys in order with the qualifiers in effect
(:data:`~obscast.components.obs.readers.bufr_qualified.SELECTIONS`):

* 2 m temperature and dew point: ``airTemperatureAt2M`` /
  ``dewpointTemperatureAt2M`` (ECMWF edition-3 keys), else the first
  non-missing ``airTemperature`` / ``dewpointTemperature`` under a sensor
  height 0 07 032 in 1..3 m (307080/307086/307096 sequence 3 02 032), else one
  under a sensor height reported missing; never one under another height (5 cm)
  nor one outside any sensor-height qualifier (a TEMP level is no 2 m value);
* 10 m wind: ``windSpeedAt10M`` / ``windDirectionAt10M``, else the first
  non-missing ``windSpeed`` / ``windDirection`` under the time period 0 04 025
  = -10 min (the standard 10-minute mean, sequence 3 02 042) at any sensor
  height, else one under a period reported missing; never a wind over another
  period nor one outside any time-period qualifier;
* other report values (position, time, station, pressures): the first
  non-missing occurrence;
* TEMP: one row per occurrence of ``pressure``; 309052/309057 levels get the
  launch time plus their time displacement (0 04 086) and the launch position
  plus their latitude/longitude displacements (0 05 015/0 06 015);
* aircraft: ``station_id`` is ``aircraftFlightNumber``, else (311010) the
  aircraft registration.

Rows: one per subset (SYNOP, aircraft) or per level (TEMP), as
``pdbufr.read_bufr(path, columns=BUFR_KEYS[kind], required_columns=False)``
gives for files without repeated elements (tested on the sample files);
satellite rows are those of pdbufr less the rows without a channel number
(pdbufr emits one such row per value of the quality-information section that
follows operator 2 22 000, e.g. 19 NEDT rows per field of view in EUMETSAT
HIRS level-1b files). With the default ``required_columns=True`` pdbufr
silently drops report rows that lack any requested key (191 TEMP levels of the
sample file), which is why it is not used.

Decoding engines
----------------
SYNOP, TEMP, aircraft: ``engine="auto"`` (default) walks subsets that share a
sequence of keys together (vectorised over subsets; compressed messages are
fetched with one array call per key); ``engine="pdbufr"`` walks every subset
on its own (the reference of the vectorised walk, named after the library it
replaced); ``engine="eccodes"`` is the vectorised walk restricted to files of
compressed messages. All three give identical tables. Files the walk does not
support fall back on pdbufr's flat reader.

Satellite: ``engine="pdbufr"`` decodes with pdbufr (about 5,000 subsets per
second for uncompressed files). ``engine="eccodes"`` is a fast path for
*compressed* messages (BUFR Regulation 94.6.3: all subsets share one expanded
descriptor list): per message it unpacks once and fetches every needed element
for all subsets at once with ``codes_get_double_array`` on the ranked key
``#rank#name``; about 1-2 million rows per second. It reads only the primary
data, i.e. the data keys before the first data-description operator key
(``operator``, e.g. 2 22 000 quality information), and builds one row per
occurrence of the channel number within the subset, each element attached to
the channel occurrence it follows (elements before the first one apply to
every channel). ``engine="auto"`` uses the fast path when every message of the
file is compressed and supported, pdbufr otherwise. Both give identical tables
(tested on the real HIRS sample).

A missing WMO block or station number gives ``station_id == ""``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pdbufr
from obscast.components.errors import InputError
from obscast.components.obs.conversions import (
    _DEGREE_DECIMALS,
    normalise_longitude,
    pressure_from_flight_level,
    wind_components,
    wind_speed_direction,
)
from obscast.components.obs.readers.bufr_fast import (
    _CHANNEL_KEYS,
    _DECODE_ERRORS,
    _check_file,
    _decode_error,
    read_fast,
)
from obscast.components.obs.readers.bufr_qualified import SELECTIONS, read_qualified
from obscast.components.obs.readers.bufr_schema import (  # noqa: F401 - COLUMNS, BUFR_KEYS, SATELLITE_NAMES re-exported
    _COORDS,
    _OBSERVED,
    _STATION_KEY,
    _SYNOP_ALTITUDE_KEYS,
    _VERTICAL_KEYS,
    _WIND,
    BUFR_KEYS,
    COLUMNS,
    SATELLITE_NAMES,
)
from obscast.components.obs.variables import G0

__all__ = [
    "BUFR_KEYS",
    "COLUMNS",
    "ENGINES",
    "READERS",
    "SATELLITE_NAMES",
    "Window",
    "normalise_longitude",
    "normalise_window",
    "read_aircraft",
    "read_observations",
    "read_satellite",
    "read_synop",
    "read_temp",
    "wind_components",
    "wind_speed_direction",
]

#: A time window: ``None`` or a ``(start, end)`` pair meaning ``(start, end]``.
Window = tuple[Any, Any] | None

#: Decoding engines accepted by the readers (see module docstring).
ENGINES: tuple[str, ...] = ("auto", "pdbufr", "eccodes")



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


def _read_pdbufr(path: str | os.PathLike[str], kind: str) -> pd.DataFrame:
    """Run pdbufr, turning every decoding failure into :class:`InputError`."""
    try:
        return pdbufr.read_bufr(os.fspath(path), columns=BUFR_KEYS[kind], required_columns=False)
    except _DECODE_ERRORS as exc:
        raise _decode_error(path, exc) from exc


def _decode(path: str | os.PathLike[str], kind: str, engine: str) -> pd.DataFrame:
    """The pdbufr-like frame of a file with the chosen engine (see module docstring)."""
    _check_file(path)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if kind in SELECTIONS:  # qualifier-aware decoding (see module docstring)
        df = read_qualified(path, kind, vectorised=engine != "pdbufr", compressed_only=engine == "eccodes")
        if df is not None:
            return df
        if engine == "eccodes":
            raise InputError(
                path, "BUFR message", "compressed BUFR messages the eccodes engine supports",
                found="an uncompressed or unsupported message",
            )
        return _read_pdbufr(path, kind)
    if engine != "pdbufr":
        df = read_fast(path, kind, BUFR_KEYS[kind])
        if df is not None:
            return df
        if engine == "eccodes":
            raise InputError(
                path, "BUFR message", "compressed BUFR messages the eccodes engine supports",
                found="an uncompressed or unsupported message",
            )
    return _read_pdbufr(path, kind)


def _require(df: pd.DataFrame, path: str | os.PathLike[str], kind: str) -> None:
    """Raise InputError when the decoded frame lacks the keys a kind needs."""
    label = kind.upper() if kind in ("synop", "temp") else kind
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
    vertical = _VERTICAL_KEYS[kind] + (("flightLevel",) if kind == "aircraft" else ())
    for coordinate in (vertical, _CHANNEL_KEYS if kind == "satellite" else ()):
        if coordinate:
            groups.insert(0, coordinate)
    for keys in groups:
        if not any(k in df.columns for k in keys):
            raise InputError(
                path, keys[0], f"at least one of the {label} keys {list(keys)}",
                found=f"none of them in {len(df)} rows",
            )


def _station_ids(values: pd.Series | None, n: int, names: dict[int, str] | None = None) -> np.ndarray:
    """Identifiers as an object array of Python str ("" where missing).

    Integral numbers are written without decimals; with ``names``, an integral
    code found in it is replaced by its name (satellite identifiers).
    """
    out = np.full(n, "", dtype=object)
    if values is None:
        return out
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    labels = []
    for v in uniques:  # one conversion per distinct identifier, not per row
        if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and np.isnan(v)):
            labels.append("")
            continue
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        if names is not None and isinstance(v, (int, np.integer)) and int(v) in names:
            labels.append(names[int(v)])
        else:
            labels.append(str(v).strip())
    labels.append("")  # code -1: missing
    return np.asarray(labels, dtype=object)[codes]


def _float(df: pd.DataFrame, key: str, dtype: type = np.float32) -> np.ndarray:
    if key not in df.columns:
        return np.full(len(df), np.nan, dtype=dtype)
    return pd.to_numeric(df[key], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan).astype(dtype)


def _first_present(df: pd.DataFrame, keys: tuple[str, ...]) -> np.ndarray:
    """Per row, the value of the first of ``keys`` that is not NaN (float64)."""
    out = np.full(len(df), np.nan)
    for key in keys:
        out = np.where(np.isnan(out), _float(df, key, np.float64), out)
    return out


def _read(path: str | os.PathLike[str], kind: str, window: Window, engine: str = "auto") -> pd.DataFrame:
    """Validate the window, decode, build the observation table."""
    bounds = normalise_window(window)  # before the (slow) decode
    df = _decode(path, kind, engine)
    _require(df, path, kind)
    if kind == "satellite":  # pdbufr rows of quality-information sections have no channel
        channel = _first_present(df, _CHANNEL_KEYS)
        df = df.loc[~np.isnan(channel)].reset_index(drop=True)
    n = len(df)
    time = pd.to_datetime(df["data_datetime"], errors="coerce").to_numpy(dtype="datetime64[ns]")
    # Round away decoding noise (pdbufr gives -90.00000000000001 for the
    # South Pole, station 89009); 1e-9 degree is far below any BUFR scale.
    lat = np.round(_float(df, "latitude", np.float64), _DEGREE_DECIMALS)
    lon = np.round(_float(df, "longitude", np.float64), _DEGREE_DECIMALS)
    cols: dict[str, np.ndarray] = {
        "time": time,
        "latitude": lat,
        "longitude": normalise_longitude(lon, keep_impossible=True),  # |lon| > 360: for QC
        "station_id": _station_ids(
            df.get(_STATION_KEY[kind]), n, SATELLITE_NAMES if kind == "satellite" else None
        ),
    }
    if kind == "synop":
        cols["surface_altitude"] = _first_present(df, _SYNOP_ALTITUDE_KEYS)  # first key wins
    if kind == "satellite":
        cols["channel"] = _first_present(df, _CHANNEL_KEYS).astype(np.int64)
    for key in _VERTICAL_KEYS[kind]:
        cols[key] = _float(df, key)
    if kind == "aircraft" and "flightLevel" in df.columns:  # AMDAR 311010: pressure altitude
        flight_pressure = pressure_from_flight_level(_float(df, "flightLevel", np.float64))
        cols["pressure"] = np.where(np.isnan(cols["pressure"]), flight_pressure, cols["pressure"]).astype(np.float32)
    for column, key in _OBSERVED[kind].items():
        values = _float(df, key, np.float64)
        if column == "geopotential_height":
            values = values / G0  # m2 s-2 -> m (WMO standard gravity)
            # 309052/309057 report geopotential height [gpm] (0 10 009) instead
            values = np.where(np.isnan(values), _float(df, "nonCoordinateGeopotentialHeight", np.float64), values)
        cols[column] = values.astype(np.float32)
    if "wind_speed" in cols:
        u, v = wind_components(cols["wind_speed"], cols["wind_from_direction"])
        cols["eastward_wind"] = (u + 0.0).astype(np.float32)  # + 0.0 turns -0.0 into 0.0
        cols["northward_wind"] = (v + 0.0).astype(np.float32)

    table = pd.DataFrame({c: cols[c] for c in COLUMNS[kind]})
    table["station_id"] = table["station_id"].astype(object)
    if bounds is not None:
        t = table["time"].to_numpy()
        table = table[(t > bounds[0]) & (t <= bounds[1])]
    return table.sort_values("time", kind="stable").reset_index(drop=True)


def read_synop(
    path: str | os.PathLike[str], window: Window = None, *, engine: str = "auto"
) -> pd.DataFrame:
    """Read land SYNOP reports from a BUFR file.

    Parameters
    ----------
    path : str or os.PathLike
        BUFR file with surface land reports (ECMWF subtypes 1-4 or WMO
        templates using the ``...At2M``/``...At10M`` element names).
    window, engine
        As in :func:`read_observations`.

    Returns
    -------
    pandas.DataFrame
        Observation table (see module docstring), shape (n_reports, 13), one
        row per BUFR message/subset, *including* supplementary messages whose
        core values are all NaN (QC quarantines them). ``surface_altitude``
        comes from ``heightOfStationGroundAboveMeanSeaLevel`` or, in ECMWF
        edition-3 messages, ``heightOfStation``; ``surface_air_pressure``
        from station-level pressure ``nonCoordinatePressure`` (0 10 004),
        NaN where not reported.

    Raises
    ------
    InputError
        File missing; truncated or corrupt BUFR (``'a complete BUFR
        message'``); no message decodable; ``data_datetime``, ``latitude``,
        ``longitude`` or ``WMO_station_id`` absent from every message; or
        none of the SYNOP variable keys present; ``engine="eccodes"`` on a
        file the fast path does not support.
    ValueError
        Invalid ``window`` or ``engine``.
    """
    return _read(path, "synop", window, engine)


def read_temp(
    path: str | os.PathLike[str], window: Window = None, *, engine: str = "auto"
) -> pd.DataFrame:
    """Read radiosonde (TEMP) profiles from a BUFR file, one row per level.

    Parameters
    ----------
    path : str or os.PathLike
        BUFR file with TEMP soundings (ECMWF subtype 101 or equivalent).
    window, engine
        As in :func:`read_observations`.

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
        ``pressure`` key or none of the TEMP variables present;
        ``engine="eccodes"`` on a file the fast path does not support.
    ValueError
        Invalid ``window`` or ``engine``.
    """
    return _read(path, "temp", window, engine)


def read_aircraft(
    path: str | os.PathLike[str], window: Window = None, *, engine: str = "auto"
) -> pd.DataFrame:
    """Read aircraft reports (AIREP/AMDAR/ACARS) from a BUFR file.

    Parameters
    ----------
    path : str or os.PathLike
        BUFR file with single-level aircraft reports.
    window, engine
        As in :func:`read_observations`.

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
        aircraft variables present; ``engine="eccodes"`` on a file the fast
        path does not support.
    ValueError
        Invalid ``window`` or ``engine``.
    """
    return _read(path, "aircraft", window, engine)


def read_satellite(
    path: str | os.PathLike[str], window: Window = None, *, engine: str = "auto"
) -> pd.DataFrame:
    """Read satellite brightness temperatures from a BUFR file, one row per channel.

    Parameters
    ----------
    path : str or os.PathLike
        BUFR file with radiance/brightness-temperature reports, e.g.
        EUMETSAT/NOAA ATOVS level-1b (HIRS: template 3 10 008, channels in
        ``tovsOrAtovsOrAvhrrInstrumentationChannelNumber``) or obscast's
        simulated files (``channelNumber``, see :mod:`obscast.components.osse.simulate`).
    window, engine
        As in :func:`read_observations`.

    Returns
    -------
    pandas.DataFrame
        Observation table, shape (n_fields_of_view * n_channels, 6):
        ``time`` (to the microsecond), ``latitude``, ``longitude`` of the
        field of view, ``station_id`` the satellite name (:data:`SATELLITE_NAMES`),
        ``channel`` (int64) and ``brightness_temperature`` [K], NaN for
        channels without one (HIRS channel 20 is visible: albedo only).
        Rows without a channel number are dropped (see module docstring).

    Raises
    ------
    InputError
        File missing; truncated or corrupt BUFR; no message decodable; a
        position/time/``satelliteIdentifier`` key absent from every message;
        no channel key or no ``brightnessTemperature``; ``engine="eccodes"``
        on a file the fast path does not support.
    ValueError
        Invalid ``window`` or ``engine``.
    """
    return _read(path, "satellite", window, engine)


#: Reader per observation kind.
READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "synop": read_synop,
    "temp": read_temp,
    "aircraft": read_aircraft,
    "satellite": read_satellite,
}


def read_observations(
    kind: str, path: str | os.PathLike[str], window: Window = None, *, engine: str = "auto"
) -> pd.DataFrame:
    """Read a BUFR file with the reader for ``kind``.

    Parameters
    ----------
    kind : {"synop", "temp", "aircraft", "satellite"}
        Observation kind (case-insensitive).
    path : str or os.PathLike
        BUFR file.
    window : None or (start, end), optional
        Keep only reports (soundings: all their levels) with ``start < time <= end`` (UTC);
        see :func:`normalise_window`.
    engine : {"auto", "pdbufr", "eccodes"}, optional
        Decoding engine (see module docstring): ``"auto"`` the qualifier-aware walk vectorised
        over subsets (satellite: the fast eccodes path for files of compressed messages),
        ``"pdbufr"`` subset by subset (satellite: pdbufr), ``"eccodes"`` files of compressed
        messages only.

    Returns
    -------
    pandas.DataFrame
        Observation table of that kind (see :data:`COLUMNS`).

    Raises
    ------
    InputError
        Unknown ``kind`` (field ``'kind'``), or any error of the reader.
    ValueError
        Invalid ``window`` or ``engine``.
    """
    reader = READERS.get(str(kind).lower())
    if reader is None:
        raise InputError(path, "kind", f"one of {sorted(READERS)}", found=repr(kind))
    return reader(path, window, engine=engine)
