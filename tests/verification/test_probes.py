"""Network probes (issue 14): moved observing networks and the model scored on them.

The nature run here is analytic, in the layout of ``run_nature`` on the T21 Gaussian grid
(32 x 64, the tiny OSSE's grid, tests/flows/tiny_osse.yaml) with travelling zonal waves, so that
moving the network changes what is observed; running dinosaur would add ~30 s of JIT
compilation and nothing the probes depend on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from obscast.components.obs.bufr_writer import write_bufr
from obscast.components.obs.qc import apply_qc
from obscast.components.obs.readers.amv import read_amv
from obscast.components.obs.readers.bufr import read_observations
from obscast.components.obs.variables import G0
from obscast.components.osse.amv import AMV_KIND, AMV_PACKING_PRECISION, write_amv_bufr
from obscast.components.osse.networks import load_networks
from obscast.components.osse.probes import (
    PROBES,
    mirror_hemispheres,
    move_networks,
    resimulate_tables,
    rotate_longitude,
    thin,
    unit_ids,
)
from obscast.components.osse.simulate import ErrorModel, simulate_observations

from tests.osse.test_osse import _assert_round_trip

#: The tiny OSSE's configuration (tests/flows/test_osse_pipeline.py).
TINY_OSSE = Path(__file__).resolve().parents[1] / "flows" / "tiny_osse.yaml"
KINDS = ("synop", "temp", "aircraft", "satellite", "amv")
SIGMA = np.array([0.25, 0.45, 0.65, 0.85])
T0 = pd.Timestamp("2000-01-01 00:00")
N_TIMES = 16  # 4 days, 6-hourly: the tiny OSSE's stored period
EM = ErrorModel(seed=3)


def _nature() -> xr.Dataset:
    """Smooth Held-Suarez-like fields with eastward-travelling waves (zonal wavenumbers 2 and 3)."""
    x, _ = np.polynomial.legendre.leggauss(32)
    lat = np.sort(np.rad2deg(np.arcsin(x)))
    lon = np.arange(64) * 360.0 / 64
    times = T0 + pd.to_timedelta(np.arange(N_TIMES) * 6, unit="h")
    phi = np.deg2rad(lat)[None, None, :, None]
    lam = np.deg2rad(lon)[None, None, None, :]
    ls = np.log(SIGMA)[None, :, None, None]
    hours = (np.arange(N_TIMES) * 6.0)[:, None, None, None]
    wave = np.cos(phi) ** 2 * (np.cos(2 * lam - 2 * np.pi * hours / 96.0) + 0.5 * np.sin(3 * lam + 2 * np.pi * hours / 60.0))
    shape = (N_TIMES, len(SIGMA), len(lat), len(lon))
    dims = ("time", "level", "latitude", "longitude")
    f32 = lambda a: np.broadcast_to(a, shape).astype(np.float32)
    return xr.Dataset(
        {
            "air_temperature": (dims, f32(300.0 - 40.0 * np.sin(phi) ** 2 + 35.0 * ls + 4.0 * wave)),
            "eastward_wind": (dims, f32(25.0 * np.cos(phi) * (1.2 + ls) + 6.0 * wave)),
            "northward_wind": (dims, f32(5.0 * np.roll(wave, 5, axis=-1) + 0 * ls)),
            "geopotential": (dims, f32(G0 * (1000.0 - 7000.0 * ls) + 300.0 * wave)),
            "surface_air_pressure": (("time", "latitude", "longitude"), f32(1.0e5 + 800.0 * wave)[:, 0]),
        },
        coords={"time": times, "level": SIGMA, "latitude": lat, "longitude": lon},
    )


@pytest.fixture(scope="module")
def networks():
    return load_networks(amv=True)


@pytest.fixture(scope="module")
def nature(tmp_path_factory) -> xr.Dataset:
    path = tmp_path_factory.mktemp("nature") / "nature.zarr"
    _nature().to_zarr(path, mode="w", consolidated=False)
    return xr.open_zarr(path, consolidated=False, chunks=None)


def _lon_column(table: pd.DataFrame) -> str:
    return "longitude" if "longitude" in table else "longitude_offset"


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| wrapped to [0, 180] degrees."""
    return np.abs(np.mod(a - b + 180.0, 360.0) - 180.0)


# ------------------------------------------------------------------ moves
@pytest.mark.parametrize("kind", KINDS)
def test_rotation_and_mirror_applied_repeatedly_give_the_identity(networks, kind):
    net = networks[kind]
    lon = _lon_column(net)
    for move, times in ((lambda t: rotate_longitude(t, 90.0), 4), (lambda t: rotate_longitude(t, 180.0), 2),
                        (mirror_hemispheres, 2), (lambda t: rotate_longitude(t, -137.5), 1)):
        back = net
        for _ in range(times):
            back = move(back)
        if times == 1:  # and back again
            back = rotate_longitude(back, 137.5)
        assert list(back.columns) == list(net.columns) and len(back) == len(net)
        assert _angle(back[lon].to_numpy(), net[lon].to_numpy()).max() <= 1e-9, kind
        np.testing.assert_allclose(back["latitude"], net["latitude"], rtol=0, atol=1e-9)
        assert ((back[lon] >= -180.0) & (back[lon] < 180.0)).all()
        others = [c for c in net.columns if c not in ("latitude", lon)]
        pd.testing.assert_frame_equal(back[others], net[others])
    assert _angle(networks[kind][lon].to_numpy(), net[lon].to_numpy()).max() == 0.0  # inputs untouched


@pytest.mark.parametrize("kind", KINDS)
def test_every_position_moves(networks, kind):
    net = networks[kind]
    lon = _lon_column(net)
    for degrees in (90.0, 180.0):
        moved = rotate_longitude(net, degrees)
        shift = np.mod(moved[lon].to_numpy() - net[lon].to_numpy(), 360.0)
        np.testing.assert_allclose(shift, degrees, atol=1e-9)  # every position, by the angle
        assert ((moved[lon] >= -180.0) & (moved[lon] < 180.0)).all()
        np.testing.assert_array_equal(moved["latitude"], net["latitude"])
    mirrored = mirror_hemispheres(net)
    np.testing.assert_array_equal(mirrored["latitude"], -net["latitude"])
    off_equator = net["latitude"].to_numpy() != 0.0
    assert off_equator.mean() > 0.99 and (mirrored["latitude"].to_numpy()[off_equator] != net["latitude"].to_numpy()[off_equator]).all()
    if kind == "synop":  # the dense northern network moves south
        assert (net["latitude"] > 0).mean() > 0.6 and (mirrored["latitude"] < 0).mean() > 0.6


@pytest.mark.parametrize("kind", KINDS)
def test_thinning_keeps_the_share_of_units_deterministically(networks, kind):
    net = networks[kind]
    ids = pd.unique(unit_ids(net))
    for fraction in (0.5, 0.1):
        kept = thin(net, fraction, seed=11)
        kept_ids = pd.unique(unit_ids(kept)) if kind not in ("satellite", "amv") else None
        n_units = len(kept_ids) if kept_ids is not None else len(kept)
        assert n_units == round(fraction * len(ids))
        pd.testing.assert_frame_equal(kept, thin(net, fraction, seed=11))  # same seed, same units
        assert not kept.equals(thin(net, fraction, seed=12))
        if kept_ids is not None:  # whole stations / flights are kept, rows in their order
            column = "station_id" if "station_id" in net else "flight"
            whole = net[net[column].isin(kept_ids)].reset_index(drop=True)
            pd.testing.assert_frame_equal(kept, whole)
        else:  # footprints and AMV targets: a subset of the rows, in order
            merged = net.reset_index().merge(kept, on=list(net.columns))
            assert len(merged) == len(kept) and merged["index"].is_monotonic_increasing
    with pytest.raises(ValueError, match="fraction"):
        thin(net, 0.0)
    with pytest.raises(ValueError, match="fraction"):
        thin(net, 1.5)


def test_probe_registry(networks):
    assert set(PROBES) == {"rotate90", "rotate180", "mirror", "thin50", "thin10"}
    moved = move_networks(networks, "rotate90")
    assert set(moved) == set(networks)
    np.testing.assert_allclose(np.mod(moved["synop"]["longitude"] - networks["synop"]["longitude"], 360.0), 90.0, atol=1e-9)
    assert len(move_networks(networks, "thin10")["temp"]) == round(0.1 * len(networks["temp"]))
    pd.testing.assert_frame_equal(move_networks(networks, None)["aircraft"], networks["aircraft"])
    with pytest.raises(ValueError, match="unknown network probe"):
        move_networks(networks, "rotate45")


# ----------------------------------------------------------- re-simulation
def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("time", "station_id", "latitude", "longitude", "pressure", "height", "channel") if c in table]
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


def test_unmoved_resimulation_equals_the_simulate_and_ingest_stages(nature, networks, tmp_path):
    """Simulate stage (day by day, BUFR) + ingest (read, QC) vs the re-simulation of a period across
    the day boundary: the same rows, values equal to the BUFR packing precision."""
    days = [T0, T0 + pd.Timedelta(days=1)]
    files: dict[str, list] = {k: [] for k in KINDS}
    for day in days:  # as flows/simulate.py: one call and one file per kind and day
        sim = simulate_observations(nature, networks, EM, start=day, end=day + pd.Timedelta(hours=18), kinds=KINDS)
        for kind, table in sim.items():
            path = tmp_path / f"{kind}-{day:%Y%m%d}.bufr"
            write_amv_bufr(table, path) if kind == AMV_KIND else write_bufr(table, kind, path)
            files[kind].append(path)
    start, end = T0 + pd.Timedelta(hours=12), T0 + pd.Timedelta(hours=30)
    sources = {f"src_{k}": k for k in KINDS}
    resim = resimulate_tables(nature, networks, sources, EM, start, end, unmoved_satellite_footprints=len(networks["satellite"]))
    assert set(resim) == set(sources)
    for name, kind in sources.items():
        read = read_amv if kind == AMV_KIND else (lambda p, kind=kind: read_observations(kind, p))
        ingested = apply_qc(pd.concat([read(p) for p in files[kind]], ignore_index=True), kind).accepted
        near = (ingested["time"] >= start - pd.Timedelta(hours=3)) & (ingested["time"] < end + pd.Timedelta(hours=3))
        ingested = _sorted(ingested[near.to_numpy()])
        ours = _sorted(resim[name])
        assert len(ours) > 100, kind
        assert list(ours.columns) == list(ingested.columns), kind
        if kind == AMV_KIND:
            assert len(ours) == len(ingested)
            np.testing.assert_array_equal(ours["time"], ingested["time"])
            assert ours["station_id"].tolist() == ingested["station_id"].tolist()
            for c, precision in AMV_PACKING_PRECISION.items():
                err = np.abs(ours[c].to_numpy(float) - ingested[c].to_numpy(float))
                if c == "wind_from_direction":
                    err = np.minimum(err, 360.0 - err)
                assert np.nanmax(err) <= precision / 2 + 1e-5 * np.nanmax(np.abs(ours[c])), c
        else:
            _assert_round_trip(ours, ingested, kind)
        assert (ours["qc"] == 0).all()


def test_moved_resimulation(nature, networks):
    """Rotated: every report moves by the angle and samples another truth; thinned: fewer rows,
    the satellite's field-of-view stride kept."""
    sources = {"synop": "synop", "satellite": "satellite", "amv": AMV_KIND}
    start = end = T0 + pd.Timedelta(hours=12)
    n_fov = len(networks["satellite"])
    base = resimulate_tables(nature, networks, sources, EM, start, end, unmoved_satellite_footprints=n_fov)
    rot = resimulate_tables(nature, move_networks(networks, "rotate90"), sources, EM, start, end, unmoved_satellite_footprints=n_fov)
    for name in sources:
        a, b = base[name], rot[name]
        if name == "synop":  # same stations, same noise draws: positions shifted, values differ
            assert a["station_id"].tolist() == b["station_id"].tolist()
            np.testing.assert_allclose(np.mod(b["longitude"] - a["longitude"], 360.0), 90.0, atol=2e-5)
            assert np.abs(a["air_temperature"] - b["air_temperature"]).mean() > 0.5
        else:
            def positions(t, shift=0.0):
                lon = np.round(np.mod(t["longitude"].to_numpy() + shift, 360.0), 2)
                return set(zip(np.round(t["latitude"].to_numpy(), 2), lon, strict=True))

            moved = positions(b)
            assert len(moved & positions(a, 90.0)) > 0.9 * len(moved)  # the base positions, moved by 90 degrees
            assert len(moved & positions(a)) < 0.1 * len(moved)
    thinned = resimulate_tables(nature, move_networks(networks, "thin50"), sources, EM, start, end, unmoved_satellite_footprints=n_fov)
    for name in sources:
        ratio = len(thinned[name]) / len(base[name])
        assert 0.35 < ratio < 0.65, (name, ratio)


# ------------------------------------------------------------- probe scores
@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    """The tiny OSSE's configuration (tests/flows/tiny_osse.yaml, smaller latent grid) and a store
    holding the analytic nature run as ``gridded/nature.zarr``."""
    import yaml
    from obscast.components.config import load_config
    from obscast.components.osse.networks import DEFAULT_DIR
    from obscast.components.store.storage import Store

    root = tmp_path_factory.mktemp("probes")
    raw = yaml.safe_load(TINY_OSSE.read_text())
    raw["store"] = str(root / "store")
    raw["osse"] = {"nature": raw["osse"]["nature"], "networks": str(DEFAULT_DIR)}
    raw["model"]["latent_grid"] = {"n_lat": 16, "n_lon": 32}
    raw["verify"]["spinup_cycles"] = 2
    (root / "config.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(root / "config.yaml")
    store = Store(config.store)
    _nature().to_zarr(store.zarr_store("gridded/nature.zarr"), mode="w", consolidated=False)
    return config, store


@pytest.fixture(scope="module")
def tiny_experiment(tiny_config, networks):
    """The tiny OSSE's unmoved observations (the re-simulation of the whole nature run), its
    datasets and a cycling model trained for one epoch (~30 s)."""
    from obscast.components.data.experiment import build_datasets, open_target
    from obscast.components.training.workflow import train_model
    from obscast.components.verification.probes import probe_tables

    config, store = tiny_config
    truth = open_target(store, config)
    times = pd.DatetimeIndex(truth["time"].values)
    tables = probe_tables(config, truth, networks, list(config.sources), times[0], times[-1], None)
    data = build_datasets(config, tables, truth)
    model, _, _, _ = train_model(config, data, epochs=1)
    return config, store, data, model.eval(), networks


@pytest.mark.slow
def test_probe_scores_end_to_end(tiny_experiment, one_torch_thread):
    from obscast.components.training.trainer import FeatureCache
    from obscast.components.training.workflow import _table
    from obscast.components.verification.evaluate import evaluate
    from obscast.components.verification.probes import UNMOVED, probe_scores

    config, store, data, model, networks = tiny_experiment
    assert model.cycling and data.test_spinup > 0
    probes = ["rotate180", "mirror", "thin10"]
    scores = probe_scores(config, model, data, store, probes, every=2, networks=networks)
    n_steps = config.forecast.n_steps  # verify.probe_steps (4) capped to the test split's steps
    assert list(scores.columns) == [UNMOVED, *probes, *(f"{p} change %" for p in probes)]
    assert scores.index.names == ["channel", "lead_time"]
    assert sorted(set(scores.index.get_level_values("channel"))) == sorted(config.verify.channels)
    assert list(scores.index.get_level_values("lead_time").unique()) == [f"{6 * (k + 1)} h" for k in range(n_steps)]
    assert np.isfinite(scores.to_numpy()).all() and (scores[[UNMOVED, *probes]] > 0).all().all()
    # unmoved: the scores of the verify path on the observations the model was built with
    cache = FeatureCache(model, [data.test])
    ref = evaluate(model, data.test, n_steps, climatology=None, max_stations=0, device="cpu", cache=cache,
                   spinup=data.test_spinup, every=2)
    expected = _table(ref, "rmse", {"model": "model"}, config.verify.channels)["model"]
    np.testing.assert_allclose(scores[UNMOVED], expected.loc[scores.index], rtol=1e-5)
    assert scores.attrs["n_inits"] == ref["n_inits"] >= 2
    for p in probes:  # the observations moved, so the analyses and forecasts changed
        assert (scores[p] != scores[UNMOVED]).any()
        np.testing.assert_allclose(scores[f"{p} change %"], 100 * (scores[p] / scores[UNMOVED] - 1), rtol=1e-9)
    rows = scores.attrs["observations"]
    assert set(rows) == {UNMOVED, *probes}
    assert 0.05 < rows["thin10"]["synop"] / rows[UNMOVED]["synop"] < 0.15
    assert abs(rows["rotate180"]["synop"] - rows[UNMOVED]["synop"]) <= 0.02 * rows[UNMOVED]["synop"]


def test_probe_scores_rejects_bad_requests(tiny_config, networks):
    from obscast.components.errors import ConfigError
    from obscast.components.verification.probes import probe_scores

    config, store = tiny_config
    with pytest.raises(ValueError, match="unknown network probe"):
        probe_scores(config, None, None, store, ["rotate45"], networks=networks)
    with pytest.raises(ConfigError, match="OSSE"):
        probe_scores(config.model_copy(update={"osse": None}), None, None, store, ["mirror"], networks=networks)
    with pytest.raises(ConfigError, match="nature run"):
        other = config.experiment.model_copy(update={"target": config.experiment.target.model_copy(update={"dataset": "era5"})})
        probe_scores(config.model_copy(update={"experiment": other}), None, None, store, ["mirror"], networks=networks)
