"""Observation tables and gridded datasets in a real zarr store on local disk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from obscast.components.store.gridstore import open_gridded, write_gridded
from obscast.components.store.obstable import ObsTable, WindowConflictError, split_windows
from obscast.components.store.storage import Store


def table(times: list[str], start: int = 0) -> pd.DataFrame:
    n = len(times)
    return pd.DataFrame(
        {
            "time": pd.to_datetime(times, format="ISO8601").astype("datetime64[ns]"),
            "latitude": np.linspace(-10, 10, n),
            "longitude": np.linspace(-170, 170, n),
            "station_id": [f"st{start + i}" for i in range(n)],
            "air_temperature": np.arange(start, start + n, dtype="float32") + 250,
            "qc": np.zeros(n, "uint8"),
        }
    )


def test_split_windows_half_open():
    t = table(["2020-01-01T00:00", "2020-01-01T00:01", "2020-01-01T06:00", "2020-01-01T06:00:01"])
    windows = split_windows(t, pd.Timedelta(hours=6))
    assert {k: len(v) for k, v in windows.items()} == {"2020-01-01T00:00:00": 1, "2020-01-01T06:00:00": 2, "2020-01-01T12:00:00": 1}


def test_write_read_idempotent_and_windowed(tmp_path):
    obs = ObsTable(Store(str(tmp_path)), "obs/x.zarr", row_chunk=4)
    a = table(["2020-01-01T01:00", "2020-01-01T03:00", "2020-01-01T05:00"])
    b = table(["2020-01-01T07:00", "2020-01-01T11:00"], start=10)
    assert obs.write_window("w1", a).status == "written"
    assert obs.write_window("w2", b).status == "written"
    files = sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file())
    assert obs.write_window("w1", a).status == "unchanged"
    assert sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()) == files
    everything = obs.read()
    pd.testing.assert_frame_equal(everything, pd.concat([a, b], ignore_index=True), check_dtype=False)
    assert list(everything.columns) == list(a.columns)
    window = obs.read(pd.Timestamp("2020-01-01T03:00"), pd.Timestamp("2020-01-01T07:00"))
    assert list(window["station_id"]) == ["st2", "st10"]  # (03:00, 07:00]
    with pytest.raises(WindowConflictError, match="different content"):
        obs.write_window("w1", table(["2020-01-01T01:00"]))
    assert len(obs) == 5


def test_rows_beyond_the_index_are_cut_before_append(tmp_path):
    """A write killed after its rows were appended but before the index was updated."""
    store = Store(str(tmp_path))
    obs = ObsTable(store, "obs/x.zarr")
    obs.write_window("w1", table(["2020-01-01T01:00", "2020-01-01T02:00"]))
    orphan = table(["2020-01-01T08:00"], start=99)
    xr.Dataset({c: ("row", orphan[c].to_numpy(object) if c == "station_id" else orphan[c].to_numpy()) for c in orphan}).to_zarr(
        store.zarr_store("obs/x.zarr"), append_dim="row", consolidated=False
    )
    assert len(obs) == 2  # the index does not see the orphan row
    obs.write_window("w2", table(["2020-01-01T07:00"], start=5))
    result = obs.read()
    assert list(result["station_id"]) == ["st0", "st1", "st5"]


def test_gridded_written_once(tmp_path):
    store = Store(str(tmp_path))
    ds = xr.Dataset(
        {"air_temperature": (("member", "time", "level", "latitude", "longitude"), np.random.default_rng(0).random((1, 2, 2, 3, 4), dtype="float32"))},
        coords={"member": [0], "time": pd.date_range("2020", periods=2, freq="12h"), "level": [85000.0, 50000.0],
                "latitude": [-60.0, 0.0, 60.0], "longitude": [0.0, 90.0, 180.0, 270.0]},
    )
    url, status = write_gridded(store, "g", ds)
    assert status == "written"
    assert write_gridded(store, "g", ds)[1] == "unchanged"
    back = open_gridded(store, "g").load()
    xr.testing.assert_equal(back["air_temperature"], ds["air_temperature"])
    assert back["air_temperature"].encoding["chunks"] == (1, 1, 2, 3, 4)
    with pytest.raises(Exception, match="different dataset"):
        write_gridded(store, "g", ds + 1)
    xr.testing.assert_equal(open_gridded(store, "g").load()["air_temperature"], ds["air_temperature"])
