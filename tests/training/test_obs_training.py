"""Tests of OSSE training: observation windows, statistics, feature cache, training, evaluation.

The truth is a tiny T21 Held-Suarez nature run (dinosaur); the observations come from a small
throwaway sampler below (same table schema as :mod:`obscast.components.osse.simulate`).
"""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from obscast.components.data.fields import truth_channels

from obscast.components.data.obs import ObsWindowDataset, collate_obs, split_times

from obscast.components.data.statistics import STATIC_SOURCE, fit_statistics

from obscast.components.data.tables import prepare_table
from obscast.components.training.trainer import (
    FeatureCache,
    cycle_analyses,
    train_network,
    validation_loss,
)
from obscast.components.model.assembly import build_model_args
from obscast.components.verification.evaluate import evaluate, gridpoint_climatology, skill_table
from obscast.components.model.model import ObsCastModel
from tests.training.osse_synthetic import synthetic_tables

SMALL = dict(n_lat=16, n_lon=32, latent_channels=16, processor_hidden=16, n_blocks=1, decoder_hidden=16, encoder_hidden=16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def nature(tmp_path_factory):
    pytest.importorskip("dinosaur")
    xr = pytest.importorskip("xarray")
    from obscast.components.osse.nature import NatureRunConfig, run_nature

    cfg = NatureRunConfig(truncation="T21", dt_minutes=60, spinup_days=1, length_days=5, start_time=datetime(2000, 1, 1))
    path = run_nature(cfg, str(tmp_path_factory.mktemp("nature") / "nature.zarr"))
    return xr.open_zarr(path, consolidated=False).load()


def _sample(nature, seed: int = 0) -> dict[str, pd.DataFrame]:
    """SYNOP (lowest level + ps), TEMP at 00/12 UTC, aircraft with heights, satellite channels =
    T at each level; Gaussian noise (:func:`tests.training.osse_synthetic.synthetic_tables`)."""
    return synthetic_tables(nature, seed, n_synop=300, n_temp=30, n_satellite=200, aircraft_box=((40.0, 60.0), (-10.0, 20.0)))


@pytest.fixture(scope="module")
def setup(nature):
    tables = _sample(nature)
    periods = split_times(nature["time"].values, (0.6, 0.4), n_steps=(2, 2), history=2)
    stats = fit_statistics(tables, nature, periods[0]["times"])
    train = ObsWindowDataset(tables, nature, periods[0]["init_times"], stats, n_steps=2, history=2)
    val = ObsWindowDataset(tables, nature, periods[1]["init_times"], stats, n_steps=2, history=2)
    return tables, periods, stats, train, val


# ---------------------------------------------------------------- tables and statistics


def test_prepare_table_pivots_channels_and_fills_pressure(setup):
    tables = setup[0]
    sat, variables = prepare_table(tables["satellite"], name="satellite")
    assert variables == [f"brightness_temperature_ch{c}" for c in (1, 2, 3, 4)]
    assert len(sat) == len(tables["satellite"]) // 4  # one point per field of view
    assert sat["longitude"].between(-180, 180, inclusive="left").all()
    again, v2 = prepare_table(sat, name="satellite")
    assert v2 == variables and len(again) == len(sat)  # idempotent
    air, av = prepare_table(tables["aircraft"], name="aircraft")
    assert av == ["air_temperature", "eastward_wind", "northward_wind"]
    np.testing.assert_allclose(air["pressure"], 30742.5, rtol=1e-3)  # ICAO pressure at 9000 m
    syn, sv = prepare_table(tables["synop"], name="synop")
    assert "surface_altitude" not in sv and "wind_speed" not in sv
    with pytest.raises(ValueError, match="lacks columns"):
        prepare_table(tables["synop"].drop(columns="latitude"))
    # The ingest's QC flags are metadata, never model inputs (a source without default variables).
    flagged = tables["satellite"].assign(qc=np.uint8(1))
    _, fv = prepare_table(flagged, name="my_satellite")
    assert fv == variables


def test_statistics_from_training_period_only(setup, nature):
    tables, periods, stats, *_ = setup
    json.dumps(stats)  # JSON-ready
    assert stats["grid"]["channels"] == truth_channels(nature)
    later = periods[1]["times"]
    spoiled = {k: v.copy() for k, v in tables.items()}
    spoiled["synop"].loc[spoiled["synop"]["time"] > later[0], "air_temperature"] += 50.0
    truth = nature.copy(deep=True)
    truth["air_temperature"].loc[{"time": later}] = truth["air_temperature"].sel(time=later) + 50.0
    assert fit_statistics(spoiled, truth, periods[0]["times"]) == stats
    assert fit_statistics(spoiled, truth, nature["time"].values) != stats


# ---------------------------------------------------------------- dataset


def test_dataset_items_collate_and_normalisation(setup):
    tables, periods, stats, train, _ = setup
    inputs, targets, st_targets = train[0]
    c, h, w = len(stats["grid"]["channels"]), 16, 32
    assert targets.shape == (2, c, h, w) and st_targets.shape == (2, 300, 4)
    assert set(inputs) == {STATIC_SOURCE, *[f"{s}{lag}" for s in ("synop", "temp", "aircraft", "satellite") for lag in ("", "_lag1")]}
    assert inputs["synop"]["values"].shape == (300, 4) and inputs["synop"]["latitude"].shape == (300,)
    assert "pressure" in inputs["temp"] and "pressure" not in inputs["synop"]
    # the window (t0 - 6 h, t0]: satellite obs stamped t - 1 h belong to the window ending at t
    t0 = train.init_times[0]
    sat = prepare_table(tables["satellite"], name="satellite")[0]
    assert inputs["satellite"]["latitude"].shape[0] == int(((sat["time"] > t0 - pd.Timedelta(hours=6)) & (sat["time"] <= t0)).sum())
    # normalised obs of the training windows: O(1) anomalies
    vals = torch.cat([train[i][0]["synop"]["values"] for i in range(len(train))])
    assert vals.nanmean(0).abs().max() < 0.5 and (vals.std(0) - 1).abs().max() < 0.5
    # station targets: the truth at init + 6 h interpolated to the stations
    syn = tables["synop"].drop_duplicates("station_id")
    t1 = t0 + pd.Timedelta(hours=6)
    ps = syn.assign(time=t1)["surface_air_pressure"]  # noisy obs; the target is the noise-free truth
    phys = train.denormalise(st_targets[0], channel_axis=-1, channels=train.station_channels)
    assert train.station_channels[0] == "surface_air_pressure"
    assert float((phys[:, 0] - torch.tensor(ps.to_numpy())).abs().median()) < 500.0
    # collate pads with a mask
    batch = collate_obs([train[i] for i in range(3)])
    x, y, ys = batch
    assert y.shape == (3, 2, c, h, w) and ys.shape == (3, 2, 300, 4)
    for key, obs in x.items():
        if isinstance(obs, dict):
            n = [train[i][0][key]["latitude"].shape[0] for i in range(3)]
            assert obs["mask"].shape == (3, max(n)) and obs["mask"].sum(1).tolist() == n
            assert torch.isnan(obs["values"][~obs["mask"]]).all()
    assert x[STATIC_SOURCE].shape == (3, c + 2, h, w)


def test_dataset_rejects_missing_truth(setup, nature):
    tables, periods, stats, *_ = setup
    with pytest.raises(ValueError, match="truth times"):
        ObsWindowDataset(tables, nature, periods[1]["init_times"][-1:], stats, n_steps=50)


# ---------------------------------------------------------------- model, cache, training


def test_cached_features_match_model_forward(setup):
    _, _, stats, train, _ = setup
    torch.manual_seed(0)
    model = ObsCastModel(**build_model_args(stats, train.station_channels, history=2, **SMALL)).eval()
    with torch.no_grad():  # make the zero-initialised output layers non-trivial
        for name, p in model.named_parameters():
            if "lengthscale" not in name:
                p.add_(0.01 * torch.randn_like(p))
    cache = FeatureCache(model, [train])
    idx = [0, 1, 2]
    inputs, _, _ = collate_obs([train[i] for i in idx])
    points = train.station_points(len(idx))
    with torch.no_grad():
        ref = model(inputs, n_steps=2, station_points=points)
        latent = model.fuse(cache.encode(model, train, idx))
        got = model.forecast(latent, 2, points, residual=train.static.expand(len(idx), -1, -1, -1))
    torch.testing.assert_close(got["grid"], ref["grid"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["stations"], ref["stations"], rtol=1e-5, atol=1e-5)


def test_training_lowers_validation_loss_and_evaluates(setup):
    _, _, stats, train, val = setup
    args = build_model_args(stats, train.station_channels, history=2, **SMALL)
    torch.manual_seed(0)
    untrained = ObsCastModel(**args)
    cache = FeatureCache(untrained, [train, val])
    before = validation_loss(untrained, val, 2, cache)
    records = []
    model, hist = train_network(
        args, train, val, epochs=4, lr=3e-3, batch_size=2, rollout_schedule=(1, 2), station_points=64,
        cache=cache, device="cpu", progress=records.append,
    )
    assert len(records) == 4 and [r["rollout"] for r in records] == [1, 2, 2, 2]
    best = min(r["val_loss"] for r in records)
    assert best < before  # 4 tiny epochs: the size of the gain varies with the thread count
    assert hist["best_epoch"] == 1 + int(np.argmin([r["val_loss"] for r in records]))
    assert not model.training
    assert all(p.requires_grad for p in model.parameters())
    # evaluation: end to end on the observations, and the same through the cache
    clim = gridpoint_climatology(train)
    res = evaluate(model, val, 2, climatology=clim, device="cpu", max_stations=50)
    assert res["lead_hours"] == [6.0, 12.0] and res["n_inits"] == len(val)
    for k in ("model", "persistence", "climatology"):
        arr = np.asarray(res["rmse"][k])
        assert arr.shape == (len(train.channels), 2) and np.isfinite(arr).all()
    assert (np.asarray(res["rmse"]["persistence"]) > 0).all()
    assert set(res["station_rmse"]) == {"decoder", "interpolated", "persistence"} and res["n_stations"] == 50
    cached = evaluate(model, val, 2, climatology=clim, device="cpu", max_stations=50, cache=cache)
    np.testing.assert_allclose(cached["rmse"]["model"], res["rmse"]["model"], rtol=1e-3)
    table = skill_table(res, ["surface_air_pressure"])
    assert list(table["lead_hours"]) == [6.0, 12.0] and "station_decoder" in table
    json.dumps({k: v for k, v in res.items() if not isinstance(v, xr.Dataset)})  # everything but the score Datasets
    assert res["scores"]["rmse"].dims == ("system", "channel", "lead_time")
    np.testing.assert_allclose(res["scores"]["rmse"].sel(system="model").values, res["rmse"]["model"])


def _perturbed(model: ObsCastModel, seed: int = 0, scale: float = 0.1) -> ObsCastModel:
    """Make the zero-initialised output layers non-trivial (not the kernel lengthscales)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lengthscale" not in name:
                p.add_(scale * torch.randn(p.shape, generator=gen))
    return model.eval()


def test_cycle_analyses_carry_the_background_and_restart_after_gaps(setup, nature):
    tables, _, stats, train, _ = setup
    torch.manual_seed(0)
    model = _perturbed(ObsCastModel(**build_model_args(stats, train.station_channels, history=2, cycling=True, **SMALL)))
    cache = FeatureCache(model, [train])
    got = cycle_analyses(model, train, cache)
    assert got.shape == (len(train), 16, 16, 32)
    with torch.no_grad():  # the recursion written out: cold start, then background = one step of the last analysis
        ref, bg = [], None
        for i in range(4):
            ref.append(model.fuse(cache.encode(model, train, [i]), background=bg))
            bg = model.next_background(ref[-1])
    torch.testing.assert_close(got[:4], torch.cat(ref), rtol=1e-5, atol=1e-5)
    assert (got[1] - model.fuse(cache.encode(model, train, [1]))).abs().max() > 1e-3  # the background matters
    # on the observations (no cache): the same analyses
    torch.testing.assert_close(cycle_analyses(model, train), got, rtol=1e-4, atol=1e-4)
    # a gap in the init times restarts the cycle cold
    gappy = ObsWindowDataset(tables, nature, train.init_times[[0, 1, 3]], stats, n_steps=2, history=2)
    g = cycle_analyses(model, gappy, FeatureCache(model, [gappy]))
    with torch.no_grad():
        torch.testing.assert_close(g[2:], model.fuse(cache.encode(model, train, [3])), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g[:2], got[:2], rtol=1e-5, atol=1e-5)
    # withholding a source in every cycle: the same as its windows being empty
    hidden = cycle_analyses(model, train, cache, keep={"satellite": 0.0})
    no_sat = tables | {"satellite": tables["satellite"].assign(time=tables["satellite"]["time"] + pd.Timedelta(days=365))}
    empty = ObsWindowDataset(no_sat, nature, train.init_times, stats, n_steps=2, history=2)
    torch.testing.assert_close(cycle_analyses(model, empty), hidden, rtol=1e-4, atol=1e-4)
    assert (hidden - got).abs().max() > 1e-3


def test_innovation_encoders_cycle_alike_from_cache_and_observations(setup):
    """With innovations the SetConv MLPs run inside the fusion on the cached features and the
    background: the cached and the direct analysis cycles agree, the innovation inputs carry
    weight, and the satellite (no background counterpart) has none."""
    _, _, stats, train, _ = setup
    torch.manual_seed(0)
    args = build_model_args(stats, train.station_channels, history=2, cycling=True, innovations=True, **SMALL)
    model = _perturbed(ObsCastModel(**args))
    assert set(model.innovation_sources) == {k for k in args["sources"] if k.split("_lag")[0] in ("synop", "temp", "aircraft")}
    cache = FeatureCache(model, [train])
    got = cycle_analyses(model, train, cache)
    torch.testing.assert_close(cycle_analyses(model, train), got, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # zero the MLP weights on the innovation inputs: the analyses change
        for k in model.innovation_sources:
            enc = model.encoders[k]
            enc.mlp[0].weight[:, 2 * enc.n_channels :] = 0.0
    assert (cycle_analyses(model, train, cache) - got).abs().max() > 1e-3
    with pytest.raises(ValueError, match="cycling"):
        ObsCastModel(**build_model_args(stats, train.station_channels, innovations=True, **SMALL))


def test_cycling_training_lowers_validation_loss_and_verifies_with_spinup(setup, nature):
    tables, _, stats, train, val = setup
    args = build_model_args(stats, train.station_channels, history=2, cycling=True, **SMALL)
    torch.manual_seed(0)
    untrained = ObsCastModel(**args)
    cache = FeatureCache(untrained, [train, val])
    before = validation_loss(untrained, val, 2, cache)
    model, hist = train_network(
        args, train, val, epochs=4, lr=3e-3, batch_size=2, rollout_schedule=(1, 2), station_points=64,
        cache=cache, device="cpu", spinup_cycles=1,
    )
    assert model.cycling and min(r["val_loss"] for r in hist["epochs"]) < before
    res = evaluate(model, val, 2, device="cpu", max_stations=0, cache=cache, spinup=2)
    assert res["n_inits"] == len(val) - 2
    withheld = evaluate(model, val, 2, device="cpu", max_stations=0, cache=cache, spinup=2, keep={"synop": 0.0})
    assert not np.allclose(withheld["rmse"]["model"], res["rmse"]["model"])
    np.testing.assert_allclose(withheld["rmse"]["persistence"], res["rmse"]["persistence"])
    with pytest.raises(ValueError, match="spinup"):
        evaluate(model, val, 2, device="cpu", max_stations=0, cache=cache, spinup=len(val))
    with pytest.raises(ValueError, match="consecutive"):
        gappy = ObsWindowDataset(tables, nature, train.init_times[[0, 1, 3, 4, 5, 6]], stats, n_steps=2, history=2)
        train_network(args, gappy, None, epochs=1, rollout_schedule=1, cache=cache, device="cpu")
    # warm start (retrain): one more epoch from the trained weights starts where they left off
    warm, warm_hist = train_network(args, train, val, epochs=1, lr=3e-3, batch_size=2, rollout_schedule=1, station_points=64,
                                 cache=cache, device="cpu", spinup_cycles=1, init_state=model.state_dict())
    cold, cold_hist = train_network(args, train, val, epochs=1, lr=3e-3, batch_size=2, rollout_schedule=1, station_points=64,
                                 cache=cache, device="cpu", spinup_cycles=1)
    assert warm_hist["epochs"][0]["train_loss"] < cold_hist["epochs"][0]["train_loss"]
    with pytest.raises(RuntimeError, match="state_dict"):
        train_network(args, train, val, epochs=1, rollout_schedule=1, cache=cache, device="cpu", init_state={"bogus": torch.zeros(1)})
