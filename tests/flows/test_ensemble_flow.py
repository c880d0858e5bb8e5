"""The ensemble flow on the pipeline's store (real samples, a non-cycling model with the ERA5
analysis as prior, split by member): CF products, scores and the Prefect artifact; the CLI command."""

from __future__ import annotations

import numpy as np
import xarray as xr

from tests.conftest import SAMPLES_CONFIG


def test_ensemble_flow_products_scores_and_artifact(pipeline_run, prefect_api, monkeypatch):
    from obscast.flows.ensemble import ensemble_flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    store, _ = pipeline_run
    monkeypatch.setenv("OBSCAST_ENSEMBLE__MEMBERS", "3")
    monkeypatch.setenv("OBSCAST_ENSEMBLE__INITS", "1")
    result = ensemble_flow(config_path=str(SAMPLES_CONFIG), store=str(store))
    assert result["members"] == 3
    members = xr.open_zarr(result["ensemble"], consolidated=False)
    assert members.sizes["realization"] == 3 and members["realization"].attrs["standard_name"] == "realization"
    prod = xr.open_zarr(result["stations"], consolidated=False).load()
    assert prod.attrs["Conventions"] == "CF-1.10" and list(prod["percentile"].values) == [10.0, 50.0, 90.0]
    quantile_vars = [v for v in prod.data_vars if "percentile" in prod[v].dims]
    assert quantile_vars
    for v in quantile_vars:
        q = prod[v]
        assert (q.diff("percentile") >= 0).all(), v
    probs = [v for v in prod.data_vars if v.startswith("probability_of_")]
    assert probs and all(((prod[v] >= 0) & (prod[v] <= 1)).all() for v in probs)
    scores = xr.open_zarr(result["scores"], consolidated=False).load()
    assert {"crps", "spread", "ensemble_mean_rmse", "deterministic_rmse", "spread_skill", "rank_histogram"} <= set(scores.data_vars)
    assert np.isfinite(scores["crps"]).all() and (scores["crps"] > 0).all()
    np.testing.assert_allclose(scores["rank_histogram"].sum("rank"), 1.0, rtol=1e-6)
    assert "fair CRPS" in result["markdown"] and "spread/skill" in result["markdown"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ensemble-scores"])))
    text = [a.data for a in found if "obscast-era5" in a.data]
    assert text and "data:image/png;base64," in text[-1] and "deterministic RMSE" in text[-1]
    # the verify flow's table and artifact show what the store holds of the ensemble and of the
    # generalisation benchmark (benchmarks/generalisation.py --store)
    from obscast.components.store.storage import Store
    from obscast.flows.verify import stored_results

    st = Store(str(store))
    version = result["scores"].split("/scores/obscast-era5/")[1].split("/")[0]
    assert stored_results(st, "obscast-era5", "v9999") == ("", "")
    tables, appendix = stored_results(st, "obscast-era5", version)
    assert "fair CRPS" in tables and "rank_histogram.png" in tables and "data:image/png;base64," in appendix
    st.write_bytes(b"## Generalisation (test)\n\n| probe | x |\n|---|---|\n| mirror | 1 |\n", "scores", "generalisation", "generalisation.md")
    try:
        assert "## Generalisation (test)" in stored_results(st, "obscast-era5", version)[0]
    finally:
        st.rm("scores", "generalisation")


def test_cli_ensemble_help():
    from obscast.flows.cli import build_parser

    args = build_parser().parse_args(["ensemble", "--config", str(SAMPLES_CONFIG), "--no-score", "--steps", "2"])
    assert args.command == "ensemble" and args.no_score and args.steps == 2
