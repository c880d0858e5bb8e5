"""Verification metrics against the WeatherBench 2 formulas computed by hand."""

from __future__ import annotations

import numpy as np
import xarray as xr

from components.metrics import gridded_scores, point_scores


def test_latitude_weighted_rmse_and_bias_match_formula():
    rng = np.random.default_rng(1)
    lat = np.array([-60.0, -20.0, 20.0, 60.0])
    lon = np.arange(0.0, 360.0, 45.0)
    dims = ("init_time", "lead_time", "latitude", "longitude")
    shape = (3, 2, lat.size, lon.size)
    coords = {"init_time": np.arange(3), "lead_time": np.arange(2), "latitude": lat, "longitude": lon}
    f = xr.DataArray(rng.normal(size=shape), dims=dims, coords=coords)
    o = xr.DataArray(rng.normal(size=shape), dims=dims, coords=coords)
    got = gridded_scores(f, o, ("init_time",))
    w = np.cos(np.deg2rad(lat))[None, None, :, None] * np.ones(shape)
    err = (f - o).values
    per_forecast = np.sqrt((w * err**2).sum(axis=(2, 3)) / w.sum(axis=(2, 3)))
    np.testing.assert_allclose(got["rmse"].values, per_forecast.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(got["bias"].values, (w * err).sum(axis=(0, 2, 3)) / w.sum(axis=(0, 2, 3)), rtol=1e-10)
    # a perfect forecast scores zero; shifting by +1 gives bias 1
    assert float(gridded_scores(o, o, ("init_time",))["rmse"].max()) == 0.0
    np.testing.assert_allclose(gridded_scores(o + 1, o, ("init_time",))["bias"].values, 1.0)


def test_point_scores_ignore_missing_truth():
    f = xr.DataArray([[1.0, 2.0, 3.0]], dims=("init_time", "station"))
    o = xr.DataArray([[1.0, np.nan, 5.0]], dims=("init_time", "station"))
    got = point_scores(f, o, "station", ("init_time",))
    np.testing.assert_allclose(float(got["rmse"]), np.sqrt((0 + 4) / 2))
    np.testing.assert_allclose(float(got["bias"]), -1.0)
