"""Tests of obscast.components.obs.readers against the real sample files.

Each BUFR sample is decoded at most twice per session: once by obscast (the
session fixtures of conftest.py) and once directly by pdbufr (module fixtures
here) as the independent reference.
"""

from __future__ import annotations

import eccodes
import numpy as np
import pandas as pd
import pdbufr
import pytest
import xarray as xr

from obscast.components.errors import InputError
from obscast.components.obs.readers import COLUMNS, READERS, read_grib, read_observations
from obscast.components.obs.readers.bufr import BUFR_KEYS, read_aircraft, read_satellite, read_synop, read_temp

G0 = 9.80665  # WMO standard gravity, m s-2

SYNOP_KEYS = (
    "data_datetime", "WMO_station_id", "latitude", "longitude",
    "heightOfStationGroundAboveMeanSeaLevel", "heightOfStation",
    "airTemperatureAt2M", "dewpointTemperatureAt2M", "pressureReducedToMeanSeaLevel",
    "nonCoordinatePressure", "windSpeedAt10M", "windDirectionAt10M",
)
TEMP_KEYS = (
    "data_datetime", "WMO_station_id", "latitude", "longitude", "pressure",
    "airTemperature", "dewpointTemperature", "nonCoordinateGeopotential",
    "windSpeed", "windDirection",
)
AIRCRAFT_KEYS = (
    "data_datetime", "aircraftFlightNumber", "latitude", "longitude", "height", "pressure",
    "airTemperature", "windSpeed", "windDirection",
)


FILES = {
    "synop": ("perf_synop.bufr", SYNOP_KEYS),
    "temp": ("temp.bufr", TEMP_KEYS),
    "aircraft": ("perf_aircraft.bufr", AIRCRAFT_KEYS),
}


def _direct(samples, kind) -> pd.DataFrame:
    """Independent pdbufr read, sorted stably by time like the readers."""
    name, keys = FILES[kind]
    df = pdbufr.read_bufr(str(samples / name), columns=keys, required_columns=False)
    return df.sort_values("data_datetime", kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def synop_direct(samples):
    return _direct(samples, "synop")


@pytest.fixture(scope="module")
def temp_direct(samples):
    return _direct(samples, "temp")


@pytest.fixture(scope="module")
def aircraft_direct(samples):
    return _direct(samples, "aircraft")


@pytest.fixture(scope="module")
def grib(samples):
    return read_grib(samples / "era5-levels-members.grib")


def _f32(series: pd.Series) -> np.ndarray:
    return series.to_numpy(dtype=np.float64, na_value=np.nan).astype(np.float32)


def _copy_messages(src, dst, n: int, first: int = 0) -> None:
    """Write messages first..first+n-1 of a BUFR file to dst (bytes unchanged)."""
    with open(src, "rb") as f, open(dst, "wb") as g:
        for i in range(first + n):
            h = eccodes.codes_bufr_new_from_file(f)
            assert h is not None
            if i >= first:
                g.write(eccodes.codes_get_message(h))
            eccodes.codes_release(h)


def _check_common(table: pd.DataFrame, kind: str) -> None:
    assert tuple(table.columns) == COLUMNS[kind]
    assert table["time"].dtype == np.dtype("datetime64[ns]")
    assert table["latitude"].dtype == np.float64 and table["longitude"].dtype == np.float64
    assert table["station_id"].dtype == object
    assert all(type(s) is str for s in table["station_id"])
    assert table["longitude"].between(-180, 180, inclusive="left").all()
    assert table["time"].is_monotonic_increasing
    assert isinstance(table.index, pd.RangeIndex)
    for col in COLUMNS[kind][5 if kind == "synop" else 4:]:
        assert table[col].dtype == np.float32, col
    u, v = table["eastward_wind"].to_numpy(), table["northward_wind"].to_numpy()
    rad = np.deg2rad(table["wind_from_direction"].to_numpy(np.float64))
    speed = table["wind_speed"].to_numpy(np.float64)
    np.testing.assert_allclose(u, -speed * np.sin(rad), atol=1e-4)
    np.testing.assert_allclose(v, -speed * np.cos(rad), atol=1e-4)


# --------------------------------------------------------------------- SYNOP
def test_synop_matches_pdbufr(synop_table, synop_direct):
    assert set(BUFR_KEYS["synop"]) == set(SYNOP_KEYS)
    t, d = synop_table, synop_direct
    assert len(t) == len(d) == 15824  # every message, supplementary ones too
    _check_common(t, "synop")
    assert t["station_id"].tolist() == [str(int(s)) for s in d["WMO_station_id"]]
    assert t["station_id"].iloc[0] == "40340"
    np.testing.assert_array_equal(t["air_temperature"], _f32(d["airTemperatureAt2M"]))
    np.testing.assert_array_equal(t["dew_point_temperature"], _f32(d["dewpointTemperatureAt2M"]))
    np.testing.assert_array_equal(
        t["air_pressure_at_mean_sea_level"], _f32(d["pressureReducedToMeanSeaLevel"])
    )
    np.testing.assert_array_equal(t["wind_speed"], _f32(d["windSpeedAt10M"]))
    np.testing.assert_array_equal(t["surface_air_pressure"], _f32(d["nonCoordinatePressure"]))
    # this edition-3 file carries the ECMWF key heightOfStation only
    assert "heightOfStationGroundAboveMeanSeaLevel" not in d.columns
    np.testing.assert_array_equal(t["surface_altitude"], d["heightOfStation"].to_numpy(np.float64))
    assert (t["time"] == pd.Timestamp("2018-11-02 12:00")).all()


def test_synop_keeps_supplementary_rows_and_gross_errors(synop_table):
    core = ["air_temperature", "dew_point_temperature", "air_pressure_at_mean_sea_level", "wind_speed"]
    n_empty = int(synop_table[core].isna().all(axis=1).sum())
    assert n_empty >= 7912  # at least one supplementary message per report
    st = synop_table.set_index("station_id")
    assert st.loc[["89666"], "wind_speed"].max() == pytest.approx(349.0)
    assert st.loc[["67201"], "air_temperature"].max() == pytest.approx(372.2, abs=0.01)
    assert st.loc[["40296"], "surface_altitude"].min() == -350.0


# ---------------------------------------------------------------------- TEMP
def test_temp_matches_pdbufr(temp_table, temp_direct):
    assert set(BUFR_KEYS["temp"]) == set(TEMP_KEYS)
    t, d = temp_table, temp_direct
    assert len(t) == len(d) == 26196  # one row per level, none dropped
    _check_common(t, "temp")
    assert t["station_id"].nunique() == 420
    np.testing.assert_array_equal(t["pressure"], _f32(d["pressure"]))
    assert t["pressure"].min() == 100.0 and t["pressure"].max() == 106600.0
    np.testing.assert_allclose(
        t["geopotential_height"], d["nonCoordinateGeopotential"] / G0, rtol=1e-6
    )
    np.testing.assert_array_equal(t["air_temperature"], _f32(d["airTemperature"]))
    assert t["wind_speed"].max() == 160.0
    # the South Pole (89009) is decoded as -90.00000000000001 and rounded
    assert t.loc[t["station_id"] == "89009", "latitude"].eq(-90.0).all()


# ------------------------------------------------------------------ aircraft
def test_aircraft_matches_pdbufr(aircraft_table, aircraft_direct):
    assert set(BUFR_KEYS["aircraft"]) == set(AIRCRAFT_KEYS)
    t, d = aircraft_table, aircraft_direct
    assert len(t) == len(d) == 6698
    _check_common(t, "aircraft")
    assert t["station_id"].tolist() == [s.strip() for s in d["aircraftFlightNumber"]]
    assert t["pressure"].notna().sum() == 285  # subtype 145 (ACARS)
    assert t["height"].notna().sum() == 6413  # subtypes 142/144
    assert not (t["pressure"].notna() & t["height"].notna()).any()
    np.testing.assert_array_equal(t["height"], _f32(d["height"]))
    np.testing.assert_array_equal(t["time"].to_numpy(), d["data_datetime"].to_numpy("datetime64[ns]"))
    assert t["time"].min() == pd.Timestamp("2009-01-23 12:00")
    assert t["time"].max() == pd.Timestamp("2009-01-23 15:00")


def test_window_is_half_open(samples, tmp_path):
    small = tmp_path / "aircraft_400.bufr"
    _copy_messages(samples / "perf_aircraft.bufr", small, 400)  # 12:00 to 12:32
    full = read_aircraft(small)
    start, end = pd.Timestamp("2009-01-23 12:10"), pd.Timestamp("2009-01-23 12:30")
    assert (full["time"] == start).any() and (full["time"] == end).any()  # both edges exercised
    windowed = read_observations("aircraft", small, window=(start, end))
    expected = full[(full["time"] > start) & (full["time"] <= end)].reset_index(drop=True)
    assert 0 < len(windowed) < len(full)
    assert windowed["time"].min() > start and windowed["time"].max() == end
    pd.testing.assert_frame_equal(windowed, expected)
    # numpy datetime64 and tz-aware bounds mean the same window
    same = read_aircraft(small, window=(np.datetime64("2009-01-23T12:10"),
                                        pd.Timestamp("2009-01-23 13:30+01:00")))
    pd.testing.assert_frame_equal(same, expected)
    with pytest.raises(ValueError):
        read_aircraft(small, window=(end, start))


def test_readers_table():
    from obscast.components.obs.readers.amv import read_amv

    assert READERS == {
        "synop": read_synop, "temp": read_temp, "aircraft": read_aircraft, "satellite": read_satellite, "amv": read_amv,
    }


# -------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.bufr"
    with pytest.raises(InputError) as err:
        read_synop(path)
    assert str(err.value) == f"{path}: field 'file': expected an existing BUFR file, found no such file"
    assert err.value.field == "file"
    with pytest.raises(InputError, match="nowhere.grib: field 'file'"):
        read_grib(tmp_path / "nowhere.grib")


def test_unknown_kind(samples):
    with pytest.raises(InputError, match=r"field 'kind': expected one of \['aircraft', 'amv', 'satellite', 'synop', 'temp'\]"):
        read_observations("ship", samples / "temp.bufr")


def test_truncated_bufr(samples, tmp_path):
    data = (samples / "temp.bufr").read_bytes()
    starts = [i for i in range(len(data)) if data.startswith(b"BUFR", i)][:4]
    path = tmp_path / "truncated.bufr"
    path.write_bytes(data[: starts[3] + 500])  # 3 messages, then half of the 4th
    with pytest.raises(InputError) as err:
        read_temp(path)
    message = str(err.value)
    assert message.startswith(f"{path}: field 'BUFR message'")
    assert "a complete BUFR message" in message and "\n" not in message
    assert not isinstance(err.value, eccodes.CodesInternalError)
    assert isinstance(err.value.__cause__, eccodes.CodesInternalError)


def test_bufr_without_expected_keys(samples, tmp_path):
    one_temp = tmp_path / "one_temp.bufr"
    _copy_messages(samples / "temp.bufr", one_temp, 1)
    assert len(read_temp(one_temp)) > 1  # the file itself is fine
    with pytest.raises(InputError, match=r"one_temp.bufr: field 'airTemperatureAt2M': expected at least one of"):
        read_synop(one_temp)
    with pytest.raises(InputError, match=r"one_temp.bufr: field 'aircraftFlightNumber'"):
        read_aircraft(one_temp)
    garbage = tmp_path / "garbage.bufr"
    garbage.write_bytes(b"plain text, no message here\n" * 64)
    with pytest.raises(InputError, match=r"garbage.bufr: field 'BUFR message'.*found no decodable message"):
        read_temp(garbage)


# ---------------------------------------------------------------------- GRIB
def test_grib_layout(grib):
    assert set(grib.data_vars) == {"geopotential", "air_temperature"}
    assert dict(grib.sizes) == {"member": 10, "time": 4, "level": 2, "latitude": 61, "longitude": 120}
    for name, units, short in (("geopotential", "m2 s-2", "z"), ("air_temperature", "K", "t")):
        var = grib[name]
        assert var.dims == ("member", "time", "level", "latitude", "longitude")
        assert var.shape == (10, 4, 2, 61, 120)
        assert var.dtype == np.float32
        assert var.attrs["standard_name"] == name and var.attrs["units"] == units
        assert var.attrs["grib_short_name"] == short and var.attrs["long_name"]
    assert grib["member"].values.tolist() == list(range(10))
    assert np.issubdtype(grib["member"].dtype, np.integer)
    assert grib["level"].values.tolist() == [50000.0, 85000.0]
    assert grib["level"].dtype == np.float64
    assert grib["level"].attrs == {**grib["level"].attrs, "standard_name": "air_pressure", "units": "Pa", "positive": "down"}
    lat, lon = grib["latitude"].values, grib["longitude"].values
    assert lat[0] == -90.0 and lat[-1] == 90.0 and np.all(np.diff(lat) > 0)
    assert lon[0] == 0.0 and lon[-1] == 357.0
    assert grib["time"].dtype == np.dtype("datetime64[ns]")
    assert grib["time"].values[0] == np.datetime64("2017-01-01T00:00")
    assert grib["time"].values[-1] == np.datetime64("2017-01-02T12:00")
    assert 224.0 < float(grib["air_temperature"].min()) and float(grib["air_temperature"].max()) < 306.0


def test_grib_values_equal_cfgrib(grib, samples):
    ref = xr.open_dataset(
        samples / "era5-levels-members.grib", engine="cfgrib", backend_kwargs={"indexpath": ""}
    )
    ref = ref.rename(number="member", isobaricInhPa="level")
    ref = ref.assign_coords(level=ref["level"] * 100.0, time=ref["valid_time"].values)
    ref = ref.sortby(["level", "latitude"]).transpose("member", "time", "level", "latitude", "longitude")
    for short, name in (("z", "geopotential"), ("t", "air_temperature")):
        np.testing.assert_array_equal(grib[name].values, ref[short].values)
    np.testing.assert_array_equal(grib["latitude"].values, ref["latitude"].values)
    np.testing.assert_array_equal(grib["time"].values, ref["time"].values)


def test_grib_window(grib, samples):
    ds = read_grib(samples / "era5-levels-members.grib",
                   window=(np.datetime64("2017-01-01T00:00"), np.datetime64("2017-01-02T00:00")))
    assert ds["time"].values.tolist() == grib["time"].values[1:3].tolist()
    xr.testing.assert_identical(ds["air_temperature"], grib["air_temperature"].isel(time=slice(1, 3)))


def test_grib_unknown_parameter(samples, tmp_path):
    path = tmp_path / "vorticity.grib"
    with open(samples / "era5-levels-members.grib", "rb") as f:
        h = eccodes.codes_grib_new_from_file(f)
    try:
        eccodes.codes_set(h, "paramId", 138)  # vo, relative vorticity
        assert eccodes.codes_get(h, "shortName") == "vo"
        with open(path, "wb") as g:
            eccodes.codes_write(h, g)
    finally:
        eccodes.codes_release(h)
    with pytest.raises(InputError) as err:
        read_grib(path)
    message = str(err.value)
    assert message.startswith(f"{path}: field 'shortName': expected one of ['z', 't'")
    assert "found vo (paramId 138)" in message and "\n" not in message


def test_grib_truncated(samples, tmp_path):
    path = tmp_path / "truncated.grib"
    path.write_bytes((samples / "era5-levels-members.grib").read_bytes()[:30000])
    with pytest.raises(InputError, match=r"truncated.grib: field 'GRIB message': expected a complete GRIB message"):
        read_grib(path)


# ------------------------------------------------------------ small helpers
def test_wind_components_convention():
    from obscast.components.obs.readers.bufr import wind_components

    u, v = wind_components(np.array([10.0, 10.0, 5.0, np.nan]), np.array([360.0, 270.0, 0.0, 90.0]))
    np.testing.assert_allclose(u, [0.0, 10.0, 0.0, np.nan], atol=1e-12)  # west wind blows eastward
    np.testing.assert_allclose(v, [-10.0, 0.0, -5.0, np.nan], atol=1e-12)  # north wind blows southward


def test_input_error_is_one_line():
    from obscast.components.errors import ConfigError, ObscastError

    err = InputError("perf_synop.bufr", "airTemperatureAt2M", "a value\nin K", found=372.2)
    assert str(err) == "perf_synop.bufr: field 'airTemperatureAt2M': expected a value in K, found 372.2"
    assert str(InputError("x.bufr", "file", "an existing BUFR file")) == (
        "x.bufr: field 'file': expected an existing BUFR file"
    )
    assert issubclass(InputError, ObscastError) and issubclass(ConfigError, ObscastError)
