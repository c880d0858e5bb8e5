"""The one bilinear interpolation outside the model (components/data/interp.py): analytic fields,
the dateline and the poles, the xarray and the precomputed path, and agreement with the OSSE's
former observation operator and with the model's torch regridder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from obscast.components.data.interp import PointInterpolator, interp_to_points
from obscast.components.osse.operators import _Horizontal
from obscast.processor.interp import BilinearRegridder

LAT = -90 + 180 / 16 * (np.arange(16) + 0.5)  # cell-centred: outermost rows at +-84.375
LON = np.arange(32) * 360 / 32  # 0 ... 348.75


def _both(field: np.ndarray, lat: np.ndarray, lon: np.ndarray, grid_lat=LAT, grid_lon=LON) -> tuple[np.ndarray, np.ndarray]:
    da = xr.DataArray(field, dims=("c", "latitude", "longitude"), coords={"latitude": grid_lat, "longitude": grid_lon})
    return PointInterpolator(grid_lat, grid_lon, lat, lon)(field), interp_to_points(da, lat, lon).values


def test_product_of_linear_functions_is_exact_within_a_cell_and_across_the_dateline():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=16), rng.normal(size=32)
    field = (a[:, None] * b[None, :])[None]  # separable: bilinear is exact on (affine in lat) x (affine in lon)
    # points in the cell between rows 5, 6 and columns 31 (348.75) and 0 (360 = 0)
    lat = LAT[5] + rng.uniform(0, 1, 50) * (LAT[6] - LAT[5])
    s = rng.uniform(0, 1, 50)
    lon_east = 348.75 + s * 11.25  # 348.75 .. 360
    ya = a[5] + (lat - LAT[5]) / (LAT[6] - LAT[5]) * (a[6] - a[5])
    yb = b[31] + s * (b[0] - b[31])
    for lon in (lon_east, lon_east - 360.0, lon_east + 720.0):  # any longitude convention
        fast, xarr = _both(field, lat, lon)
        np.testing.assert_allclose(fast[0], ya * yb, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(xarr[0], ya * yb, rtol=1e-12, atol=1e-12)
    # a field linear in longitude inside a cell is reproduced exactly
    lin = np.broadcast_to(2.0 + 0.1 * LON, (1, 16, 32))
    pts = rng.uniform(0, 348.75, 40)
    fast, xarr = _both(lin, rng.uniform(-80, 80, 40), pts)
    np.testing.assert_allclose(fast[0], 2.0 + 0.1 * pts, rtol=1e-12)
    np.testing.assert_allclose(xarr[0], 2.0 + 0.1 * pts, rtol=1e-12)


def test_poleward_of_the_outermost_rows_the_nearest_row_is_used():
    rng = np.random.default_rng(1)
    field = rng.normal(size=(2, 16, 32))
    lon = rng.uniform(-180, 180, 6)
    j = np.floor(np.mod(lon, 360) / 11.25).astype(int)
    t = np.mod(lon, 360) / 11.25 - j
    for lat, row in ((np.full(6, 90.0), 15), (np.full(6, 86.0), 15), (np.full(6, -90.0), 0), (np.full(6, -84.4), 0)):
        expected = field[:, row, j] * (1 - t) + field[:, row, (j + 1) % 32] * t
        for got in _both(field, lat, lon):
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # a grid with rows on the poles: nothing is clamped, the pole row is reached exactly
    glat = np.linspace(-90, 90, 13)
    polar = rng.normal(size=(1, 13, 32))
    for got in _both(polar, np.array([90.0, -90.0]), np.array([0.0, 90.0]), glat):
        np.testing.assert_allclose(got[0], [polar[0, -1, 0], polar[0, 0, 8]], rtol=1e-12)


def _former_osse_operator(lat_grid, lon_grid, lat, lon, f):
    """The OSSE simulator's bilinear interpolation before consolidation (written out)."""
    nlat, nlon = len(lat_grid), len(lon_grid)
    lat = np.clip(lat, lat_grid[0], lat_grid[-1])
    j1 = np.clip(np.searchsorted(lat_grid, lat, side="right"), 1, nlat - 1)
    j0 = j1 - 1
    wy = (lat - lat_grid[j0]) / (lat_grid[j1] - lat_grid[j0])
    x = np.mod(lon - lon_grid[0], 360.0) / (360.0 / nlon)
    i0 = np.floor(x).astype(np.int64) % nlon
    i1, wx = (i0 + 1) % nlon, x - np.floor(x)
    return (f[..., j0, i0] * (1 - wy) * (1 - wx) + f[..., j0, i1] * (1 - wy) * wx
            + f[..., j1, i0] * wy * (1 - wx) + f[..., j1, i1] * wy * wx)


def test_osse_observation_operator_unchanged_and_paths_agree():
    rng = np.random.default_rng(2)
    glat = np.sort(rng.uniform(-88, 88, 32))  # irregular (Gaussian-like) latitudes
    glon = np.arange(64) * 360 / 64
    field = 1e5 + 1e3 * rng.normal(size=(3, 32, 64))
    lat = np.r_[rng.uniform(-90, 90, 3000), 90.0, -90.0, glat[0], glat[-1], 0.0]
    lon = np.r_[rng.uniform(-180, 360, 3000), 359.9999999, -1e-9, 0.0, 354.375, 180.0]
    old = _former_osse_operator(glat, glon, lat, lon, field)
    new = _Horizontal.at(glat, glon, lat, lon)(field)
    np.testing.assert_allclose(new, old, rtol=1e-14, atol=0)  # float rounding only
    da = xr.DataArray(field, dims=("c", "latitude", "longitude"), coords={"latitude": glat, "longitude": glon})
    np.testing.assert_allclose(interp_to_points(da, lat, lon).values, new, rtol=1e-14)
    # descending latitudes and a [-180, 180) grid give the same values
    np.testing.assert_allclose(PointInterpolator(glat[::-1], glon, lat, lon)(field[:, ::-1]), new, rtol=1e-14)
    np.testing.assert_allclose(PointInterpolator(glat, glon - 180, lat, lon)(np.roll(field, 32, -1)), new, rtol=1e-14)
    # many fields at once (one sparse product) give the same as one field at a time (gathers)
    interp = PointInterpolator(glat, glon, lat, lon)
    many = rng.normal(size=(4, 5, 32, 64))
    np.testing.assert_allclose(interp(many), np.stack([[interp(f) for f in m] for m in many]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(interp(many.astype(np.float32)), interp(many), rtol=1e-4, atol=1e-5)
    # float32 stays float32; a DataArray gets a point dim with the points as coordinates
    assert PointInterpolator(glat, glon, lat, lon)(field.astype(np.float32)).dtype == np.float32
    out = PointInterpolator(glat, glon, lat, lon)(da, point_dim="station")
    assert out.dims == ("c", "station") and np.array_equal(out["longitude"].values, lon)
    with pytest.raises(ValueError, match="grid"):
        PointInterpolator(glat, glon, lat, lon)(field[:, :-1])
    with pytest.raises(ValueError, match="360"):
        PointInterpolator(glat, np.r_[glon, 360.0], lat, lon)


def test_the_model_regridder_treats_dateline_and_poles_the_same():
    rng = np.random.default_rng(3)
    field = rng.normal(size=(1, 1, 16, 32))
    dst_lat = np.array([-90.0, -86.0, -30.3, 0.0, 47.1, 84.375, 89.0, 90.0])
    dst_lon = np.array([0.0, 5.0, 123.4, 349.0, 355.5, 359.99])
    regrid = BilinearRegridder(LAT, LON, dst_lat, dst_lon)
    values, _ = regrid(torch.as_tensor(field, dtype=torch.float64))
    mlat, mlon = np.meshgrid(dst_lat, dst_lon, indexing="ij")
    points = PointInterpolator(LAT, LON, mlat.ravel(), mlon.ravel())(field[0])
    np.testing.assert_allclose(values.numpy()[0].reshape(1, -1), points, rtol=1e-6, atol=1e-6)  # float32 weights
