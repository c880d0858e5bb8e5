"""Forecasts from a trained model: rollouts and their CF-conformant xarray products (Prefect-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from components.datasets import Normaliser
from components.registry import load_model_files, resolve_version
from components.storage import Store
from components.training import GRIDDED_SOURCE, OBS_VARIABLES, build_model
from components.variables import VARIABLES


@dataclass
class Forecaster:
    """A trained model with its normalisation and metadata.

    Attributes
    ----------
    model : processor.model.ObsCastModel
    normaliser : Normaliser
    metadata : dict
        The version's metadata.json.
    """

    model: Any
    normaliser: Normaliser
    metadata: dict[str, Any]

    @classmethod
    def load(cls, store: Store, name: str, version: str | None = None) -> "Forecaster":
        """Load a model version from the registry (the champion, else the newest, when ``version`` is None)."""
        state, meta = load_model_files(store, name, resolve_version(store, name, version))
        model = build_model(meta["model_args"])
        model.load_state_dict(state)
        model.eval()
        return cls(model, Normaliser.from_dict(meta["normaliser"]), meta)

    @property
    def channels(self) -> list[str]:
        return list(self.metadata["channels"])

    @property
    def step(self) -> pd.Timedelta:
        return pd.Timedelta(hours=self.metadata["step_hours"])

    @torch.no_grad()
    def predict(
        self,
        analysis: np.ndarray,
        n_steps: int,
        station_lat: np.ndarray | None = None,
        station_lon: np.ndarray | None = None,
        observations: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Roll the model out.

        Parameters
        ----------
        analysis : numpy.ndarray
            ``(batch, channel, lat, lon)`` gridded analysis at init time, physical units.
        n_steps : int
            Number of Δt steps; lead times are ``k·Δt``, k = 1..n_steps.
        station_lat, station_lon : numpy.ndarray, optional
            ``(point,)`` degrees: where the station decoder answers.
        observations : dict, optional
            Per observation source, an encoder batch (see :func:`obs_batch`).

        Returns
        -------
        (grid, stations)
            ``grid`` ``(batch, n_steps, channel, lat, lon)`` and ``stations``
            ``(batch, n_steps, point, channel)`` (None without points), physical units.
        """
        x = torch.as_tensor(self.normaliser.normalise(analysis.astype("float32")))
        inputs: dict[str, Any] = {GRIDDED_SOURCE: x, **(observations or {})}
        points = None
        if station_lat is not None:
            b = x.shape[0]
            points = (
                torch.as_tensor(np.array(station_lat), dtype=torch.float32).expand(b, -1),
                torch.as_tensor(np.array(station_lon), dtype=torch.float32).expand(b, -1),
            )
        out = self.model(inputs, n_steps=n_steps, station_points=points)
        grid = self.normaliser.denormalise(out["grid"]).numpy()
        stations = None
        if points is not None:
            stations = self.normaliser.denormalise(out["stations"], channel_axis=-1).numpy()
        return grid, stations


def obs_batch(table: pd.DataFrame, kind: str, normaliser: dict[str, tuple[float, float]] | None = None) -> dict[str, torch.Tensor] | None:
    """An encoder batch (batch of one) from an observation table, or None when it is empty.

    Returns
    -------
    dict
        ``latitude``, ``longitude`` ``(1, N)`` degrees, ``values`` ``(1, N, V)`` (NaN where
        missing) standardised with ``normaliser`` (variable -> (mean, std)) when given, and for
        profile sources ``pressure`` / ``height`` ``(1, N)`` (Pa, m).
    """
    if table is None or len(table) == 0:
        return None
    variables = OBS_VARIABLES[kind]
    values = table[variables].to_numpy("float32")
    if normaliser:
        mean = np.array([normaliser[v][0] for v in variables], "float32")
        std = np.array([normaliser[v][1] for v in variables], "float32")
        values = (values - mean) / std
    batch = {
        "latitude": torch.as_tensor(table["latitude"].to_numpy("float32"))[None],
        "longitude": torch.as_tensor(table["longitude"].to_numpy("float32"))[None],
        "values": torch.as_tensor(values)[None],
    }
    for coord in ("pressure", "height"):
        if coord in table:
            batch[coord] = torch.as_tensor(table[coord].to_numpy("float32"))[None]
    return batch


def split_channels(channels: list[str]) -> list[tuple[str, float | None]]:
    """Channel name to (CF variable, level): ``"air_temperature_500hPa"`` -> ``("air_temperature",
    50000.0)`` (Pa), ``"eastward_wind_sigma045"`` -> ``("eastward_wind", 0.45)`` (sigma), and a
    single-level field such as ``"surface_air_pressure"`` -> ``("surface_air_pressure", None)``."""
    out: list[tuple[str, float | None]] = []
    for c in channels:
        var, _, lev = c.rpartition("_")
        if lev.endswith("hPa") and lev[:-3].isdigit():
            out.append((var, float(lev[:-3]) * 100.0))
        elif lev.startswith("sigma") and lev[5:].isdigit():
            out.append((var, int(lev[5:]) / 100.0))  # components.obs_datasets.level_channel: sigma x 100
        else:
            out.append((c, None))
    return out


LEVEL_ATTRS = {
    "pressure": {"standard_name": "air_pressure", "units": "Pa", "positive": "down"},
    "sigma": {"standard_name": "atmosphere_sigma_coordinate", "units": "1", "positive": "down"},
}


def _cf_attrs(variable: str) -> dict[str, str]:
    v = VARIABLES.get(variable)
    return {"standard_name": variable, "units": v.units if v else "", "long_name": v.long_name if v else variable}


def _time_coords(init_time: pd.Timestamp, step: pd.Timedelta, n_steps: int) -> dict[str, Any]:
    lead = pd.to_timedelta([step * k for k in range(1, n_steps + 1)]).to_numpy("timedelta64[ns]")
    return {
        "init_time": ((), np.datetime64(pd.Timestamp(init_time), "ns"), {"standard_name": "forecast_reference_time"}),
        "lead_time": ("lead_time", lead, {"standard_name": "forecast_period"}),
        "valid_time": ("lead_time", np.datetime64(pd.Timestamp(init_time), "ns") + lead, {"standard_name": "time"}),
    }


def gridded_forecast_dataset(
    grid: np.ndarray, channels: list[str], latitude: np.ndarray, longitude: np.ndarray,
    init_time: pd.Timestamp, step: pd.Timedelta, attrs: dict[str, Any],
) -> xr.Dataset:
    """The gridded product: variables ``(lead_time, level, latitude, longitude)`` with CF attributes.

    Parameters
    ----------
    grid : numpy.ndarray
        ``(n_steps, channel, lat, lon)`` physical units.
    """
    pairs = split_channels(channels)
    levels = sorted({lev for _, lev in pairs if lev is not None}, reverse=True)
    level_kind = "sigma" if levels and max(levels) <= 1.0 else "pressure"
    variables = list(dict.fromkeys(v for v, _ in pairs))
    data = {}
    for var in variables:
        mine = [lev for v, lev in pairs if v == var]
        if mine == [None]:
            data[var] = (("lead_time", "latitude", "longitude"), grid[:, pairs.index((var, None))].astype("float32"), _cf_attrs(var))
            continue
        cube = np.stack([grid[:, pairs.index((var, lev))] for lev in levels], axis=1)
        data[var] = (("lead_time", "level", "latitude", "longitude"), cube.astype("float32"), _cf_attrs(var))
    coords = {
        **_time_coords(init_time, step, grid.shape[0]),
        "latitude": ("latitude", latitude, {"standard_name": "latitude", "units": "degrees_north"}),
        "longitude": ("longitude", longitude, {"standard_name": "longitude", "units": "degrees_east"}),
    }
    if levels:
        coords["level"] = ("level", np.array(levels), LEVEL_ATTRS[level_kind])
    return xr.Dataset(data, coords=coords, attrs={"Conventions": "CF-1.10", **attrs})


def station_forecast_dataset(
    stations: np.ndarray, channels: list[str], station_id: np.ndarray, latitude: np.ndarray, longitude: np.ndarray,
    init_time: pd.Timestamp, step: pd.Timedelta, attrs: dict[str, Any],
) -> xr.Dataset:
    """The station product: one variable per channel ``(lead_time, station)``.

    Parameters
    ----------
    stations : numpy.ndarray
        ``(n_steps, point, channel)`` physical units.
    """
    data = {}
    for i, (name, (var, lev)) in enumerate(zip(channels, split_channels(channels))):
        level = {} if lev is None else {"level": lev}
        data[name] = (("lead_time", "station"), stations[:, :, i].astype("float32"), {**_cf_attrs(var), **level})
    coords = {
        **_time_coords(init_time, step, stations.shape[0]),
        "station_id": ("station", np.asarray(station_id, dtype=object)),
        "latitude": ("station", latitude.astype("float64"), {"standard_name": "latitude", "units": "degrees_north"}),
        "longitude": ("station", longitude.astype("float64"), {"standard_name": "longitude", "units": "degrees_east"}),
    }
    return xr.Dataset(data, coords=coords, attrs={"Conventions": "CF-1.10", "featureType": "timeSeries", **attrs})
