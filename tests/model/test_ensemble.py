"""The EDA ensemble: members differ, are deterministic given the seed, equal the deterministic
forecast when the observation errors are zero, and give ordered quantile and [0, 1] probability
products with CF attributes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from obscast.components.config import Config
from obscast.components.data.statistics import fit_statistics
from obscast.components.data.tables import prepare_table
from obscast.components.errors import ObscastError
from obscast.components.model.ensemble import (
    ensemble_forecast,
    ensemble_hindcasts,
    ensemble_inits,
    gridded_ensemble_product,
    observation_error_std,
    perturb_tables,
    station_ensemble_product,
)
from obscast.components.osse.errors import ErrorModel
from obscast.components.training.workflow import forecast_at
from obscast.components.verification.ensemble import ensemble_scores

from tests.synthetic import perturbed_model, wave_world

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup():
    """A smooth random 'reanalysis' on a 16 x 32 grid (4 days, 6-hourly), SYNOP reports of ps and
    the lowest level at 30 stations, an experiment configuration and a tiny perturbed cycling model."""
    truth, raw = wave_world(16, 30, wind_error=2.0)
    times = pd.DatetimeIndex(truth["time"].values)
    tables = {"synop": prepare_table(raw, name="synop")[0]}
    config = Config(
        store="unused", sources={"synop": {"kind": "synop", "paths": ["unused.bufr"]}}, gridded={"era": {"paths": ["unused.grib"]}},
        experiment={"inputs": ["synop"], "target": {"dataset": "era", "stations": "synop"},
                    "split": {"by": "period", "train": {"start": "2000-01-01", "end": "2000-01-02T12:00"},
                              "validation": {"start": "2000-01-02T18:00", "end": "2000-01-02T18:00"},
                              "test": {"start": "2000-01-03", "end": "2000-01-04T18:00"}}},
        verify={"spinup_cycles": 2}, ensemble={"members": 4, "seed": 7, "inits": 2, "every": 2},
    )
    stats = fit_statistics(tables, truth, times[:7])
    from obscast.components.data.obs import ObsWindowDataset

    probe = ObsWindowDataset(tables, truth, times[2:3], stats, n_steps=2)
    model = perturbed_model(stats, probe.station_channels, cycling=True, station_residual="forecast")
    return config, model, tables, truth, stats, raw


def test_perturbations_have_the_observation_errors():
    em = ErrorModel()
    assert observation_error_std("eastward_wind", em) == em.wind_component
    assert observation_error_std("brightness_temperature_ch3", em) == em.brightness_temperature
    assert observation_error_std("dew_point_temperature", em) == 1.5
    with pytest.raises(ObscastError, match="relative_humidity"):
        observation_error_std("relative_humidity", em)
    n = 20000
    table = pd.DataFrame({"time": pd.Timestamp("2000-01-01"), "latitude": 0.0, "longitude": 0.0,
                          "air_temperature": np.full(n, 280.0), "surface_air_pressure": np.where(np.arange(n) % 2, np.nan, 1e5)})
    out = perturb_tables({"synop": table, "other": table}, {"synop": ["air_temperature", "surface_air_pressure"]}, em, 0, 1)
    assert out["other"] is table and (table["air_temperature"] == 280.0).all()  # the input is not modified
    flagged = perturb_tables({"s": table.assign(qc=np.uint8(3))}, {"s": ["air_temperature", "qc"]}, em, 0, 1)["s"]
    assert (flagged["qc"] == 3).all() and not (flagged["air_temperature"] == 280.0).all()  # QC flags are not measurements
    dt = out["synop"]["air_temperature"] - 280.0
    assert abs(dt.std() - em.air_temperature) < 0.03 and abs(dt.mean()) < 0.03
    ps = out["synop"]["surface_air_pressure"]
    assert ps.isna().sum() == n // 2 and abs((ps - 1e5).std() - em.surface_air_pressure) < 3.0  # missing stays missing
    cols = {"synop": ["air_temperature", "surface_air_pressure"]}
    again = perturb_tables({"synop": table}, cols, em, 0, 1)["synop"]["air_temperature"]  # without "other": the same draws
    other = perturb_tables({"synop": table}, cols, em, 0, 2)["synop"]["air_temperature"]
    assert np.array_equal(again, out["synop"]["air_temperature"]) and not np.allclose(again, other)


def test_members_differ_are_reproducible_and_reduce_to_the_deterministic_forecast(setup):
    config, model, tables, truth, stats, _ = setup
    init = pd.Timestamp("2000-01-03")
    ds, out = ensemble_forecast(model, config, tables, truth, stats, init, 2, members=3, seed=5)
    assert out["grid"].shape == (3, 2, len(ds.channels), len(ds.out_latitude), len(ds.out_longitude))
    assert out["stations"].shape == (3, 2, 30, len(ds.station_channels))
    spread = out["grid"].std(0)
    assert (spread > 0).float().mean() > 0.9  # members differ almost everywhere
    _, again = ensemble_forecast(model, config, tables, truth, stats, init, 2, members=3, seed=5)
    assert torch.equal(out["grid"], again["grid"]) and torch.equal(out["stations"], again["stations"])
    _, other = ensemble_forecast(model, config, tables, truth, stats, init, 2, members=3, seed=6)
    assert not torch.allclose(out["grid"], other["grid"])
    # Zero observation errors: every member is forecast_at's forecast (the same cycle, batched).
    zero = ErrorModel(air_temperature=0, wind_component=0, surface_air_pressure=0, geopotential_height=0, brightness_temperature=0)
    _, same = ensemble_forecast(model, config, tables, truth, stats, init, 2, members=2, seed=5, error_model=zero)
    _, det = forecast_at(model, config, tables, truth, stats, init, 2)
    for key in ("grid", "stations"):
        torch.testing.assert_close(same[key], det[key].expand_as(same[key]), rtol=1e-5, atol=1e-5)
    # The optional analysis perturbation adds spread on its own.
    _, noisy = ensemble_forecast(model, config, tables, truth, stats, init, 2, members=2, seed=5, error_model=zero, latent_noise=0.5)
    assert not torch.allclose(noisy["grid"][0], noisy["grid"][1])
    with pytest.raises(ValueError, match="members"):
        ensemble_forecast(model, config, tables, truth, stats, init, 2, members=0, seed=5)


def test_quantile_and_probability_products_are_ordered_cf(setup):
    config, model, tables, truth, stats, _ = setup
    init = pd.Timestamp("2000-01-03")
    ds, out = ensemble_forecast(model, config, tables, truth, stats, init, 2, members=6, seed=1)
    sc = ds.station_channels
    stations = ds.denormalise(out["stations"], channel_axis=-1, channels=sc).numpy()
    lat, lon = ds.station_latitude.numpy().astype(float), ds.station_longitude.numpy().astype(float)
    ids = np.array([f"{j:05d}" for j in range(len(lat))], dtype=object)
    mid = float(np.median(stations[..., sc.index("air_temperature_sigma085")]))
    product = station_ensemble_product(stations, sc, ids, lat, lon, init, config.model.step, [0.1, 0.5, 0.9],
                                       {"air_temperature": [mid - 5.0, mid, mid + 5.0], "surface_air_pressure": [1e5]}, {"title": "test"})
    assert product.attrs["Conventions"] == "CF-1.10" and product.attrs["featureType"] == "timeSeries" and product.attrs["ensemble_members"] == 6
    assert list(product["percentile"].values) == [10.0, 50.0, 90.0] and product["percentile"].attrs["units"] == "%"
    for c in sc:
        q = product[c]
        assert q.dims == ("percentile", "lead_time", "station")
        assert q.attrs["standard_name"] in ("air_temperature", "surface_air_pressure", "eastward_wind", "northward_wind")
        assert q.attrs["units"] in ("K", "Pa", "m s-1")
        assert (q.sel(percentile=10.0) <= q.sel(percentile=50.0)).all() and (q.sel(percentile=50.0) <= q.sel(percentile=90.0)).all()
        assert (q.sel(percentile=10.0) < q.sel(percentile=90.0)).any()  # a real spread
        member_values = stations[..., sc.index(c)]
        assert (q.sel(percentile=10.0).values >= member_values.min(0) - 1e-3).all() and (q.sel(percentile=90.0).values <= member_values.max(0) + 1e-3).all()
    name = "probability_of_air_temperature_sigma085_above_threshold"
    p = product[name]
    assert p.attrs["units"] == "1" and p.dims == ("threshold_air_temperature_sigma085", "lead_time", "station")
    thr = product["threshold_air_temperature_sigma085"]
    assert thr.attrs["standard_name"] == "air_temperature" and thr.attrs["units"] == "K"
    assert thr.attrs["spp__relative_to_threshold"] == "greater_than"
    assert ((p >= 0) & (p <= 1)).all()
    assert (p.diff("threshold_air_temperature_sigma085") <= 0).all()  # higher thresholds are less likely exceeded
    assert float(p.isel(threshold_air_temperature_sigma085=0).mean()) > float(p.isel(threshold_air_temperature_sigma085=2).mean())
    assert set(np.unique(p.values * 6).round(6)) <= set(range(7))  # fractions of 6 members
    assert "probability_of_surface_air_pressure_above_threshold" in product
    assert "probability_of_eastward_wind_sigma085_above_threshold" not in product  # no thresholds given
    grid = ds.denormalise(out["grid"]).numpy()
    gridded = gridded_ensemble_product(grid, ds.channels, ds.out_latitude, ds.out_longitude, init, config.model.step, {"title": "test"})
    assert gridded["air_temperature"].dims == ("realization", "lead_time", "level", "latitude", "longitude")
    assert gridded["realization"].attrs["standard_name"] == "realization" and gridded.sizes["realization"] == 6
    assert gridded.attrs["Conventions"] == "CF-1.10"
    with pytest.raises(ValueError, match="expected"):
        station_ensemble_product(stations[0], sc, ids, lat, lon, init, config.model.step, [0.5], {}, {})


def test_hindcasts_are_scored(setup):
    """Two test inits of a 4-member ensemble beside the deterministic forecast, scored."""
    config, model, tables, truth, stats, _ = setup
    inits = ensemble_inits(config, truth, 2)
    assert list(inits) == [pd.Timestamp("2000-01-03"), pd.Timestamp("2000-01-03T12:00")]
    h = ensemble_hindcasts(model, config, tables, truth, stats, 2)
    assert h["ensemble"].dims == ("member", "init_time", "lead_time", "channel", "latitude", "longitude")
    assert h["ensemble"].sizes["member"] == 4 and h["station_ensemble"].sizes["station"] == 30
    s = ensemble_scores(h["ensemble"], h["truth"], h["deterministic"])
    assert (s["crps"] > 0).all() and (s["spread"] > 0).all() and np.isfinite(s["spread_skill"]).all()
    st = ensemble_scores(h["station_ensemble"], h["station_truth"], spatial_dims=("station",), weighted=False)
    assert st["crps"].dims == ("channel", "lead_time") and (st["crps"] > 0).all()
