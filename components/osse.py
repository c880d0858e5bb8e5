"""Observing-system simulation: synthetic observations from a nature run, as BUFR.

An observing-system simulation experiment (OSSE) replaces real observations by
*simulated* ones: the "truth" is a model run (the nature run of
:mod:`components.nature`), sampled where and when real instruments report
(:mod:`components.networks`), plus random errors of known statistics.
:func:`simulate_observations` makes observation tables of exactly the layout of
:mod:`components.readers.bufr` (:data:`~components.readers.bufr.COLUMNS`), and
:func:`write_bufr` encodes them as BUFR edition 4 that the readers (and pdbufr)
read back.

Sampling (what each kind observes)
----------------------------------
All kinds interpolate horizontally *bilinearly* between the four surrounding
grid points (longitude periodic; poleward of the outermost Gaussian latitude
the outermost row is used), first horizontally, then vertically. Vertical
interpolation is linear in log pressure between the output sigma levels
``level`` with ``p = sigma * p_s`` (at a fixed column this is linear in
``log sigma``); nothing is extrapolated above the top or below the bottom
output level. Geopotential is interpolated the same way (it is nearly linear
in log p, hypsometric equation) and reported as geopotential height
``Phi / g0`` (:func:`components.variables.geopotential_to_height`).

``synop``
    Every station of the network at every nature time: ``surface_air_pressure``
    from the nature run's ``p_s``, *ignoring the station altitude* (the nature
    run has a flat surface: ``surface_altitude`` is reported as the real
    station altitude but ``p_s`` is that of a sea-level surface), and
    ``air_temperature``, wind from the *lowest output sigma level* (sigma 0.85,
    about 1.3 km above the flat surface, standing in for 2 m / 10 m values).
    ``wind_speed``/``wind_from_direction`` are derived from the noisy ``u, v``.
``temp``
    Every site at the nature times of 00 and 12 UTC: a profile at the standard
    pressure levels :data:`STANDARD_LEVELS_PA` (1000 ... 100 hPa) that lie
    between the top and the bottom output level at that point
    (``sigma_top * p_s <= p <= sigma_bottom * p_s``): ``air_temperature``,
    wind, ``geopotential_height``; ``pressure`` [Pa] is the level. A sounding
    is one report.
``aircraft``
    The real tracks replayed once per day: flight number ``k`` (the k-th
    distinct flight of ``aircraft_tracks.csv``, the reports without a flight
    number counting as one flight) keeps its original time of day (the sample
    starts at 12 UTC) shifted by ``6 h * (k mod 4)`` (:data:`AIRCRAFT_SHIFT`),
    so each synoptic window gets about a quarter of the flights. Positions,
    heights/pressures and flight numbers come from the track; the pressure of a
    height report is that of the ICAO standard atmosphere
    (:func:`encoders.setconv.pressure_from_height`). The *nature time nearest
    to the report time* is sampled (no temporal interpolation; times in
    ``[t - 3 h, t + 3 h)`` use nature time ``t``). Reports outside the output
    levels are not observable and dropped (counted in
    :attr:`SimulatedObservations.unobservable`): with the default levels
    0.25..0.85 and p_s near 1000 hPa, the 20 % of the track reports above
    250 hPa (cruise) and the 19 % below 850 hPa (climb, descent). Like the
    real table, ``pressure`` is NaN for height reports.
``satellite``
    HIRS-like brightness temperatures along a sun-synchronous orbit: the real
    one-orbit fields of view (``hirs_footprints.csv``, Metop-A, first scan
    line 2018-11-22 11:48:54.396 UTC, :data:`ORBIT_EPOCH`) are replayed every
    :data:`ORBIT_PERIOD` (101.2 min, Kepler period of Metop's 817 km
    circular orbit: ``2 pi sqrt(a^3 / GM)``, a = 6378 + 817 km,
    GM = 3.986004e14 m3 s-2), orbit ``k`` starting at
    ``ORBIT_EPOCH + k * ORBIT_PERIOD`` and shifted westward by the Earth's
    rotation in ``k`` periods, ``k *`` :data:`ORBIT_SHIFT_DEG` with
    ORBIT_SHIFT_DEG = 360 deg * period / 1 day = 25.3 deg (so the ground
    track at a given UTC time of day is the same on every day, as for a
    sun-synchronous orbit; report times are rounded to whole seconds, the
    precision of BUFR element 0 04 006). The real orbit dump
    covers 98.9 min, so about 2 min per orbit have no data. Only every
    ``stride``-th field of view of the orbit is used, stride chosen so that at
    most ``satellite_rows_per_day`` rows are made per day. Each field of view
    gives one row per channel; channel ``c`` (1 = top) has weights
    :func:`brightness_weights` (Gaussian in log sigma centred on output level
    ``c``, width :data:`CHANNEL_WIDTH`, normalised to sum 1) and its
    brightness temperature is the weighted mean of the air temperature of
    the column (a linearised radiative transfer with fixed weighting
    functions, no surface or humidity contribution). Nature time as for
    aircraft. ``station_id`` is ``"metop-a"``.

Error model (:class:`ErrorModel`)
---------------------------------
Observation = truth + Gaussian noise, independent per row and variable, with
standard deviations of :class:`ErrorModel` (wind: each component). Gross
errors: per row and per *error variable* of the kind (synop: surface pressure,
temperature, wind speed; temp: temperature, geopotential height, wind speed;
aircraft: temperature, wind speed; satellite: brightness temperature) with
probability ``gross_error_fraction`` the value is replaced by one *above its
gross limit* (:data:`components.variables.VARIABLES` ``valid_max``) by a
uniform ``U(lo, hi)`` of :data:`GROSS_OFFSETS` (e.g. temperature 360..400 K,
wind speed 160..200 m s-1 with the direction kept, so ``u, v`` follow), as a
garbled report would be, so :func:`components.qc.apply_qc` rejects every such
row as ``out_of_range:<column>`` and every value stays encodable in BUFR.
Missing reports: each report (SYNOP report, TEMP sounding, aircraft report,
satellite field of view with all its channels) is dropped entirely with
probability ``missing_fraction``.

Random numbers come from one generator per (seed, kind, nature time), so the
result for a nature time does not depend on the period simulated with it:
simulating day by day gives the same rows as simulating all days at once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import eccodes
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from components.readers.bufr import (
    COLUMNS,
    SATELLITE_NAMES,
    normalise_longitude,
    wind_components,
    wind_speed_direction,
)
from components.variables import G0, VARIABLES, geopotential_to_height

__all__ = [
    "AIRCRAFT_SHIFT",
    "BUFR_TEMPLATES",
    "CHANNEL_WIDTH",
    "ErrorModel",
    "GROSS_OFFSETS",
    "KINDS",
    "ORBIT_EPOCH",
    "ORBIT_PERIOD",
    "ORBIT_SHIFT_DEG",
    "PACKING_PRECISION",
    "STANDARD_LEVELS_PA",
    "SimulatedObservations",
    "brightness_weights",
    "simulate_observations",
    "write_bufr",
]

#: Observation kinds simulated, in this order.
KINDS: tuple[str, ...] = ("synop", "temp", "aircraft", "satellite")

#: Standard isobaric surfaces of TEMP reports [Pa] (WMO-No. 306, FM 35 TEMP).
STANDARD_LEVELS_PA: tuple[float, ...] = (
    100000.0, 92500.0, 85000.0, 70000.0, 50000.0, 40000.0, 30000.0, 25000.0, 20000.0, 15000.0, 10000.0,
)

#: Hours (UTC) of the radiosonde launches.
TEMP_HOURS: tuple[int, ...] = (0, 12)

#: Aircraft: flight k is replayed shifted by ``AIRCRAFT_SHIFT * (k mod AIRCRAFT_SHIFTS)``.
AIRCRAFT_SHIFT = pd.Timedelta(hours=6)
AIRCRAFT_SHIFTS = 4
#: Time of day of the first report of the aircraft sample (2009-01-23 12:00 UTC).
AIRCRAFT_TIME_OF_DAY = pd.Timedelta(hours=12)

_EARTH_GM = 3.986004418e14  # m3 s-2, WGS 84 geocentric gravitational constant
_METOP_SEMI_MAJOR_AXIS = 6378137.0 + 817.0e3  # m: WGS 84 equatorial radius + Metop mean altitude
#: Orbit period of the replayed satellite (Kepler's third law for Metop), ~101.2 min.
ORBIT_PERIOD = pd.Timedelta(
    seconds=round(2.0 * math.pi * math.sqrt(_METOP_SEMI_MAJOR_AXIS**3 / _EARTH_GM), 3)
)
#: Westward shift of the ground track per orbit [degree]: Earth rotation (vs the Sun) in one period.
ORBIT_SHIFT_DEG: float = 360.0 * ORBIT_PERIOD.total_seconds() / 86400.0
#: Start of orbit 0 of the replay: the first scan line of the HIRS sample. Orbit k
#: starts at ``ORBIT_EPOCH + k * ORBIT_PERIOD`` (k may be negative), so any period
#: simulated sees the same orbits.
ORBIT_EPOCH = pd.Timestamp("2018-11-22 11:48:54.396")
#: ``station_id`` of the simulated satellite rows.
SATELLITE_ID = "metop-a"
#: Width (standard deviation in log sigma) of the channel weighting functions.
CHANNEL_WIDTH: float = 0.3

#: Gross-error replacement: ``VARIABLES[name].valid_max + U(lo, hi)``, in the variable's unit.
GROSS_OFFSETS: dict[str, tuple[float, float]] = {
    "surface_air_pressure": (1000.0, 5000.0),
    "air_temperature": (10.0, 50.0),
    "geopotential_height": (1000.0, 5000.0),
    "wind_speed": (10.0, 50.0),
    "brightness_temperature": (10.0, 50.0),
}

#: Error variables per kind, in draw order (see module docstring).
_ERROR_VARIABLES: dict[str, tuple[str, ...]] = {
    "synop": ("surface_air_pressure", "air_temperature", "wind_speed"),
    "temp": ("air_temperature", "geopotential_height", "wind_speed"),
    "aircraft": ("air_temperature", "wind_speed"),
    "satellite": ("brightness_temperature",),
}

_HALF = pd.Timedelta(hours=3)


class ErrorModel(BaseModel):
    """Random errors of the simulated observations (see module docstring).

    Attributes
    ----------
    air_temperature : float
        Noise standard deviation of air temperature, K (default 1.0).
    wind_component : float
        Noise standard deviation of each of ``u`` and ``v``, m s-1 (2.0).
    surface_air_pressure : float
        Noise standard deviation of surface pressure, Pa (100).
    geopotential_height : float
        Noise standard deviation of geopotential height, m (15).
    brightness_temperature : float
        Noise standard deviation of brightness temperature, K (0.5).
    gross_error_fraction : float
        Probability, per row and error variable, of a gross error (0.005).
    missing_fraction : float
        Probability that a whole report is missing (0.05).
    seed : int
        Seed of the random generators (results are deterministic given it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    air_temperature: float = Field(default=1.0, ge=0.0)
    wind_component: float = Field(default=2.0, ge=0.0)
    surface_air_pressure: float = Field(default=100.0, ge=0.0)
    geopotential_height: float = Field(default=15.0, ge=0.0)
    brightness_temperature: float = Field(default=0.5, ge=0.0)
    gross_error_fraction: float = Field(default=0.005, ge=0.0, le=1.0)
    missing_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    seed: int = 0

    def std(self, column: str) -> float:
        """Noise standard deviation for an observation-table column.

        Parameters
        ----------
        column : str
            ``air_temperature``, ``eastward_wind``, ``northward_wind`` (both
            give ``wind_component``), ``surface_air_pressure``,
            ``geopotential_height`` or ``brightness_temperature``.

        Returns
        -------
        float
            Standard deviation in the column's unit.

        Raises
        ------
        AttributeError
            Any other column.
        """
        if column in ("eastward_wind", "northward_wind"):
            return self.wind_component
        return float(getattr(self, column))


@dataclass
class SimulatedObservations(Mapping[str, pd.DataFrame]):
    """Result of :func:`simulate_observations`; a mapping kind -> observation table.

    Attributes
    ----------
    observations : dict of str to pandas.DataFrame
        Per kind, the observation table (columns :data:`COLUMNS` ``[kind]``,
        dtypes as the readers give, sorted stably by time, RangeIndex).
        Iterating/indexing the object gives these.
    truth : dict of str to pandas.DataFrame
        Same shape, columns and index: the noise-free values (coordinates
        equal; wind speed and direction from the true ``u, v``).
    gross : dict of str to pandas.DataFrame
        Same index, one bool column per error variable of the kind: True
        where a gross error was injected.
    reports : dict of str to int
        Reports that would be made without missing ones (TEMP: soundings;
        satellite: fields of view; aircraft: replayed reports).
    missing : dict of str to int
        Reports dropped as missing (a binomial draw of ``reports``).
    unobservable : dict of str to int
        Aircraft reports outside the nature run's levels (0 for the others).
    """

    observations: dict[str, pd.DataFrame]
    truth: dict[str, pd.DataFrame]
    gross: dict[str, pd.DataFrame]
    reports: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    unobservable: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, kind: str) -> pd.DataFrame:
        return self.observations[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self.observations)

    def __len__(self) -> int:
        return len(self.observations)


def brightness_weights(sigma: np.ndarray, width: float = CHANNEL_WIDTH) -> np.ndarray:
    """Weighting functions of the simulated satellite channels.

    Parameters
    ----------
    sigma : numpy.ndarray
        Output sigma levels, shape (n_levels,), ascending (top first).
    width : float
        Standard deviation of the Gaussian in ``log sigma``.

    Returns
    -------
    numpy.ndarray
        Shape (n_channels, n_levels) with n_channels = n_levels: row ``c``
        is ``exp(-0.5 ((log sigma_k - log sigma_c) / width)^2)`` normalised to
        sum 1, i.e. channel ``c + 1`` peaks at level ``c`` (channel 1 highest,
        like HIRS channel 1 in the stratosphere and 7 near the surface).
    """
    logs = np.log(np.asarray(sigma, dtype=np.float64))
    w = np.exp(-0.5 * ((logs[None, :] - logs[:, None]) / width) ** 2)
    return w / w.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------ sampling
@dataclass
class _Horizontal:
    """Bilinear weights of n points on a (latitude ascending, longitude regular periodic) grid."""

    j0: np.ndarray
    j1: np.ndarray
    i0: np.ndarray
    i1: np.ndarray
    wy: np.ndarray
    wx: np.ndarray

    @classmethod
    def at(cls, lat_grid: np.ndarray, lon_grid: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> _Horizontal:
        nlat, nlon = len(lat_grid), len(lon_grid)
        lat = np.clip(lat, lat_grid[0], lat_grid[-1])
        j1 = np.clip(np.searchsorted(lat_grid, lat, side="right"), 1, nlat - 1)
        j0 = j1 - 1
        wy = (lat - lat_grid[j0]) / (lat_grid[j1] - lat_grid[j0])
        x = np.mod(lon - lon_grid[0], 360.0) / (360.0 / nlon)
        i0 = np.floor(x).astype(np.int64) % nlon
        return cls(j0, j1, i0, (i0 + 1) % nlon, wy, x - np.floor(x))

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Interpolate ``values`` (..., lat, lon) to the points: shape (..., n)."""
        f = values
        return (
            f[..., self.j0, self.i0] * (1 - self.wy) * (1 - self.wx)
            + f[..., self.j0, self.i1] * (1 - self.wy) * self.wx
            + f[..., self.j1, self.i0] * self.wy * (1 - self.wx)
            + f[..., self.j1, self.i1] * self.wy * self.wx
        )


def _vertical(columns: np.ndarray, log_sigma: np.ndarray, log_target: np.ndarray) -> np.ndarray:
    """Linear interpolation in log sigma of columns (n_levels, n) to targets (n,); NaN outside."""
    k = np.clip(np.searchsorted(log_sigma, log_target, side="right") - 1, 0, len(log_sigma) - 2)
    w = (log_target - log_sigma[k]) / (log_sigma[k + 1] - log_sigma[k])
    idx = np.arange(columns.shape[1])
    out = columns[k, idx] * (1 - w) + columns[k + 1, idx] * w
    eps = 1e-12
    inside = (log_target >= log_sigma[0] - eps) & (log_target <= log_sigma[-1] + eps)
    return np.where(inside, out, np.nan)


class _Nature:
    """The nature run, one snapshot (time index) at a time."""

    def __init__(self, ds: Any) -> None:
        for name in ("air_temperature", "eastward_wind", "northward_wind", "geopotential", "surface_air_pressure"):
            if name not in ds.data_vars:
                raise ValueError(f"nature dataset lacks {name!r}")
        self.ds = ds
        self.times = pd.DatetimeIndex(ds["time"].values)
        if len(self.times) > 1 and not (np.diff(self.times.asi8) == np.diff(self.times.asi8)[0]).all():
            raise ValueError("nature times must be regularly spaced")
        self.step = self.times[1] - self.times[0] if len(self.times) > 1 else pd.Timedelta(hours=6)
        self.sigma = np.asarray(ds["level"].values, dtype=np.float64)
        if not (np.all(np.diff(self.sigma) > 0) and len(self.sigma) >= 2):
            raise ValueError("nature 'level' must hold at least two ascending sigma values")
        self.log_sigma = np.log(self.sigma)
        self.lat = np.asarray(ds["latitude"].values, dtype=np.float64)
        self.lon = np.asarray(ds["longitude"].values, dtype=np.float64)
        if not np.all(np.diff(self.lat) > 0):
            raise ValueError("nature latitudes must be ascending")
        dlon = np.diff(self.lon)
        if not np.allclose(dlon, 360.0 / len(self.lon)):
            raise ValueError("nature longitudes must be regular and cover [0, 360)")
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None

    def fields(self, t: int) -> dict[str, np.ndarray]:
        """Fields at time index t as float64: 3-D (level, lat, lon), ``surface_air_pressure`` 2-D."""
        if self._cache is None or self._cache[0] != t:
            snap = self.ds.isel(time=t)
            self._cache = (t, {name: np.asarray(snap[name].values, dtype=np.float64) for name in (
                "air_temperature", "eastward_wind", "northward_wind", "geopotential", "surface_air_pressure")})
        return self._cache[1]

    def nearest(self, times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
        """Index of the nature time t with ``t - 3 h <= time < t + 3 h`` (may lie outside the run)."""
        offset = (pd.DatetimeIndex(times) - self.times[0] + self.step / 2) // self.step
        return np.asarray(offset, dtype=np.int64)


def _period(nature: _Nature, start: Any, end: Any) -> np.ndarray:
    """Indices of the nature times in [start, end]."""
    t = nature.times
    lo = t[0] if start is None else pd.Timestamp(start)
    hi = t[-1] if end is None else pd.Timestamp(end)
    for b in (lo, hi):
        if b.tzinfo is not None:
            raise ValueError("start/end must be naive UTC times")
    if lo > hi:
        raise ValueError(f"start {lo} is after end {hi}")
    idx = np.flatnonzero((t >= lo) & (t <= hi))
    if idx.size == 0:
        raise ValueError(f"no nature time in [{lo}, {hi}] (nature run {t[0]} .. {t[-1]})")
    return idx


# ---------------------------------------------------------------- designs
def _design_synop(net: pd.DataFrame, nature: _Nature, t: int) -> pd.DataFrame:
    n = len(net)
    return pd.DataFrame({
        "time": np.full(n, nature.times[t].to_datetime64()),
        "latitude": net["latitude"].to_numpy(np.float64),
        "longitude": net["longitude"].to_numpy(np.float64),
        "station_id": net["station_id"].to_numpy(dtype=object),
        "surface_altitude": net["altitude"].to_numpy(np.float64),
        "_report": np.arange(n),
    })


def _design_temp(net: pd.DataFrame, nature: _Nature, t: int) -> pd.DataFrame:
    if nature.times[t].hour not in TEMP_HOURS or nature.times[t].minute != 0:
        return pd.DataFrame()
    n_sites, n_lev = len(net), len(STANDARD_LEVELS_PA)
    return pd.DataFrame({
        "time": np.full(n_sites * n_lev, nature.times[t].to_datetime64()),
        "latitude": np.repeat(net["latitude"].to_numpy(np.float64), n_lev),
        "longitude": np.repeat(net["longitude"].to_numpy(np.float64), n_lev),
        "station_id": np.repeat(net["station_id"].to_numpy(dtype=object), n_lev),
        "pressure": np.tile(np.asarray(STANDARD_LEVELS_PA), n_sites),
    })


def _aircraft_replay(net: pd.DataFrame, nature: _Nature, periods: np.ndarray) -> pd.DataFrame:
    """All replayed aircraft reports whose nearest nature time is in ``periods``."""
    flights = pd.Index(pd.unique(net["flight"].to_numpy(dtype=object)))
    shift = (flights.get_indexer(net["flight"].to_numpy(dtype=object)) % AIRCRAFT_SHIFTS) * AIRCRAFT_SHIFT
    base = pd.to_timedelta(net["time_offset"].to_numpy(np.float64), unit="s") + AIRCRAFT_TIME_OF_DAY + shift
    first = (nature.times[periods[0]] - _HALF).floor("D") - pd.Timedelta(days=1)
    last = nature.times[periods[-1]] + _HALF
    parts = []
    day = first
    while day <= last:
        times = (day + base).round("s")
        idx = nature.nearest(times)
        keep = np.isin(idx, periods)
        if keep.any():
            parts.append(pd.DataFrame({
                "time": np.asarray(times[keep], dtype="datetime64[ns]"),
                "latitude": net["latitude"].to_numpy(np.float64)[keep],
                "longitude": net["longitude"].to_numpy(np.float64)[keep],
                "station_id": net["flight"].to_numpy(dtype=object)[keep],
                "pressure": net["pressure"].to_numpy(np.float64)[keep],
                "height": net["height"].to_numpy(np.float64)[keep],
                "_t": idx[keep],
            }))
        day += pd.Timedelta(days=1)
    if not parts:
        return pd.DataFrame(columns=["time", "latitude", "longitude", "station_id", "pressure", "height", "_t"])
    return pd.concat(parts, ignore_index=True)


def _satellite_replay(net: pd.DataFrame, nature: _Nature, periods: np.ndarray, stride: int) -> pd.DataFrame:
    """Fields of view of the replayed orbits whose nearest nature time is in ``periods``."""
    fov = net.iloc[::stride]
    offset = pd.to_timedelta(fov["time_offset"].to_numpy(np.float64), unit="s")
    lat0 = fov["latitude"].to_numpy(np.float64)
    lon0 = fov["longitude"].to_numpy(np.float64)
    lo = nature.times[periods[0]] - _HALF
    hi = nature.times[periods[-1]] + _HALF
    k_first = int(np.floor((lo - ORBIT_EPOCH) / ORBIT_PERIOD)) - 1
    k_last = int(np.ceil((hi - ORBIT_EPOCH) / ORBIT_PERIOD)) + 1
    parts = []
    for k in range(k_first, k_last + 1):
        times = (ORBIT_EPOCH + k * ORBIT_PERIOD + offset).round("s")
        idx = nature.nearest(times)
        keep = np.isin(idx, periods)
        if keep.any():
            shift = np.mod(k * ORBIT_SHIFT_DEG, 360.0)
            lon = np.round(normalise_longitude(lon0[keep] - shift), 5)  # BUFR precision
            parts.append(pd.DataFrame({
                "time": np.asarray(times[keep], dtype="datetime64[ns]"),
                "latitude": lat0[keep],
                "longitude": np.where(lon >= 180.0, lon - 360.0, lon) + 0.0,
                "_t": idx[keep],
            }))
    if not parts:
        return pd.DataFrame(columns=["time", "latitude", "longitude", "_t"])
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------- errors
def _rng(seed: int, kind: str, t: int) -> np.random.Generator:
    return np.random.default_rng([seed, KINDS.index(kind), t])


def _gross_value(rng: np.random.Generator, name: str, n: int) -> np.ndarray:
    lo, hi = GROSS_OFFSETS[name]
    return VARIABLES[name].valid_max + rng.uniform(lo, hi, n)


def _observe(kind: str, truth: dict[str, np.ndarray], em: ErrorModel, rng: np.random.Generator
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Noisy values and gross flags of one group; ``truth`` holds the observed variables."""
    n = len(next(iter(truth.values())))
    obs: dict[str, np.ndarray] = {}
    for name in ("surface_air_pressure", "air_temperature", "geopotential_height",
                 "eastward_wind", "northward_wind", "brightness_temperature"):
        if name in truth:
            obs[name] = truth[name] + rng.normal(0.0, em.std(name), n)
    if "eastward_wind" in obs:
        obs["wind_speed"], obs["wind_from_direction"] = wind_speed_direction(
            obs["eastward_wind"], obs["northward_wind"])
    gross: dict[str, np.ndarray] = {}
    for name in _ERROR_VARIABLES[kind]:
        flag = rng.random(n) < em.gross_error_fraction
        value = _gross_value(rng, name, n)
        gross[name] = flag
        obs[name] = np.where(flag, value, obs[name])
    if "wind_speed" in gross:
        u, v = wind_components(obs["wind_speed"], obs["wind_from_direction"])
        hit = gross["wind_speed"]
        obs["eastward_wind"] = np.where(hit, u, obs["eastward_wind"])
        obs["northward_wind"] = np.where(hit, v, obs["northward_wind"])
    return obs, gross


def _drop_missing(
    design: pd.DataFrame, em: ErrorModel, rng: np.random.Generator, report: str
) -> tuple[pd.DataFrame, int, int]:
    """Drop whole reports (rows sharing ``design[report]``); returns (kept, n_reports, n_missing)."""
    reports = pd.unique(design[report].to_numpy())
    missing = reports[rng.random(len(reports)) < em.missing_fraction]
    keep = ~np.isin(design[report].to_numpy(), missing)
    return design[keep].reset_index(drop=True), len(reports), len(missing)


# ------------------------------------------------------------ per kind
def _sample_levels(nature: _Nature, f: dict[str, np.ndarray], h: _Horizontal, pressure: np.ndarray
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """T, u, v, geopotential at the points' pressures; and p_s. NaN outside the levels."""
    ps = h(f["surface_air_pressure"])
    log_target = np.log(pressure / ps)
    out = {name: _vertical(h(f[name]), nature.log_sigma, log_target)
           for name in ("air_temperature", "eastward_wind", "northward_wind", "geopotential")}
    return out, ps


def _truth_group(
    kind: str, design: pd.DataFrame, nature: _Nature, t: int
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Truth of the observed variables for a group's design rows (rows may be dropped)."""
    f = nature.fields(t)
    h = _Horizontal.at(nature.lat, nature.lon, design["latitude"].to_numpy(), design["longitude"].to_numpy())
    if kind == "synop":
        bottom = -1  # lowest output sigma level
        truth = {
            "surface_air_pressure": h(f["surface_air_pressure"]),
            "air_temperature": h(f["air_temperature"][bottom]),
            "eastward_wind": h(f["eastward_wind"][bottom]),
            "northward_wind": h(f["northward_wind"][bottom]),
        }
        return design, truth
    if kind == "satellite":
        weights = brightness_weights(nature.sigma)
        column = h(f["air_temperature"])  # (n_levels, n)
        bt = weights @ column  # (n_channels, n)
        n_ch = len(weights)
        rows = design.loc[design.index.repeat(n_ch)].reset_index(drop=True)
        rows["channel"] = np.tile(np.arange(1, n_ch + 1, dtype=np.int64), len(design))
        return rows, {"brightness_temperature": bt.T.reshape(-1)}
    if kind == "temp":
        pressure = design["pressure"].to_numpy(np.float64)
    else:  # aircraft: pressure, or ISA pressure of the height
        from encoders.setconv import pressure_from_height  # lazy: imports torch

        pressure = design["pressure"].to_numpy(np.float64).copy()
        height = design["height"].to_numpy(np.float64)
        use_height = np.isnan(pressure)
        if use_height.any():
            pressure[use_height] = pressure_from_height(height[use_height]).double().numpy()
    sampled, _ = _sample_levels(nature, f, h, pressure)
    ok = ~np.isnan(sampled["air_temperature"])
    truth = {
        "air_temperature": sampled["air_temperature"][ok],
        "eastward_wind": sampled["eastward_wind"][ok],
        "northward_wind": sampled["northward_wind"][ok],
    }
    if kind == "temp":
        truth["geopotential_height"] = geopotential_to_height(sampled["geopotential"][ok])
    return design[ok].reset_index(drop=True), truth


def _table(kind: str, design: pd.DataFrame, values: dict[str, np.ndarray]) -> pd.DataFrame:
    """An observation table of ``kind`` (COLUMNS order, reader dtypes) from design + values."""
    n = len(design)
    cols: dict[str, Any] = {
        "time": design["time"].to_numpy(dtype="datetime64[ns]"),
        "latitude": np.round(design["latitude"].to_numpy(np.float64), 5) + 0.0,
        "longitude": np.round(normalise_longitude(design["longitude"].to_numpy(np.float64)), 5) + 0.0,
        "station_id": design["station_id"].to_numpy(dtype=object) if "station_id" in design
        else np.full(n, SATELLITE_ID, dtype=object),
    }
    cols["longitude"] = np.where(cols["longitude"] >= 180.0, cols["longitude"] - 360.0, cols["longitude"])
    for name in COLUMNS[kind][4:]:
        if name == "surface_altitude":
            cols[name] = design[name].to_numpy(np.float64)
        elif name == "channel":
            cols[name] = design[name].to_numpy(np.int64)
        elif name in ("pressure", "height"):
            cols[name] = design[name].to_numpy(np.float64).astype(np.float32)
        else:
            cols[name] = np.asarray(values.get(name, np.full(n, np.nan)), dtype=np.float64).astype(np.float32)
    table = pd.DataFrame({c: cols[c] for c in COLUMNS[kind]})
    table["station_id"] = table["station_id"].astype(object)
    return table


def simulate_observations(
    nature: Any,
    networks: Mapping[str, pd.DataFrame],
    error_model: ErrorModel | None = None,
    start: Any = None,
    end: Any = None,
    *,
    kinds: tuple[str, ...] = KINDS,
    satellite_rows_per_day: int = 20000,
) -> SimulatedObservations:
    """Simulate SYNOP, TEMP, aircraft and satellite observations from a nature run.

    Parameters
    ----------
    nature : xarray.Dataset
        Nature run as written by :func:`components.nature.run_nature`:
        ``air_temperature`` [K], ``eastward_wind``, ``northward_wind`` [m s-1],
        ``geopotential`` [m2 s-2] of shape (time, level, latitude, longitude)
        and ``surface_air_pressure`` [Pa] (time, latitude, longitude);
        ``level`` sigma ascending (>= 2 levels), latitude ascending, longitude
        regular in [0, 360), time regular. Read lazily, one time at a time.
    networks : mapping of str to pandas.DataFrame
        As returned by :func:`components.networks.load_networks` (only the
        networks of ``kinds`` are needed).
    error_model : ErrorModel, optional
        Errors and seed (default ``ErrorModel()``).
    start, end : time-like, optional
        Simulated period: the nature times in ``[start, end]`` (default the
        whole run). Aircraft and satellite reports are those whose nearest
        nature time is in it, i.e. times in ``[t_first - 3 h, t_last + 3 h)``
        (so consecutive periods tile without gap or overlap).
    kinds : tuple of str, optional
        Kinds to simulate (default all of :data:`KINDS`).
    satellite_rows_per_day : int, optional
        Upper bound of satellite rows per day before missing reports; the
        orbit's fields of view are thinned to every ``stride``-th one with
        ``stride = ceil(orbits_per_day * n_fov * n_channels / satellite_rows_per_day)``.

    Returns
    -------
    SimulatedObservations
        Mapping kind -> observation table (columns
        :data:`components.readers.bufr.COLUMNS` ``[kind]``, dtypes as the
        readers give, longitudes in [-180, 180) and positions rounded to
        1e-5 degree, sorted stably by time), with ``truth``, ``gross``,
        ``reports``, ``missing`` and ``unobservable`` (see the class).

    Raises
    ------
    ValueError
        Unknown kind; nature dataset without a needed variable or with an
        irregular grid/time axis; empty or inverted period; aircraft network
        without ``pressure``/``height``.
    KeyError
        A needed network is missing from ``networks``.

    Notes
    -----
    See the module docstring for what each kind observes and for the error
    model. Deterministic given ``error_model.seed``: one random generator per
    (seed, kind, nature time).
    """
    em = error_model or ErrorModel()
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected some of {KINDS}")
    nat = _Nature(nature)
    periods = _period(nat, start, end)

    # design rows per (kind, nature time index)
    groups: dict[str, dict[int, pd.DataFrame]] = {k: {} for k in kinds}
    if "synop" in kinds:
        for t in periods:
            groups["synop"][t] = _design_synop(networks["synop"], nat, t)
    if "temp" in kinds:
        for t in periods:
            d = _design_temp(networks["temp"], nat, t)
            if len(d):
                groups["temp"][t] = d
    if "aircraft" in kinds:
        replay = _aircraft_replay(networks["aircraft"], nat, periods)
        replay["_report"] = np.arange(len(replay))
        for t, d in replay.groupby("_t", sort=True):
            groups["aircraft"][int(t)] = d.drop(columns="_t").reset_index(drop=True)
    if "satellite" in kinds:
        net = networks["satellite"]
        n_ch = len(nat.sigma)
        orbits_per_day = 86400.0 / ORBIT_PERIOD.total_seconds()
        stride = max(1, math.ceil(orbits_per_day * len(net) * n_ch / satellite_rows_per_day))
        replay = _satellite_replay(net, nat, periods, stride)
        replay["_report"] = np.arange(len(replay))
        for t, d in replay.groupby("_t", sort=True):
            groups["satellite"][int(t)] = d.drop(columns="_t").reset_index(drop=True)

    result = SimulatedObservations({}, {}, {})
    for kind in kinds:
        obs_parts, truth_parts, gross_parts = [], [], []
        n_reports = n_missing = n_unobservable = 0
        for t in sorted(groups[kind]):
            rng = _rng(em.seed, kind, int(t))
            report = "_report" if kind != "temp" else "station_id"
            design, n_rep, n_mis = _drop_missing(groups[kind][t], em, rng, report)
            n_reports += n_rep
            n_missing += n_mis
            if not len(design):
                continue
            n_design = len(design)
            design, truth = _truth_group(kind, design, nat, int(t))
            if kind == "aircraft":
                n_unobservable += n_design - len(design)
            if not len(design):
                continue
            obs, gross = _observe(kind, truth, em, rng)
            if "eastward_wind" in truth:
                truth["wind_speed"], truth["wind_from_direction"] = wind_speed_direction(
                    truth["eastward_wind"], truth["northward_wind"])
            obs_parts.append(_table(kind, design, obs))
            truth_parts.append(_table(kind, design, truth))
            gross_parts.append(pd.DataFrame(gross))
        if obs_parts:
            obs_all = pd.concat(obs_parts, ignore_index=True)
            truth_all = pd.concat(truth_parts, ignore_index=True)
            gross_all = pd.concat(gross_parts, ignore_index=True)
        else:
            empty = pd.DataFrame({c: [] for c in (
                "time", "latitude", "longitude", "station_id", "surface_altitude", "pressure", "height", "channel")})
            obs_all = _table(kind, empty, {})
            truth_all = obs_all.copy()
            gross_all = pd.DataFrame({name: np.zeros(0, dtype=bool) for name in _ERROR_VARIABLES[kind]})
        order = np.argsort(obs_all["time"].to_numpy(), kind="stable")
        result.observations[kind] = obs_all.iloc[order].reset_index(drop=True)
        result.truth[kind] = truth_all.iloc[order].reset_index(drop=True)
        result.gross[kind] = gross_all.iloc[order].reset_index(drop=True)
        result.reports[kind] = n_reports
        result.missing[kind] = n_missing
        result.unobservable[kind] = n_unobservable
    return result


# -------------------------------------------------------------------- BUFR
#: BUFR edition-4 templates (unexpanded descriptors, WMO Table B/D of master
#: table version 24) and section-1 data category per kind. One subset per
#: table row, no replication (a TEMP level and a satellite channel are one
#: subset each), so compressed multi-subset messages need no per-subset
#: structure:
#: 0 01 001/0 01 002 WMO block/station number; 0 01 006 aircraft flight
#: number; 0 01 007 satellite identifier (Common Code Table C-5); 3 01 011
#: year, month, day; 3 01 012 hour, minute; 3 01 013 hour, minute, second;
#: 3 01 021 latitude/longitude (high accuracy); 0 07 030 station altitude;
#: 0 10 004 station pressure (``nonCoordinatePressure``); 0 12 004 2 m
#: temperature (``airTemperatureAt2M``); 0 11 011/0 11 012 10 m wind
#: direction/speed; 0 07 004 pressure; 0 07 002 height; 0 12 101
#: temperature; 0 10 008 geopotential (``nonCoordinateGeopotential``);
#: 0 11 001/0 11 002 wind direction/speed; 0 05 042 channel number; 0 12 163
#: brightness temperature.
BUFR_TEMPLATES: dict[str, tuple[int, ...]] = {
    "synop": (1001, 1002, 301011, 301012, 301021, 7030, 10004, 12004, 11011, 11012),
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
        "airTemperatureAt2M": ("air_temperature", 1.0),
        "windDirectionAt10M": ("wind_from_direction", 1.0),
        "windSpeedAt10M": ("wind_speed", 1.0),
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
              "air_temperature": 0.1, "wind_from_direction": 1.0, "wind_speed": 0.1},
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


def _satellite_codes(ids: np.ndarray) -> np.ndarray:
    out = []
    for s in ids:
        if s in _SATELLITE_CODES:
            out.append(_SATELLITE_CODES[s])
        elif str(s).isdigit():
            out.append(int(s))
        else:
            raise ValueError(f"unknown satellite {s!r}; expected one of {sorted(_SATELLITE_CODES)} or a C-5 code")
    return np.asarray(out, dtype=np.int64)


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
        ids = rows["station_id"].to_numpy(dtype=object)
        if kind in ("synop", "temp"):
            block, station = _station_numbers(ids)
            eccodes.codes_set_long_array(h, "blockNumber", block)
            eccodes.codes_set_long_array(h, "stationNumber", station)
        elif kind == "aircraft":
            eccodes.codes_set_string_array(h, "aircraftFlightNumber", [str(s) for s in ids])
        else:
            eccodes.codes_set_long_array(h, "satelliteIdentifier", _satellite_codes(ids))
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
        :data:`components.readers.bufr.COLUMNS`; only those of
        :data:`BUFR_TEMPLATES` are written: SYNOP dew point and MSLP, and
        ``eastward_wind``/``northward_wind`` of every kind, are not; the
        readers derive ``u, v`` from speed and direction). NaN is encoded as
        BUFR missing. ``station_id`` must be a WMO number (SYNOP, TEMP), a
        flight number of at most 8 characters (aircraft) or a satellite name
        of :data:`components.readers.bufr.SATELLITE_NAMES` (or a C-5 code).
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
    file back with :func:`components.readers.bufr.read_observations` gives the
    rows in the table's (time-sorted) order. Packing precision per column:
    :data:`PACKING_PRECISION` (values are rounded to the nearest multiple);
    times are encoded to the minute (SYNOP, TEMP: 3 01 012) or second
    (aircraft, satellite: 3 01 013).
    """
    if kind not in BUFR_TEMPLATES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(BUFR_TEMPLATES)}")
    needed = ["time", "latitude", "longitude", "station_id"] + [c for c, _ in _ELEMENTS[kind].values()]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"{kind} table lacks column(s) {missing}")
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
                    f.write(_encode(rows.iloc[c:min(b, c + max_subsets)], kind))
                    n_messages += 1
    return n_messages
