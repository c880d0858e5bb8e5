"""Reader for NOAA ISD station files in the Global Hourly CSV access format.

NCEI serves the Integrated Surface Database (ISD; Smith, Lott & Vose 2011,
BAMS 92, 704-708) as one CSV file per station and year
(https://www.ncei.noaa.gov/data/global-hourly/access/<year>/<station>.csv).
Every value is quoted; the columns used here are::

    STATION    USAF (6) + WBAN (5) identifier, e.g. "72503014732"
    DATE       UTC time, ISO 8601, e.g. "2020-01-01T00:51:00"
    LATITUDE   degrees north (missing: 99.999)
    LONGITUDE  degrees east (missing: 999.999)
    ELEVATION  station elevation, m above MSL (missing: 9999)
    REPORT_TYPE  e.g. "FM-12" (SYNOP), "FM-15" (METAR), "SOD  " (summary of day)
    WND        "ddd,q,t,ssss,q": direction (deg, missing 999), its quality
               code, type code, speed (tenths of m s-1, missing 9999), its
               quality code; e.g. "318,1,N,0061,1"
    TMP, DEW   "+tttt,q": air / dew-point temperature in tenths of degC
               (missing +9999) and a quality code; e.g. "+0123,1"
    SLP        "ppppp,q": sea-level pressure in tenths of hPa (missing 99999)
    MA1        optional: "aaaaa,q,ppppp,q": altimeter setting and station
               pressure in tenths of hPa (missing 99999)

The field definitions, missing-value codes and quality codes are those of
the *Federal Climate Complex Data Documentation for Integrated Surface Data*
(NCEI, ``isd-format-document.pdf``), mandatory data section (POS 61-105) and
additional data section MA1.

Quality codes
-------------
Codes 0/1/4/5/9 (passed checks) and the validator codes (A, C, I, M, P, R, U)
are accepted. Values flagged **2 (suspect), 3 (erroneous), 6 (suspect, NCEI
source) or 7 (erroneous, NCEI source) are set to NaN** (the choice here:
ISD's own checks already condemned them, and obscast's gross QC cannot see a
flag, only a value). The number of values removed per column is returned in
``table.attrs["isd_flagged"]`` and logged, so they are counted rather than
silently lost. A row whose every variable ends up NaN is kept; obscast's QC
quarantines it as ``all_missing``.

Summary rows (REPORT_TYPE ``SOD`` summary of day, ``SOM`` summary of month)
are not observations at one time and are dropped.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from obscast.components.errors import InputError
from obscast.components.obs.readers.bufr import COLUMNS, Window, normalise_longitude, normalise_window, wind_components

__all__ = ["ISD_COLUMNS", "ISD_REJECTED_QUALITY", "read_isd"]

LOG = logging.getLogger(__name__)

#: CSV columns obscast needs (MA1 and REPORT_TYPE are used when present).
ISD_COLUMNS: tuple[str, ...] = ("STATION", "DATE", "LATITUDE", "LONGITUDE", "ELEVATION", "WND", "TMP", "DEW", "SLP")
_OPTIONAL = ("REPORT_TYPE", "MA1")

#: ISD quality codes whose value is set to NaN (suspect or erroneous).
ISD_REJECTED_QUALITY: frozenset[str] = frozenset({"2", "3", "6", "7"})

_SUMMARY_REPORTS = frozenset({"SOD", "SOM"})

_KELVIN = 273.15


def _fields(path: str | os.PathLike[str], series: pd.Series, column: str, n: int) -> list[pd.Series]:
    """Split a comma-separated ISD field into ``n`` stripped string parts ("" where the cell is empty)."""
    text = series.fillna("").astype(str).str.strip()
    present = (text != "").to_numpy()
    bad = present & (text.str.count(",").to_numpy() != n - 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(path, column, f"{n} comma-separated parts", found=f"{text.iloc[row]!r} in data row {row + 1}")
    padded = text.where(present, "," * (n - 1))
    parts = padded.str.split(",", n=n - 1, expand=True, regex=False) if len(text) else None
    if parts is None:
        return [pd.Series([], dtype=object, index=text.index) for _ in range(n)]
    return [parts[i].str.strip() for i in range(n)]


def _number(path: str | os.PathLike[str], text: pd.Series, column: str, missing: float | None) -> np.ndarray:
    """Parse numbers; ``missing`` (the ISD missing code) and "" become NaN."""
    values = np.array(pd.to_numeric(text.where(text != ""), errors="coerce"), dtype=np.float64)
    bad = np.isnan(values) & (text != "").to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(path, column, "a number", found=f"{text.iloc[row]!r} in data row {row + 1}")
    if missing is not None:
        values[np.abs(values) == missing] = np.nan
    return values


def _flagged(quality: pd.Series, values: np.ndarray) -> np.ndarray:
    """True where a present value carries a rejected ISD quality code."""
    return quality.isin(ISD_REJECTED_QUALITY).to_numpy() & ~np.isnan(values)


def read_isd(path: str | os.PathLike[str], window: Window = None) -> pd.DataFrame:
    """Read a NOAA ISD Global Hourly CSV file into a SYNOP observation table.

    Parameters
    ----------
    path : str or os.PathLike
        CSV file in the Global Hourly access format (one or more stations,
        optionally gzip/bz2/zip/xz compressed, detected from the suffix).
    window : None or (start, end), optional
        Keep only rows with ``start < time <= end`` (UTC); see
        :func:`obscast.components.obs.readers.bufr.normalise_window`.

    Returns
    -------
    pandas.DataFrame
        Observation table with the columns of
        ``obscast.components.obs.readers.bufr.COLUMNS["synop"]``, shape (n_reports, 13),
        one row per report (summary rows dropped), sorted stably by time,
        fresh ``RangeIndex``:

        * ``time`` datetime64[ns], tz-naive UTC (``DATE``);
        * ``latitude``, ``longitude`` float64, degrees (longitude normalised to
          [-180, 180)); ``station_id`` str (``STATION``, leading zeros kept);
        * ``surface_altitude`` float64, m (``ELEVATION``);
        * ``air_temperature``, ``dew_point_temperature`` float32, K (tenths
          of degC / 10 + 273.15);
        * ``air_pressure_at_mean_sea_level`` float32, Pa (``SLP`` tenths of
          hPa x 10); ``surface_air_pressure`` float32, Pa (station pressure of
          ``MA1``, NaN when the file has no MA1);
        * ``wind_speed`` float32, m s-1 (tenths / 10); ``wind_from_direction``
          float32, degrees; calm (type code ``C``, or type ``9`` with speed 0)
          is speed 0 and direction 0 as in WMO code tables (BUFR 0 11 001);
          variable direction (type ``V``) is NaN;
        * ``eastward_wind``, ``northward_wind`` float32, m s-1, from
          :func:`obscast.components.obs.readers.bufr.wind_components`.

        Missing codes give NaN; values with quality codes 2, 3, 6, 7 give NaN
        too (module docstring). ``attrs["isd_flagged"]`` is a dict column ->
        number of values in the file (before the window filter) set to NaN
        for their quality code, 0 when none; ``attrs["source"]`` the path.

    Raises
    ------
    InputError
        File missing (field ``'file'``); not a CSV with a header (``'header'``);
        a column of :data:`ISD_COLUMNS` missing (field = the column); a
        malformed value (wrong number of comma-separated parts, or not a
        number; the message gives the data row); an unparseable ``DATE``.
    ValueError
        Invalid ``window``.
    """
    bounds = normalise_window(window)
    if not os.path.exists(path):
        raise InputError(path, "file", "an existing ISD Global Hourly CSV file", found="no such file")
    if not os.path.isfile(path):
        raise InputError(path, "file", "an existing ISD Global Hourly CSV file", found="not a regular file")
    try:
        header = pd.read_csv(path, nrows=0).columns
        header = [str(c).strip() for c in header]
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise InputError(path, "header", "a CSV header line (STATION, DATE, ...)", found=f"{type(exc).__name__}: {exc}") from exc
    for column in ISD_COLUMNS:
        if column not in header:
            raise InputError(
                path, column, "a column of the NOAA Global Hourly CSV format", found=f"absent; columns {header}"
            )
    usecols = [c for c in ISD_COLUMNS + _OPTIONAL if c in header]
    try:
        raw = pd.read_csv(
            path, usecols=lambda c: str(c).strip() in usecols, dtype=str, keep_default_na=False,
            na_values=[], skipinitialspace=False,
        )
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise InputError(path, "rows", "well-formed CSV rows", found=f"{type(exc).__name__}: {exc}") from exc
    raw.columns = [str(c).strip() for c in raw.columns]

    if "REPORT_TYPE" in raw.columns:
        raw = raw[~raw["REPORT_TYPE"].str.strip().isin(_SUMMARY_REPORTS)].reset_index(drop=True)

    dates = raw["DATE"].str.strip()
    time = pd.to_datetime(dates, format="ISO8601", errors="coerce", utc=True)
    bad = time.isna().to_numpy() & (dates != "").to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(path, "DATE", "an ISO 8601 UTC time", found=f"{dates.iloc[row]!r} in data row {row + 1}")
    time = time.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")

    lat = _number(path, raw["LATITUDE"].str.strip(), "LATITUDE", 99.999)
    lon = _number(path, raw["LONGITUDE"].str.strip(), "LONGITUDE", 999.999)
    elevation = _number(path, raw["ELEVATION"].str.strip(), "ELEVATION", 9999.0)

    flagged: dict[str, int] = {}

    def quality_checked(column: str, values: np.ndarray, quality: pd.Series) -> np.ndarray:
        mask = _flagged(quality, values)
        flagged[column] = flagged.get(column, 0) + int(mask.sum())
        return np.where(mask, np.nan, values)

    cols: dict[str, np.ndarray] = {
        "time": time,
        "latitude": np.round(lat, 9) + 0.0,
        "longitude": normalise_longitude(np.round(lon, 9)),
        "station_id": raw["STATION"].str.strip().to_numpy(dtype=object),
        "surface_altitude": elevation,
    }
    for column, key in (("air_temperature", "TMP"), ("dew_point_temperature", "DEW")):
        value, quality = _fields(path, raw[key], key, 2)
        celsius = _number(path, value, key, 9999.0) / 10.0
        cols[column] = quality_checked(column, celsius + _KELVIN, quality)
    value, quality = _fields(path, raw["SLP"], "SLP", 2)
    cols["air_pressure_at_mean_sea_level"] = quality_checked(
        "air_pressure_at_mean_sea_level", _number(path, value, "SLP", 99999.0) * 10.0, quality
    )
    if "MA1" in raw.columns:
        _, _, value, quality = _fields(path, raw["MA1"], "MA1", 4)
        cols["surface_air_pressure"] = quality_checked(
            "surface_air_pressure", _number(path, value, "MA1", 99999.0) * 10.0, quality
        )
    else:
        cols["surface_air_pressure"] = np.full(len(raw), np.nan)
        flagged["surface_air_pressure"] = 0

    direction, dir_quality, wind_type, speed, speed_quality = _fields(path, raw["WND"], "WND", 5)
    dir_values = quality_checked("wind_from_direction", _number(path, direction, "WND", 999.0), dir_quality)
    speed_values = quality_checked("wind_speed", _number(path, speed, "WND", 9999.0) / 10.0, speed_quality)
    # Calm: type C, or type 9 (missing) with a speed of 0 (ISD documentation of WND).
    calm = ((wind_type == "C").to_numpy()) | ((wind_type == "9").to_numpy() & (speed_values == 0.0))
    speed_values = np.where(calm, 0.0, speed_values)
    dir_values = np.where(calm, 0.0, dir_values)
    cols["wind_speed"], cols["wind_from_direction"] = speed_values, dir_values
    u, v = wind_components(speed_values, dir_values)
    cols["eastward_wind"], cols["northward_wind"] = u + 0.0, v + 0.0

    float32 = set(COLUMNS["synop"]) - {"time", "latitude", "longitude", "station_id", "surface_altitude"}
    table = pd.DataFrame(
        {c: (cols[c].astype(np.float32) if c in float32 else cols[c]) for c in COLUMNS["synop"]}
    )
    table["station_id"] = table["station_id"].astype(object)
    if bounds is not None:
        t = table["time"].to_numpy()
        table = table[(t > bounds[0]) & (t <= bounds[1])]
    table = table.sort_values("time", kind="stable").reset_index(drop=True)
    flagged_counts = {c: flagged.get(c, 0) for c in COLUMNS["synop"] if c in float32}
    table.attrs["isd_flagged"] = flagged_counts
    table.attrs["source"] = os.fspath(path)
    if any(flagged_counts.values()):
        LOG.info("%s: values set to NaN for ISD quality codes 2/3/6/7: %s", os.fspath(path),
                 {k: n for k, n in flagged_counts.items() if n})
    return table
