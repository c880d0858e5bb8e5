"""Tests of obscast.components.obs.qc.apply_qc on hand-built tables and on the real samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from obscast.components.obs.qc import apply_qc, observed_columns
from obscast.components.obs.variables import VARIABLES

NAN = np.nan
T0 = pd.Timestamp("2018-11-02 12:00")

# (reason expected or None, time, lat, lon, station, pressure, T, wind speed, surface_altitude, dew point)
ROWS = [
    (None, T0, 10.0, 20.0, "1", 50000.0, 250.0, 10.0, 100.0, NAN),
    ("bad_coordinates", pd.NaT, 10.0, 20.0, "2", 50000.0, 250.0, 10.0, 100.0, NAN),
    ("bad_coordinates", T0, 90.5, 20.0, "3", 50000.0, 250.0, 10.0, 100.0, NAN),
    ("bad_coordinates", T0, 10.0, 180.0, "4", 50000.0, 250.0, 10.0, 100.0, NAN),
    ("bad_coordinates", T0, NAN, 20.0, "5", 50000.0, 250.0, 10.0, 100.0, NAN),
    ("bad_coordinates", T0, 10.0, NAN, "5", 50000.0, NAN, NAN, 100.0, NAN),  # also all missing
    ("all_missing", T0, 10.0, 20.0, "6", 50000.0, NAN, NAN, 100.0, NAN),  # altitude is not observed
    ("out_of_range:air_temperature", T0, 10.0, 20.0, "7", 50000.0, 372.2, 10.0, 100.0, NAN),
    ("out_of_range:wind_speed", T0, 10.0, 20.0, "8", 50000.0, 250.0, 349.0, 100.0, NAN),
    ("out_of_range:pressure", T0, 10.0, 20.0, "9", 50.0, 250.0, 349.0, 100.0, NAN),  # pressure first
    ("out_of_range:surface_altitude", T0, 10.0, 20.0, "10", 50000.0, 250.0, 10.0, 9500.0, NAN),
    ("duplicate_conflict", T0, 10.0, 20.0, "1", 50000.0, 251.0, 11.0, 100.0, NAN),  # row 0's key, other values
    (None, T0, 10.0, 20.0, "1", 70000.0, 260.0, 12.0, 100.0, NAN),  # other level: not a duplicate
    (None, T0, 10.0, 20.0, "7", 50000.0, 250.0, 10.0, 100.0, NAN),  # first *accepted* of station 7
    ("out_of_range:air_temperature", T0, 10.0, 20.0, "1", 70000.0, 100.0, 12.0, 100.0, NAN),
    (None, T0, -90.0, -180.0, "11", 50000.0, 250.0, NAN, NAN, NAN),  # edges are valid
    ("duplicate_conflict", T0, -90.0, -180.0, "11", 50000.0, NAN, 3.0, NAN, NAN),  # tie: the first is kept
    # real-feed faults
    ("bad_coordinates", T0, 10.0, 1234.5, "12", 50000.0, 250.0, 10.0, 100.0, NAN),  # decimal-shifted longitude
    ("bad_coordinates", T0, -999.0, -999.0, "13", 50000.0, 250.0, 10.0, 100.0, NAN),  # fill values as position
    ("fill_value:air_temperature", T0, 10.0, 20.0, "14", 50000.0, -9999.0, 10.0, 100.0, NAN),
    ("fill_value:wind_speed", T0, 10.0, 20.0, "15", 50000.0, 250.0, 1e-40, 100.0, NAN),  # float32 denormal
    ("fill_value:pressure", T0, 10.0, 20.0, "16", 9.96921e36, 250.0, 10.0, 100.0, NAN),  # netCDF fill
    ("physically_impossible:air_temperature", T0, 10.0, 20.0, "17", 50000.0, 340.0, 10.0, 100.0, NAN),
    ("physically_impossible:dew_point_temperature", T0, 10.0, 20.0, "18", 50000.0, 280.0, 10.0, 100.0, 281.0),
    (None, T0, 10.0, 20.0, "19", 50000.0, 280.0, 10.0, 100.0, 280.1),  # within the rounding tolerance
    ("duplicate", T0, 10.0, 20.0, "19", 50000.0, 280.0, 10.0, 100.0, 280.1),  # exact copy
    ("duplicate_conflict", T0, 30.0, 40.0, "20", 50000.0, 280.0, NAN, 100.0, NAN),  # less complete copy...
    (None, T0, 30.0, 40.1, "20", 50000.0, 280.0, 5.0, 100.0, NAN),  # ...of this one, which is kept
    (None, T0 + pd.Timedelta("1h"), 45.0, 7.0, "21", 50000.0, 280.0, 5.0, 100.0, NAN),
    ("station_moved", T0 + pd.Timedelta("2h"), 46.0, 7.0, "21", 50000.0, 280.0, 5.0, 100.0, NAN),  # 111 km away
    (None, T0 + pd.Timedelta("3h"), 45.0, 7.0, "21", 50000.0, 280.0, 5.0, 100.0, NAN),
    (None, T0 + pd.Timedelta("4h"), 45.0, 7.0001, "21", 50000.0, 280.0, 5.0, 100.0, NAN),  # 8 m: same place
]


@pytest.fixture()
def table() -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "time": pd.to_datetime([r[1] for r in ROWS]).as_unit("ns"),
            "latitude": [r[2] for r in ROWS],
            "longitude": [r[3] for r in ROWS],
            "station_id": pd.Series([r[4] for r in ROWS], dtype=object),
            "surface_altitude": [r[8] for r in ROWS],
            "pressure": np.array([r[5] for r in ROWS], dtype=np.float32),
            "air_temperature": np.array([r[6] for r in ROWS], dtype=np.float32),
            "dew_point_temperature": np.array([r[9] for r in ROWS], dtype=np.float32),
            "wind_speed": np.array([r[7] for r in ROWS], dtype=np.float32),
        }
    )
    return df.set_index(pd.RangeIndex(100, 100 + len(df)))  # labels survive QC


def test_each_reason(table):
    before = table.copy()
    result = apply_qc(table, "synop", source="hand-built")
    pd.testing.assert_frame_equal(table, before)  # input untouched
    expected = pd.Series([r[0] for r in ROWS], index=table.index)

    assert len(result.accepted) + len(result.rejected) == len(table)
    assert result.accepted.index.tolist() == expected.index[expected.isna()].tolist()
    assert result.rejected.index.tolist() == expected.index[expected.notna()].tolist()
    assert result.rejected["reason"].tolist() == expected.dropna().tolist()
    assert result.rejected["reason"].dtype == object

    assert list(result.accepted.columns) == list(table.columns) + ["qc"]
    assert result.accepted["qc"].dtype == np.uint8 and (result.accepted["qc"] == 0).all()
    pd.testing.assert_frame_equal(result.accepted.drop(columns="qc"), table.loc[result.accepted.index])
    assert list(result.rejected.columns) == list(table.columns) + ["reason"]
    pd.testing.assert_frame_equal(result.rejected.drop(columns="reason"), table.loc[result.rejected.index])

    by_reason = expected.value_counts().to_dict()
    assert result.counts == {
        "bad_coordinates": 0, "all_missing": 0, "station_moved": 0, "duplicate": 0, "duplicate_conflict": 0,
        **by_reason, "accepted": int(expected.isna().sum()), "total": len(ROWS),
    }
    # every input row accounted for: accepted + quarantined == read, reason by reason
    assert sum(v for k, v in result.counts.items() if k != "total") == result.counts["total"] == len(table)
    assert result.kind == "synop" and result.source == "hand-built"


def test_moving_platforms_keep_their_positions_apart(table):
    """Without surface_altitude (aircraft, TEMP) the position is part of the report key and
    nobody is a moved station: the same flight at two places is two reports."""
    df = table.drop(columns="surface_altitude").loc[[100 + 28, 100 + 29, 100 + 26, 100 + 27]]
    result = apply_qc(df, "aircraft")
    assert result.counts["station_moved"] == 0 and result.counts["duplicate_conflict"] == 0
    assert result.counts["accepted"] == 4


def test_longitude_outside_360_is_not_normalised():
    from obscast.components.obs.conversions import normalise_longitude

    lon = np.array([190.0, -190.0, 360.0, 1234.5, -9999.0, NAN])
    out = normalise_longitude(lon, keep_impossible=True)  # as the observation readers call it
    np.testing.assert_array_equal(out[:3], [-170.0, 170.0, 0.0])
    assert out[3] == 1234.5 and out[4] == -9999.0 and np.isnan(out[5])
    assert normalise_longitude(lon)[3] == pytest.approx(154.5)  # simulators wrap any angle


def test_height_and_nan_vertical_coordinates():
    df = pd.DataFrame(
        {
            "time": pd.to_datetime([T0] * 4).as_unit("ns"),
            "latitude": [50.0] * 4,
            "longitude": [10.0] * 4,
            "station_id": pd.Series(["EU1", "EU1", "EU2", "EU3"], dtype=object),
            "pressure": np.array([NAN, NAN, NAN, 30000.0], dtype=np.float32),
            "height": np.array([9000.0, 9000.0, 25000.0, NAN], dtype=np.float32),
            "air_temperature": np.array([220.0, 221.0, 220.0, 230.0], dtype=np.float32),
        }
    )
    result = apply_qc(df, "aircraft")
    assert result.rejected["reason"].tolist() == ["duplicate_conflict", "out_of_range:height"]
    assert result.accepted.index.tolist() == [0, 3]


def test_empty_table_and_missing_columns(table):
    result = apply_qc(table.iloc[:0], "synop")
    assert len(result.accepted) == len(result.rejected) == 0
    assert result.counts["total"] == 0 and result.counts["accepted"] == 0
    with pytest.raises(ValueError, match="station_id"):
        apply_qc(table.drop(columns="station_id"), "synop")


def test_observed_columns(table):
    assert observed_columns(table) == ["air_temperature", "dew_point_temperature", "wind_speed"]


def _check_partition(table: pd.DataFrame, result) -> None:
    assert len(result.accepted) + len(result.rejected) == len(table) == result.counts["total"]
    assert sum(v for k, v in result.counts.items() if k != "total") == len(table)
    assert result.accepted.index.intersection(result.rejected.index).empty
    for column in observed_columns(table):
        if column in VARIABLES:
            v = VARIABLES[column]
            values = result.accepted[column].dropna()
            assert values.between(v.valid_min, v.valid_max).all(), column


def test_real_synop(synop_table):
    result = apply_qc(synop_table, "synop", source="perf_synop.bufr")
    _check_partition(synop_table, result)
    rejected = result.rejected.set_index("station_id")
    assert "out_of_range:wind_speed" in rejected.loc[["89666"], "reason"].tolist()
    assert "out_of_range:air_temperature" in rejected.loc[["67201"], "reason"].tolist()
    assert not result.accepted["wind_speed"].gt(150).any()
    assert not result.accepted["air_temperature"].gt(350).any()
    core = ["air_temperature", "dew_point_temperature", "air_pressure_at_mean_sea_level",
            "surface_air_pressure", "wind_speed", "wind_from_direction"]
    assert result.counts["all_missing"] == int(synop_table[core].isna().all(axis=1).sum())
    # station 40296 at -350 m (Dead Sea area) is plausible and kept
    assert (result.accepted["station_id"] == "40296").any()


def test_real_temp_and_aircraft(temp_table, aircraft_table):
    temp = apply_qc(temp_table, "temp", source="temp.bufr")
    _check_partition(temp_table, temp)
    bad_wind = temp.rejected[temp.rejected["wind_speed"] == 160.0]
    assert bad_wind["reason"].tolist() == ["out_of_range:wind_speed"]
    aircraft = apply_qc(aircraft_table, "aircraft", source="perf_aircraft.bufr")
    _check_partition(aircraft_table, aircraft)
