"""Worlds of the nature run: the Held-Suarez climate knobs and the idealised mountain.

The climate test integrates three T21 worlds (5 sigma layers, dt 60 min) for 34 days from the
same rest state: control, ``equilibrium_warming_k = 4`` and ``equator_pole_contrast_k = 40``.
The Held & Suarez (1994) forcing relaxes temperature towards T_eq at the rate
``k_T = k_a + (k_s - k_a) max(0, (sigma - 0.7) / 0.3) cos^4(lat)`` (k_a = 1/40 d, k_s = 1/4 d),
so a change dT_eq of the equilibrium is reached as ``dT_eq (1 - exp(-k_T t))``: in the free
troposphere (40-day time scale) a 34-day run sees only ~55 % of it. The expected response of
the zonal, time mean over days 24-33 is therefore this linear relaxation of the T_eq change
(computed here from the paper's formula, with the run's own zonal-mean surface pressure).
Measured departures are ~0.15 K (the dynamical response: eddy heat fluxes and vertical mixing
react to the warmer state, and the two chaotic runs sample different weather), so the
tolerance is 10 % of the set amount, 0.4 K, on area-weighted means.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from obscast.components.osse.nature import (
    NatureRunConfig,
    OrographyConfig,
    config_hash,
    run_nature,
)

KAPPA = 2.0 / 7.0  # R / cp of dinosaur.scales (Held & Suarez 1994)
WARMING_K = 4.0
CONTRAST_K = 40.0
SPINUP_DAYS, LENGTH_DAYS = 24.0, 10.0


def _cfg(**world) -> NatureRunConfig:
    return NatureRunConfig(
        truncation="T21",
        n_sigma_layers=5,
        output_sigma_levels=[0.5, 0.9],
        dt_minutes=60,
        spinup_days=SPINUP_DAYS,
        length_days=LENGTH_DAYS,
        output_interval_hours=24,
        state_interval_hours=24,
        start_time=datetime(2000, 1, 1),
        **world,
    )


# ------------------------------------------------------------ config (no JAX)
def test_world_keys_validate_and_enter_the_hash():
    flat = _cfg()
    # defaults are today's world: the hash is the one the keys did not exist for
    assert config_hash(flat) == config_hash(_cfg(equilibrium_warming_k=0.0, equator_pole_contrast_k=60.0, orography=None))
    mountain = OrographyConfig(latitude_deg=45.0, longitude_deg=90.0, height_m=2000.0, width_km=1500.0)
    hashes = {
        config_hash(flat),
        config_hash(_cfg(equilibrium_warming_k=4.0)),
        config_hash(_cfg(equator_pole_contrast_k=40.0)),
        config_hash(_cfg(orography=mountain)),
        config_hash(_cfg(orography=mountain.rotated(90.0))),
        config_hash(_cfg(orography=mountain.mirrored())),
    }
    assert len(hashes) == 6
    assert mountain.rotated(300.0).longitude_deg == pytest.approx(30.0)
    assert mountain.mirrored().mirrored() == mountain
    with pytest.raises(ValueError, match="length_km"):
        OrographyConfig(shape="ridge")
    with pytest.raises(ValueError, match="for shape .ridge. only"):
        OrographyConfig(shape="gaussian", length_km=2000.0)
    with pytest.raises(ValueError):
        OrographyConfig(height_m=-10.0)
    with pytest.raises(ValueError):
        _cfg(orography={"shape": "gaussian", "bogus": 1})


# ------------------------------------------------------------- climate knobs
def _relaxation_response(sigma: float, lat_deg: np.ndarray, ps_pa: np.ndarray, days: np.ndarray, new: tuple, old: tuple) -> np.ndarray:
    """Linear-relaxation response of the zonal mean temperature (lat,), time-averaged over
    ``days``: dT_eq * mean_t(1 - exp(-k_T t)), Held & Suarez (1994) T_eq and k_T."""
    phi = np.deg2rad(lat_deg)
    p = sigma * ps_pa / 1.0e5

    def teq(max_t: float, d_ty: float) -> np.ndarray:
        return np.maximum(200.0, p**KAPPA * (max_t - d_ty * np.sin(phi) ** 2 - 10.0 * np.log(p) * np.cos(phi) ** 2))

    k_t = 1 / 40 + (1 / 4 - 1 / 40) * max(0.0, (sigma - 0.7) / 0.3) * np.cos(phi) ** 4
    frac = (1.0 - np.exp(-np.outer(days, k_t))).mean(axis=0)
    return (teq(*new) - teq(*old)) * frac


@pytest.fixture(scope="module")
def climates(tmp_path_factory):
    pytest.importorskip("dinosaur")
    xr = pytest.importorskip("xarray")
    root = tmp_path_factory.mktemp("worlds")
    worlds = {"control": {}, "warm": {"equilibrium_warming_k": WARMING_K}, "contrast": {"equator_pole_contrast_k": CONTRAST_K}}
    return {name: xr.open_zarr(run_nature(_cfg(**kw), str(root / f"{name}.zarr")), consolidated=False) for name, kw in worlds.items()}


@pytest.mark.slow
def test_warm_knob_shifts_zonal_mean_temperature(climates):
    ctl, warm = climates["control"], climates["warm"]
    lat = ctl["latitude"].values
    w = np.cos(np.deg2rad(lat))
    days = SPINUP_DAYS + np.arange(ctl.sizes["time"])
    ps = ctl["surface_air_pressure"].mean(("time", "longitude")).values
    assert "surface_altitude" not in ctl  # flat world
    for sigma in (0.5, 0.9):
        d = (warm["air_temperature"] - ctl["air_temperature"]).sel(level=sigma).mean(("time", "longitude")).values
        expected = _relaxation_response(sigma, lat, ps, days, (315.0 + WARMING_K, 60.0), (315.0, 60.0))
        got, want = np.sum(d * w) / w.sum(), np.sum(expected * w) / w.sum()
        assert abs(got - want) < 0.1 * WARMING_K, (sigma, got, want)
        assert np.all(d > 0.0), (sigma, d)  # warmer at every latitude
        if sigma == 0.9:
            # the lowest layer nears the full equilibrium shift WARMING_K * 0.9**kappa = 3.9 K
            assert 0.75 * WARMING_K < got <= WARMING_K


@pytest.mark.slow
def test_contrast_knob_weakens_equator_pole_difference(climates):
    ctl = climates["control"]
    lat = ctl["latitude"].values
    w = np.cos(np.deg2rad(lat))
    trop, polar = np.abs(lat) <= 30.0, np.abs(lat) >= 60.0

    def equator_minus_pole(z: np.ndarray) -> float:
        return float(np.sum((z * w)[trop]) / w[trop].sum() - np.sum((z * w)[polar]) / w[polar].sum())

    days = SPINUP_DAYS + np.arange(ctl.sizes["time"])
    ps = ctl["surface_air_pressure"].mean(("time", "longitude")).values
    sigma = 0.9
    zm = {k: v["air_temperature"].sel(level=sigma).mean(("time", "longitude")).values for k, v in climates.items()}
    change = equator_minus_pole(zm["contrast"]) - equator_minus_pole(zm["control"])
    expected = equator_minus_pole(_relaxation_response(sigma, lat, ps, days, (315.0 + (CONTRAST_K - 60.0) / 3.0, CONTRAST_K), (315.0, 60.0)))
    # weaker gradient -> weaker eddy heat transport, which offsets part of the forced change:
    # the response is smaller than the linear relaxation but of the same sign and order
    assert expected < 0.0
    assert 1.1 * expected < change < 0.5 * expected, (change, expected)
    # the warm knob keeps the equilibrium contrast: the equator-pole difference changes only
    # as far as the faster tropical relaxation makes the transient response uneven
    warm_change = equator_minus_pole(zm["warm"]) - equator_minus_pole(zm["control"])
    warm_expected = equator_minus_pole(_relaxation_response(sigma, lat, ps, days, (315.0 + WARMING_K, 60.0), (315.0, 60.0)))
    assert abs(warm_change - warm_expected) < 0.1 * WARMING_K, (warm_change, warm_expected)
    assert abs(warm_change) < 0.25 * abs(change)


# ----------------------------------------------------------------- orography
@pytest.mark.slow
def test_mountain_in_store_and_moves_with_its_keys(tmp_path):
    pytest.importorskip("dinosaur")
    xr = pytest.importorskip("xarray")
    from obscast.components.osse.dycore import build_dycore

    mountain = OrographyConfig(shape="gaussian", latitude_deg=45.0, longitude_deg=90.0, height_m=2000.0, width_km=1500.0)
    cfg = _cfg(orography=mountain).model_copy(update={"spinup_days": 0.0, "length_days": 1.0})
    ds = xr.open_zarr(run_nature(cfg, str(tmp_path / "mountain.zarr")), consolidated=False)
    h = ds["surface_altitude"]
    assert h.dims == ("latitude", "longitude") and h.attrs["standard_name"] == "surface_altitude" and h.attrs["units"] == "m"
    lat, lon = ds["latitude"].values, ds["longitude"].values
    i, j = np.unravel_index(int(np.argmax(h.values)), h.shape)
    # peak on the grid point nearest the centre (T21 spacing 5.6 deg), height within the
    # spectral smoothing of a 1500 km mountain (filter + truncation: a few per cent)
    assert abs(lat[i] - 45.0) <= 2.9 and lon[j] == pytest.approx(90.0)
    assert 0.9 * 2000.0 < float(h.max()) <= 2000.0 * 1.02
    # flat far away (antipode) apart from spectral ringing
    assert abs(float(h.sel(longitude=270.0, method="nearest").sel(latitude=-45.0, method="nearest"))) < 20.0
    # the surface pressure sits lower over the mountain (hydrostatic, ~ 1000 hPa exp(-z/H))
    ps = ds["surface_air_pressure"].mean("time").values
    assert ps[i, j] < np.median(ps) - 150.0 * 100.0

    def field(oro: OrographyConfig) -> np.ndarray:
        d = build_dycore(cfg.truncation, cfg.n_sigma_layers, cfg.dt_minutes, cfg.steps_per_output, tuple(cfg.level_indices()), orography=oro)
        lat_rad = np.asarray(d["coords"].horizontal.latitudes)
        return np.swapaxes(d["surface_altitude_m"], 0, 1)[np.argsort(lat_rad)]

    stored = field(mountain)
    np.testing.assert_allclose(stored, h.values, atol=0.05)  # what the store holds is what the dycore sees
    # rotating 90 deg (16 T21 columns) rolls the field; mirroring flips it (Gaussian latitudes are symmetric)
    np.testing.assert_allclose(field(mountain.rotated(90.0)), np.roll(stored, 16, axis=1), atol=0.05)
    np.testing.assert_allclose(field(mountain.mirrored()), stored[::-1], atol=0.05)
    ridge = field(OrographyConfig(shape="ridge", latitude_deg=0.0, longitude_deg=180.0, height_m=3000.0, width_km=800.0, length_km=3000.0))
    k = np.unravel_index(int(np.argmax(ridge)), ridge.shape)
    assert lon[k[1]] == pytest.approx(180.0) and abs(lat[k[0]]) < 3.0
    # a ridge is longer (north-south) than wide: its half-height extent in latitude exceeds that in longitude
    half = ridge > 0.5 * ridge.max()
    assert half.any(axis=1).sum() * (lat[1] - lat[0]) > half.any(axis=0).sum() * (lon[1] - lon[0])


# --------------------------------------------------- orography as a model input
def test_orography_is_a_static_model_input_that_moves_with_the_world():
    torch = pytest.importorskip("torch")
    from obscast.components.data.obs import ObsWindowDataset, split_times
    from obscast.components.data.statistics import OROGRAPHY_VARIABLE, fit_statistics
    from obscast.components.model.assembly import build_model_args
    from obscast.components.model.model import ObsCastModel
    from obscast.components.osse.dycore import idealised_orography

    from tests.training.osse_synthetic import SMALL, synthetic_nature, synthetic_tables

    flat = synthetic_nature(2.0)
    tables = synthetic_tables(flat)
    lat, lon = flat["latitude"].values, flat["longitude"].values  # latitudes descending here
    la, lo = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")

    def world(lon0: float, lat0: float = 45.0):
        h = idealised_orography("gaussian", lat0, lon0, 2000.0, 1500.0, None, la, lo).astype(np.float32)
        return flat.assign({OROGRAPHY_VARIABLE: (("latitude", "longitude"), h, {"units": "m"})})

    periods = split_times(flat["time"].values, (0.7, 0.3), n_steps=1)
    init = periods[0]["init_times"]
    # flat world: no orography channel, today's model
    flat_stats = fit_statistics(tables, flat, periods[0]["times"])
    flat_ds = ObsWindowDataset(tables, flat, init, flat_stats)
    n_ch = len(flat_ds.channels)
    assert flat_ds.static.shape[0] == n_ch + 2 and "orography_scale_m" not in flat_stats["grid"]
    # mountain world: one more static channel, the coarsened height in km, latitudes ascending
    mountain = world(90.0)
    stats = fit_statistics(tables, mountain, periods[0]["times"])
    ds = ObsWindowDataset(tables, mountain, init, stats)
    oro = ds.static[n_ch + 2].numpy()
    assert ds.static.shape[0] == n_ch + 3 and ds.static_batch([0, 1]).shape[1] == n_ch + 3
    i, j = np.unravel_index(int(np.argmax(oro)), oro.shape)
    assert abs(ds.out_latitude[i] - 45.0) < 12.0 and abs(ds.out_longitude[j] - 90.0) <= 11.25
    assert 0.5 < oro.max() <= 2.0  # km, smoothed by the 2x2 block average of a 22.5-degree grid
    # the same model verified on a moved world sees the moved mountain; on a flat one, zeros
    moved = ObsWindowDataset(tables, world(270.0), init, stats).static[n_ch + 2].numpy()
    np.testing.assert_allclose(moved, np.roll(oro, oro.shape[1] // 2, axis=1), atol=1e-5)
    mirrored = ObsWindowDataset(tables, world(90.0, -45.0), init, stats).static[n_ch + 2].numpy()
    np.testing.assert_allclose(mirrored, oro[::-1], atol=1e-5)
    assert float(ObsWindowDataset(tables, flat, init, stats).static[n_ch + 2].abs().max()) == 0.0
    # the model takes it as an input channel of the static source
    kw = build_model_args(stats, ds.station_channels, **SMALL)
    assert kw["sources"]["prior"]["variables"][-1] == OROGRAPHY_VARIABLE
    assert build_model_args(flat_stats, flat_ds.station_channels, **SMALL)["sources"]["prior"]["variables"][-1] == "cos_latitude"
    model = ObsCastModel(**kw)
    from obscast.components.data.obs import collate_obs

    inputs, targets, _ = collate_obs([ds[0], ds[1]])
    with torch.no_grad():
        grid = model(inputs, n_steps=1)["grid"]
    assert grid.shape == targets.shape and torch.isfinite(grid).all()
