"""The BUFR layouts centres send, read from real files (data/samples/SOURCES.md):

* SYNOP templates 307080 (also compressed), 307086, 307096 and DWD's national 10-minute
  automatic-station reports, where ``airTemperature`` repeats under sensor-height qualifiers
  (2 m, then 5 cm) and ``windSpeed`` under time-period qualifiers;
* TEMP high-resolution profiles 309052 and 309057, with time and position displacement per level;
* aircraft 311010 (AMDAR, compressed, flight level) and 311001.

The reference is a direct eccodes read written here independently of the reader, scalar and
subset by subset: walk every key of a subset in order, keep the qualifiers in effect, and take
the first non-missing value under the right qualifier (2 m temperature: a sensor height in
1..3 m, else one under a height reported missing; wind: the 10-minute period, else one under a
period reported missing; never an element outside any such qualifier).
"""

from __future__ import annotations

import eccodes
import numpy as np
import pandas as pd
import pdbufr
import pytest

from obscast.components.obs.qc import apply_qc, observed_columns
from obscast.components.obs.readers.bufr import read_observations

H = "heightOfSensorAboveLocalGroundOrDeckOfMarinePlatform"
SYNOP_FILES = ["synop-307080-307086-307096.bufr", "synop-307080-compressed.bufr", "synop-307086.bufr",
               "synop-dwd-national-10min.bufr"]
TEMP_FILES = ["temp-309052.bufr", "temp-309057-hires.bufr"]
AIRCRAFT_FILES = ["aircraft-311010-compressed.bufr", "aircraft-311001.bufr"]


def _missing(v) -> bool:
    return v is None or v in (eccodes.CODES_MISSING_DOUBLE, eccodes.CODES_MISSING_LONG) or (isinstance(v, float) and np.isnan(v))


def _subsets(path):
    """Yield, per subset, its data keys ``[(element, value), ...]`` in order (primary data only),
    read one key at a time with ``codes_get`` (compressed messages: the subset's value)."""
    with open(path, "rb") as f:
        while (h := eccodes.codes_bufr_new_from_file(f)) is not None:
            eccodes.codes_set(h, "unpack", 1)
            n_sub = eccodes.codes_get(h, "numberOfSubsets")
            compressed = eccodes.codes_get(h, "compressedData") == 1
            it = eccodes.codes_bufr_keys_iterator_new(h)
            names = []
            while eccodes.codes_bufr_keys_iterator_next(it):
                names.append(eccodes.codes_bufr_keys_iterator_get_name(it))
            eccodes.codes_bufr_keys_iterator_delete(it)
            groups, current, primary = [], [], True
            for name in names:
                if name == "subsetNumber":
                    if current:
                        groups.append(current)
                    current, primary = [], True
                elif name == "operator":
                    primary = False
                elif primary and name.startswith("#") and "->" not in name:
                    current.append(name)
            groups.append(current)
            if compressed:
                groups = groups * n_sub
            for s, keys in enumerate(groups):
                out = []
                for key in keys:
                    element = key.split("#")[2]
                    if element in ("stationOrSiteName", "shortStationName"):
                        continue
                    try:
                        value = eccodes.codes_get_array(h, key)
                    except eccodes.CodesInternalError:
                        continue
                    value = value[s] if compressed and len(value) == n_sub else value[0]
                    if isinstance(value, (bytes, str)):
                        value = str(value).strip() or None
                    elif _missing(float(value)):
                        value = None
                    else:
                        value = float(value)
                    out.append((element, value))
                yield out
            eccodes.codes_release(h)


UNSET = "no qualifier yet"  # unlike None: a qualifier reported missing


def _first(keys, element, accept):
    """First non-missing value of ``element`` whose qualifiers pass ``accept(height, period)``."""
    height = period = UNSET
    for e, v in keys:
        if e == H:
            height = v
        elif e == "timePeriod":
            period = v
        elif e == element and v is not None and accept(height, period):
            return v
    return None


def _screen(keys, fixed, element):
    v = _first(keys, fixed, lambda h, p: True)
    if v is not None:
        return v
    v = _first(keys, element, lambda h, p: h not in (None, UNSET) and 1.0 <= h <= 3.0)
    return v if v is not None else _first(keys, element, lambda h, p: h is None)


def _wind(keys, fixed, element):
    v = _first(keys, fixed, lambda h, p: True)
    if v is not None:
        return v
    v = _first(keys, element, lambda h, p: p == -10.0)
    return v if v is not None else _first(keys, element, lambda h, p: p is None)


def reference_synop(path) -> pd.DataFrame:
    rows = []
    for keys in _subsets(path):
        def get(element, keys=keys):
            return _first(keys, element, lambda h, p: True)

        rows.append({
            "hour": get("hour"), "minute": get("minute"),
            "air_temperature": _screen(keys, "airTemperatureAt2M", "airTemperature"),
            "dew_point_temperature": _screen(keys, "dewpointTemperatureAt2M", "dewpointTemperature"),
            "wind_speed": _wind(keys, "windSpeedAt10M", "windSpeed"),
            "wind_from_direction": _wind(keys, "windDirectionAt10M", "windDirection"),
            "air_pressure_at_mean_sea_level": get("pressureReducedToMeanSeaLevel"),
            "surface_air_pressure": get("nonCoordinatePressure"),
        })
    df = pd.DataFrame(rows).astype(float)
    return df


def _sorted_like_reader(ref: pd.DataFrame) -> pd.DataFrame:
    """The reader sorts stably by time; within one day hour*60+minute orders the same."""
    key = ref["hour"].fillna(0) * 60 + ref["minute"].fillna(0)
    return ref.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)


VARIABLES = ["air_temperature", "dew_point_temperature", "wind_speed", "wind_from_direction",
             "air_pressure_at_mean_sea_level", "surface_air_pressure"]


@pytest.mark.parametrize("name", SYNOP_FILES)
def test_synop_values_equal_a_qualifier_aware_eccodes_read(samples, name):
    table = read_observations("synop", samples / name)
    ref = _sorted_like_reader(reference_synop(samples / name))
    assert len(table) == len(ref) > 0
    for column in VARIABLES:
        np.testing.assert_array_equal(table[column].to_numpy(np.float32), ref[column].to_numpy(np.float32), err_msg=column)
        assert table[column].notna().sum() == ref[column].notna().sum()
    # both decoding paths (vectorised over subsets, and subset by subset) agree
    pd.testing.assert_frame_equal(table, read_observations("synop", samples / name, engine="pdbufr"))


def test_national_10_minute_reports_take_2m_temperature_and_10_minute_wind(samples):
    """DWD's national additions: 2 m and 5 cm air temperature in one subset; the 2 m one is taken."""
    table = read_observations("synop", samples / "synop-dwd-national-10min.bufr")
    helgoland = table[(table["station_id"] == "10015") & (table["time"] == pd.Timestamp("2021-05-16 11:50"))]
    assert len(helgoland) == 1
    row = helgoland.iloc[0]
    assert row["air_temperature"] == pytest.approx(285.65, abs=1e-3)  # 2 m; 5 cm is 293.85 K
    assert row["dew_point_temperature"] == pytest.approx(283.0, abs=1e-3)
    assert row["wind_speed"] == pytest.approx(2.2, abs=1e-3) and row["wind_from_direction"] == 150.0
    assert row["surface_air_pressure"] == 99930.0
    # the first occurrence of airTemperature is not always the 2 m one: under the old first-occurrence
    # rule no airTemperatureAt2M exists in this file at all
    direct = pdbufr.read_bufr(str(samples / "synop-dwd-national-10min.bufr"),
                              columns=["data_datetime", "airTemperatureAt2M"], required_columns=False)
    assert "airTemperatureAt2M" not in direct.columns
    assert table["air_temperature"].notna().sum() > 480 and table["wind_speed"].notna().sum() > 280


@pytest.mark.parametrize("name", SYNOP_FILES)
def test_no_report_with_an_observed_variable_is_all_missing(samples, name):
    table = read_observations("synop", samples / name)
    result = apply_qc(table, "synop", source=name)
    ref = _sorted_like_reader(reference_synop(samples / name))
    carries = ref[VARIABLES].notna().any(axis=1).to_numpy()
    all_missing = result.rejected.index[result.rejected["reason"] == "all_missing"]
    assert not carries[all_missing].any()
    assert len(all_missing) == int((~carries).sum())
    assert sum(v for k, v in result.counts.items() if k != "total") == len(table)


def reference_levels(path):
    """Per TEMP level (each ``pressure`` of the primary data): pressure, T, time offset [s],
    latitude displacement, and the subset's launch latitude."""
    rows = []
    for keys in _subsets(path):
        launch_lat = _first(keys, "latitude", lambda h, p: True)
        parts = [_first(keys, e, lambda h, p: True) or 0 for e in ("year", "month", "day", "hour", "minute", "second")]
        launch = pd.Timestamp(*[int(x) for x in parts[:5]]) + pd.Timedelta(seconds=float(parts[5]))
        level, pending_offset = None, None
        for e, v in keys:
            if e == "timePeriod":
                pending_offset = v
            elif e == "pressure":
                level = {"pressure": v, "air_temperature": None, "offset": pending_offset, "dlat": None,
                         "launch_lat": launch_lat, "launch": launch}
                rows.append(level)
                pending_offset = None
            elif level is not None and e == "airTemperature" and level["air_temperature"] is None:
                level["air_temperature"] = v
            elif level is not None and e == "latitudeDisplacement" and level["dlat"] is None:
                level["dlat"] = v
    return pd.DataFrame(rows)


@pytest.mark.parametrize("name", TEMP_FILES)
def test_temp_high_resolution_levels_with_displacement(samples, name):
    table = read_observations("temp", samples / name)
    ref = reference_levels(samples / name)
    assert len(table) == len(ref) > 100
    # every level's temperature and pressure are those of the file, as a multiset (rows are sorted by time)
    np.testing.assert_array_equal(np.sort(table["pressure"].to_numpy(np.float32)),
                                  np.sort(ref["pressure"].astype(float).to_numpy(np.float32)))
    np.testing.assert_array_equal(np.sort(table["air_temperature"].dropna().to_numpy(np.float32)),
                                  np.sort(ref["air_temperature"].astype(float).dropna().to_numpy(np.float32)))
    # time and position displacement per level: the offsets the file gives, applied
    offset = pd.to_timedelta(ref["offset"].astype(float).fillna(0.0), unit="s")
    expected_time = np.sort((ref["launch"] + offset).to_numpy(dtype="datetime64[ns]"))
    np.testing.assert_array_equal(np.sort(table["time"].to_numpy()), expected_time)
    if ref["offset"].notna().any():
        assert table["time"].nunique() > len(table) // 2  # levels carry their own time
    if ref["dlat"].astype(float).notna().any():
        expected_lat = np.sort((ref["launch_lat"].astype(float) + ref["dlat"].astype(float).fillna(0.0)).to_numpy())
        np.testing.assert_allclose(np.sort(table["latitude"].to_numpy()), expected_lat, atol=1e-6)
    result = apply_qc(table, "temp", source=name)
    carries = table[observed_columns(table)].notna().any(axis=1)
    assert not carries[result.rejected.index[result.rejected["reason"] == "all_missing"]].any()
    pd.testing.assert_frame_equal(table, read_observations("temp", samples / name, engine="pdbufr"))


@pytest.mark.parametrize("name", AIRCRAFT_FILES)
def test_aircraft_templates(samples, name):
    table = read_observations("aircraft", samples / name)
    direct = pdbufr.read_bufr(str(samples / name), columns=["data_datetime", "latitude", "airTemperature", "windSpeed"],
                              required_columns=False)
    direct = direct.sort_values("data_datetime", kind="stable").reset_index(drop=True)
    assert len(table) == len(direct) > 0
    np.testing.assert_array_equal(table["air_temperature"].to_numpy(np.float32),
                                  direct["airTemperature"].to_numpy(np.float64).astype(np.float32))
    np.testing.assert_array_equal(table["wind_speed"].to_numpy(np.float32),
                                  direct["windSpeed"].to_numpy(np.float64).astype(np.float32))
    assert (table["station_id"] != "").all()  # 311010: the registration when no flight number
    assert table[["pressure", "height"]].notna().any(axis=1).all()  # 311010: pressure from the flight level
    pd.testing.assert_frame_equal(table, read_observations("aircraft", samples / name, engine="pdbufr"))


def test_flight_level_to_pressure_is_the_standard_atmosphere():
    from obscast.components.obs.conversions import pressure_from_flight_level

    # ICAO standard atmosphere table values: FL0 1013.25 hPa, FL100 (3048 m) 696.8 hPa,
    # FL300 (9144 m) 300.9 hPa, FL390 (11887 m) 196.8 hPa
    p = pressure_from_flight_level(np.array([0.0, 3048.0, 9144.0, 11887.2, np.nan]))
    np.testing.assert_allclose(p[:4], [101325.0, 69682.0, 30090.0, 19677.0], rtol=2e-4)
    assert np.isnan(p[4])
