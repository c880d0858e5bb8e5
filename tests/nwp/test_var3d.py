"""The classical NWP baseline's 3D-Var: observation operators, background-error covariance, cycling.

- the dot-product (adjoint) test of the observation operators, and their tangent-linear
  against finite differences;
- a single-observation experiment: the increment is the background-error covariance's column
  at the observation, scaled as the BLUE formula says;
- a cycled 3D-Var on a short T21 case reduces the error of its background against the truth.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("dinosaur")

import jax.numpy as jnp
from obscast.components.nwp.operators import VARIABLES, apply, build_obs, field_vector
from obscast.components.nwp.spectral import FIELDS, SpectralCovariance, apply_sqrt
from obscast.components.nwp.var3d import Var3D, state_fields, state_from_fields
from obscast.components.osse.dycore import build_dycore

SIGMA = np.array([0.25, 0.45, 0.65, 0.85])
LEVELS = (2, 4, 6, 8)
ERRORS = {"air_temperature": 1.0, "eastward_wind": 2.0, "northward_wind": 2.0, "geopotential_height": 15.0,
          "surface_air_pressure": 100.0, "brightness_temperature": 0.5}
T0 = pd.Timestamp("2000-01-02T00:00")


@pytest.fixture(scope="module")
def dycore():
    return build_dycore("T21", 10, 60.0, 6, LEVELS)


@pytest.fixture(scope="module")
def spun_up(dycore):
    """A T21 state after 8 simulated days from rest (eddies starting), and the state 6 h later."""
    state = dycore["init_fn"](rng_key=jax.random.PRNGKey(1))
    for _ in range(32):
        state, _ = dycore["advance"](state)
    later, _ = dycore["advance"](state)
    return state, later


@pytest.fixture(scope="module")
def covariance(dycore, spun_up):
    """B from four lagged differences of a short T21 run."""
    x, samples = spun_up[0], []
    for _ in range(4):
        y, _ = dycore["advance"](x)
        samples.append({f: np.asarray(getattr(y, f)) - np.asarray(getattr(x, f)) for f in FIELDS})
        x = y
    diffs = {f: np.stack([s[f] for s in samples]) for f in FIELDS}
    return SpectralCovariance.estimate(diffs, np.asarray(dycore["coords"].horizontal.mask))


def _tables(rng: np.random.Generator, n: int = 40) -> dict[str, pd.DataFrame]:
    """Reports of every kind at random positions, all at the analysis time."""
    t = np.full(n, T0.to_datetime64())
    lat, lon = rng.uniform(-80, 80, n), rng.uniform(-180, 180, n)
    synop = pd.DataFrame({"time": t, "latitude": lat, "longitude": lon, "surface_air_pressure": 1e5 + rng.normal(0, 500, n),
                          "air_temperature": 280 + rng.normal(0, 5, n), "eastward_wind": rng.normal(0, 5, n), "northward_wind": rng.normal(0, 5, n)})
    temp = pd.DataFrame({"time": t, "latitude": lat[::-1], "longitude": lon, "pressure": rng.uniform(3.0e4, 8.0e4, n),
                         "air_temperature": 250 + rng.normal(0, 5, n), "eastward_wind": rng.normal(0, 5, n),
                         "northward_wind": rng.normal(0, 5, n), "geopotential_height": 5000 + rng.normal(0, 50, n)})
    sat = pd.DataFrame({"time": t, "latitude": lat, "longitude": lon[::-1], "channel": rng.integers(1, 5, n),
                        "brightness_temperature": 250 + rng.normal(0, 5, n)})
    return {"synop": synop, "temp": temp, "satellite": sat}


def _var3d(dycore, covariance) -> Var3D:
    return Var3D(dycore, covariance, SIGMA, max_iterations=60, background_check=0.0)


def test_observation_operators_pass_the_dot_product_test(dycore, covariance, spun_up):
    var = _var3d(dycore, covariance)
    x = spun_up[0]
    obs = build_obs(_tables(np.random.default_rng(0)), T0, pd.Timedelta("6h"), var.latitude, var.longitude, SIGMA,
                    var.fields_si(x)["surface_air_pressure"], ERRORS)
    assert set(VARIABLES) == {VARIABLES[int(v)] for v in np.unique(obs.variable)}  # every variable is exercised
    index, weight = jnp.asarray(obs.index), jnp.asarray(obs.weight)

    def h(fields):
        return apply(field_vector(var._si(state_from_fields(x, fields))), index, weight)

    x0 = {f: jnp.asarray(v) for f, v in state_fields(x).items()}
    rng = np.random.default_rng(1)
    dx = {f: jnp.asarray(rng.standard_normal(v.shape).astype(np.float32) * float(np.abs(v).std() * 1e-2 + 1e-9)) * covariance.mask
          for f, v in state_fields(x).items()}
    y = jnp.asarray(rng.standard_normal(len(obs)).astype(np.float32))
    _hx, h_dx = jax.jvp(h, (x0,), (dx,))
    _, vjp = jax.vjp(h, x0)
    (ht_y,) = vjp(y)
    lhs = float(jnp.vdot(h_dx, y))
    rhs = float(sum(jnp.vdot(dx[f], ht_y[f]) for f in FIELDS))
    assert abs(lhs - rhs) <= 1e-4 * max(abs(lhs), abs(rhs))
    # The tangent-linear agrees with centred finite differences of the full operator.
    eps = 0.5
    plus = h({f: x0[f] + eps * dx[f] for f in FIELDS})
    minus = h({f: x0[f] - eps * dx[f] for f in FIELDS})
    fd = (plus - minus) / (2 * eps)
    assert float(jnp.linalg.norm(fd - h_dx)) <= 2e-2 * float(jnp.linalg.norm(h_dx))


def test_single_observation_increment_follows_the_background_error_covariance(dycore, covariance, spun_up):
    var = _var3d(dycore, covariance)
    xb = spun_up[0]
    si = var.fields_si(xb)
    lat0, lon0 = 45.0, 100.0
    obs_value = None
    table = pd.DataFrame({"time": [T0.to_datetime64()], "latitude": [lat0], "longitude": [lon0], "air_temperature": [np.nan]})
    probe = build_obs({"synop": table.assign(air_temperature=0.0)}, T0, pd.Timedelta("6h"), var.latitude, var.longitude, SIGMA,
                      si["surface_air_pressure"], ERRORS)
    hb = float(var.observe(xb, probe)[0])
    obs_value = hb + 2.0  # a 2 K innovation
    obs = build_obs({"synop": table.assign(air_temperature=obs_value)}, T0, pd.Timedelta("6h"), var.latitude, var.longitude, SIGMA,
                    si["surface_air_pressure"], ERRORS)
    xa, info = var.analyse(xb, obs)
    assert info["n_obs"] == 1
    inc = {f: np.asarray(getattr(xa, f)) - np.asarray(getattr(xb, f)) for f in FIELDS}
    # BLUE: dx = B H^T (H B H^T + R)^-1 d. B H^T is S S^T applied to the adjoint of the probe.
    x0 = {f: jnp.asarray(v) for f, v in state_fields(xb).items()}
    index, weight = jnp.asarray(obs.index), jnp.asarray(obs.weight)
    _, vjp = jax.vjp(lambda fl: apply(field_vector(var._si(state_from_fields(xb, fl))), index, weight), x0)
    (ht,) = vjp(jnp.ones(1, jnp.float32))
    sqrt, mask = covariance.jax_arrays()
    bht = apply_sqrt(sqrt, mask, apply_sqrt(sqrt, mask, ht))  # S symmetric per block: S S^T = S S
    hbht = float(sum(jnp.vdot(ht[f], bht[f]) for f in FIELDS))
    gain = 2.0 / (hbht + ERRORS["air_temperature"] ** 2)
    expected = {f: np.asarray(bht[f]) * gain for f in FIELDS}
    t_inc, t_exp = inc["temperature_variation"].ravel(), expected["temperature_variation"].ravel()
    assert np.corrcoef(t_inc, t_exp)[0, 1] > 0.99
    assert np.linalg.norm(t_inc - t_exp) <= 0.05 * np.linalg.norm(t_exp)
    # Only temperature is increment (univariate B), and the analysis moves towards the observation.
    assert np.abs(inc["vorticity"]).max() == 0.0 and np.abs(inc["log_surface_pressure"]).max() == 0.0
    ha = float(var.observe(xa, obs)[0])
    assert 0.0 < ha - hb < 2.0
    assert ha - hb == pytest.approx(2.0 * hbht / (hbht + 1.0), rel=0.05)
    # The increment's shape is the covariance's correlation around the report: largest near it.
    f_inc = var.fields_si(xa)["air_temperature"][-1] - si["air_temperature"][-1]
    i, j = np.unravel_index(np.argmax(np.abs(f_inc)), f_inc.shape)
    assert abs(var.latitude[i] - lat0) < 10 and min(abs(var.longitude[j] - lon0), 360 - abs(var.longitude[j] - lon0)) < 10


@pytest.mark.slow
def test_cycled_3dvar_reduces_the_error_of_its_background(tmp_path):
    """A T21 nature run, its simulated SYNOP/TEMP/satellite reports, and six cycles from a cold start."""
    import xarray as xr
    from obscast.components.data.fields import stack_truth
    from obscast.components.nwp.cycle import (
        analysis_error,
        build_twins,
        channels_of,
        lagged_differences,
        run_cycle,
        to_twin,
    )
    from obscast.components.osse.errors import ErrorModel
    from obscast.components.osse.nature import NatureRunConfig, load_states, run_nature
    from obscast.components.osse.networks import load_networks
    from obscast.components.osse.simulate import simulate_observations

    cfg = NatureRunConfig(truncation="T21", dt_minutes=60, spinup_days=20, length_days=6, start_time=datetime(2000, 1, 1))
    path = str(tmp_path / "nature.zarr")
    run_nature(cfg, path)
    nature = xr.open_zarr(path, consolidated=False)
    sim = simulate_observations(nature, load_networks(), ErrorModel(), kinds=("synop", "temp", "satellite"))
    tables = {k: sim[k].sort_values("time", kind="stable").reset_index(drop=True) for k in sim}
    times, states = load_states(path)
    assert len(times) == 6  # one state a day
    d = build_dycore("T21", 10, 60.0, 6, tuple(cfg.level_indices()))
    template = d["init_fn"](rng_key=jax.random.PRNGKey(0))
    diffs = lagged_differences(lambda s: d["advance"](s)[0], template, {f: states[f][:3] for f in FIELDS})
    b = SpectralCovariance.estimate(diffs, np.asarray(d["coords"].horizontal.mask)).scaled(2.0)
    twin, _, output = build_twins(cfg, b, "T21", 30, 5.0)
    # Cold start: the state of day 0 as the background of day 3's first cycle.
    x0 = to_twin(twin, {f: states[f][0] for f in FIELDS}, template)
    cycle_times = pd.date_range(pd.Timestamp(times[3]), periods=6, freq="6h")
    r = run_cycle(twin, output, x0, tables, cycle_times, pd.Timedelta("6h"), ErrorModel().model_dump() | {"wind_component": 2.0},
                  1, cycle_times[0])
    truth = stack_truth(nature, cycle_times)
    err = analysis_error(r["analysis"][None, 0], truth[None, 0], output.latitude), analysis_error(r["analysis"][None, -1], truth[None, -1], output.latitude)
    background = analysis_error(channels_of(output, x0, 1)[None], truth[None, 0], output.latitude)
    # temperature at sigma 0.45 (channel 1) and surface pressure (last channel)
    for c in (1, truth.shape[1] - 1):
        assert err[0][c] < 0.8 * background[c]
        assert err[1][c] < 0.6 * background[c]
    assert all(i["cost_after"] < i["cost_before"] for i in r["info"])
