"""Readers of cloud/archive formats: ARCO-ERA5 zarr stores and NOAA ISD Global Hourly CSV.

No network: every test builds a small local file in the real layout.
"""

from __future__ import annotations

import math
from pathlib import Path

import dask.array
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
import zarr.storage

from obscast.components.errors import InputError
from obscast.components.obs.qc import apply_qc
from obscast.components.obs.readers.arco import read_arco_era5
from obscast.components.obs.readers.bufr import COLUMNS
from obscast.components.obs.readers.isd import read_isd

# ---------------------------------------------------------------------------------------------
# ARCO-ERA5

TIMES = pd.date_range("2020-01-01T00", periods=8, freq="h")
LEVELS_HPA = np.array([250, 500, 850], dtype=np.int64)  # ascending, as in the ARCO store
LATS = np.arange(90.0, -90.1, -10.0, dtype=np.float32)  # 90 .. -90 (descending), 19 points
LONS = np.arange(0.0, 360.0, 10.0, dtype=np.float32)  # 0 .. 350, 36 points
ARCO_LEVEL = {"temperature": "K", "geopotential": "m**2 s**-2", "u_component_of_wind": "m s**-1", "v_component_of_wind": "m s**-1"}
ARCO_SURFACE = {"2m_temperature": "K", "mean_sea_level_pressure": "Pa", "surface_pressure": "Pa"}
BASE = {
    "temperature": 200.0, "geopotential": 50000.0, "u_component_of_wind": 0.0, "v_component_of_wind": -50.0,
    "2m_temperature": 250.0, "mean_sea_level_pressure": 100000.0, "surface_pressure": 90000.0,
    "total_precipitation": 0.0,
}


def expected(name: str, time: np.ndarray, level_hpa: np.ndarray | None, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """The value written at (time index, level hPa, lat, lon): a distinct number per point."""
    t = np.asarray(time, dtype=float)[:, None, None]
    field = BASE[name] + 10.0 * t + np.asarray(lat)[None, :, None] / 10.0 + np.mod(lon, 360.0)[None, None, :] / 1000.0
    if level_hpa is None:
        return field
    return field[:, None] + np.asarray(level_hpa, dtype=float)[None, :, None, None] / 100.0


def arco_dataset() -> xr.Dataset:
    it = np.arange(TIMES.size)
    data = {}
    for name, units in ARCO_LEVEL.items():
        values = expected(name, it, LEVELS_HPA, LATS, LONS).astype(np.float32)
        data[name] = (("time", "level", "latitude", "longitude"), values, {"units": units, "long_name": name})
    for name, units in {**ARCO_SURFACE, "total_precipitation": "m"}.items():
        values = expected(name, it, None, LATS, LONS).astype(np.float32)
        data[name] = (("time", "latitude", "longitude"), values, {"units": units, "long_name": name})
    return xr.Dataset(
        data,
        coords={"time": TIMES.values, "level": LEVELS_HPA, "latitude": LATS, "longitude": LONS},
    )


def write_arco(path: Path, zarr_format: int, consolidated: bool) -> Path:
    """Write the ARCO layout: one chunk per time step, longitude in two halves (0..170, 180..350)."""
    ds = arco_dataset()
    encoding = {
        name: {"chunks": (1, LEVELS_HPA.size, LATS.size, 18) if ds[name].ndim == 4 else (1, LATS.size, 18)}
        for name in ds.data_vars
    }
    encoding["time"] = {"units": "hours since 1900-01-01", "dtype": "int64"}
    ds.to_zarr(path, zarr_format=zarr_format, consolidated=consolidated, encoding=encoding, mode="w")
    return path


@pytest.fixture(scope="module")
def arco_v2(tmp_path_factory) -> Path:
    """zarr v2 with consolidated metadata, like the public ARCO-ERA5 store."""
    return write_arco(tmp_path_factory.mktemp("arco") / "era5.zarr", 2, True)


@pytest.fixture(scope="module")
def arco_v3(tmp_path_factory) -> Path:
    """zarr v3 without consolidated metadata."""
    return write_arco(tmp_path_factory.mktemp("arco3") / "era5.zarr", 3, False)


class CountingStore(zarr.storage.WrapperStore):
    """Records every key read through ``get``."""

    def __init__(self, store):
        super().__init__(store)
        self.keys: list[str] = []

    def _with_store(self, store):
        return type(self)(store)

    async def get(self, key, prototype, byte_range=None):
        self.keys.append(key)
        return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        self.keys.extend(k for k, _ in key_ranges)
        return await self._store.get_partial_values(prototype, key_ranges)


def chunk_reads(keys: list[str]) -> set[tuple[str, tuple[int, ...]]]:
    """(variable, chunk index) of the data-variable chunks read (v2 ``t.l.y.x`` or v3 ``c/t/l/y/x``);
    asserts that none was read twice."""
    out = []
    for key in keys:
        name, _, rest = key.partition("/")
        if name not in BASE or rest.startswith(".") or rest.endswith(".json") or rest in ("", "zarr.json"):
            continue
        parts = rest[2:].split("/") if rest.startswith("c/") else rest.split(".")
        out.append((name, tuple(int(p) for p in parts)))
    assert len(out) == len(set(out)), f"chunks read more than once: {sorted(out)}"
    return set(out)


def test_arco_layout_names_units_and_values(arco_v2):
    ds = read_arco_era5(str(arco_v2), "2020-01-01T00", "2020-01-01T07")
    assert set(ds.data_vars) == {
        "air_temperature", "geopotential", "eastward_wind", "northward_wind",
        "air_temperature_2m", "air_pressure_at_mean_sea_level", "surface_air_pressure",
    }  # total_precipitation has no CF mapping: left out of the default selection
    assert ds["air_temperature"].dims == ("member", "time", "level", "latitude", "longitude")
    assert ds["air_pressure_at_mean_sea_level"].dims == ("member", "time", "latitude", "longitude")
    assert ds.sizes == {"member": 1, "time": 8, "level": 3, "latitude": 19, "longitude": 36}
    assert ds["member"].values.tolist() == [0] and ds["member"].dtype == np.int64
    assert ds["level"].values.tolist() == [25000.0, 50000.0, 85000.0]
    assert ds["level"].attrs["units"] == "Pa" and ds["level"].attrs["standard_name"] == "air_pressure"
    assert ds["latitude"].values.tolist() == list(np.arange(-90.0, 90.1, 10.0))
    assert ds["longitude"].values.tolist() == list(np.arange(0.0, 360.0, 10.0))
    assert ds["time"].dtype == np.dtype("datetime64[ns]")
    units = {"air_temperature": "K", "geopotential": "m2 s-2", "eastward_wind": "m s-1", "surface_air_pressure": "Pa"}
    for name, unit in units.items():
        assert ds[name].attrs["units"] == unit and ds[name].attrs["standard_name"] == name
    assert ds["air_temperature_2m"].attrs["standard_name"] == "air_temperature"
    assert ds["air_temperature_2m"].attrs["height_above_ground_m"] == 2.0
    assert ds["geopotential"].attrs["arco_name"] == "geopotential"
    for name in ds.data_vars:
        assert ds[name].dtype == np.float32
        assert isinstance(ds[name].data, dask.array.Array)  # lazy
    t = ds["air_temperature"].values[0]
    want = expected("temperature", np.arange(8), np.array([250, 500, 850]), ds["latitude"].values, ds["longitude"].values)
    np.testing.assert_allclose(t, want.astype(np.float32), rtol=0, atol=0)
    msl = ds["air_pressure_at_mean_sea_level"].values[0]
    want = expected("mean_sea_level_pressure", np.arange(8), None, ds["latitude"].values, ds["longitude"].values)
    np.testing.assert_array_equal(msl, want.astype(np.float32))


def test_arco_time_level_variable_subset(arco_v2):
    ds = read_arco_era5(
        arco_v2, "2020-01-01T02", np.datetime64("2020-01-01T04"), levels=[850, 250],
        variables=["temperature", "eastward_wind"],  # store and CF names both accepted
    )
    assert list(ds.data_vars) == ["air_temperature", "eastward_wind"]
    assert ds["time"].values.tolist() == list(TIMES[2:5].values.astype("datetime64[ns]").astype(int))
    assert ds["level"].values.tolist() == [25000.0, 85000.0]
    want = expected("u_component_of_wind", np.arange(2, 5), np.array([250, 850]), ds["latitude"].values, ds["longitude"].values)
    np.testing.assert_array_equal(ds["eastward_wind"].values[0], want.astype(np.float32))
    # tz-aware bounds are converted to UTC; both ends inclusive
    one = read_arco_era5(arco_v2, pd.Timestamp("2020-01-01T08:00+03:00"), "2020-01-01T05:00", variables=["2m_temperature"])
    assert one.sizes["time"] == 1 and "level" not in one.dims and "level" not in one.coords
    assert one["air_temperature_2m"].dims == ("member", "time", "latitude", "longitude")


@pytest.mark.parametrize(
    "area, lons, store_lons",
    [
        ((20, 170, -20, -170), [170, 180, 190], [170, 180, 190]),  # across the dateline
        ((20, 170, -20, 190), [170, 180, 190], [170, 180, 190]),  # same, east given in 0..360
        ((20, -10, -20, 10), [-10, 0, 10], [350, 0, 10]),  # across Greenwich (the store's seam)
        ((20, 350, -20, 10), [-10, 0, 10], [350, 0, 10]),  # same, west given in 0..360
        ((90, -180, -90, 180), list(range(-180, 180, 10)), list(range(180, 360, 10)) + list(range(0, 180, 10))),
    ],
)
def test_arco_area(arco_v2, area, lons, store_lons):
    ds = read_arco_era5(arco_v2, "2020-01-01T01", "2020-01-01T01", area=area, variables=["temperature", "surface_pressure"])
    assert ds["longitude"].values.tolist() == lons
    north, _, south, _ = area
    lats = np.arange(south, north + 0.1, 10.0)
    assert ds["latitude"].values.tolist() == lats.tolist()
    want = expected("temperature", np.array([1]), LEVELS_HPA, lats, np.array(store_lons, float))
    np.testing.assert_array_equal(ds["air_temperature"].values[0], want.astype(np.float32))
    want = expected("surface_pressure", np.array([1]), None, lats, np.array(store_lons, float))
    np.testing.assert_array_equal(ds["surface_air_pressure"].values[0], want.astype(np.float32))
    assert isinstance(ds["air_temperature"].data, dask.array.Array)


@pytest.mark.parametrize("fixture", ["arco_v2", "arco_v3"])
def test_arco_reads_only_the_chunks_of_the_subset(request, fixture):
    path = request.getfixturevalue(fixture)
    store = CountingStore(zarr.storage.LocalStore(str(path), read_only=True))
    ds = read_arco_era5(store, "2020-01-01T03", "2020-01-01T04", levels=[500], area=(30, 20, 0, 60),
                        variables=["temperature", "mean_sea_level_pressure"])
    assert chunk_reads(store.keys) == set()  # nothing but metadata and coordinates so far
    assert ds["air_temperature"].chunks[1] == (1, 1)  # one dask chunk per zarr chunk (time)
    ds.load()
    # times 3 and 4, first longitude half (0..170) only, all levels in one chunk
    assert chunk_reads(store.keys) == {
        ("temperature", (3, 0, 0, 0)), ("temperature", (4, 0, 0, 0)),
        ("mean_sea_level_pressure", (3, 0, 0)), ("mean_sea_level_pressure", (4, 0, 0)),
    }
    store.keys.clear()
    read_arco_era5(store, "2020-01-01T07", "2020-01-01T07", area=(10, 170, -10, -170),
                   variables=["surface_pressure"]).load()
    assert chunk_reads(store.keys) == {("surface_pressure", (7, 0, 0)), ("surface_pressure", (7, 0, 1))}


def test_arco_v3_store_matches_v2(arco_v2, arco_v3):
    a = read_arco_era5(arco_v2, "2020-01-01", "2020-01-02", area=(40, -30, -40, 30)).load()
    b = read_arco_era5(f"file://{arco_v3}", "2020-01-01", "2020-01-02", area=(40, -30, -40, 30)).load()
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())


def test_arco_errors(arco_v2, tmp_path):
    with pytest.raises(InputError) as err:
        read_arco_era5(arco_v2, "2020-01-01", "2020-01-02", variables=["temperature", "relative_humidity"])
    message = str(err.value)
    assert str(arco_v2) in message and "relative_humidity" in message and "'temperature'" in message
    assert "'mean_sea_level_pressure'" in message and "\n" not in message
    with pytest.raises(InputError, match="total_precipitation.*a variable obscast can read"):
        read_arco_era5(arco_v2, "2020-01-01", "2020-01-02", variables=["total_precipitation"])
    with pytest.raises(InputError, match=r"field 'time'.*2020-01-01T00:00:00.* \.\. 2020-01-01T07:00:00"):
        read_arco_era5(arco_v2, "2021-01-01", "2021-01-02")
    with pytest.raises(InputError, match="field 'time'"):
        read_arco_era5(arco_v2, "2020-01-01T05", "2020-01-01T04")  # start after end: empty
    with pytest.raises(InputError, match="field 'level'.*found 700 hPa"):
        read_arco_era5(arco_v2, "2020-01-01", "2020-01-02", levels=[500, 700])
    with pytest.raises(InputError, match="field 'area'"):
        read_arco_era5(arco_v2, "2020-01-01", "2020-01-02", area=(5, 1, 1, 5))
    with pytest.raises(InputError, match="field 'store'"):
        read_arco_era5(tmp_path / "missing.zarr", "2020-01-01", "2020-01-02")
    with pytest.raises(ValueError):
        read_arco_era5(arco_v2, "2020-01-01", "2020-01-02", area=(-10, 0, 10, 20))


# ---------------------------------------------------------------------------------------------
# ISD Global Hourly CSV

ISD_HEADER = (
    '"STATION","DATE","SOURCE","LATITUDE","LONGITUDE","ELEVATION","NAME","REPORT_TYPE","CALL_SIGN",'
    '"QUALITY_CONTROL","WND","CIG","VIS","TMP","DEW","SLP","AA1","MA1"'
)
ISD_ROWS = [
    # 0: LaGuardia, a normal METAR
    '"72503014732","2020-01-01T00:51:00","7","40.77944","-73.88","3.4","LAGUARDIA AIRPORT, NY US","FM-15","KLGA ",'
    '"V030","300,5,N,0062,5","22000,5,9,N","016093,5,N,5","+0061,5","-0072,5","10118,5","01,0000,9,5","29880,5,10116,5"',
    # 1: Heathrow SYNOP, calm, negative temperature, station pressure absent
    '"03772099999","2020-01-01T06:00:00","4","51.4775","-0.461389","25.3","HEATHROW, UK","FM-12","99999",'
    '"V020","999,9,C,0000,1","99999,9,9,N","010000,1,9,9","-0012,1","-0025,1","10301,1","","99999,9,99999,9"',
    # 2: Sydney, everything missing
    '"94767099999","2020-01-01T03:00:00","4","-33.9465","151.1731","6.0","SYDNEY AIRPORT, AS","FM-12","99999",'
    '"V020","999,9,9,9999,9","99999,9,9,N","999999,9,9,9","+9999,9","+9999,9","99999,9","","99999,9,99999,9"',
    # 3: Sydney: suspect temperature (2), erroneous SLP (7), variable wind direction, erroneous speed qc 3 absent
    '"94767099999","2020-01-01T00:00:00","4","-33.9465","151.1731","6.0","SYDNEY AIRPORT, AS","FM-12","99999",'
    '"V020","999,9,V,0031,1","99999,9,9,N","999999,9,9,9","+0450,2","+0180,1","10132,7","","99999,9,99999,9"',
    # 4: LaGuardia, summary of day: dropped
    '"72503014732","2020-01-01T23:59:00","6","40.77944","-73.88","3.4","LAGUARDIA AIRPORT, NY US","SOD  ","99999",'
    '"V030","999,9,9,9999,9","99999,9,9,N","999999,9,9,9","+9999,9","+9999,9","99999,9","","99999,9,99999,9"',
    # 5: LaGuardia, west wind, direction flagged erroneous (3); elevation missing code
    '"72503014732","2020-01-01T01:51:00","7","40.77944","-73.88","9999","LAGUARDIA AIRPORT, NY US","FM-15","KLGA ",'
    '"V030","270,3,N,0100,1","22000,5,9,N","016093,5,N,5","+0050,5","-0080,5","10120,5","","29890,5,10118,6"',
    # 6: Heathrow, north wind, missing type with zero speed = calm per ISD
    '"03772099999","2020-01-01T07:00:00","4","51.4775","-0.461389","25.3","HEATHROW, UK","FM-12","99999",'
    '"V020","999,9,9,0000,1","99999,9,9,N","010000,1,9,9","+0000,1","-0010,1","10302,1","","99999,9,99999,9"',
    # 7: Heathrow, north wind 360 deg
    '"03772099999","2020-01-01T08:00:00","4","51.4775","-0.461389","25.3","HEATHROW, UK","FM-12","99999",'
    '"V020","360,1,N,0050,1","99999,9,9,N","010000,1,9,9","+0010,1","-0010,1","10303,1","","99999,9,99999,9"',
]


def write_isd(path: Path, rows=ISD_ROWS, header=ISD_HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_isd_table_layout_and_conversions(tmp_path):
    table = read_isd(write_isd(tmp_path / "isd.csv"))
    assert list(table.columns) == list(COLUMNS["synop"])
    assert len(table) == 7  # the summary-of-day row is dropped
    assert table["time"].dtype == np.dtype("datetime64[ns]") and table["time"].is_monotonic_increasing
    assert table["latitude"].dtype == np.float64 and table["surface_altitude"].dtype == np.float64
    for column in COLUMNS["synop"][5:]:
        assert table[column].dtype == np.float32, column
    assert all(isinstance(s, str) for s in table["station_id"])
    by = {(r.station_id, r.time.strftime("%H:%M")): r for r in table.itertuples()}
    assert table["station_id"].iloc[0] == "94767099999"  # 00:00, sorted by time

    lga = by[("72503014732", "00:51")]
    assert (lga.latitude, lga.longitude, lga.surface_altitude) == (40.77944, -73.88, 3.4)
    assert lga.air_temperature == np.float32(6.1 + 273.15)
    assert lga.dew_point_temperature == np.float32(-7.2 + 273.15)
    assert lga.air_pressure_at_mean_sea_level == np.float32(101180.0)
    assert lga.surface_air_pressure == np.float32(101160.0)
    assert lga.wind_speed == np.float32(6.2) and lga.wind_from_direction == np.float32(300.0)
    assert lga.eastward_wind == np.float32(-6.2 * math.sin(math.radians(300.0)))  # 5.369: from the west-north-west
    assert lga.northward_wind == np.float32(-6.2 * math.cos(math.radians(300.0)))  # -3.1

    calm = by[("03772099999", "06:00")]
    assert calm.air_temperature == np.float32(-1.2 + 273.15) and calm.air_pressure_at_mean_sea_level == np.float32(103010.0)
    assert (calm.wind_speed, calm.wind_from_direction, calm.eastward_wind, calm.northward_wind) == (0, 0, 0, 0)
    assert math.isnan(calm.surface_air_pressure)
    assert by[("03772099999", "07:00")].wind_speed == 0 and by[("03772099999", "07:00")].eastward_wind == 0
    north = by[("03772099999", "08:00")]
    assert abs(north.eastward_wind) < 1e-6 and north.northward_wind == np.float32(-5.0)  # sin(2 pi) rounding

    missing = by[("94767099999", "03:00")]
    for column in COLUMNS["synop"][5:]:
        assert math.isnan(getattr(missing, column)), column
    assert missing.longitude == 151.1731 and missing.latitude == -33.9465

    flagged = by[("94767099999", "00:00")]
    assert math.isnan(flagged.air_temperature)  # quality 2: suspect
    assert flagged.dew_point_temperature == np.float32(18.0 + 273.15)
    assert math.isnan(flagged.air_pressure_at_mean_sea_level)  # quality 7: erroneous
    assert flagged.wind_speed == np.float32(3.1) and math.isnan(flagged.wind_from_direction)  # variable
    assert math.isnan(flagged.eastward_wind) and math.isnan(flagged.northward_wind)

    west = by[("72503014732", "01:51")]
    assert math.isnan(west.surface_altitude)  # 9999
    assert west.wind_speed == np.float32(10.0) and math.isnan(west.wind_from_direction)  # direction qc 3
    assert math.isnan(west.surface_air_pressure)  # station pressure qc 6

    assert table.attrs["isd_flagged"] == {
        "air_temperature": 1, "dew_point_temperature": 0, "air_pressure_at_mean_sea_level": 1,
        "surface_air_pressure": 1, "wind_speed": 0, "wind_from_direction": 1,
        "eastward_wind": 0, "northward_wind": 0,
    }

    qc = apply_qc(table, "synop", source="isd.csv")  # the SYNOP QC takes the table as it is
    assert len(qc.accepted) == 6 and qc.rejected["reason"].tolist() == ["all_missing"]


def test_isd_window_and_optional_columns(tmp_path):
    header = ISD_HEADER.rsplit(',"AA1","MA1"', 1)[0]
    rows = [r.rsplit(',"', 2)[0] for r in ISD_ROWS]  # drop AA1 and MA1
    table = read_isd(write_isd(tmp_path / "plain.csv", rows, header), window=("2020-01-01T00:00", "2020-01-01T06:00"))
    assert table["time"].dt.strftime("%H:%M").tolist() == ["00:51", "01:51", "03:00", "06:00"]  # (start, end]
    assert table["surface_air_pressure"].isna().all()


def test_isd_errors(tmp_path):
    with pytest.raises(InputError, match="field 'file'"):
        read_isd(tmp_path / "none.csv")
    no_tmp = ISD_HEADER.replace('"TMP",', "")
    rows = [r.replace('"+0061,5",', "") for r in ISD_ROWS[:1]]
    with pytest.raises(InputError) as err:
        read_isd(write_isd(tmp_path / "no_tmp.csv", rows, no_tmp))
    assert "no_tmp.csv: field 'TMP': expected a column of the NOAA Global Hourly CSV format" in str(err.value)
    bad = [ISD_ROWS[0], ISD_ROWS[1].replace('"-0012,1"', '"-0012"')]
    with pytest.raises(InputError, match=r"field 'TMP': expected 2 comma-separated parts, found '-0012' in data row 2"):
        read_isd(write_isd(tmp_path / "bad.csv", bad))
    bad = [ISD_ROWS[0].replace('"10118,5"', '"1o118,5"')]
    with pytest.raises(InputError, match="field 'SLP': expected a number"):
        read_isd(write_isd(tmp_path / "bad2.csv", bad))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="field 'header'"):
        read_isd(tmp_path / "empty.csv")
