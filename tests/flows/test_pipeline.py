"""End to end on the real samples: the pipeline flow against a real Prefect server, the
``obscast`` command line, idempotent ingest and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import eccodes
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from obscast.components.store.obstable import ObsTable
from obscast.components.store.storage import Store
from tests.conftest import PIPELINE_EPOCHS

REPO = Path(__file__).resolve().parents[2]


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def obscast(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "obscast.flows.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def open_zarr(path: Path) -> xr.Dataset:
    return xr.open_zarr(path, consolidated=False, chunks=None)


def test_pipeline_products(pipeline_run):
    store, result = pipeline_run
    ingest = result["ingest"]
    # Every row read is either stored or quarantined, per source.
    for name, s in ingest["sources"].items():
        stored = len(ObsTable(Store(str(store)), f"obs/{name}.zarr").read())
        quarantined = len(ObsTable(Store(str(store)), f"quarantine/{name}.zarr").read())
        assert stored == s["qc"]["accepted"]
        assert stored + quarantined == s["qc"]["total"]

    fc = open_zarr(Path(result["forecast"]))
    assert set(fc.data_vars) == {"air_temperature", "geopotential"}
    assert fc["air_temperature"].dims == ("lead_time", "level", "latitude", "longitude")
    assert fc["air_temperature"].attrs["units"] == "K" and fc["geopotential"].attrs["units"] == "m2 s-2"
    leads = pd.to_timedelta(fc["lead_time"].values)
    assert list(leads) == [pd.Timedelta(hours=h) for h in (12, 24, 36)]
    np.testing.assert_array_equal(fc["valid_time"].values, fc["init_time"].values + fc["lead_time"].values)
    t = fc["air_temperature"].values
    assert np.isfinite(t).all() and 200 < t.mean() < 290

    st = open_zarr(Path(result["stations"]))
    synop = ObsTable(Store(str(store)), "obs/synop.zarr").read()
    assert st.sizes["station"] == len(synop[["latitude", "longitude"]].drop_duplicates())  # one forecast per position
    assert np.isfinite(st["air_temperature_850hPa"].values).all()

    scores = open_zarr(Path(result["scores"]))
    assert list(scores["system"].values) == ["model", "persistence", "climatology"]
    assert scores["rmse"].dims == ("system", "channel", "lead_time") and "bias" in scores
    assert (scores["rmse"].values > 0).all()
    units = dict(zip(scores["channel"].values, scores["units"].values))
    assert units["air_temperature_500hPa"] == "K" and units["geopotential_500hPa"] == "m2 s-2"
    assert Path(result["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| model | persistence | climatology |" in result["markdown"] and "BIAS" in result["markdown"].upper()

    meta = json.loads((Path(result["model"]) / "metadata.json").read_text())
    assert len(meta["loss_curve"]) == PIPELINE_EPOCHS and meta["loss_curve"][-1] < meta["loss_curve"][0]
    assert meta["data"]["time_start"] == "2017-01-01 00:00:00" and meta["code_version"]
    assert meta["config"]["experiment"]["split"]["test"] == [8, 9]
    # the real observations lie outside the ERA5 sample's days: no encoder is trained (or fed) for them
    assert set(meta["data"]["excluded_sources"]) == {"synop", "temp", "aircraft"} and meta["data"]["sources"] == []
    assert set(meta["model_args"]["sources"]) == {"prior"}


def test_verification_artifact_on_server(pipeline_run, prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["verification-scores"])))
        ingest = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ingest-summary"])))
    era5 = [a.data for a in artifacts if "obscast-era5" in a.data]  # other tests' flows publish too
    assert era5, "the verify flow published no score artifact"
    text = era5[-1]
    assert "persistence" in text and "climatology" in text and "geopotential_500hPa" in text
    # this pipeline's ingest artifact: the one with its SYNOP row count (other tests ingest too)
    total = pipeline_run[1]["ingest"]["sources"]["synop"]["qc"]["total"]
    mine = [a.data for a in ingest if f"| synop | {total} |" in a.data]
    assert mine and "out_of_range:wind_speed" in mine[-1]


def test_ingest_twice_leaves_identical_store(pipeline_run):
    store, _ = pipeline_run
    before = snapshot(store)
    proc = obscast("ingest", "--config", str(REPO / "configs/samples.yaml"), "--store", str(store))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "unchanged" in proc.stdout
    assert snapshot(store) == before


def _config(tmp_path: Path, store: Path, **sections) -> Path:
    import yaml

    data = {"store": str(store), **sections}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _grib_with_vorticity(tmp_path: Path) -> Path:
    path = tmp_path / "vorticity.grib"
    with open(REPO / "data/samples/era5-levels-members.grib", "rb") as f:
        h = eccodes.codes_grib_new_from_file(f)
    eccodes.codes_set(h, "paramId", 138)  # relative vorticity: not a variable obscast knows
    with open(path, "wb") as g:
        eccodes.codes_write(h, g)
    eccodes.codes_release(h)
    return path


def _truncated_bufr(tmp_path: Path) -> Path:
    path = tmp_path / "truncated.bufr"
    data = (REPO / "data/samples/temp.bufr").read_bytes()
    path.write_bytes(data[:5000])
    return path


@pytest.mark.parametrize("case", ["missing_file", "truncated_bufr", "unknown_grib_variable", "unknown_config_key"])
def test_bad_input_one_line_error_and_store_unchanged(case, pipeline_run, tmp_path):
    store, _ = pipeline_run
    before = snapshot(store)
    if case == "missing_file":
        missing = tmp_path / "nowhere.bufr"
        config = _config(tmp_path, store, sources={"synop": {"kind": "synop", "paths": [str(missing)]}})
        expect = [str(missing), "expected"]
    elif case == "truncated_bufr":
        bad = _truncated_bufr(tmp_path)
        config = _config(tmp_path, store, sources={"temp": {"kind": "temp", "paths": [str(bad)]}})
        expect = [str(bad), "BUFR"]
    elif case == "unknown_grib_variable":
        bad = _grib_with_vorticity(tmp_path)
        config = _config(tmp_path, store, gridded={"era5_sample": {"paths": [str(bad)]}})
        expect = [str(bad), "shortName", "vo"]
    else:
        config = _config(tmp_path, store, ingest={"windw": "6h"})
        expect = [str(config), "ingest.windw"]
    proc = obscast("ingest", "--config", str(config))
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("obscast: error: ")
    for word in expect:
        assert word in last, last
    assert "Traceback" not in proc.stderr
    assert snapshot(store) == before


def test_cli_help_for_every_command():
    for command in ("run", "ingest", "train", "forecast", "verify"):
        proc = obscast(command, "--help", timeout=60)
        assert proc.returncode == 0 and "--config" in proc.stdout and "--store" in proc.stdout
