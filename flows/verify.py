"""Verify flow: scores of a model version on the test split against the baselines, with plot and artifact."""

from __future__ import annotations

from typing import Any

from obscast.components.data.experiment import build_datasets, load_tables, open_target
from obscast.components.model.forecasting import load_model
from obscast.components.nwp.baseline import experiment_baseline
from obscast.components.verification.metrics import scores_markdown, to_markdown
from obscast.components.verification.plots import rmse_vs_lead_png
from obscast.flows.common import load, png_markdown, publish_scores, store_of, task, write_products
from prefect import flow, get_run_logger


@task(name="verify-model")
def verify_task(config, version: str | None) -> dict[str, Any]:
    """Score a version on the test split; write ``scores/<model>/<version>/`` and publish the artifact."""
    from obscast.components.training.workflow import verify

    logger = get_run_logger()
    st = store_of(config)
    model, meta = load_model(st, config.model.name, version)
    truth = open_target(st, config)
    data = build_datasets(config, load_tables(st, config), truth, statistics=meta["statistics"])
    found = experiment_baseline(st, config, truth, data.test.init_times[data.test_spinup:], run=False)
    baselines = found[0] if found else None
    if config.osse is not None and config.osse.nwp is not None and baselines is None:
        logger.warning("no stored NWP baseline for this experiment: run `obscast baseline` to score it")
    result = verify(config, model, data, baselines=baselines, store=st)
    split = config.experiment.split
    where = f"test members {split.test}" if split.by == "member" else f"the test period {split.test.start:%Y-%m-%d} to {split.test.end:%Y-%m-%d}"
    raw = result["raw"]
    channels = config.verify.channels
    scores = raw["scores"] if not channels else raw["scores"].sel(channel=channels)
    md = scores_markdown(scores, f"{meta['name']} {meta['version']}: latitude-weighted RMSE and bias on {where}")
    if baselines:
        first = next(iter(baselines.values()))
        md += (f"\nNWP baselines (cycled 3D-Var, `obscast baseline`): forecasts from {first.sizes['init_time']} of the "
               f"{raw['n_inits']} test inits (every {config.osse.nwp.every}th); `model_at_baseline_inits` is the model on those inits.\n")
    products: dict[str, Any] = {"scores.zarr": scores}
    if "analysis_scores" in raw:
        an = raw["analysis_scores"] if not channels else raw["analysis_scores"].sel(channel=channels)
        md += "\n" + scores_markdown(an, "Analysis error (lead 0) against the truth", metrics=("rmse",))
        products["analysis_scores.zarr"] = raw["analysis_scores"]
    if "station_scores" in raw:
        source = config.experiment.target.stations
        md += "\n" + scores_markdown(raw["station_scores"], f"At {raw.get('n_stations', 0)} {source} positions", metrics=("rmse",))
        products["station_scores.zarr"] = raw["station_scores"]
        if "station_obs_scores" in raw:
            obs_scores = raw["station_obs_scores"]
            md += "\n" + scores_markdown(obs_scores, f"Against the {source} reports at those positions "
                                          f"({obs_scores.attrs.get('n_reports', 0)} reports; `truth`: the observation error)", metrics=("rmse",))
            products["station_obs_scores.zarr"] = obs_scores
    if "withheld" in result:
        md += "\n" + to_markdown(result["withheld"], f"RMSE of the model with one source withheld (every {config.verify.withhold_every}th test init)")
    if "probes" in result:
        probes = result["probes"]
        md += "\n" + to_markdown(probes, "Network probes: RMSE with the observing network moved (observations simulated again "
                                  f"from the nature run at the moved positions, {probes.attrs['n_inits']} test inits; "
                                  "change % against the unmoved network, positive = worse)")
        products["probes.csv"] = probes.to_csv().encode()
    stored, appendix = stored_results(st, meta["name"], meta["version"])
    md += stored
    png = rmse_vs_lead_png(scores, title=f"{meta['name']} {meta['version']} ({where})")
    products.update({"scores.md": md.encode(), "rmse.png": png})
    urls = write_products(config, ("scores", meta["name"], meta["version"]), products)
    publish_scores(md, png, urls["rmse.png"], f"RMSE against lead time, {meta['name']} {meta['version']}", appendix)
    logger.info("scored %d test inits; table %s", result["raw"]["n_inits"], urls["scores.md"])
    return {"scores": urls["scores.zarr"], "table": urls["scores.md"], "plot": urls["rmse.png"], "markdown": md,
            "gridded": result["gridded"]}


def stored_results(st, name: str, version: str) -> tuple[str, str]:
    """The results of the experiments that run outside the verify flow, when the store holds them:
    the ensemble scores of this version (``obscast ensemble``: ``scores/<name>/<version>/ensemble/``)
    and the generalisation tables (``benchmarks/generalisation.py --store``:
    ``scores/generalisation/generalisation.md``).

    Returns
    -------
    (tables, appendix) : tuple of str
        Markdown for ``scores.md`` and the artifact, and for the artifact only (the rank
        histograms, inline); both empty when the store holds neither.
    """
    tables, appendix = "", ""
    ens = ("scores", name, version, "ensemble")
    if st.exists(*ens, "ensemble_scores.md"):
        tables += ("\n## Ensemble (`obscast ensemble`), beside the deterministic RMSE\n\n"
                   + st.read_bytes(*ens, "ensemble_scores.md").decode()
                   + f"\nRank histograms: `{st.url(*ens, 'rank_histogram.png')}`\n")
        if st.exists(*ens, "rank_histogram.png"):
            appendix += f"\n## Rank histograms of the ensemble\n\n{png_markdown(st.read_bytes(*ens, 'rank_histogram.png'), 'Rank histograms')}\n"
    gen = ("scores", "generalisation", "generalisation.md")
    if st.exists(*gen):
        tables += "\n" + st.read_bytes(*gen).decode()
    return tables, appendix


@flow(name="verify", log_prints=True)
def verify_flow(config_path: str | None = None, store: str | None = None, version: str | None = None) -> dict[str, Any]:
    """Write ``scores/<model>/<version>/scores.zarr``, ``scores.md`` and ``rmse.png``; publish the table.

    Returns
    -------
    dict
        ``scores``, ``table`` and ``plot`` URLs and the markdown table.
    """
    out = verify_task(load(config_path, store), version)
    return {k: v for k, v in out.items() if k != "gridded"}
