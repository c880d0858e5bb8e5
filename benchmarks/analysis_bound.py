"""How good can an analysis from the OSSE's observations be?  A classical bound for surface pressure.

Beating *persistence of the truth* at 6 h needs an initial state whose error is well below the
truth's own 6-hour change. This script measures how close a textbook analysis gets, given far
more than obscast (or any real system) has: optimal interpolation (OI; Gandin 1963, Daley 1991
"Atmospheric Data Analysis" ch. 4) of the simulated SYNOP surface pressure onto an **oracle
background**, the true state 6 h earlier (background error = the 6 h persistence error), with the
background error variance tuned on the truth and the true observation error (``osse.error_model``).

The same OI with the training-period mean as background (``climatology``: what one 6 h window
of SYNOP reports alone gives, without cycling) is printed for comparison.

For each of ``--times`` init times spread over the test period and each correlation length L:

    x_a = x_b + B H^T (H B H^T + R)^-1 (y - H x_b)

with ``x_b`` the truth at ``t - 6 h`` on the nature grid, ``H`` bilinear interpolation to the
stations (the operator the observations were simulated with), ``B_ij = s_b^2 exp(-d_ij^2 / 2 L^2)``
(great-circle distance ``d``, ``s_b`` = the background's latitude-weighted RMS error against the
truth, i.e. oracle-tuned), ``R = s_o^2 I`` with ``s_o`` from ``osse.error_model``; ``y`` are the
QC-accepted SYNOP reports in the store from the 3 hours up to ``t`` (simulated SYNOP
reports are valid at the nature times, so these are the reports at ``t``). The analysis and the truth are
averaged onto the verification grid (``osse.training.coarsen``) and scored with the
latitude-weighted RMSE of :mod:`scores` exactly as ``obscast verify`` scores forecasts.

Run after ``obscast run`` (it reads the store's nature run and ``obs/synop.zarr``)::

    .venv/bin/python benchmarks/analysis_bound.py [--config configs/default.yaml] [--store store] \\
        [--times 8] [--lengthscales-km 250,500,800]

It prints, per background and L, the mean RMSE of the background, of the OI analysis and of 6 h
persistence, and the analysis / persistence ratio. About 10 s per init time, background and L on
2 cores (one dense Cholesky
factorisation of ~7,400 stations).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import scores
import torch
import xarray as xr
from scipy.linalg import cho_factor, cho_solve

from obscast.components.config import load_config
from obscast.components.data.interp import PointInterpolator
from obscast.components.verification.metrics import latitude_weights
from obscast.components.data.fields import coarse_coordinates, coarsen_fields
from obscast.components.store.obstable import ObsTable
from obscast.components.data.experiment import open_target, period_times
from obscast.components.store.storage import Store
from obscast.processor.grid import EARTH_RADIUS_KM, unit_vectors


def _unit_vectors(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """(n, 3) float64 unit vectors of points given in degrees (:func:`obscast.processor.grid.unit_vectors`)."""
    return unit_vectors(torch.as_tensor(lat_deg, dtype=torch.float64), torch.as_tensor(lon_deg, dtype=torch.float64)).numpy()


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle distances [m] between unit vectors a (n, 3) and b (m, 3): (n, m)."""
    return np.arccos(np.clip(a @ b.T, -1.0, 1.0)) * EARTH_RADIUS_KM * 1e3


def _bilinear(field: np.ndarray, lat: np.ndarray, lon: np.ndarray, plat: np.ndarray, plon: np.ndarray) -> np.ndarray:
    """``field`` (lat, lon) at points [deg]: the observation operator the OSSE simulated with
    (:class:`obscast.components.data.interp.PointInterpolator`)."""
    return PointInterpolator(lat, lon, plat, plon)(field)


def _rmse(field: np.ndarray, truth: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> float:
    dims = ("latitude", "longitude")
    coords = {"latitude": lat, "longitude": lon}
    f, t = xr.DataArray(field, coords, dims), xr.DataArray(truth, coords, dims)
    return float(scores.continuous.rmse(f, t, weights=latitude_weights(f["latitude"])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=None, help="configuration (default: the embedded configs/default.yaml)")
    ap.add_argument("--store", default=None, help="store URL (default: the configuration's)")
    ap.add_argument("--times", type=int, default=8, help="init times, spread over the test period")
    ap.add_argument("--lengthscales-km", default="250,500,800", help="comma-separated OI correlation lengths [km]")
    a = ap.parse_args()

    config = load_config(a.config, {"store": a.store} if a.store else None)
    store = Store(config.store, config.storage_options)
    nature = open_target(store, config)
    lat, lon = nature["latitude"].values, nature["longitude"].values
    if lat[0] > lat[-1]:
        raise SystemExit("expected ascending latitudes in the nature run")
    factor = config.model.coarsen
    clat, clon = coarse_coordinates(lat, lon, factor)
    grid = _unit_vectors(*(g.ravel() for g in np.meshgrid(lat, lon, indexing="ij")))
    s_o = config.osse.error_model.std("surface_air_pressure")
    window = config.ingest.window
    times = period_times(nature, config.experiment.split.test)
    picks = times[np.linspace(1, len(times) - 1, a.times).astype(int)]
    synop = ObsTable(store, "obs/synop.zarr")
    ps = nature["surface_air_pressure"]
    climatology = ps.sel(time=period_times(nature, config.experiment.split.train)).mean("time").values.astype(np.float64)

    rows = []
    for t in picks:
        truth = ps.sel(time=t).values.astype(np.float64)
        truth_c = coarsen_fields(truth, lat, factor)
        obs = synop.read(t - window, t)
        obs = obs[(obs["time"] > t - window / 2) & np.isfinite(obs["surface_air_pressure"])]
        points = _unit_vectors(obs["latitude"].values, obs["longitude"].values)
        d_oo, d_go = _distance(points, points), _distance(grid, points)
        persistence = ps.sel(time=t - window).values.astype(np.float64)
        for name, background in (("persistence (oracle)", persistence), ("climatology", climatology)):
            innovation = obs["surface_air_pressure"].values - _bilinear(background, lat, lon, obs["latitude"].values, obs["longitude"].values)
            s_b = _rmse(background, truth, lat, lon)
            for length_km in (float(x) for x in a.lengthscales_km.split(",")):
                length = length_km * 1e3
                hbh = s_b**2 * np.exp(-0.5 * (d_oo / length) ** 2) + s_o**2 * np.eye(len(points))
                weights = cho_solve(cho_factor(hbh), innovation)
                analysis = background + (s_b**2 * np.exp(-0.5 * (d_go / length) ** 2) @ weights).reshape(background.shape)
                rows.append({
                    "init_time": t, "background": name, "L_km": length_km, "stations": len(points),
                    "background_rmse": _rmse(coarsen_fields(background, lat, factor), truth_c, clat, clon),
                    "analysis_rmse": _rmse(coarsen_fields(analysis, lat, factor), truth_c, clat, clon),
                    "persistence_rmse": _rmse(coarsen_fields(persistence, lat, factor), truth_c, clat, clon),
                })  # fmt: skip
                print({k: (round(v, 1) if isinstance(v, float) else str(v)) for k, v in rows[-1].items()}, flush=True)
    table = pd.DataFrame(rows).groupby(["background", "L_km"])[["stations", "background_rmse", "analysis_rmse", "persistence_rmse"]].mean()
    table["analysis / persistence"] = table["analysis_rmse"] / table["persistence_rmse"]
    print("\nsurface_air_pressure [Pa], mean over", len(picks), "init times of the test period")
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
