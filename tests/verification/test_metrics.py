"""Verification metrics against the WeatherBench 2 formulas computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from obscast.components.verification.metrics import (
    combine_systems,
    gridded_scores,
    point_scores,
    score_table,
    to_markdown,
)


def _band_areas(lat: np.ndarray) -> np.ndarray:
    """Area of the band each row stands for (edges halfway between rows, outer ones at the poles)."""
    edges = np.radians(np.r_[-90.0, (lat[1:] + lat[:-1]) / 2, 90.0])
    return np.sin(edges[1:]) - np.sin(edges[:-1])


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
    w = _band_areas(lat)[None, None, :, None] * np.ones(shape)
    err = (f - o).values
    mse_per_init = (w * err**2).sum(axis=(2, 3)) / w.sum(axis=(2, 3))
    np.testing.assert_allclose(got["rmse"].values, np.sqrt(mse_per_init.mean(axis=0)), rtol=1e-12)
    np.testing.assert_allclose(got["bias"].values, (w * err).sum(axis=(0, 2, 3)) / w.sum(axis=(0, 2, 3)), rtol=1e-12)
    # a perfect forecast scores zero; shifting by +1 gives bias 1
    assert float(gridded_scores(o, o, ("init_time",))["rmse"].max()) == 0.0
    np.testing.assert_allclose(gridded_scores(o + 1, o, ("init_time",))["bias"].values, 1.0)


def test_point_scores_ignore_missing_truth():
    f = xr.DataArray([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dims=("init_time", "station"))
    o = xr.DataArray([[1.0, np.nan, 5.0], [1.0, 1.0, 1.0]], dims=("init_time", "station"))
    got = point_scores(f, o, "station", ("init_time",))
    # init 0: errors 0, -2 (mse 2, mean -1); init 1: errors -1 x 3 (mse 1, mean -1)
    np.testing.assert_allclose(float(got["rmse"]), np.sqrt((2 + 1) / 2))
    np.testing.assert_allclose(float(got["bias"]), -1.0)


def test_score_table_from_a_system_dataset_and_a_dict():
    lead = pd.to_timedelta([6, 12], unit="h").to_numpy()
    mk = lambda v: xr.Dataset({"rmse": (("lead_time", "channel"), v), "bias": (("lead_time", "channel"), -v)},
                              coords={"lead_time": lead, "channel": ["a", "b"]})
    parts = {"model": mk(np.array([[1.0, 2.0], [3.0, 4.0]])), "persistence": mk(np.array([[5.0, 6.0], [7.0, 8.0]]))}
    ds = combine_systems(parts)
    assert ds["rmse"].dims == ("system", "channel", "lead_time")
    table = score_table(ds)
    assert table.loc[("b", "12 h"), "model"] == 4.0 and table.loc[("a", "6 h"), "persistence"] == 5.0
    pd.testing.assert_frame_equal(table.sort_index(), score_table(parts).sort_index())
    assert score_table(ds, "bias").loc[("a", "12 h"), "model"] == -3.0
    md = to_markdown(table, "t")
    assert md.splitlines()[2] == "| channel | lead_time | model | persistence |"
