"""Observing-system simulation: synthetic observations from a nature run, as BUFR.

An observing-system simulation experiment (OSSE) replaces real observations by
*simulated* ones: the "truth" is a model run (the nature run of
:mod:`obscast.components.osse.nature`), sampled where and when real instruments report
(:mod:`obscast.components.osse.networks`), plus random errors of known statistics.
:func:`simulate_observations` makes observation tables of exactly the layout of
:mod:`obscast.components.obs.readers.bufr` (:data:`~obscast.components.obs.readers.bufr.COLUMNS`), and
:func:`obscast.components.obs.bufr_writer.write_bufr` encodes them as BUFR edition 4 that
the readers (and pdbufr) read back.

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
``Phi / g0`` (:func:`obscast.components.obs.variables.geopotential_to_height`).

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
    (:func:`obscast.encoders.setconv.pressure_from_height`). The *nature time nearest
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
``amv`` (only when asked for in ``kinds``)
    Satellite winds of five geostationary imagers at every nature time, ``u, v`` at the
    target's pressure: see :mod:`obscast.components.osse.amv`.

Error model (:class:`ErrorModel`)
---------------------------------
Observation = truth + Gaussian noise, independent per row and variable, with
standard deviations of :class:`ErrorModel` (wind: each component). Gross
errors: per row and per *error variable* of the kind (synop: surface pressure,
temperature, wind speed; temp: temperature, geopotential height, wind speed;
aircraft: temperature, wind speed; satellite: brightness temperature) with
probability ``gross_error_fraction`` the value is replaced by one *above its
gross limit* (:data:`obscast.components.obs.variables.VARIABLES` ``valid_max``) by a
uniform ``U(lo, hi)`` of :data:`GROSS_OFFSETS` (e.g. temperature 360..400 K,
wind speed 160..200 m s-1 with the direction kept, so ``u, v`` follow), as a
garbled report would be, so :func:`obscast.components.obs.qc.apply_qc` rejects every such
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from obscast.components.obs.conversions import normalise_longitude, wind_speed_direction
from obscast.components.obs.readers.bufr import COLUMNS
from obscast.components.obs.variables import geopotential_to_height
from obscast.components.osse.amv import AMV_KIND, amv_table, design_amv, truth_amv
from obscast.components.osse.errors import _ERROR_VARIABLES, GROSS_OFFSETS, KINDS, ErrorModel, _drop_missing, _observe, _rng
from obscast.components.osse.operators import CHANNEL_WIDTH, _Horizontal, _Nature, _period, _vertical, brightness_weights

__all__ = [
    "AIRCRAFT_SHIFT",
    "CHANNEL_WIDTH",
    "ErrorModel",
    "GROSS_OFFSETS",
    "KINDS",
    "ORBIT_EPOCH",
    "ORBIT_PERIOD",
    "ORBIT_SHIFT_DEG",
    "STANDARD_LEVELS_PA",
    "SimulatedObservations",
    "brightness_weights",
    "footprint_stride",
    "simulate_observations",
]


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

#: Half the spacing of the nature times: a report at ``t`` is sampled from the nearest nature time.
_HALF = pd.Timedelta(hours=3)


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


def footprint_stride(n_footprints: int, n_channels: int, satellite_rows_per_day: int = 20000) -> int:
    """Stride of the replayed fields of view: every ``stride``-th one of the orbit is used.

    ``stride = max(1, ceil(orbits_per_day * n_footprints * n_channels / satellite_rows_per_day))``
    with ``orbits_per_day = 1 day /`` :data:`ORBIT_PERIOD`, so that at most
    ``satellite_rows_per_day`` satellite rows are made per day (before missing reports).
    """
    orbits_per_day = 86400.0 / ORBIT_PERIOD.total_seconds()
    return max(1, math.ceil(orbits_per_day * n_footprints * n_channels / satellite_rows_per_day))


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
    if kind == AMV_KIND:
        return truth_amv(design, nature, t)
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
        from obscast.encoders.setconv import pressure_from_height  # lazy: imports torch

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
    if kind == AMV_KIND:
        return amv_table(design, values)
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
    satellite_stride: int | None = None,
) -> SimulatedObservations:
    """Simulate SYNOP, TEMP, aircraft and satellite observations from a nature run.

    Parameters
    ----------
    nature : xarray.Dataset
        Nature run as written by :func:`obscast.components.osse.nature.run_nature`:
        ``air_temperature`` [K], ``eastward_wind``, ``northward_wind`` [m s-1],
        ``geopotential`` [m2 s-2] of shape (time, level, latitude, longitude)
        and ``surface_air_pressure`` [Pa] (time, latitude, longitude);
        ``level`` sigma ascending (>= 2 levels), latitude ascending, longitude
        regular in [0, 360), time regular. Read lazily, one time at a time.
    networks : mapping of str to pandas.DataFrame
        As returned by :func:`obscast.components.osse.networks.load_networks` (only the
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
    satellite_stride : int, optional
        Use this stride instead of the one from ``satellite_rows_per_day`` (the network probes of
        :mod:`obscast.components.osse.probes` keep the unmoved network's stride, so that a thinned
        footprint list gives fewer rows instead of a finer stride).

    Returns
    -------
    SimulatedObservations
        Mapping kind -> observation table (columns
        :data:`obscast.components.obs.readers.bufr.COLUMNS` ``[kind]``, dtypes as the
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
        if kind not in KINDS + (AMV_KIND,):
            raise ValueError(f"unknown kind {kind!r}; expected some of {KINDS + (AMV_KIND,)}")
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
        stride = satellite_stride or footprint_stride(len(net), n_ch, satellite_rows_per_day)
        replay = _satellite_replay(net, nat, periods, stride)
        replay["_report"] = np.arange(len(replay))
        for t, d in replay.groupby("_t", sort=True):
            groups["satellite"][int(t)] = d.drop(columns="_t").reset_index(drop=True)
    if AMV_KIND in kinds:  # satellite winds: components/osse/amv.py
        for t in periods:
            groups[AMV_KIND][t] = design_amv(networks[AMV_KIND], nat, t)

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
            if kind in ("aircraft", AMV_KIND):
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
