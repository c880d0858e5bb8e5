"""Ensemble scores: the fair CRPS against its closed form and `scores`, the rank histogram and the
spread/skill ratio of a perfectly reliable synthetic ensemble."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scores
import xarray as xr
from obscast.components.verification.ensemble import (
    ensemble_markdown,
    ensemble_scores,
    fair_crps,
    rank_histogram,
    rank_histogram_png,
    spread,
)
from obscast.processor.grid import latitude_weights

DIMS = ("init_time", "lead_time", "channel", "latitude", "longitude")


def _arrays(ens: np.ndarray, truth: np.ndarray, lat: np.ndarray) -> tuple[xr.DataArray, xr.DataArray]:
    n_init, n_lead, n_ch, _, n_lon = truth.shape
    coords = {"init_time": pd.date_range("2000-01-01", periods=n_init, freq="6h"),
              "lead_time": pd.to_timedelta(6 * np.arange(1, n_lead + 1), unit="h"),
              "channel": [f"air_temperature_sigma{k:03d}" for k in range(n_ch)],
              "latitude": lat, "longitude": np.arange(n_lon) * 360.0 / n_lon}
    return (xr.DataArray(ens, dims=("member", *DIMS), coords=coords), xr.DataArray(truth, dims=DIMS, coords=coords))


def _closed_form(ens: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Fair CRPS per point (Ferro 2014, eq. 4): mean |x_i - y| - sum_ij |x_i - x_j| / (2 N (N - 1))."""
    n = ens.shape[0]
    skill = np.abs(ens - truth[None]).mean(0)
    pairs = np.abs(ens[:, None] - ens[None]).sum((0, 1))
    return skill - pairs / (2 * n * (n - 1))


def test_fair_crps_by_hand():
    """Two points, hand-checked: members (0, 1, 3) and truth 2 give 4/3 - 12/12 = 1/3; members
    (0, 2, 4) and truth 0 give 2 - 16/12 = 2/3. The mean is weighted by the latitude weights."""
    lat = np.array([0.0, 60.0])
    ens = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 4.0]]).reshape(3, 1, 1, 1, 2, 1)
    truth = np.array([2.0, 0.0]).reshape(1, 1, 1, 2, 1)
    f, y = _arrays(ens, truth, lat)
    w = latitude_weights(lat)
    expected = (w[0] * (1 / 3) + w[1] * (2 / 3)) / w.sum()
    got = fair_crps(f, y)
    assert got.dims == ("lead_time", "channel")
    np.testing.assert_allclose(got.values.ravel(), [expected], rtol=1e-12)
    # A two-member ensemble straddling the truth symmetrically has a fair CRPS of zero.
    f2, y2 = _arrays(np.array([0.0, 2.0]).reshape(2, 1, 1, 1, 1, 1), np.ones((1, 1, 1, 1, 1)), np.array([10.0]))
    assert abs(fair_crps(f2, y2, weighted=False).item()) < 1e-12


def test_fair_crps_matches_scores_and_the_closed_form():
    rng = np.random.default_rng(3)
    lat = np.linspace(-80, 80, 9)
    ens = rng.normal(size=(6, 3, 2, 2, 9, 12))
    truth = rng.normal(size=(3, 2, 2, 9, 12)) * 1.5 + 0.3
    f, y = _arrays(ens, truth, lat)
    got = fair_crps(f, y)
    # Closed form, latitude-weighted over space then averaged over inits.
    per_point = _closed_form(ens, truth)  # (init, lead, channel, lat, lon)
    w = latitude_weights(lat)[:, None]
    expected = ((per_point * w).sum((-2, -1)) / (w.sum() * 12)).mean(0)  # (lead, channel)
    np.testing.assert_allclose(got.transpose("lead_time", "channel").values, expected, rtol=1e-10)
    # `scores` unreduced, averaged here by hand: the same number.
    point = scores.probability.crps_for_ensemble(f, y, "member", method="fair", preserve_dims="all")
    np.testing.assert_allclose(point.transpose(*DIMS).values, per_point, rtol=1e-10)
    # The ECDF CRPS exceeds the fair one by sum_ij |x_i - x_j| (1 / (2 N (N - 1)) - 1 / (2 N^2)) per point.
    ecdf = scores.probability.crps_for_ensemble(f, y, "member", method="ecdf", preserve_dims="all").transpose(*DIMS).values
    pairs = np.abs(ens[:, None] - ens[None]).sum((0, 1))
    np.testing.assert_allclose(ecdf - per_point, pairs * (1 / (2 * 6 * 5) - 1 / (2 * 36)), rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 members"):
        fair_crps(f.isel(member=[0]), y)


def _reliable(n_members: int, spread_factor: float = 1.0, seed: int = 0):
    """Truth and members drawn from the same distribution N(mu, sigma^2) at every point (mu and
    sigma vary in space and time): a perfectly reliable ensemble (spread_factor 1)."""
    rng = np.random.default_rng(seed)
    shape = (4, 2, 2, 36, 72)
    lat = -90 + 180 / 36 * (np.arange(36) + 0.5)
    mu = rng.normal(280.0, 10.0, shape)
    sigma = rng.uniform(0.5, 3.0, shape)
    truth = mu + sigma * rng.standard_normal(shape)
    ens = mu[None] + spread_factor * sigma[None] * rng.standard_normal((n_members, *shape))
    return _arrays(ens, truth, lat)


def test_spread_skill_of_a_reliable_ensemble_is_one():
    f, y = _reliable(5)
    ds = ensemble_scores(f, y, deterministic=f.isel(member=0, drop=True))
    assert set(ds.data_vars) == {"crps", "spread", "ensemble_mean_rmse", "deterministic_rmse", "spread_skill", "rank_histogram"}
    assert ds["spread_skill"].dims == ("channel", "lead_time") and ds.attrs["members"] == 5
    np.testing.assert_allclose(ds["spread_skill"].values, 1.0, atol=0.03)
    # Without the (N + 1)/N factor the ratio of a 5-member ensemble is sqrt(5/6) = 0.913: the test can tell.
    raw = ds["spread"] / ds["ensemble_mean_rmse"]
    np.testing.assert_allclose(raw.values, np.sqrt(5 / 6), atol=0.03)
    # Spread is the unbiased (ddof=1) member variance, latitude-weighted.
    var = f.var("member", ddof=1).values
    w = latitude_weights(f["latitude"].values)[:, None]
    expected = np.sqrt(((var * w).sum((-2, -1)) / (w.sum() * 72)).mean(0))
    np.testing.assert_allclose(spread(f).transpose("lead_time", "channel").values, expected, rtol=1e-10)
    # The ensemble mean beats a single member (the deterministic stand-in).
    assert (ds["ensemble_mean_rmse"] < ds["deterministic_rmse"]).all()
    assert list(ds["units"].values) == ["K", "K"] and ds["crps"].attrs["units"] == "K"
    # An under-dispersive ensemble (half the spread) scores below 1 and has a U-shaped rank histogram.
    under = ensemble_scores(*_reliable(5, spread_factor=0.5, seed=1))
    assert (under["spread_skill"] < 0.65).all()
    rh = under["rank_histogram"]
    assert (rh.sel(rank=1) > 2 * rh.sel(rank=3)).all() and (rh.sel(rank=6) > 2 * rh.sel(rank=3)).all()
    md = ensemble_markdown(ds, "synthetic")
    assert "fair CRPS" in md and "spread/skill" in md and "deterministic RMSE" in md and "air_temperature_sigma000 [K]" in md
    png = rank_histogram_png(ds, title="synthetic")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_rank_histogram_of_draws_from_the_truths_distribution_is_flat():
    f, y = _reliable(4, seed=2)
    rh = rank_histogram(f, y)
    assert rh.dims == ("lead_time", "channel", "rank") and list(rh["rank"].values) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(rh.sum("rank").values, 1.0, rtol=1e-12)
    # 4 x 36 x 72 = 10368 points per panel: binomial standard error about 0.004 on 0.2.
    np.testing.assert_allclose(rh.values, 0.2, atol=0.02)
    # A biased ensemble (members 2 sigma too warm) puts the truth mostly in rank 1.
    biased = rank_histogram(f + 2 * 3.0, y)
    assert (biased.sel(rank=1) > 0.4).all()
