"""evaluate's streamed scores equal the metrics route (scores on the whole forecast arrays)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from obscast.components.data.interp import PointInterpolator
from obscast.components.data.obs import ObsWindowDataset, collate_obs
from obscast.components.data.statistics import fit_statistics
from obscast.components.verification.evaluate import evaluate, gridpoint_climatology
from obscast.components.verification.metrics import (
    rmse_and_bias,
    score_table,
    scores_markdown,
)
from obscast.components.verification.plots import rmse_vs_lead_png

from tests.synthetic import perturbed_model, wave_world


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup():
    """A random smooth 'nature run' on a 16 x 32 grid (3 days, 6-hourly), SYNOP reports of ps and
    the lowest level at 25 stations, a tiny perturbed model."""
    nature, reports = wave_world(12, 25)
    times = pd.DatetimeIndex(nature["time"].values)
    tables = {"synop": reports}
    stats = fit_statistics(tables, nature, times[:8])
    train = ObsWindowDataset(tables, nature, times[1:6], stats, n_steps=2)
    test = ObsWindowDataset(tables, nature, times[5:10], stats, n_steps=2)
    return train, test, perturbed_model(stats, test.station_channels), tables


def test_evaluate_equals_the_metrics_route(setup):
    train, test, model, _ = setup
    clim = gridpoint_climatology(train)
    res = evaluate(model, test, 2, climatology=clim, device="cpu", batch_size=2, max_stations=None)  # 3 batches

    # The metrics route: the forecasts of all inits at once, scored by rmse_and_bias.
    n = len(test)
    with torch.no_grad():
        inputs, _, _ = collate_obs([test[j] for j in range(n)])
        out = model(inputs, n_steps=2, station_points=test.station_points(n))
    targets, st_targets = test.targets(list(range(n)), 2)
    fc = test.denormalise(out["grid"]).double().numpy()
    truth = test.denormalise(targets).double().numpy()
    init = np.broadcast_to(test.denormalise(test.initial_truth(list(range(n)))).double().numpy()[:, None], truth.shape)
    lead = pd.to_timedelta([6, 12], unit="h").to_numpy()
    coords = {"init_time": test.init_times, "lead_time": lead, "channel": test.channels,
              "latitude": test.out_latitude, "longitude": test.out_longitude}
    da = lambda x: xr.DataArray(x, dims=("init_time", "lead_time", "channel", "latitude", "longitude"), coords=coords)
    got = res["scores"]
    assert got["rmse"].dims == ("system", "channel", "lead_time")
    assert list(got["system"].values) == ["model", "persistence", "climatology"]
    for system, f in (("model", fc), ("persistence", init), ("climatology", np.broadcast_to(clim, truth.shape))):
        ref = rmse_and_bias(da(f), da(truth))
        for metric in ("rmse", "bias"):
            np.testing.assert_allclose(
                got[metric].sel(system=system).transpose("channel", "lead_time").values,
                ref[metric].transpose("channel", "lead_time").values, rtol=1e-5, atol=1e-6 * float(np.abs(truth).max()),
            )
        np.testing.assert_allclose(res["rmse"][system], got["rmse"].sel(system=system).values)
    assert (got["bias"].sel(system="model") != 0).all() and (got["rmse"] > 0).all()
    assert list(got["units"].values) == ["K", "K", "m s-1", "m s-1", "m s-1", "m s-1", "m2 s-2", "m2 s-2", "Pa"]

    # Stations: the decoder and the gridded forecast interpolated to the stations, unweighted.
    sc = test.station_channels
    st_truth = test.denormalise(st_targets, channel_axis=-1, channels=sc).double().numpy()
    st_fc = test.denormalise(out["stations"], channel_axis=-1, channels=sc).double().numpy()
    ci = [test.channels.index(c) for c in sc]
    interp = PointInterpolator(test.out_latitude, test.out_longitude, test.station_latitude.numpy(), test.station_longitude.numpy())
    st_interp = np.moveaxis(interp(fc[:, :, ci]), -1, -2)
    st_coords = {"init_time": test.init_times, "lead_time": lead, "station": np.arange(st_truth.shape[2]), "channel": sc}
    sda = lambda x: xr.DataArray(x, dims=("init_time", "lead_time", "station", "channel"), coords=st_coords)
    st = res["station_scores"]
    assert res["n_stations"] == 25 and list(st["system"].values) == ["station_decoder", "gridded_interpolated", "persistence"]
    for system, f in (("station_decoder", st_fc), ("gridded_interpolated", st_interp)):
        ref = rmse_and_bias(sda(f), sda(st_truth), spatial_dims=("station",), weighted=False)
        np.testing.assert_allclose(st["rmse"].sel(system=system).transpose("channel", "lead_time").values,
                                   ref["rmse"].transpose("channel", "lead_time").values, rtol=1e-5)
    assert st["rmse"].attrs == {} and "units" in st.coords  # Pa and K and m s-1: a per-channel coordinate

    # The tables and the plot take the Dataset.
    table = score_table(got)
    assert list(table.columns) == ["model", "persistence", "climatology"] and len(table) == 2 * len(test.channels)
    md = scores_markdown(got, "test")
    assert "surface_air_pressure [Pa]" in md and "bias" in md
    assert rmse_vs_lead_png(got, title="test")[:4] == b"\x89PNG"


def test_baselines_and_scores_against_observations(setup):
    """A gridded baseline (e.g. the NWP twins) is scored on its inits only, beside the model on the
    same inits; station scores against the reports equal the metrics route on the reports."""
    from obscast.components.verification.evaluate import SAME_INITS, TRUTH, station_observations

    _, test, model, tables = setup
    lead = pd.to_timedelta([0, 6, 12], unit="h").to_numpy()
    inits = test.init_times[::2]  # a baseline forecasting from every second init
    idx = [list(test.init_times).index(t) for t in inits]
    targets, _ = test.targets(idx, 2)
    truth = test.denormalise(targets).double().numpy()
    init_truth = test.denormalise(test.initial_truth(idx)).double().numpy()
    perfect = np.concatenate([init_truth[:, None], truth], axis=1)  # lead 0 = the analysis
    rng = np.random.default_rng(3)
    noisy = perfect + rng.normal(0, 1.0, perfect.shape)
    grid = {"channel": test.channels, "latitude": test.out_latitude, "longitude": test.out_longitude}

    def baseline(f):
        return xr.Dataset({"forecast": (("init_time", "lead_time", "channel", "latitude", "longitude"), f),
                           "analysis": (("time", "channel", "latitude", "longitude"), f[:, 0])},
                          coords={"init_time": inits, "lead_time": lead, "time": inits, **grid})

    from obscast.components.data.tables import prepare_table

    table = prepare_table(tables["synop"], name="synop")[0]  # the station reports
    valid = pd.DatetimeIndex(sorted({t + k * test.step for t in test.init_times for k in range(3)}))
    obs = station_observations(table, test.station_latitude.numpy(), test.station_longitude.numpy(), test.station_channels, valid)
    assert np.isfinite(obs.values).mean() > 0.5  # the reports are found at their stations and times
    res = evaluate(model, test, 2, device="cpu", batch_size=2, max_stations=None,
                   baselines={"perfect": baseline(perfect), "noisy": baseline(noisy)}, observations=obs)
    sc = res["scores"]
    assert {"perfect", "noisy", SAME_INITS} <= set(sc["system"].values.tolist())
    np.testing.assert_allclose(sc["rmse"].sel(system="perfect").values, 0.0, atol=1e-6)
    np.testing.assert_allclose(sc["rmse"].sel(system="noisy").values, 1.0, rtol=0.2)
    # the model on the baseline's inits differs from the model on all inits
    assert not np.allclose(sc["rmse"].sel(system=SAME_INITS).values, sc["rmse"].sel(system="model").values)
    an = res["analysis_scores"]
    np.testing.assert_allclose(an["rmse"].sel(system="perfect").values, 0.0, atol=1e-6)
    st, ob = res["station_scores"], res["station_obs_scores"]
    # at the stations, the perfect grid is off only by the interpolation from the output grid
    assert (st["rmse"].sel(system="perfect") < st["rmse"].sel(system="noisy")).all()
    assert (st["rmse"].sel(system="perfect") < st["rmse"].sel(system="gridded_interpolated")).all()
    # Against the reports, the truth's error is the observation error (1 K on temperature).
    t_ch = [c for c in test.station_channels if c.startswith("air_temperature")][0]
    truth_err = ob["rmse"].sel(system=TRUTH, channel=t_ch).values
    assert np.all((truth_err > 0.5) & (truth_err < 1.5))
    assert (ob["rmse"].sel(system="station_decoder") > 0).all()

