"""Tests of the OSSE: networks, simulated observations, their BUFR encoding and QC.

The nature run here is *analytic* (written in the layout of
obscast.components.osse.nature.run_nature, to zarr): fields linear in latitude and in
log sigma, so the interpolated truth is known exactly. Running dinosaur would
take ~30 s of JIT compilation on the test machine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pdbufr
import pytest
import xarray as xr

from obscast.components.osse.networks import DEFAULT_DIR, NETWORK_FILES, load_networks
from obscast.components.obs.bufr_writer import PACKING_PRECISION, write_bufr
from obscast.components.osse.simulate import (
    ORBIT_SHIFT_DEG,
    STANDARD_LEVELS_PA,
    ErrorModel,
    brightness_weights,
    simulate_observations,
)
from obscast.components.obs.qc import apply_qc
from obscast.components.obs.readers.bufr import COLUMNS, read_observations, read_satellite
from obscast.components.obs.variables import G0

SIGMA = np.array([0.25, 0.45, 0.65, 0.85])
T0 = pd.Timestamp("2000-01-01 00:00")
N_TIMES = 8  # 2 days, 6-hourly
EM = ErrorModel(seed=7)


def _temperature(lat, log_sigma, t_index):
    return 260.0 + 0.2 * lat + 40.0 * log_sigma + 1.0 * t_index


def _surface_pressure(lat):
    return 100000.0 + 50.0 * lat


def _geopotential_height(log_sigma):
    return 1000.0 - 7000.0 * log_sigma


def _analytic_nature() -> xr.Dataset:
    """T21-like Gaussian grid, fields with known interpolants, float32 like run_nature."""
    x, _ = np.polynomial.legendre.leggauss(32)
    lat = np.sort(np.rad2deg(np.arcsin(x)))
    lon = np.arange(64) * 360.0 / 64
    times = T0 + pd.to_timedelta(np.arange(N_TIMES) * 6, unit="h")
    la = lat[None, None, :, None]
    lo = np.deg2rad(lon)[None, None, None, :]
    ls = np.log(SIGMA)[None, :, None, None]
    ti = np.arange(N_TIMES)[:, None, None, None]
    shape = (N_TIMES, len(SIGMA), len(lat), len(lon))
    dims = ("time", "level", "latitude", "longitude")
    f32 = lambda a: np.broadcast_to(a, shape).astype(np.float32)  # noqa: E731
    return xr.Dataset(
        {
            "air_temperature": (dims, f32(_temperature(la, ls, ti))),
            "eastward_wind": (dims, f32(10.0 + 10.0 * np.sin(lo) + 0 * ls)),
            "northward_wind": (dims, f32(-5.0 + 0.1 * la + 0 * ls)),
            "geopotential": (dims, f32(G0 * _geopotential_height(ls) + 0 * la)),
            "surface_air_pressure": (
                ("time", "latitude", "longitude"),
                np.broadcast_to(_surface_pressure(lat)[None, :, None], (N_TIMES, len(lat), len(lon))).astype(np.float32),
            ),
        },
        coords={"time": times, "level": SIGMA, "latitude": lat, "longitude": lon},
    )


@pytest.fixture(scope="module")
def nature(tmp_path_factory) -> xr.Dataset:
    path = tmp_path_factory.mktemp("nature") / "nature.zarr"
    _analytic_nature().to_zarr(path, mode="w", consolidated=False)
    return xr.open_zarr(path, consolidated=False)


@pytest.fixture(scope="module")
def networks():
    return load_networks()


@pytest.fixture(scope="module")
def sim(nature, networks):
    return simulate_observations(nature, networks, EM)


@pytest.fixture(scope="module")
def bufr_files(sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("bufr")
    paths = {}
    for kind, table in sim.items():
        paths[kind] = out / f"{kind}.bufr"
        n_messages = write_bufr(table, kind, paths[kind])
        assert n_messages >= table["time"].dt.floor("6h").nunique() - 1
    return paths


def _clamped(lat, nature):
    return np.clip(lat, float(nature["latitude"][0]), float(nature["latitude"][-1]))


def _t_index(times):
    return ((pd.DatetimeIndex(times) - T0 + pd.Timedelta(hours=3)) // pd.Timedelta(hours=6)).to_numpy()


# ------------------------------------------------------------------ networks
def test_networks_load(networks):
    assert set(networks) == {"synop", "temp", "aircraft", "satellite"}
    syn, temp, air, sat = (networks[k] for k in ("synop", "temp", "aircraft", "satellite"))
    assert len(syn) == 7840 and syn["station_id"].is_unique
    assert len(temp) == 420 and temp["station_id"].is_unique
    assert len(air) == 6698 and air["flight"].nunique() == 410
    assert len(sat) == 6496  # 928 scan lines x 56 fields of view, every 2nd line and 4th field
    assert list(syn.columns) == ["station_id", "latitude", "longitude", "altitude"]
    assert list(air.columns) == ["flight", "time_offset", "latitude", "longitude", "height", "pressure"]
    assert all(type(s) is str for s in syn["station_id"]) and "" in set(air["flight"])
    assert (air["height"].notna() ^ air["pressure"].notna()).all()
    assert air["time_offset"].min() == 0 and air["time_offset"].max() == 3 * 3600
    assert 0 == sat["time_offset"].min() and 5900 < sat["time_offset"].max() < 6000  # one ~99 min orbit
    for table in networks.values():
        assert table["latitude"].between(-90, 90).all()
        assert table["longitude"].between(-180, 180, inclusive="left").all()
    for name in NETWORK_FILES.values():
        assert (DEFAULT_DIR / name).stat().st_size < 1_000_000


# ------------------------------------------------------------- simulation
def test_layout_and_counts(sim, networks):
    for kind, table in sim.items():
        assert tuple(table.columns) == COLUMNS[kind]
        assert table["time"].is_monotonic_increasing and isinstance(table.index, pd.RangeIndex)
        assert sim.truth[kind].shape == table.shape and sim.gross[kind].index.equals(table.index)
        assert table["longitude"].between(-180, 180, inclusive="left").all()
        assert (table["time"] >= T0 - pd.Timedelta(hours=3)).all()
        assert (table["time"] < T0 + pd.Timedelta(hours=6 * N_TIMES - 3)).all()
    n_syn = len(networks["synop"])
    assert sim.reports["synop"] == N_TIMES * n_syn
    assert len(sim["synop"]) == sim.reports["synop"] - sim.missing["synop"]
    assert sim.reports["temp"] == 4 * len(networks["temp"])  # 00 and 12 UTC on two days
    assert set(sim["temp"]["time"].dt.hour) == {0, 12}
    assert sim.reports["aircraft"] == 2 * len(networks["aircraft"])  # each track once per day
    assert sim.unobservable["aircraft"] > 0
    assert set(sim["satellite"]["channel"]) == {1, 2, 3, 4}
    assert len(sim["satellite"]) <= 2 * 20000
    assert (sim["satellite"]["station_id"] == "metop-a").all()


def test_truth_is_the_interpolated_nature(sim, nature):
    syn = sim.truth["synop"]
    lat = _clamped(syn["latitude"].to_numpy(), nature)
    np.testing.assert_allclose(syn["surface_air_pressure"], _surface_pressure(lat), atol=0.05)
    np.testing.assert_allclose(syn["air_temperature"],
                               _temperature(lat, np.log(0.85), _t_index(syn["time"])), atol=1e-3)
    u_expected = 10.0 + 10.0 * np.sin(np.deg2rad(syn["longitude"].to_numpy()))
    np.testing.assert_allclose(syn["eastward_wind"], u_expected, atol=0.02)  # bilinear error of a sine
    np.testing.assert_allclose(syn["northward_wind"], -5.0 + 0.1 * lat, atol=1e-4)

    temp = sim.truth["temp"]
    lat = _clamped(temp["latitude"].to_numpy(), nature)
    log_sigma = np.log(temp["pressure"].to_numpy(np.float64) / _surface_pressure(lat))
    assert (log_sigma >= np.log(0.25) - 1e-9).all() and (log_sigma <= np.log(0.85) + 1e-9).all()
    np.testing.assert_allclose(temp["air_temperature"], _temperature(lat, log_sigma, _t_index(temp["time"])), atol=1e-3)
    np.testing.assert_allclose(temp["geopotential_height"], _geopotential_height(log_sigma), atol=0.01)
    first = temp[(temp["station_id"] == temp["station_id"].iloc[0]) & (temp["time"] == temp["time"].iloc[0])]
    assert first["pressure"].tolist() == [p for p in STANDARD_LEVELS_PA if p in set(first["pressure"])]
    assert set(first["pressure"]) <= set(STANDARD_LEVELS_PA) and len(first) >= 5

    from obscast.encoders.setconv import pressure_from_height

    air = sim.truth["aircraft"]
    lat = _clamped(air["latitude"].to_numpy(), nature)
    p = air["pressure"].to_numpy(np.float64)
    p = np.where(np.isnan(p), pressure_from_height(air["height"].to_numpy(np.float64)).double().numpy(), p)
    np.testing.assert_allclose(air["air_temperature"],
                               _temperature(lat, np.log(p / _surface_pressure(lat)), _t_index(air["time"])), atol=1e-3)

    sat = sim.truth["satellite"]
    lat = _clamped(sat["latitude"].to_numpy(), nature)
    w = brightness_weights(SIGMA)[sat["channel"].to_numpy() - 1]
    expected = (w * _temperature(lat[:, None], np.log(SIGMA)[None, :], _t_index(sat["time"])[:, None])).sum(1)
    np.testing.assert_allclose(sat["brightness_temperature"], expected, atol=1e-3)
    np.testing.assert_allclose(brightness_weights(SIGMA).sum(1), 1.0)
    assert np.argmax(brightness_weights(SIGMA), axis=1).tolist() == [0, 1, 2, 3]


def test_satellite_orbits_shift_westward(sim, networks):
    sat = sim["satellite"]
    fov = sat[sat["channel"] == 1]
    # the same field of view one orbit later lies ORBIT_SHIFT_DEG further west
    first = fov.iloc[0]
    later = fov[(fov["latitude"] == first["latitude"])]
    dlon = np.mod(first["longitude"] - later["longitude"].to_numpy(), 360.0)
    dt = (later["time"] - first["time"]).dt.total_seconds().to_numpy()
    # both times are rounded to whole seconds (<= 1 s apart): 1 s of Earth rotation is 0.0042 deg
    np.testing.assert_allclose(np.mod(dlon, 360.0), np.mod(dt / 86400.0 * 360.0, 360.0), atol=4.5e-3)
    assert ORBIT_SHIFT_DEG == pytest.approx(25.3, abs=0.05)


def test_residual_statistics(sim):
    """obs - truth: mean 0 and the stated std (outside gross errors); binomial gross/missing counts."""
    checked = {
        "synop": ("surface_air_pressure", "air_temperature", "eastward_wind", "northward_wind"),
        "temp": ("air_temperature", "geopotential_height", "eastward_wind", "northward_wind"),
        "aircraft": ("air_temperature", "eastward_wind", "northward_wind"),
        "satellite": ("brightness_temperature",),
    }
    for kind, columns in checked.items():
        obs, truth, gross = sim[kind], sim.truth[kind], sim.gross[kind]
        clean = ~gross.any(axis=1).to_numpy()
        for c in columns:
            r = obs[c].to_numpy(np.float64)[clean] - truth[c].to_numpy(np.float64)[clean]
            sd = EM.std(c)
            n = r.size
            assert n > 1000, (kind, c)
            assert abs(r.mean()) < 5 * sd / np.sqrt(n), (kind, c, r.mean())
            assert abs(r.std() / sd - 1) < max(0.05, 5 / np.sqrt(2 * n)), (kind, c, r.std())
        for c in gross.columns:
            n, k = len(gross), int(gross[c].sum())
            f = EM.gross_error_fraction
            assert abs(k - n * f) < 5 * np.sqrt(n * f * (1 - f)) + 1, (kind, c, k, n)
        n, k, f = sim.reports[kind], sim.missing[kind], EM.missing_fraction
        assert abs(k - n * f) < 5 * np.sqrt(n * f * (1 - f)), (kind, k, n)


def test_deterministic_and_split_invariant(nature, networks, sim):
    kinds = ("aircraft", "satellite", "temp")
    day1 = simulate_observations(nature, networks, EM, end=T0 + pd.Timedelta(hours=18), kinds=kinds)
    day2 = simulate_observations(nature, networks, EM, start=T0 + pd.Timedelta(days=1), kinds=kinds)
    for kind in kinds:
        both = pd.concat([day1[kind], day2[kind]], ignore_index=True)
        pd.testing.assert_frame_equal(both, sim[kind])
    other = simulate_observations(nature, networks, ErrorModel(seed=8), end=T0, kinds=("synop",))
    first = sim["synop"][sim["synop"]["time"] == T0].reset_index(drop=True)
    assert not first["air_temperature"].equals(other["synop"]["air_temperature"])


def test_error_model_validation():
    with pytest.raises(ValueError):
        ErrorModel(missing_fraction=1.5)
    with pytest.raises(ValueError):
        ErrorModel(temperature=1.0)  # extra="forbid"
    assert ErrorModel().std("northward_wind") == 2.0 and ErrorModel().std("brightness_temperature") == 0.5


# -------------------------------------------------------------------- BUFR
def _assert_round_trip(table: pd.DataFrame, back: pd.DataFrame, kind: str) -> None:
    assert len(back) == len(table)
    assert (back["time"].to_numpy() == table["time"].to_numpy()).all()
    assert back["station_id"].tolist() == table["station_id"].tolist()
    for c in table.columns[4:]:
        a = table[c].to_numpy(np.float64)
        b = back[c].to_numpy(np.float64)
        assert (np.isnan(a) == np.isnan(b)).all(), (kind, c)
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        if c == "wind_from_direction":
            err = np.abs(np.mod(b - a + 180.0, 360.0) - 180.0)
        else:
            err = np.abs(b - a)
        if c in ("eastward_wind", "northward_wind"):  # derived from speed (0.1) and direction (1 deg)
            speed = table["wind_speed"].to_numpy(np.float64)
            tol = 0.05 + speed[~np.isnan(speed)] * np.sin(np.deg2rad(0.5)) + 1e-3
        else:
            tol = PACKING_PRECISION[kind].get(c, 0.0) / 2 + 1e-5 * np.abs(a) + 1e-9
        assert (err <= tol).all(), (kind, c, float(np.max(err - tol)))
    for c in ("latitude", "longitude"):
        np.testing.assert_allclose(back[c], table[c], atol=1e-9)


def test_bufr_round_trip_reader(sim, bufr_files):
    for kind, table in sim.items():
        back = read_observations(kind, bufr_files[kind])  # fast eccodes path
        _assert_round_trip(table, back, kind)


def test_bufr_fast_path_equals_pdbufr(sim, tmp_path):
    """On files of compressed messages both engines give identical tables; pdbufr reads the raw keys."""
    raw_keys = {
        "synop": ("nonCoordinatePressure", "surface_air_pressure", 1.0),
        "temp": ("nonCoordinateGeopotential", "geopotential_height", G0),
        "aircraft": ("airTemperature", "air_temperature", 1.0),
        "satellite": ("brightnessTemperature", "brightness_temperature", 1.0),
    }
    for kind, table in sim.items():
        part = table.iloc[:1500]
        path = tmp_path / f"{kind}.bufr"
        assert write_bufr(part, kind, path, max_subsets=600) >= 3  # several messages
        fast = read_observations(kind, path, engine="eccodes")
        slow = read_observations(kind, path, engine="pdbufr")
        pd.testing.assert_frame_equal(fast, slow)
        _assert_round_trip(part, fast, kind)
        key, column, factor = raw_keys[kind]
        direct = pdbufr.read_bufr(str(path), columns=["data_datetime", "latitude", key], required_columns=False)
        assert len(direct) == len(part)
        precision = PACKING_PRECISION[kind][column] * factor
        np.testing.assert_allclose(direct[key].to_numpy(np.float64),
                                   part[column].to_numpy(np.float64) * factor, atol=precision / 2 + 1e-3)


def test_satellite_reader_real_hirs(samples, tmp_path):
    import eccodes

    hirs = next(samples.glob("M02-HIRS-*.bufr"))
    one = tmp_path / "hirs_one.bufr"
    with open(hirs, "rb") as f, open(one, "wb") as g:
        h = eccodes.codes_bufr_new_from_file(f)
        g.write(eccodes.codes_get_message(h))
        eccodes.codes_release(h)
    fast = read_satellite(one, engine="eccodes")
    slow = read_satellite(one, engine="pdbufr")
    pd.testing.assert_frame_equal(fast, slow)
    assert len(fast) == 1008 * 20 and fast["channel"].tolist()[:20] == list(range(1, 21))
    assert (fast["station_id"] == "metop-a").all()
    assert fast.loc[fast["channel"] == 20, "brightness_temperature"].isna().all()  # visible channel
    assert fast.loc[fast["channel"] < 20, "brightness_temperature"].between(150, 350).all()
    assert fast["time"].iloc[0] == pd.Timestamp("2018-11-22 11:48:54.396")
    full = read_observations("satellite", hirs)
    assert len(full) == 51968 * 20 and full["time"].is_monotonic_increasing


def test_fast_path_and_writer_errors(sim, bufr_files, samples, tmp_path):
    from obscast.components.errors import InputError

    data = bufr_files["synop"].read_bytes()
    truncated = tmp_path / "truncated.bufr"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="a complete BUFR message"):
        read_observations("synop", truncated)
    with pytest.raises(InputError, match="compressed BUFR messages the eccodes engine supports"):
        read_observations("temp", samples / "temp.bufr", engine="eccodes")  # uncompressed
    with pytest.raises(ValueError, match="engine"):
        read_observations("synop", bufr_files["synop"], engine="fast")
    with pytest.raises(ValueError, match="WMO station_id"):
        write_bufr(sim["synop"].iloc[:2].assign(station_id="AB"), "synop", tmp_path / "x.bufr")
    with pytest.raises(ValueError, match="unknown satellite"):
        write_bufr(sim["satellite"].iloc[:2].assign(station_id="sputnik"), "satellite", tmp_path / "x.bufr")
    with pytest.raises(ValueError, match="lacks column"):
        write_bufr(sim["temp"].drop(columns="pressure"), "temp", tmp_path / "x.bufr")


# ---------------------------------------------------------------------- QC
def test_qc_rejects_exactly_the_gross_errors(sim, bufr_files):
    for kind, table in sim.items():
        back = read_observations(kind, bufr_files[kind])
        result = apply_qc(back, kind, source=f"osse-{kind}")
        gross = sim.gross[kind]
        hit = gross.any(axis=1).to_numpy()
        assert result.rejected.index.tolist() == np.flatnonzero(hit).tolist(), kind
        # the reason names the first column (table order) with a gross error
        columns = [c for c in table.columns if c in gross.columns]
        first = gross[columns].idxmax(axis=1)[hit]
        assert result.rejected["reason"].tolist() == [f"out_of_range:{c}" for c in first], kind
        assert result.counts["accepted"] == len(table) - int(hit.sum())
