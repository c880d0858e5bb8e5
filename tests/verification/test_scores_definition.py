"""The one latitude weight and the one RMSE/bias definition, against independent hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from obscast.components.verification.metrics import (
    channel_units,
    latitude_weights,
    rmse_and_bias,
)
from obscast.processor.grid import LatLonGrid
from obscast.processor.grid import latitude_weights as grid_latitude_weights


def test_latitude_weights_are_cell_areas_with_the_poles():
    # cell-centred grid: w_i * (sphere area / number of cells) is the area of a cell of row i,
    # Δλ (sin φ_north - sin φ_south) on the unit sphere
    g = LatLonGrid(18, 36)
    w = grid_latitude_weights(g.latitude)
    half = np.radians(5.0)
    cell = np.radians(10.0) * (np.sin(np.radians(g.latitude) + half) - np.sin(np.radians(g.latitude) - half))
    np.testing.assert_allclose(w * 4 * np.pi / (18 * 36), cell, rtol=1e-12)
    np.testing.assert_allclose(36 * cell.sum(), 4 * np.pi)
    np.testing.assert_allclose(w.mean(), 1.0)
    assert np.all(np.diff(w[:9]) > 0)  # growing towards the equator
    # a grid with rows on the poles: polar caps of half a spacing, not zero
    lat = np.linspace(-90, 90, 7)
    w = grid_latitude_weights(lat)
    caps = 2 * np.pi * (1 - np.cos(np.radians(15.0)))  # cap of 15 degrees around each pole
    band = 2 * np.pi * (np.sin(np.radians(lat[1:-1] + 15)) - np.sin(np.radians(lat[1:-1] - 15)))
    expected = np.r_[caps, band, caps]
    np.testing.assert_allclose(expected.sum(), 4 * np.pi)
    np.testing.assert_allclose(w, expected / expected.mean(), rtol=1e-12)
    assert w[0] > 0 and w[-1] > 0
    np.testing.assert_allclose(w, w[::-1])  # symmetric about the equator
    # descending order (ERA5): the same weights, reversed
    np.testing.assert_allclose(grid_latitude_weights(lat[::-1]), w[::-1])
    # the xarray wrapper keeps the coordinate
    da = latitude_weights(xr.DataArray(lat[::-1], dims="latitude", coords={"latitude": lat[::-1]}))
    np.testing.assert_allclose(da.values, w[::-1])
    assert da.dims == ("latitude",) and list(da["latitude"].values) == list(lat[::-1])
    with pytest.raises(ValueError):
        grid_latitude_weights([0.0, 10.0, 5.0])


def test_rmse_and_bias_by_hand_on_a_tiny_case():
    # two inits, one lead, one channel, 2 x 2 grid at +-45 degrees: weights equal per row
    lat, lon = np.array([-45.0, 45.0]), np.array([0.0, 180.0])
    coords = {"init_time": [0, 1], "lead_time": [6], "channel": ["surface_air_pressure"], "latitude": lat, "longitude": lon}
    dims = ("init_time", "lead_time", "channel", "latitude", "longitude")
    err = np.array([[[[[1.0, -1.0], [3.0, 1.0]]]], [[[[0.0, 2.0], [2.0, 0.0]]]]])
    truth = xr.DataArray(np.full(err.shape, 1e5), dims=dims, coords=coords)
    got = rmse_and_bias(truth + err, truth)
    # init 0: mse = (1 + 1 + 9 + 1) / 4 = 3, mean error 1; init 1: mse = 8 / 4 = 2, mean error 1
    np.testing.assert_allclose(got["rmse"].values, [[np.sqrt(2.5)]], rtol=1e-12)
    np.testing.assert_allclose(got["bias"].values, [[1.0]], rtol=1e-12)
    assert got["rmse"].attrs["units"] == "Pa" and got["bias"].attrs["units"] == "Pa"
    assert list(got["units"].values) == ["Pa"]
    # unequal weights: rows at 0 and 60 degrees of a 3-row grid (-60, 0, 60), error only on the equator
    lat = np.array([-60.0, 0.0, 60.0])
    edges = np.radians([-90.0, -30.0, 30.0, 90.0])
    area = np.diff(np.sin(edges))  # 0.5, 1, 0.5
    e = np.zeros((1, 1, 1, 3, 1))
    e[..., 1, :] = 2.0
    c = {"init_time": [0], "lead_time": [6], "channel": ["x"], "latitude": lat, "longitude": [0.0]}
    t = xr.DataArray(np.zeros(e.shape), dims=dims, coords=c)
    got = rmse_and_bias(t + e, t, units={"x": "K"})
    np.testing.assert_allclose(float(got["rmse"].squeeze()), np.sqrt(4 * area[1] / area.sum()), rtol=1e-12)
    np.testing.assert_allclose(float(got["bias"].squeeze()), 2 * area[1] / area.sum(), rtol=1e-12)
    assert got["rmse"].attrs["units"] == "K"


def test_rmse_is_the_root_of_the_mean_not_the_mean_of_the_roots():
    dims = ("init_time", "lead_time", "channel", "station")
    c = {"init_time": [0, 1], "lead_time": [6], "channel": ["air_temperature"], "station": [0, 1]}
    t = xr.DataArray(np.zeros((2, 1, 1, 2)), dims=dims, coords=c)
    f = t.copy(data=np.array([[[[3.0, 3.0]]], [[[0.0, 0.0]]]]))  # per-init RMSE 3 and 0
    got = rmse_and_bias(f, t, spatial_dims=("station",), weighted=False)
    np.testing.assert_allclose(float(got["rmse"].squeeze()), np.sqrt(4.5))  # not 1.5
    assert got["rmse"].attrs["units"] == "K"


def test_channel_units():
    assert channel_units(["air_temperature_sigma085", "surface_air_pressure", "geopotential_500hPa", "eastward_wind_850hPa", "foo"]) == [
        "K", "Pa", "m2 s-2", "m s-1", ""
    ]
