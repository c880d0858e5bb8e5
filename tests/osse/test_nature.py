"""Tests for components.nature (Held-Suarez nature run with dinosaur)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime

import numpy as np
import pytest

from obscast.components.osse import nature
from obscast.components.osse.nature import NatureRunConfig, config_hash, run_nature


def _tiny(**overrides) -> NatureRunConfig:
    kw = dict(
        truncation="T21",
        n_sigma_layers=10,
        output_sigma_levels=[0.25, 0.85],
        dt_minutes=30,
        spinup_days=1,
        length_days=2,
        output_interval_hours=6,
        seed=0,
        start_time=datetime(2000, 1, 1),
    )
    kw.update(overrides)
    return NatureRunConfig(**kw)


# ------------------------------------------------------------ config (no JAX)
def test_import_does_not_pull_jax():
    code = "import sys, obscast.components.osse.nature; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def test_config_defaults_and_validation():
    cfg = NatureRunConfig()
    assert cfg.truncation == "T42" and cfg.grid_shape == (64, 128)
    assert cfg.spinup_days == 120 and cfg.output_interval_hours == 6
    assert cfg.n_snapshots == int(cfg.length_days * 4)
    assert cfg.level_indices() == [2, 4, 6, 8]
    with pytest.raises(ValueError):
        NatureRunConfig(bogus=1)
    with pytest.raises(ValueError):  # not a layer mid-point of 10 equidistant layers
        NatureRunConfig(output_sigma_levels=[0.5])
    with pytest.raises(ValueError):  # dt does not divide the output interval
        NatureRunConfig(dt_minutes=25)
    with pytest.raises(ValueError):  # length not a multiple of the output interval
        NatureRunConfig(length_days=1.1)


def test_config_hash_stable_and_sensitive():
    a = _tiny()
    assert config_hash(a) == config_hash(_tiny())
    assert len(config_hash(a)) == 16
    assert config_hash(a) != config_hash(_tiny(seed=1))
    assert config_hash(a) != config_hash(_tiny(length_days=3))
    # level order is normalised
    assert config_hash(_tiny(output_sigma_levels=[0.85, 0.25])) == config_hash(a)


# ------------------------------------------------------------- the model run
@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    pytest.importorskip("dinosaur")
    path = str(tmp_path_factory.mktemp("nature") / "nature.zarr")
    calls: list[tuple[str, float, float]] = []
    with pytest.MonkeyPatch.context() as mp:
        # 8 snapshots in blocks of 3: exercises appending and a partial last block
        mp.setattr(nature, "_BLOCK_SNAPSHOTS", 3)
        run_nature(_tiny(), path, progress=lambda *a: calls.append(a))
    return path, calls


def test_store_contents(tiny_store):
    xr = pytest.importorskip("xarray")
    path, calls = tiny_store
    cfg = _tiny()
    ds = xr.open_zarr(path, consolidated=False, chunks=None)
    assert ds.attrs["config_hash"] == config_hash(cfg)
    assert ds.attrs["complete"] is True
    assert ds.attrs["Conventions"].startswith("CF-")

    assert dict(ds.sizes) == {"time": 8, "level": 2, "latitude": 32, "longitude": 64}
    np.testing.assert_array_equal(ds.time.values, cfg.times())
    assert ds.time.values[0] == np.datetime64("2000-01-01T00:00")
    assert (np.diff(ds.time.values) == np.timedelta64(6, "h")).all()
    np.testing.assert_allclose(ds.level.values, [0.25, 0.85])
    assert ds.level.attrs["standard_name"] == "atmosphere_sigma_coordinate"
    lat, lon = ds.latitude.values, ds.longitude.values
    assert (np.diff(lat) > 0).all() and -90 < lat[0] < -80 and 80 < lat[-1] < 90
    assert lon[0] == 0 and lon[-1] < 360 and (np.diff(lon) > 0).all()
    assert ds.latitude.attrs["units"] == "degrees_north"
    assert ds.longitude.attrs["units"] == "degrees_east"

    expected = {
        "air_temperature": ("K", 4),
        "eastward_wind": ("m s-1", 4),
        "northward_wind": ("m s-1", 4),
        "geopotential": ("m2 s-2", 4),
        "surface_air_pressure": ("Pa", 3),
    }
    assert set(ds.data_vars) == set(expected)
    for name, (units, ndim) in expected.items():
        da = ds[name]
        assert da.attrs["standard_name"] == name
        assert da.attrs["units"] == units
        assert da.ndim == ndim and da.dims[0] == "time" and da.dims[-2:] == ("latitude", "longitude")
        assert da.dtype == np.float32
        assert np.isfinite(da.values).all()

    t = ds.air_temperature.values
    assert 180 < t.min() and t.max() < 320
    ps = ds.surface_air_pressure.values
    assert 90_000 < ps.min() and ps.max() < 110_000
    assert abs(ps.mean() - 1.0e5) < 1500  # mass is conserved around the 1000 hPa initial state
    assert np.abs(ds.eastward_wind.values).max() < 100
    assert np.abs(ds.northward_wind.values).max() < 100
    # upper level is colder and higher than the lower one; heights plausible
    assert (ds.air_temperature.sel(level=0.25).mean() < ds.air_temperature.sel(level=0.85).mean()).item()
    z = ds.geopotential.mean(("time", "latitude", "longitude")).values / 9.80616
    assert 8_000 < z[0] < 13_000 and 500 < z[1] < 2_500
    # hydrostatic consistency between the two stored levels (thickness equation with the layer-mean T)
    r_dry = 1004.0 * 2.0 / 7.0
    dphi = (ds.geopotential.sel(level=0.25) - ds.geopotential.sel(level=0.85)).mean().item()
    t_mean = ds.air_temperature.mean().item()
    assert 0.7 < dphi / (r_dry * t_mean * np.log(0.85 / 0.25)) < 1.3

    assert calls[0] == ("spinup", 1.0, 1.0)
    assert [c for c in calls if c[0] == "run"] == [("run", 0.75, 2.0), ("run", 1.5, 2.0), ("run", 2.0, 2.0)]


def test_cache_reused_without_rewrite(tiny_store, monkeypatch):
    path, _ = tiny_store
    before = {
        os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(path) for f in fs
    }

    def _boom(*args, **kwargs):
        raise AssertionError("cached store should not be regenerated")

    monkeypatch.setattr(nature, "_generate", _boom)
    assert run_nature(_tiny(), path) == path
    after = {
        os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(path) for f in fs
    }
    assert before == after


def test_different_config_regenerates(tiny_store, tmp_path):
    xr = pytest.importorskip("xarray")
    path, _ = tiny_store
    other = tmp_path / "nature.zarr"
    cfg = _tiny(seed=1, length_days=1)
    run_nature(cfg, str(other))
    ds_other = xr.open_zarr(other, consolidated=False, chunks=None)
    ds_ref = xr.open_zarr(path, consolidated=False, chunks=None)
    assert ds_other.attrs["config_hash"] == config_hash(cfg) != ds_ref.attrs["config_hash"]
    assert ds_other.sizes["time"] == 4
    # a different seed moves the initial perturbation: different weather
    assert not np.allclose(
        ds_other.surface_air_pressure.isel(time=0).values, ds_ref.surface_air_pressure.isel(time=0).values
    )

    # an interrupted store (complete flag still False) with the same hash is regenerated
    import zarr

    zarr.open_group(str(other), mode="r+").attrs["complete"] = False
    run_nature(cfg, str(other))
    assert xr.open_zarr(other, consolidated=False, chunks=None).attrs["complete"] is True

    # the same path with another config is replaced
    cfg2 = _tiny(seed=2, length_days=0.5)
    run_nature(cfg2, str(other))
    ds2 = xr.open_zarr(other, consolidated=False, chunks=None)
    assert ds2.attrs["config_hash"] == config_hash(cfg2) and ds2.attrs["complete"] is True
    assert ds2.sizes["time"] == 2


def test_refuses_to_clobber_non_store(tmp_path):
    target = tmp_path / "not_a_store"
    target.mkdir()
    (target / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        run_nature(_tiny(), str(target))
    assert (target / "precious.txt").read_text() == "keep"
