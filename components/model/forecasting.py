"""Forecasts from a trained model: rollouts and their CF-conformant xarray products (Prefect-free)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from obscast.components.model.model import ObsCastModel
from obscast.components.obs.variables import VARIABLES
from obscast.components.store.registry import load_model_files, resolve_version
from obscast.components.store.storage import Store


def load_model(store: Store, name: str, version: str | None = None) -> tuple[ObsCastModel, dict[str, Any]]:
    """A registry version as an eval-mode :class:`ObsCastModel` and its model card (dict).

    ``version`` None means the champion, else the newest version.

    Raises
    ------
    ObscastError
        If the model or version does not exist in the store.
    """
    state, meta = load_model_files(store, name, resolve_version(store, name, version))
    model = ObsCastModel(**meta["model_args"])
    model.load_state_dict(state)
    return model.eval(), meta


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
            out.append((var, int(lev[5:]) / 100.0))  # obscast.components.data.fields.level_channel: sigma x 100
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


def station_identifiers(table: pd.DataFrame, latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """The station identifier of each station position, from a station source's reports.

    Parameters
    ----------
    table : pandas.DataFrame
        Reports with ``latitude``, ``longitude`` (degrees) and ``station_id``.
    latitude, longitude : numpy.ndarray
        (P,) station positions, degrees; matched to the reports to 1e-4 degree.

    Returns
    -------
    numpy.ndarray
        (P,) object array of identifiers; ``""`` where no report stands at a position.
    """
    first = table.drop_duplicates(["latitude", "longitude"])
    ids = dict(zip(zip(first["latitude"].round(4), first["longitude"].round(4)), first["station_id"]))
    return np.array([ids.get((round(float(a), 4), round(float(b), 4)), "") for a, b in zip(latitude, longitude)], dtype=object)
