"""Simulated satellite winds (atmospheric motion vectors, AMV) for the OSSE, and their BUFR.

Geometry
--------
A geostationary imager derives winds over its disc, out to about 60 degrees great-circle
distance from the sub-satellite point (beyond it the viewing angle is too oblique). The targets
are the points of a Fibonacci lattice on the sphere (:data:`LATTICE_POINTS` points, ~460 km
apart, Gonzalez 2010, "Measurement of areas on a sphere using Fibonacci and latitude-longitude
lattices", Math. Geosci. 42, 49-64) within :data:`DISC_RADIUS_DEG` of the sub-satellite point,
stored as latitude and longitude *relative to* it. Each target takes the pressure, wind
computation method (code table 0 02 023) and channel centre frequency of one AMV of the real
sample ``data/samples/amv2_87.bufr`` (EUMETSAT Meteosat-9 water-vapour winds, 2012-11-02
00:30 UTC, 915 vectors, see ``data/samples/SOURCES.md``), in a fixed random order: the heights
real winds are assigned to (mostly 230-400 hPa, the tracked cloud tops and water-vapour
features). :func:`extract_amv_targets` wrote them once to ``data/networks/amv_targets.csv``; no
measured wind is kept.

Simulation
----------
At every nature time each geostationary satellite of :data:`AMV_SATELLITES` (sub-satellite
longitudes of today's operational imagers) reports the targets shifted to its sub-satellite
longitude, so every AMV lies within the ~60 degree great-circle distance of a geostationary
disc where winds are derived. The observed wind is the nature run's ``u, v`` interpolated
horizontally (bilinear) and vertically (linear in log pressure between the output sigma levels)
to the target's pressure, like an aircraft report; targets above the top or below the bottom
output level are unobservable and dropped (counted). Errors as for every wind: Gaussian noise
of ``error_model.wind_component`` per component, gross wind-speed errors and missing reports
(:mod:`obscast.components.osse.errors`). With the default output levels (sigma 0.25-0.85) about
a quarter of the targets lie above the top level; some 420 AMVs per satellite and nature time
remain, ~2,100 per 6-hour window: about the size of the TEMP and aircraft feeds together.

BUFR
----
:func:`write_amv_bufr` writes BUFR edition 4, data category 005 (single level upper-air data
from satellites), compressed, one subset per AMV, template :data:`AMV_TEMPLATE`; the AMV reader
(:func:`obscast.components.obs.readers.amv.read_amv`) reads it back. The quality indicator is
not simulated (no 0 33 007 element: ``quality_indicator`` reads back as NaN).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import eccodes
import numpy as np
import pandas as pd
from obscast.components.obs.bufr_writer import satellite_codes, write_messages
from obscast.components.obs.conversions import normalise_longitude
from obscast.components.obs.readers.amv import (
    AMV_COLUMNS,
    AMV_SATELLITE_NAMES,
    read_amv,
)
from obscast.components.osse.operators import _Horizontal, _Nature, _vertical

__all__ = [
    "AMV_KIND",
    "AMV_PACKING_PRECISION",
    "AMV_SATELLITES",
    "AMV_TARGETS_FILE",
    "AMV_TEMPLATE",
    "DISC_RADIUS_DEG",
    "LATTICE_POINTS",
    "amv_table",
    "design_amv",
    "extract_amv_targets",
    "fibonacci_lattice",
    "has_amv_source",
    "load_amv_targets",
    "truth_amv",
    "write_amv_bufr",
]

#: Observation kind of satellite winds.
AMV_KIND = "amv"
#: File of the AMV targets in the networks directory.
AMV_TARGETS_FILE = "amv_targets.csv"
#: Points of the global Fibonacci lattice the targets are taken from (~460 km apart).
LATTICE_POINTS = 2400
#: Great-circle distance [degree] from the sub-satellite point within which winds are derived.
DISC_RADIUS_DEG = 60.0
#: Simulated geostationary imagers: name (``station_id``) -> sub-satellite longitude [degree east]
#: (EUMETSAT 0-degree and Indian Ocean services, JMA, NOAA GOES-East and GOES-West).
AMV_SATELLITES: dict[str, float] = {
    "meteosat-11": 0.0,
    "meteosat-9": 45.5,
    "himawari-9": 140.7,
    "goes-18": -137.2,
    "goes-16": -75.2,
}

#: BUFR edition-4 template: 0 01 007 satellite identifier, 0 02 023 wind computation method,
#: 3 01 011 year/month/day, 3 01 013 hour/minute/second, 3 01 021 latitude/longitude (high
#: accuracy), 0 07 004 pressure, 0 02 153 channel centre frequency, 0 11 001 wind direction,
#: 0 11 002 wind speed.
AMV_TEMPLATE: tuple[int, ...] = (1007, 2023, 301011, 301013, 301021, 7004, 2153, 11001, 11002)

#: Packing precision of the template per column (Table B scales).
AMV_PACKING_PRECISION: dict[str, float] = {
    "latitude": 1e-5, "longitude": 1e-5, "pressure": 10.0, "satellite_channel_centre_frequency": 1e8,
    "wind_from_direction": 1.0, "wind_speed": 0.1,
}

_TARGET_COLUMNS = ("latitude", "longitude_offset", "pressure", "wind_computation_method",
                   "satellite_channel_centre_frequency")
_SATELLITE_CODES = {name: code for code, name in AMV_SATELLITE_NAMES.items()}
_HALF = pd.Timedelta(hours=3)


def has_amv_source(sources: Mapping[str, Any]) -> bool:
    """Whether a configuration's ``sources`` include satellite winds (a source of kind ``"amv"``),
    i.e. whether the OSSE's simulate stage simulates them.

    Parameters
    ----------
    sources : mapping of str to SourceConfig
        ``Config.sources`` (any objects with a ``kind`` attribute).
    """
    return any(getattr(s, "kind", None) == AMV_KIND for s in sources.values())


def fibonacci_lattice(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` nearly evenly spaced points on the sphere (Fibonacci lattice, Gonzalez 2010).

    Returns
    -------
    latitude, longitude : numpy.ndarray
        Shape (n,), degrees; longitude in [-180, 180). Point ``i`` has
        ``sin(lat) = (2 i + 1) / n - 1`` and ``lon = 360 i / phi`` (mod 360), ``phi`` the golden
        ratio.
    """
    i = np.arange(n, dtype=np.float64)
    lat = np.rad2deg(np.arcsin((2.0 * i + 1.0) / n - 1.0))
    golden = (1.0 + 5.0**0.5) / 2.0
    lon = np.mod(360.0 * i / golden + 180.0, 360.0) - 180.0
    return lat, lon


def extract_amv_targets(sample: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Write the AMV targets to ``<out_dir>/amv_targets.csv`` (see the module docstring).

    Parameters
    ----------
    sample : str or os.PathLike
        Real AMV BUFR file whose pressures, methods and frequencies the targets take (the
        repository's ``data/samples/amv2_87.bufr``).
    out_dir : str or os.PathLike
        Directory for the CSV file (created if needed).

    Returns
    -------
    pathlib.Path
        The file written: one row per lattice point within :data:`DISC_RADIUS_DEG` of
        (0 N, 0 E), columns ``latitude`` [degree], ``longitude_offset`` [degree east of the
        sub-satellite point, in [-180, 180)], ``pressure`` [Pa], ``wind_computation_method``
        (code table 0 02 023), ``satellite_channel_centre_frequency`` [Hz]; positions rounded
        to 1e-5 degree. Target ``k`` takes the values of sample row ``order[k mod n]`` with
        ``order`` a permutation of the sample's rows with a pressure (numpy seed 0).

    Raises
    ------
    obscast.components.errors.InputError
        The sample cannot be read (see :func:`read_amv`).
    """
    t = read_amv(sample)
    t = t[t["pressure"].notna()].reset_index(drop=True)
    lat, lon = fibonacci_lattice(LATTICE_POINTS)
    distance = np.rad2deg(np.arccos(np.clip(np.cos(np.deg2rad(lat)) * np.cos(np.deg2rad(lon)), -1.0, 1.0)))
    disc = distance <= DISC_RADIUS_DEG
    order = np.random.default_rng(0).permutation(len(t))
    pick = order[np.arange(int(disc.sum())) % len(t)]
    out = pd.DataFrame({
        "latitude": lat[disc].round(5),
        "longitude_offset": lon[disc].round(5),
        "pressure": t["pressure"].to_numpy(np.float64)[pick],
        "wind_computation_method": t["wind_computation_method"].to_numpy(np.int64)[pick],
        "satellite_channel_centre_frequency": t["satellite_channel_centre_frequency"].to_numpy(np.float64)[pick],
    })
    path = Path(out_dir) / AMV_TARGETS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False, float_format="%.10g")
    return path


def load_amv_targets(dir: str | os.PathLike[str]) -> pd.DataFrame:  # noqa: A002
    """Read ``amv_targets.csv`` (see :func:`extract_amv_targets` for the columns).

    Returns
    -------
    pandas.DataFrame
        Shape (n_targets, 5); ``wind_computation_method`` int64, the rest float64.

    Raises
    ------
    FileNotFoundError
        The file is missing.
    ValueError
        A column is missing.
    """
    path = Path(dir) / AMV_TARGETS_FILE
    table = pd.read_csv(path)
    missing = [c for c in _TARGET_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    table = table[list(_TARGET_COLUMNS)].astype(np.float64)
    table["wind_computation_method"] = table["wind_computation_method"].astype(np.int64)
    return table


def design_amv(targets: pd.DataFrame, nature: _Nature, t: int) -> pd.DataFrame:
    """Design rows of one nature time: every target seen by every satellite of :data:`AMV_SATELLITES`.

    Parameters
    ----------
    targets : pandas.DataFrame
        From :func:`load_amv_targets`, shape (n_targets, 5).
    nature : _Nature
        The nature run (its time axis).
    t : int
        Index of the nature time; every row gets that time.

    Returns
    -------
    pandas.DataFrame
        (n_satellites * n_targets) rows: ``time``, ``latitude``, ``longitude`` (in
        [-180, 180)), ``station_id`` (satellite name), ``pressure`` [Pa], the two metadata
        columns and ``_report`` (one report per row).
    """
    n_sat, n = len(AMV_SATELLITES), len(targets)
    lon = np.concatenate([targets["longitude_offset"].to_numpy(np.float64) + sub for sub in AMV_SATELLITES.values()])
    lon = np.round(normalise_longitude(lon), 5)
    return pd.DataFrame({
        "time": np.full(n_sat * n, nature.times[t].to_datetime64()),
        "latitude": np.tile(targets["latitude"].to_numpy(np.float64), n_sat),
        "longitude": np.where(lon >= 180.0, lon - 360.0, lon) + 0.0,
        "station_id": np.repeat(np.asarray(list(AMV_SATELLITES), dtype=object), n),
        "pressure": np.tile(targets["pressure"].to_numpy(np.float64), n_sat),
        "wind_computation_method": np.tile(targets["wind_computation_method"].to_numpy(np.int64), n_sat),
        "satellite_channel_centre_frequency": np.tile(targets["satellite_channel_centre_frequency"].to_numpy(np.float64), n_sat),
        "_report": np.arange(n_sat * n),
    })


def truth_amv(design: pd.DataFrame, nature: _Nature, t: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """True ``u, v`` at the design rows' positions and pressures; unobservable rows dropped.

    Parameters
    ----------
    design : pandas.DataFrame
        From :func:`design_amv`, shape (n, 8).
    nature : _Nature
        The nature run: ``u, v`` (level, latitude, longitude) and ``p_s`` of time ``t``.
    t : int
        Index of the nature time.

    Returns
    -------
    design : pandas.DataFrame
        The rows inside the output levels (``sigma_top * p_s <= p <= sigma_bottom * p_s``).
    truth : dict
        ``eastward_wind``, ``northward_wind`` [m s-1], shape (n_kept,).
    """
    f = nature.fields(t)
    h = _Horizontal.at(nature.lat, nature.lon, design["latitude"].to_numpy(), design["longitude"].to_numpy())
    log_target = np.log(design["pressure"].to_numpy(np.float64) / h(f["surface_air_pressure"]))
    u = _vertical(h(f["eastward_wind"]), nature.log_sigma, log_target)
    v = _vertical(h(f["northward_wind"]), nature.log_sigma, log_target)
    ok = ~np.isnan(u)
    return design[ok].reset_index(drop=True), {"eastward_wind": u[ok], "northward_wind": v[ok]}


def amv_table(design: pd.DataFrame, values: dict[str, np.ndarray]) -> pd.DataFrame:
    """An AMV observation table from design rows and values.

    Parameters
    ----------
    design : pandas.DataFrame
        Design rows (columns of :func:`design_amv`; absent ones become NaN or -1), shape (n, k).
    values : dict of str to numpy.ndarray
        Observed or true ``wind_speed``, ``wind_from_direction``, ``eastward_wind``,
        ``northward_wind``, each (n,); absent ones NaN.

    Returns
    -------
    pandas.DataFrame
        Shape (n, 12), columns :data:`AMV_COLUMNS` with the dtypes of :func:`read_amv`;
        positions rounded to 1e-5 degree, ``quality_indicator`` NaN.
    """
    n = len(design)

    def column(name: str, dtype: Any, fill: Any) -> np.ndarray:
        return design[name].to_numpy(dtype) if name in design else np.full(n, fill, dtype=dtype)

    lon = np.round(normalise_longitude(column("longitude", np.float64, np.nan)), 5)
    cols: dict[str, Any] = {
        "time": column("time", "datetime64[ns]", np.datetime64("NaT")),
        "latitude": np.round(column("latitude", np.float64, np.nan), 5) + 0.0,
        "longitude": np.where(lon >= 180.0, lon - 360.0, lon) + 0.0,
        "station_id": column("station_id", object, ""),
        "pressure": column("pressure", np.float64, np.nan).astype(np.float32),
        "satellite_channel_centre_frequency": column("satellite_channel_centre_frequency", np.float64, np.nan),
        "wind_computation_method": column("wind_computation_method", np.int64, -1),
        "quality_indicator": np.full(n, np.nan, dtype=np.float32),
    }
    for name in ("wind_speed", "wind_from_direction", "eastward_wind", "northward_wind"):
        cols[name] = np.asarray(values.get(name, np.full(n, np.nan)), dtype=np.float64).astype(np.float32)
    table = pd.DataFrame({c: cols[c] for c in AMV_COLUMNS})
    table["station_id"] = table["station_id"].astype(object)
    return table


def _long(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return np.where(np.isnan(v), eccodes.CODES_MISSING_LONG, np.round(np.nan_to_num(v))).astype(np.int64)


def _double(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return np.where(np.isnan(v), eccodes.CODES_MISSING_DOUBLE, v)


def _encode(rows: pd.DataFrame, compressed: bool = True) -> bytes:
    """One BUFR4 message, one subset per row."""
    time = pd.DatetimeIndex(rows["time"])
    h = eccodes.codes_bufr_new_from_samples("BUFR4")
    try:
        first = time.min()
        for key, value in (
            ("bufrHeaderCentre", 255), ("dataCategory", 5), ("internationalDataSubCategory", 255),
            ("dataSubCategory", 255), ("typicalYear", first.year), ("typicalMonth", first.month),
            ("typicalDay", first.day), ("typicalHour", first.hour), ("typicalMinute", first.minute),
            ("typicalSecond", first.second), ("numberOfSubsets", len(rows)), ("observedData", 1),
            ("compressedData", int(compressed)),
        ):
            eccodes.codes_set(h, key, value)
        eccodes.codes_set_array(h, "unexpandedDescriptors", list(AMV_TEMPLATE))
        eccodes.codes_set_long_array(h, "satelliteIdentifier", satellite_codes(rows["station_id"].to_numpy(dtype=object), _SATELLITE_CODES))
        method = rows["wind_computation_method"].to_numpy(np.float64)
        eccodes.codes_set_long_array(h, "satelliteDerivedWindComputationMethod", _long(np.where(method < 0, np.nan, method)))
        for key, value in (("year", time.year), ("month", time.month), ("day", time.day),
                           ("hour", time.hour), ("minute", time.minute), ("second", time.second)):
            eccodes.codes_set_long_array(h, key, np.asarray(value, dtype=np.int64))
        for key, col in (("latitude", "latitude"), ("longitude", "longitude"), ("pressure", "pressure"),
                         ("satelliteChannelCentreFrequency", "satellite_channel_centre_frequency"),
                         ("windDirection", "wind_from_direction"), ("windSpeed", "wind_speed")):
            eccodes.codes_set_double_array(h, key, _double(rows[col].to_numpy(np.float64, na_value=np.nan)))
        eccodes.codes_set(h, "pack", 1)
        return eccodes.codes_get_message(h)
    finally:
        eccodes.codes_release(h)


def write_amv_bufr(table: pd.DataFrame, path: str | os.PathLike[str], *, max_subsets: int = 10000,
                   compressed: bool = True) -> int:
    """Write an AMV observation table as compressed BUFR edition 4 (template :data:`AMV_TEMPLATE`).

    Parameters
    ----------
    table : pandas.DataFrame
        Columns of :data:`obscast.components.obs.readers.amv.AMV_COLUMNS` (``eastward_wind``,
        ``northward_wind`` and ``quality_indicator`` are not written; the reader derives
        ``u, v`` from speed and direction). NaN (and method -1) are written as BUFR missing.
        ``station_id`` a satellite name of :data:`AMV_SATELLITE_NAMES` or a C-5 code.
    path : str or os.PathLike
        Output file (overwritten).
    max_subsets : int, optional
        Largest number of subsets per message.
    compressed : bool, optional
        Compressed messages (BUFR Regulation 94.6.3, the default) or one data section per subset.

    Returns
    -------
    int
        Messages written: one per 6-hourly slot (rows grouped by the 6-hourly time nearest to
        ``time``), split into chunks of at most ``max_subsets`` rows.

    Raises
    ------
    ValueError
        Missing column, NaT time, unknown satellite, ``max_subsets`` outside 1..65535.

    Notes
    -----
    Rows are written in a stable sort by time, so :func:`read_amv` gives them back in the
    table's order; values are rounded to :data:`AMV_PACKING_PRECISION`.
    """
    needed = ["time", "latitude", "longitude", "station_id", "pressure", "satellite_channel_centre_frequency",
              "wind_computation_method", "wind_speed", "wind_from_direction"]
    return write_messages(table, needed, path, lambda rows: _encode(rows, compressed), max_subsets, "amv")
