"""A small synthetic world shared by the verification and ensemble tests (no dinosaur, no store).

A smooth travelling wave plus noise on a 16 x 32 grid with two levels, 6-hourly, and SYNOP
reports of surface pressure and the lowest level at random stations, sampled from it by
bilinear interpolation with Gaussian errors; and a tiny model with perturbed weights, so its
outputs are not the zeros its output layers start at.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import xarray as xr
from obscast.components.data.interp import PointInterpolator
from obscast.components.model.assembly import build_model_args
from obscast.components.model.model import ObsCastModel

#: Network sizes of these tests.
SMALL = {"n_lat": 8, "n_lon": 16, "latent_channels": 8, "processor_hidden": 8, "n_blocks": 1, "decoder_hidden": 8, "encoder_hidden": 8}


def wave_world(n_times: int, n_stations: int, wind_error: float | None = None, seed: int = 0) -> tuple[xr.Dataset, pd.DataFrame]:
    """The truth and its SYNOP reports.

    Parameters
    ----------
    n_times : int
        6-hourly times from 2000-01-01.
    n_stations : int
        Stations at uniformly random positions between 80 S and 80 N.
    wind_error : float, optional
        Standard deviation (m s-1) of the reported wind components; None: exact winds.
    seed : int

    Returns
    -------
    truth : xarray.Dataset
        ``air_temperature`` (K), ``eastward_wind``, ``northward_wind`` (m s-1), ``geopotential``
        (m2 s-2) with dims (time, level, latitude, longitude), levels sigma 0.5 and 0.85, and
        ``surface_air_pressure`` (Pa) (time, latitude, longitude).
    reports : pandas.DataFrame
        One row per station and time: surface pressure (error 100 Pa), the lowest level's
        temperature (error 1 K) and wind.
    """
    rng = np.random.default_rng(seed)
    times = pd.date_range("2000-01-01", periods=n_times, freq="6h")
    lat = -90 + 180 / 16 * (np.arange(16) + 0.5)
    lon = np.arange(32) * 360 / 32
    phi, lam = np.deg2rad(lat)[:, None], np.deg2rad(lon)[None]
    k = np.arange(len(times))[:, None, None, None]
    wave = np.cos(phi) * np.cos(lam - 0.3 * k) + 0.3 * rng.normal(size=(len(times), 2, 16, 32))
    dims4, dims3 = ("time", "level", "latitude", "longitude"), ("time", "latitude", "longitude")
    truth = xr.Dataset(
        {
            "air_temperature": (dims4, 260 + 20 * np.cos(phi) + 5 * wave),
            "eastward_wind": (dims4, 10 * wave),
            "northward_wind": (dims4, 5 * np.roll(wave, 3, axis=-1)),
            "geopotential": (dims4, 5e4 + 2e3 * wave),
            "surface_air_pressure": (dims3, 1e5 + 1e3 * wave[:, 1]),
        },
        coords={"time": times, "level": np.array([0.5, 0.85]), "latitude": lat, "longitude": lon},
    )
    slat, slon = rng.uniform(-80, 80, n_stations), rng.uniform(-180, 180, n_stations)
    at = PointInterpolator(lat, lon, slat, slon)
    rows = []
    for i, t in enumerate(times):
        snap = truth.isel(time=i)
        row = {
            "time": t, "latitude": slat, "longitude": slon, "station_id": [f"{j:05d}" for j in range(n_stations)],
            "surface_air_pressure": at(snap["surface_air_pressure"].values) + rng.normal(0, 100, n_stations),
            "air_temperature": at(snap["air_temperature"].values[1]) + rng.normal(0, 1, n_stations),
            "eastward_wind": at(snap["eastward_wind"].values[1]),
            "northward_wind": at(snap["northward_wind"].values[1]),
        }
        if wind_error is not None:
            row["eastward_wind"] = row["eastward_wind"] + rng.normal(0, wind_error, n_stations)
            row["northward_wind"] = row["northward_wind"] + rng.normal(0, wind_error, n_stations)
        rows.append(pd.DataFrame(row))
    return truth, pd.concat(rows, ignore_index=True)


def perturbed_model(statistics: dict, station_channels: list[str], **kwargs) -> ObsCastModel:
    """A :data:`SMALL` model (``kwargs`` passed to ``build_model_args``) whose weights, all but
    the kernel lengthscales, are perturbed by 0.1 N(0, 1) with a fixed seed; in eval mode."""
    torch.manual_seed(0)
    model = ObsCastModel(**build_model_args(statistics, station_channels, **kwargs, **SMALL))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lengthscale" not in name:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()
