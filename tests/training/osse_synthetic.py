"""A tiny synthetic OSSE (no dinosaur, no store) for the Lightning trainer's tests and benchmark.

The "nature run" is a sum of a few travelling waves on a (level, latitude, longitude) grid,
every 6 h; the observation tables follow the schema of :mod:`obscast.components.osse.simulate`
(SYNOP at fixed stations, aircraft at one level, satellite channels = temperature per level),
sampled from the truth by bilinear interpolation with Gaussian noise, as the sampler of
``tests/training/test_obs_training.py`` does. Building it takes well under a second.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from obscast.components.data.fields import interpolate_points, point_weights
from obscast.components.data.obs import ObsWindowDataset, split_times
from obscast.components.data.statistics import fit_statistics

#: Network sizes of the tests (as ``SMALL`` in tests/training/test_obs_training.py).
SMALL = {"n_lat": 16, "n_lon": 32, "latent_channels": 16, "processor_hidden": 16, "n_blocks": 1, "decoder_hidden": 16, "encoder_hidden": 16}


def synthetic_nature(days: float = 6.0, n_lat: int = 16, n_lon: int = 32, seed: int = 0) -> xr.Dataset:
    """Smooth travelling-wave fields on 4 sigma levels, 6-hourly from 2000-01-01.

    Returns
    -------
    xarray.Dataset
        ``air_temperature`` (K), ``eastward_wind``, ``northward_wind`` (m s-1), ``geopotential``
        (m2 s-2) with dims (time, level, latitude, longitude) and ``surface_air_pressure`` (Pa)
        with dims (time, latitude, longitude).
    """
    rng = np.random.default_rng(seed)
    times = pd.date_range("2000-01-01", periods=int(days * 4) + 1, freq="6h")
    lat = np.linspace(87.0, -87.0, n_lat)
    lon = np.arange(n_lon) * 360.0 / n_lon
    level = np.array([0.2, 0.45, 0.7, 0.95])
    t_h = (times - times[0]) / pd.Timedelta(hours=1)
    la, lo = np.deg2rad(lat)[:, None], np.deg2rad(lon)[None, :]

    def field(mean: float, amp: float, lev: float) -> np.ndarray:
        out = np.zeros((len(times), n_lat, n_lon))
        for k in (1, 2, 3):
            phase, speed, m = rng.uniform(0, 2 * np.pi), rng.uniform(-0.05, 0.05), rng.uniform(0.5, 1.5)
            for it, h in enumerate(t_h):
                out[it] += amp / k * m * np.cos(la) ** 2 * np.cos(k * lo + phase + speed * h * (1 + lev)) * np.sin(2 * la + lev)
        return (mean + out).astype(np.float32)

    data = {
        name: (("time", "level", "latitude", "longitude"), np.stack([field(mu + off * s, amp, s) for s in level], axis=1))
        for name, mu, off, amp in [
            ("air_temperature", 220.0, 60.0, 10.0), ("eastward_wind", 5.0, 5.0, 15.0),
            ("northward_wind", 0.0, 0.0, 8.0), ("geopotential", 9.0e4, -8.0e4, 2.0e3),
        ]
    }
    data["surface_air_pressure"] = (("time", "latitude", "longitude"), field(1.0e5, 1.5e3, 1.0))
    return xr.Dataset(data, coords={"time": times, "level": level, "latitude": lat, "longitude": lon})


def synthetic_tables(
    nature: xr.Dataset, seed: int = 0, n_synop: int = 120, n_temp: int = 0, n_satellite: int = 80,
    aircraft_box: tuple[tuple[float, float], tuple[float, float]] = ((30.0, 60.0), (-30.0, 30.0)),
) -> dict[str, pd.DataFrame]:
    """Observation tables sampled from ``nature`` with Gaussian noise, in the schema of the readers.

    SYNOP: surface pressure and T, u, v at the lowest level at ``n_synop`` random stations;
    TEMP (when ``n_temp`` > 0): profiles at every level at 00 and 12 UTC, pressure = sigma * p_s;
    aircraft: 20 reports per time at 9 km in ``aircraft_box`` ((lat range), (lon range)), 2 h
    before; satellite: ``n_satellite`` footprints per time, channel c = T at level c, 1 h before.
    """
    rng = np.random.default_rng(seed)
    lat, lon = nature["latitude"].values, nature["longitude"].values
    lowest = int(np.argmax(nature["level"].values))
    syn_lat, syn_lon = rng.uniform(-60, 80, n_synop), rng.uniform(-180, 180, n_synop)
    if n_temp:
        tmp_lat, tmp_lon = rng.uniform(-60, 80, n_temp), rng.uniform(-180, 180, n_temp)
    rows: dict[str, list[pd.DataFrame]] = {"synop": [], **({"temp": []} if n_temp else {}), "aircraft": [], "satellite": []}
    for it, t in enumerate(pd.DatetimeIndex(nature["time"].values)):
        snap = nature.isel(time=it)

        def at(name, la, lo, lev=None, snap=snap):
            v = snap[name].values if lev is None else snap[name].values[lev]
            return interpolate_points(v.astype(np.float32), *point_weights(lat, lon, la, lo))

        n = n_synop
        rows["synop"].append(pd.DataFrame({
            "time": t, "latitude": syn_lat, "longitude": syn_lon, "station_id": [f"{i:05d}" for i in range(n)],
            "surface_altitude": 0.0, "wind_speed": 1.0,
            "surface_air_pressure": at("surface_air_pressure", syn_lat, syn_lon) + rng.normal(0, 100, n),
            "air_temperature": at("air_temperature", syn_lat, syn_lon, lowest) + rng.normal(0, 1, n),
            "eastward_wind": at("eastward_wind", syn_lat, syn_lon, lowest) + rng.normal(0, 2, n),
            "northward_wind": at("northward_wind", syn_lat, syn_lon, lowest) + rng.normal(0, 2, n),
        }))
        if n_temp and t.hour in (0, 12):
            ps_t = at("surface_air_pressure", tmp_lat, tmp_lon)
            for k, sigma in enumerate(nature["level"].values):
                rows["temp"].append(pd.DataFrame({
                    "time": t, "latitude": tmp_lat, "longitude": tmp_lon, "station_id": "T", "pressure": sigma * ps_t,
                    "air_temperature": at("air_temperature", tmp_lat, tmp_lon, k), "eastward_wind": at("eastward_wind", tmp_lat, tmp_lon, k),
                    "northward_wind": at("northward_wind", tmp_lat, tmp_lon, k),
                    "geopotential_height": at("geopotential", tmp_lat, tmp_lon, k) / 9.80665,
                }))
        (la0, la1), (lo0, lo1) = aircraft_box
        a_lat, a_lon = rng.uniform(la0, la1, 20), rng.uniform(lo0, lo1, 20)
        rows["aircraft"].append(pd.DataFrame({
            "time": t - pd.Timedelta(hours=2), "latitude": a_lat, "longitude": a_lon, "station_id": "A", "pressure": np.nan,
            "height": 9000.0, "air_temperature": at("air_temperature", a_lat, a_lon, 0),
            "eastward_wind": at("eastward_wind", a_lat, a_lon, 0), "northward_wind": at("northward_wind", a_lat, a_lon, 0),
        }))
        s_lat, s_lon = rng.uniform(-90, 90, n_satellite), rng.uniform(-180, 180, n_satellite)
        for c in range(len(nature["level"])):
            rows["satellite"].append(pd.DataFrame({
                "time": t - pd.Timedelta(hours=1), "latitude": s_lat, "longitude": s_lon, "station_id": "metop-a", "channel": c + 1,
                "brightness_temperature": (at("air_temperature", s_lat, s_lon, c) + rng.normal(0, 0.5, n_satellite)).astype(np.float32),
            }))
    return {k: pd.concat(v, ignore_index=True) for k, v in rows.items()}


def synthetic_osse(days: float = 6.0, n_steps: int = 2, history: int = 1, fractions=(0.7, 0.3), seed: int = 0):
    """Statistics and (train, validation) :class:`ObsWindowDataset` of a synthetic OSSE.

    Returns
    -------
    (statistics, train, validation)
    """
    nature = synthetic_nature(days, seed=seed)
    tables = synthetic_tables(nature, seed=seed)
    periods = split_times(nature["time"].values, fractions, n_steps=n_steps, history=history)
    stats = fit_statistics(tables, nature, periods[0]["times"])
    train = ObsWindowDataset(tables, nature, periods[0]["init_times"], stats, n_steps=n_steps, history=history)
    val = ObsWindowDataset(tables, nature, periods[1]["init_times"], stats, n_steps=n_steps, history=history)
    return stats, train, val
