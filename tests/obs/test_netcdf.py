"""netCDF observations and gridded fields: CF discrete sampling geometries, station files that are
not CF through a configured mapping, gridded fields through per-dataset overrides.

The files are real netCDF-4 files written here with netCDF4-python (small: 3 stations x 24 hourly
reports, a 2 x 2 x 5 x 8 grid)."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest

from obscast.components.config import load_config
from obscast.components.errors import ConfigError, InputError
from obscast.components.obs.qc import apply_qc
from obscast.components.obs.readers.bufr import COLUMNS
from obscast.components.obs.readers.netcdf import convert_units, read_netcdf_gridded, read_netcdf_points

T0 = pd.Timestamp("2024-01-01 01:00")
N_STATIONS, N_HOURS = 3, 24
FILL = -9999.0


def _station_values():
    """Hourly reports of three stations (degC, hPa, knots), with a fill value and a gross error."""
    hours = np.arange(N_HOURS)
    tt = np.array([[5.0 + 0.1 * h + s for h in hours] for s in range(N_STATIONS)])
    tt[1, 3] = FILL  # missing
    pmsl = np.full((N_STATIONS, N_HOURS), 1013.2)
    ff = np.full((N_STATIONS, N_HOURS), 10.0)  # knots
    dd = np.full((N_STATIONS, N_HOURS), 270.0)
    return tt, pmsl, ff, dd


def write_station_file(path: Path, units: bool = True) -> Path:
    """A station file that is not CF: short names, times as integers yyyymmddHHMM, a fill value."""
    tt, pmsl, ff, dd = _station_values()
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("stn", N_STATIONS)
        nc.createDimension("rec", N_HOURS)
        ids = nc.createVariable("stn_id", str, ("stn",))
        for i, name in enumerate(["06260", "06270", "06280"]):
            ids[i] = name
        for name, values in (("lat", [52.1, 52.9, 53.2]), ("lon", [5.18, 4.79, 6.58])):
            nc.createVariable(name, "f8", ("stn",))[:] = values
        times = [int((T0 + pd.Timedelta(hours=h)).strftime("%Y%m%d%H%M")) for h in range(N_HOURS)]
        nc.createVariable("obs_time", "i8", ("rec",))[:] = times
        for name, values, unit in (("tt", tt, "degC"), ("pp", pmsl, "hPa"), ("ff", ff, "knot"), ("dd", dd, "degree")):
            var = nc.createVariable(name, "f4", ("stn", "rec"))
            var[:] = values
            if units:
                var.units = unit
    return path


MAPPING = """
store: {store}
sources:
  stations:
    kind: synop
    paths: [{path}]
    netcdf:
      station_id: stn_id
      latitude: {{variable: lat}}
      longitude: {{variable: lon}}
      time: {{variable: obs_time, format: "%Y%m%d%H%M"}}
      variables:
        air_temperature: {{variable: tt, {tt_units}fill_value: -9999}}
        air_pressure_at_mean_sea_level: {{variable: pp}}
        wind_speed: {{variable: ff}}
        wind_from_direction: {{variable: dd}}
"""


def _config(tmp_path: Path, path: Path, tt_units: str = "units: degC, "):
    file = tmp_path / "stations.yaml"
    file.write_text(MAPPING.format(store=tmp_path / "store", path=path, tt_units=tt_units))
    return load_config(file)


def test_station_file_through_a_mapping(tmp_path):
    path = write_station_file(tmp_path / "hourly.nc")
    config = _config(tmp_path, path)
    table = read_netcdf_points(path, "synop", mapping=config.sources["stations"].netcdf)
    assert tuple(table.columns) == COLUMNS["synop"] and len(table) == N_STATIONS * N_HOURS
    assert table["time"].min() == T0 and table["time"].max() == T0 + pd.Timedelta(hours=N_HOURS - 1)
    first = table[(table["station_id"] == "06260") & (table["time"] == T0)].iloc[0]
    assert first["air_temperature"] == pytest.approx(278.15, abs=1e-4)  # 5 degC
    assert first["air_pressure_at_mean_sea_level"] == pytest.approx(101320.0, abs=0.1)  # 1013.2 hPa
    assert first["wind_speed"] == pytest.approx(5.144444, abs=1e-4)  # 10 knots
    assert first["eastward_wind"] == pytest.approx(5.144444, abs=1e-4)  # from the west
    assert table["air_temperature"].isna().sum() == 1  # the fill value
    result = apply_qc(table, "synop", source=path.name)
    assert result.counts["accepted"] == len(table) and result.counts["total"] == len(table)
    window = read_netcdf_points(path, "synop", (T0, T0 + pd.Timedelta(hours=5)), mapping=config.sources["stations"].netcdf)
    assert len(window) == N_STATIONS * 5


def test_station_file_ingests(prefect_api, tmp_path):
    """Through the ingest flow: the source's `netcdf` mapping is applied, the rows are stored."""
    from obscast.components.store.obstable import ObsTable
    from obscast.components.store.storage import Store
    from obscast.flows.ingest import ingest_flow

    path = write_station_file(tmp_path / "hourly.nc")
    _config(tmp_path, path)
    summary = ingest_flow(config_path=str(tmp_path / "stations.yaml"))
    stored = ObsTable(Store(str(tmp_path / "store")), "obs/stations.zarr").read()
    assert len(stored) == summary["sources"]["stations"]["qc"]["accepted"] == N_STATIONS * N_HOURS
    assert stored["air_temperature"].max() == pytest.approx(273.15 + 5 + 2.3 + 2, abs=1e-3)


def test_station_file_without_units_is_a_one_line_error(tmp_path):
    path = write_station_file(tmp_path / "hourly.nc", units=False)
    config = _config(tmp_path, path, tt_units="")
    with pytest.raises(InputError) as err:
        read_netcdf_points(path, "synop", mapping=config.sources["stations"].netcdf)
    message = str(err.value)
    assert message.startswith(str(path)) and "'tt'" in message and "units" in message and "\n" not in message


def test_station_file_without_a_mapping_is_a_one_line_error(tmp_path):
    path = write_station_file(tmp_path / "hourly.nc")
    with pytest.raises(InputError) as err:
        read_netcdf_points(path, "synop")
    assert "featureType" in str(err.value) and "netcdf" in str(err.value) and "\n" not in str(err.value)


def test_mapping_is_validated(tmp_path):
    path = write_station_file(tmp_path / "hourly.nc")
    file = tmp_path / "bad.yaml"
    file.write_text(MAPPING.format(store=tmp_path, path=path, tt_units="units: degC, ").replace("air_temperature:", "temperature:"))
    with pytest.raises(ConfigError, match="sources.stations.netcdf.variables"):
        load_config(file)
    file.write_text(MAPPING.format(store=tmp_path, path=path, tt_units="units: degC, ").replace("variable: lat", "variable: lat, unit: deg"))
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(file)


def test_cf_timeseries_and_point_files(tmp_path):
    """CF discrete sampling geometries: timeSeries (orthogonal multidimensional) and point."""
    path = tmp_path / "ts.nc"
    tt, pmsl, ff, dd = _station_values()
    with netCDF4.Dataset(path, "w") as nc:
        nc.Conventions, nc.featureType = "CF-1.11", "timeSeries"
        nc.createDimension("station", N_STATIONS)
        nc.createDimension("time", N_HOURS)
        sid = nc.createVariable("station_name", str, ("station",))
        sid.cf_role = "timeseries_id"
        for i in range(N_STATIONS):
            sid[i] = f"st{i}"
        for name, sn, values in (("lat", "latitude", [10.0, 20.0, 30.0]), ("lon", "longitude", [190.0, 200.0, 350.0])):
            v = nc.createVariable(name, "f8", ("station",))
            v.standard_name, v.units, v[:] = sn, f"degrees_{'north' if sn == 'latitude' else 'east'}", values
        t = nc.createVariable("time", "f8", ("time",))
        t.standard_name, t.units, t[:] = "time", "hours since 2024-01-01 01:00:00", np.arange(N_HOURS)
        v = nc.createVariable("t2m", "f4", ("station", "time"), fill_value=np.float32(FILL))
        v.standard_name, v.units, v[:] = "air_temperature", "degC", tt  # -9999 is the _FillValue
        v = nc.createVariable("psl", "f4", ("station", "time"))
        v.standard_name, v.units, v[:] = "air_pressure_at_mean_sea_level", "hPa", pmsl
    table = read_netcdf_points(path, "synop")
    assert len(table) == N_STATIONS * N_HOURS and set(table["station_id"]) == {"st0", "st1", "st2"}
    assert table["longitude"].min() == -170.0 and table["longitude"].max() == -10.0
    assert table["air_temperature"].isna().sum() == 1 and table["wind_speed"].isna().all()
    row = table[(table["station_id"] == "st2") & (table["time"] == T0 + pd.Timedelta(hours=2))].iloc[0]
    assert row["air_temperature"] == pytest.approx(273.15 + 5 + 0.2 + 2, abs=1e-4) and row["latitude"] == 30.0

    point = tmp_path / "point.nc"
    with netCDF4.Dataset(point, "w") as nc:
        nc.featureType = "point"
        nc.createDimension("obs", 4)
        for name, sn, units, values in (("lat", "latitude", "degrees_north", [1, 2, 3, 4]), ("lon", "longitude", "degrees_east", [5, 6, 7, 8]),
                                        ("time", "time", "minutes since 2024-01-01", [0, 30, 60, 90]),
                                        ("p", "air_pressure", "hPa", [850, 700, 500, 300]),
                                        ("u", "eastward_wind", "m s-1", [1, 2, 3, 4]), ("v", "northward_wind", "m/s", [0, 0, 0, 0])):
            var = nc.createVariable(name, "f8", ("obs",))
            var.standard_name, var.units, var[:] = sn, units, values
    aircraft = read_netcdf_points(point, "aircraft")
    assert aircraft["pressure"].tolist() == [85000.0, 70000.0, 50000.0, 30000.0]
    np.testing.assert_allclose(aircraft["wind_from_direction"], 270.0)
    np.testing.assert_allclose(aircraft["wind_speed"], [1, 2, 3, 4])


# ------------------------------------------------------------------ gridded
def write_grid(path: Path, with_units: bool, time_units: str | None) -> Path:
    """Temperature (K, maybe without a units attribute) and geopotential on 2 times x 2 levels x 5 x 8."""
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", 2)
        nc.createDimension("plev", 2)
        nc.createDimension("lat", 5)
        nc.createDimension("lon", 8)
        t = nc.createVariable("time", "i4", ("time",))
        t[:] = [0, 6]
        if time_units is not None:
            t.units = time_units
        p = nc.createVariable("plev", "f8", ("plev",))
        p.standard_name, p.units, p[:] = "air_pressure", "hPa", [850.0, 500.0]
        la = nc.createVariable("lat", "f8", ("lat",))
        la.standard_name, la.units, la[:] = "latitude", "degrees_north", [90, 45, 0, -45, -90]
        lo = nc.createVariable("lon", "f8", ("lon",))
        lo.standard_name, lo.units, lo[:] = "longitude", "degrees_east", np.arange(8) * 45.0
        temp = nc.createVariable("ta", "f4", ("time", "plev", "lat", "lon"))
        temp.standard_name = "air_temperature"
        if with_units:
            temp.units = "K"
        temp[:] = 250.0 + np.arange(2 * 2 * 5 * 8).reshape(2, 2, 5, 8) * 0.01
        z = nc.createVariable("zg", "f4", ("time", "plev", "lat", "lon"))
        z.standard_name, z.units, z[:] = "geopotential", "m2 s-2", np.full((2, 2, 5, 8), 5000.0)
    return path


OVERRIDES = """
store: {store}
gridded:
  analysis:
    paths: [{path}]
    netcdf:
      units: {{ta: K}}
      time_units: hours since 2024-01-01 00:00
"""


def test_gridded_file_through_overrides_ingests(tmp_path):
    from obscast.components.store.gridstore import write_gridded
    from obscast.components.store.storage import Store

    path = write_grid(tmp_path / "grid.nc", with_units=False, time_units="garbage")
    file = tmp_path / "grid.yaml"
    file.write_text(OVERRIDES.format(store=tmp_path / "store", path=path))
    config = load_config(file)
    ds = read_netcdf_gridded(path, config.gridded["analysis"].netcdf)
    assert ds["air_temperature"].dims == ("member", "time", "level", "latitude", "longitude")
    assert ds["time"].values.tolist() == pd.to_datetime(["2024-01-01 00:00", "2024-01-01 06:00"]).as_unit("ns").asi8.tolist()
    assert ds["level"].values.tolist() == [50000.0, 85000.0] and ds["latitude"].values[0] == -90.0
    # 500 hPa (file index 1), latitude -90 (file index 4), first longitude, first time
    assert float(ds["air_temperature"][0, 0, 0, 0, 0]) == pytest.approx(250.0 + (1 * 40 + 4 * 8) * 0.01, abs=1e-4)
    assert ds["air_temperature"].attrs["units"] == "K" and ds["geopotential"].attrs["netcdf_variable"] == "zg"
    url, status = write_gridded(Store(str(tmp_path / "store")), "analysis", ds)
    assert status == "written" and Store(str(tmp_path / "store")).open_dataset("gridded/analysis.zarr").sizes["time"] == 2


def test_gridded_file_without_units_or_time_reference_is_a_one_line_error(tmp_path):
    path = write_grid(tmp_path / "grid.nc", with_units=False, time_units="hours since 2024-01-01")
    with pytest.raises(InputError) as err:
        read_netcdf_gridded(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "'ta'" in message and "units" in message and "\n" not in message
    path = write_grid(tmp_path / "grid2.nc", with_units=True, time_units="garbage")
    with pytest.raises(InputError) as err:
        read_netcdf_gridded(path)
    assert "'time'" in str(err.value) and "time_units" in str(err.value) and "\n" not in str(err.value)


def test_convert_units():
    np.testing.assert_allclose(convert_units(np.array([0.0, np.nan]), "degC", "K"), [273.15, np.nan])
    np.testing.assert_allclose(convert_units(np.array([1.0]), "km h-1", "m s-1"), [1 / 3.6])
    np.testing.assert_allclose(convert_units(np.array([9.80665]), "m2 s-2", "m2 s-2"), [9.80665])
    with pytest.raises(ValueError, match="cannot convert"):
        convert_units(np.array([1.0]), "hPa", "K")


def test_truncated_netcdf_is_a_bad_file(tmp_path):
    """A cut netCDF file is an InputError of the file's content (quarantined whole by the ingest),
    not of a missing file (a configuration error)."""
    from obscast.components.obs.readers.access import read_observation_file
    from obscast.components.store.catalogue import read_tolerant

    good = write_station_file(tmp_path / "good.nc")
    cut = tmp_path / "cut.nc"
    cut.write_bytes(good.read_bytes()[:2000])
    mapping = _config(tmp_path, good).sources["stations"].netcdf
    with pytest.raises(InputError) as err:
        read_observation_file("synop", cut, netcdf=mapping)
    assert err.value.field == "netCDF file" and "\n" not in str(err.value)
    from obscast.components.obs.readers.access import observation_reader

    table, bad = read_tolerant("synop", [str(good), str(cut)], reader=observation_reader(mapping))
    assert len(table) == N_STATIONS * N_HOURS and [b["path"] for b in bad] == [str(cut)]
