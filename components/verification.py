"""Verification of a model against persistence and climatology on held-out members (Prefect-free).

For every held-out member and every init time the model is rolled out ``n_steps`` steps; lead
times whose valid time lies outside the dataset are left out (NaN) and do not count. Reference
forecasts, as in WeatherBench 2: **persistence** (the analysis at init time, for every lead) and
**climatology** (here the sample mean over the training members and all times, per channel and
grid point). Station scores compare, at the station positions, the station decoder and the
gridded forecast interpolated bilinearly to the same points, against the truth interpolated the
same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from components.datasets import stack_channels
from components.forecasting import Forecaster
from components.metrics import gridded_scores, point_scores, score_table

SYSTEMS = ("model", "persistence", "climatology")


@dataclass
class VerificationResult:
    """Scores of each system: ``gridded[system]`` and ``stations[system]`` are Datasets of
    ``rmse``/``bias`` with dims ``(lead_time, channel)``."""

    gridded: dict[str, xr.Dataset]
    stations: dict[str, xr.Dataset]
    n_forecasts: int

    def table(self) -> pd.DataFrame:
        """RMSE table (rows: channel, lead time; columns: systems)."""
        return score_table(self.gridded, "rmse")

    def to_dataset(self) -> xr.Dataset:
        """All scores in one Dataset with a ``system`` dim, for ``scores.zarr``."""
        ds = xr.concat([self.gridded[s] for s in SYSTEMS], dim=pd.Index(list(SYSTEMS), name="system"))
        if self.stations:
            names = list(self.stations)
            st = xr.concat([self.stations[s] for s in names], dim=pd.Index(names, name="station_system"))
            ds = ds.assign(station_rmse=st["rmse"], station_bias=st["bias"])
        return ds


def verify(
    forecaster: Forecaster,
    gridded: xr.Dataset,
    test_members: list[int],
    train_members: list[int],
    n_steps: int,
    station_lat: np.ndarray | None = None,
    station_lon: np.ndarray | None = None,
) -> VerificationResult:
    """Score the model, persistence and climatology on held-out members.

    Parameters
    ----------
    forecaster : Forecaster
    gridded : xarray.Dataset
        ``(member, time, level, latitude, longitude)``, physical units.
    test_members, train_members : list of int
        Held-out members to score on; members whose mean is the climatology.
    n_steps : int
        Lead times ``k·Δt``, k = 1..n_steps.
    station_lat, station_lon : numpy.ndarray, optional
        ``(point,)`` degrees: also score at these points.

    Returns
    -------
    VerificationResult

    Raises
    ------
    ValueError
        If the dataset's channels differ from the model's, or no init time has a verifying lead time.
    """
    stacked = stack_channels(gridded)
    if list(stacked["channel"].values) != forecaster.channels:
        raise ValueError(f"dataset channels {list(stacked['channel'].values)} differ from the model's {forecaster.channels}")
    step = forecaster.step
    times = pd.to_datetime(stacked["time"].values)
    lead = pd.to_timedelta([step * k for k in range(1, n_steps + 1)])
    inits = [t for t in times if t + step in times]
    if not inits:
        raise ValueError(f"no init time in {list(times)} has a verifying analysis {step} later")
    test = stacked.sel(member=test_members)
    clim = stacked.sel(member=train_members).mean(("member", "time"))
    tpos = {t: i for i, t in enumerate(times)}
    analysis = test.sel(time=inits)  # (member, init, channel, lat, lon)
    m, n = len(test_members), len(inits)
    x = analysis.values.reshape(m * n, *analysis.shape[2:])
    points = station_lat is not None and len(station_lat) > 0
    grid, stations = forecaster.predict(x, n_steps, station_lat if points else None, station_lon if points else None)
    shape = (m, n, n_steps) + analysis.shape[2:]
    truth = np.full(shape, np.nan, dtype="float32")
    for j, t in enumerate(inits):
        for k, dt in enumerate(lead):
            if t + dt in tpos:
                truth[:, j, k] = test.values[:, tpos[t + dt]]
    dims = ("member", "init_time", "lead_time", "channel", "latitude", "longitude")
    coords = {
        "member": test_members,
        "init_time": np.array(inits, dtype="datetime64[ns]"),
        "lead_time": lead.to_numpy(),
        "channel": forecaster.channels,
        "latitude": stacked["latitude"].values,
        "longitude": stacked["longitude"].values,
    }
    truth_da = xr.DataArray(truth, dims=dims, coords=coords)
    valid = np.isfinite(truth)
    model_da = xr.DataArray(np.where(valid, grid.reshape(shape), np.nan), dims=dims, coords=coords)
    persist = np.broadcast_to(analysis.values[:, :, None], shape)
    persist_da = xr.DataArray(np.where(valid, persist, np.nan), dims=dims, coords=coords)
    clim_da = xr.DataArray(np.where(valid, np.broadcast_to(clim.values, shape), np.nan), dims=dims, coords=coords)
    fdims = ("member", "init_time")
    gridded_results = {
        "model": gridded_scores(model_da, truth_da, fdims),
        "persistence": gridded_scores(persist_da, truth_da, fdims),
        "climatology": gridded_scores(clim_da, truth_da, fdims),
    }
    station_results: dict[str, xr.Dataset] = {}
    if points:
        where = {"latitude": xr.DataArray(station_lat, dims="station"), "longitude": xr.DataArray(np.mod(station_lon, 360.0), dims="station")}

        def at_points(da: xr.DataArray) -> xr.DataArray:
            # Periodic in longitude: append the first column at lon + 360 before interpolating.
            wrapped = xr.concat([da, da.isel(longitude=[0]).assign_coords(longitude=da["longitude"][[0]] + 360.0)], dim="longitude")
            return wrapped.interp(where, method="linear")

        sdims = ("member", "init_time", "lead_time", "station", "channel")
        sdata = stations.reshape(m, n, n_steps, len(station_lat), -1)
        sdec = xr.DataArray(sdata, dims=sdims, coords={k: coords[k] for k in ("member", "init_time", "lead_time", "channel")})
        struth = at_points(truth_da).transpose(*sdims)
        sdec = sdec.where(np.isfinite(struth))
        station_results = {
            "station_decoder": point_scores(sdec, struth, "station", fdims),
            "gridded_interpolated": point_scores(at_points(model_da).transpose(*sdims), struth, "station", fdims),
        }
    return VerificationResult(gridded_results, station_results, m * n)
