"""A tiny OSSE end to end: dinosaur nature run -> simulated BUFR -> ingest -> train -> forecast -> verify."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("dinosaur")

CONFIG = Path(__file__).parent / "tiny_osse.yaml"


@pytest.fixture(scope="module")
def osse_run(prefect_api, tmp_path_factory):
    from obscast.flows.pipeline import pipeline_flow

    store = tmp_path_factory.mktemp("osse") / "store"
    return store, pipeline_flow(config_path=str(CONFIG), store=str(store))


def test_tiny_osse_end_to_end(osse_run):
    store, result = osse_run
    nature = xr.open_zarr(result["nature"], consolidated=False, chunks=None)
    assert nature.sizes["time"] == 16 and nature["air_temperature"].attrs["units"] == "K"
    # every simulated kind went through the BUFR readers and QC into the store
    for kind in ("synop", "temp", "aircraft", "satellite", "amv"):
        qc = result["ingest"]["sources"][kind]["qc"]
        assert qc["accepted"] > 0 and len(list((store / "raw/osse" / kind).glob("*.bufr"))) >= 4
        assert sum(v for k, v in qc.items() if k.startswith("out_of_range")) > 0  # the injected gross errors
    fc = xr.open_zarr(result["forecast"], consolidated=False, chunks=None)
    assert fc["air_temperature"].dims == ("lead_time", "level", "latitude", "longitude")
    assert fc["level"].attrs["standard_name"] == "atmosphere_sigma_coordinate"
    assert np.isfinite(fc["surface_air_pressure"].values).all()
    assert "without satellite" in result["markdown"] and "| persistence |" in result["markdown"]
    assert "without amv" in result["markdown"]  # satellite winds: a source the model was trained on
    # The classical NWP baseline (cycled 3D-Var): both twins in the score table, the analysis error
    # at lead 0, and station scores against the simulated SYNOP reports.
    for name in ("nwp_identical_twin", "nwp_fraternal_twin", "model_at_baseline_inits"):
        assert f"| {name} |" in result["markdown"]
    assert "Analysis error (lead 0)" in result["markdown"]
    assert "Against the synop reports" in result["markdown"]
    # Network probes (issue 14): the observing network moved, the model scored unchanged.
    assert "Network probes" in result["markdown"] and "rotate180 change %" in result["markdown"]
    probes = (Path(result["table"]).parent / "probes.csv").read_text()
    assert "rotate180 change %" in probes and "thin50 change %" in probes and "unmoved" in probes
    scores = xr.open_zarr(Path(result["scores"]), consolidated=False)
    assert {"nwp_identical_twin", "nwp_fraternal_twin"} <= set(scores["system"].values.tolist())
    assert np.isfinite(scores["rmse"].sel(system="nwp_identical_twin").values).all()
    assert Path(result["plot"]).read_bytes()[:4] == b"\x89PNG"


def test_second_run_reuses_the_simulation(osse_run):
    from obscast.flows.simulate import simulate_flow

    store, _ = osse_run
    before = {p: p.stat().st_mtime_ns for p in (store / "raw").rglob("*") if p.is_file()}
    result = simulate_flow(config_path=str(CONFIG), store=str(store))
    assert result["status"] == "unchanged"
    assert {p: p.stat().st_mtime_ns for p in (store / "raw").rglob("*") if p.is_file()} == before


def test_simulated_files_do_not_depend_on_the_worker_processes(osse_run, tmp_path, monkeypatch):
    """The days simulated in two spawned processes (as the main job does) give byte-identical BUFR
    files to the days simulated in this process (as the tiny run above did)."""
    import shutil

    import obscast.flows.simulate as simulate

    store, _ = osse_run
    other = tmp_path / "store"
    shutil.copytree(store / "gridded", other / "gridded")  # the cached nature run
    monkeypatch.setattr(simulate, "MIN_DAYS_FOR_WORKERS", 1)
    result = simulate.simulate_flow(config_path=str(CONFIG), store=str(other))
    assert result["status"] != "unchanged"
    mine = sorted(p.relative_to(other) for p in (other / "raw/osse").rglob("*.bufr"))
    assert mine and mine == sorted(p.relative_to(store) for p in (store / "raw/osse").rglob("*.bufr"))
    for rel in mine:
        assert (other / rel).read_bytes() == (store / rel).read_bytes(), rel
