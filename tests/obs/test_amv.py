"""Satellite winds (AMV): the reader on a real EUMETSAT file, QC, ingest, and the OSSE's simulated AMVs."""

from __future__ import annotations

from pathlib import Path

import eccodes
import numpy as np
import pandas as pd
import pytest

from obscast.components.errors import InputError
from obscast.components.obs.qc import apply_qc
from obscast.components.obs.readers import read_amv, read_observations
from obscast.components.obs.readers.amv import AMV_COLUMNS, MIN_QUALITY_INDICATOR

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "amv2_87.bufr"


def _direct(path: Path, key: str) -> np.ndarray:
    """``key`` of every subset of every message, read with eccodes alone (missing -> NaN)."""
    out = []
    with open(path, "rb") as f:
        while (h := eccodes.codes_bufr_new_from_file(f)) is not None:
            try:
                eccodes.codes_set(h, "unpack", 1)
                n = eccodes.codes_get(h, "numberOfSubsets")
                v = np.asarray(eccodes.codes_get_double_array(h, key), dtype=float)
                v[v == eccodes.CODES_MISSING_DOUBLE] = np.nan
                out.append(np.repeat(v, n) if v.size == 1 else v)
            finally:
                eccodes.codes_release(h)
    return np.concatenate(out)


def test_real_amv_file_reads_the_first_occurrence():
    table = read_amv(SAMPLE)
    assert tuple(table.columns) == AMV_COLUMNS
    speed = _direct(SAMPLE, "#1#windSpeed")
    assert len(table) == len(speed) == 915  # every subset of the 8 messages
    # the table is sorted by time; all rows of this file have one time, so the order is the file's
    assert (table["time"] == pd.Timestamp("2012-11-02 00:30")).all()
    np.testing.assert_allclose(table["wind_speed"], speed, rtol=1e-6)
    np.testing.assert_allclose(table["wind_from_direction"], _direct(SAMPLE, "#1#windDirection"))
    np.testing.assert_allclose(table["pressure"], _direct(SAMPLE, "#1#pressure"))
    np.testing.assert_allclose(table["quality_indicator"], _direct(SAMPLE, "#1#windSpeed->percentConfidence"))
    # later occurrences are other blocks (intermediate vectors, first guess): not the wind
    assert not np.allclose(_direct(SAMPLE, "#3#windSpeed"), speed, equal_nan=True)
    assert set(table["station_id"]) == {"meteosat-9"}
    assert set(table["wind_computation_method"]) == {3, 5}
    np.testing.assert_allclose(table["satellite_channel_centre_frequency"], 4.79668e13)  # WV 6.25 um
    u = -table["wind_speed"] * np.sin(np.deg2rad(table["wind_from_direction"]))
    np.testing.assert_allclose(table["eastward_wind"], u, atol=1e-4)
    assert read_observations("amv", SAMPLE).equals(table)


def test_amv_qc_quarantines_low_quality_winds():
    table = read_amv(SAMPLE)
    result = apply_qc(table, "amv", source=SAMPLE.name)
    low = (table["quality_indicator"] < MIN_QUALITY_INDICATOR).to_numpy()
    assert result.counts["low_quality"] == int(low.sum()) > 0
    assert result.counts["accepted"] + len(result.rejected) == len(table)
    assert (result.accepted["quality_indicator"] >= MIN_QUALITY_INDICATOR).all()
    # metadata columns never count as observed values: a wind-less row is all_missing
    blank = table.head(1).assign(wind_speed=np.nan, wind_from_direction=np.nan, eastward_wind=np.nan,
                                 northward_wind=np.nan, quality_indicator=np.nan)
    assert apply_qc(blank, "amv").rejected["reason"].tolist() == ["all_missing"]


def test_non_amv_bufr_is_a_one_line_error(samples, tmp_path):
    with pytest.raises(InputError) as err:
        read_amv(samples / "temp.bufr")
    message = str(err.value)
    assert "temp.bufr" in message and "#1#satelliteIdentifier" in message and "\n" not in message
    with pytest.raises(InputError, match="no such file"):
        read_amv(tmp_path / "absent.bufr")


def test_truncated_amv_file(tmp_path):
    path = tmp_path / "cut.bufr"
    path.write_bytes(SAMPLE.read_bytes()[:-500])
    with pytest.raises(InputError, match="complete BUFR message"):
        read_amv(path)


def test_ingest_stores_every_amv(prefect_api, tmp_path):
    """The ingest flow on the real file: obs + quarantine rows = the subsets eccodes reads."""
    from obscast.components.store.obstable import ObsTable
    from obscast.components.store.storage import Store
    from obscast.flows.ingest import ingest_flow

    config = tmp_path / "amv.yaml"
    config.write_text(f"store: {tmp_path / 'store'}\nsources:\n  meteosat: {{kind: amv, paths: [{SAMPLE}]}}\n")
    summary = ingest_flow(config_path=str(config))
    store = Store(str(tmp_path / "store"))
    obs = ObsTable(store, "obs/meteosat.zarr").read()
    quarantine = ObsTable(store, "quarantine/meteosat.zarr").read()
    n = len(_direct(SAMPLE, "#1#windSpeed"))
    assert len(obs) + len(quarantine) == n == summary["sources"]["meteosat"]["qc"]["total"]
    assert set(quarantine["reason"]) == {"low_quality"}
    assert obs["wind_computation_method"].dtype == np.int64 and set(obs["station_id"]) == {"meteosat-9"}


# ------------------------------------------------------------------ OSSE
def test_simulated_amvs_on_geostationary_discs(tmp_path):
    from obscast.components.osse.amv import AMV_SATELLITES, DISC_RADIUS_DEG, write_amv_bufr
    from obscast.components.osse.networks import load_networks
    from obscast.components.osse.simulate import simulate_observations
    from tests.osse.test_osse import EM, _analytic_nature, _clamped

    nature = _analytic_nature()
    sim = simulate_observations(nature, load_networks(amv=True), EM, kinds=("amv",))
    obs, truth, gross = sim["amv"], sim.truth["amv"], sim.gross["amv"]
    assert tuple(obs.columns) == AMV_COLUMNS and set(obs["station_id"]) == set(AMV_SATELLITES)
    sub = obs["station_id"].map(AMV_SATELLITES).to_numpy()
    lat, lon = np.deg2rad(obs["latitude"].to_numpy()), np.deg2rad(obs["longitude"].to_numpy() - sub)
    distance = np.rad2deg(np.arccos(np.clip(np.cos(lat) * np.cos(lon), -1, 1)))
    assert distance.max() <= DISC_RADIUS_DEG + 1e-3
    # truth: the analytic wind (u varies with longitude, v with latitude; constant in the vertical)
    u = 10.0 + 10.0 * np.sin(np.deg2rad(truth["longitude"].to_numpy()))
    np.testing.assert_allclose(truth["eastward_wind"], u, atol=0.02)
    np.testing.assert_allclose(truth["northward_wind"], -5.0 + 0.1 * _clamped(truth["latitude"].to_numpy(), nature), atol=1e-3)
    assert sim.unobservable["amv"] > 0 and (obs["pressure"] >= 0.25 * 90000).all()
    per_window = len(obs) / 8
    assert 1000 < per_window < 4000  # about the TEMP + aircraft feeds, not a radiance feed
    # BUFR round trip and QC: exactly the injected gross errors are rejected
    path = tmp_path / "amv.bufr"
    assert write_amv_bufr(obs, path, max_subsets=5000) >= 8
    back = read_amv(path)
    assert len(back) == len(obs) and (back["station_id"] == obs["station_id"]).all()
    np.testing.assert_allclose(back["pressure"], obs["pressure"], atol=5.0)
    np.testing.assert_allclose(back["wind_speed"], obs["wind_speed"], atol=0.05 + 1e-4)
    assert back["quality_indicator"].isna().all()
    result = apply_qc(back, "amv")
    assert result.rejected.index.tolist() == np.flatnonzero(gross["wind_speed"].to_numpy()).tolist()


def test_missing_markers_round_trip(tmp_path):
    from obscast.components.osse.amv import write_amv_bufr

    table = read_amv(SAMPLE).head(4).copy()
    table.loc[1, "wind_speed"] = np.nan
    table.loc[2, "wind_computation_method"] = -1
    table.loc[3, "satellite_channel_centre_frequency"] = np.nan
    path = tmp_path / "m.bufr"
    write_amv_bufr(table, path)
    back = read_amv(path)
    assert np.isnan(back.loc[1, "wind_speed"]) and np.isnan(back.loc[1, "eastward_wind"])
    assert back.loc[2, "wind_computation_method"] == -1 and np.isnan(back.loc[3, "satellite_channel_centre_frequency"])
    assert back.loc[0, "wind_computation_method"] == table.loc[0, "wind_computation_method"]


def test_uncompressed_multi_subset_messages(tmp_path):
    """One data section per subset: ranks restart per subset only after subset extraction."""
    from obscast.components.osse.amv import write_amv_bufr

    table = read_amv(SAMPLE).head(300)
    packed, plain = tmp_path / "packed.bufr", tmp_path / "plain.bufr"
    write_amv_bufr(table, packed, max_subsets=128)
    write_amv_bufr(table, plain, max_subsets=128, compressed=False)
    with open(plain, "rb") as f:
        h = eccodes.codes_bufr_new_from_file(f)
        assert eccodes.codes_get(h, "compressedData") == 0 and eccodes.codes_get(h, "numberOfSubsets") == 128
        eccodes.codes_release(h)
    pd.testing.assert_frame_equal(read_amv(plain), read_amv(packed))
