"""Ensemble flow: an EDA ensemble forecast with its probabilistic products, and its scores on test inits."""

from __future__ import annotations

from typing import Any

import pandas as pd
from obscast.components.data.experiment import load_tables, open_target
from obscast.components.model.forecasting import load_model, station_identifiers
from obscast.components.store.obstable import ObsTable
from obscast.flows.common import (
    load,
    markdown_tables,
    png_markdown,
    publish_table,
    store_of,
    task,
    write_products,
)
from obscast.flows.forecast import _first_test_init
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact


@task(name="ensemble-forecast")
def ensemble_forecast_task(config, init_time: str | None, n_steps: int | None, version: str | None) -> dict[str, Any]:
    """Forecast ``ensemble.members`` members from ``init_time`` (default ``forecast.init_time``,
    else the first test init); write ``forecasts/<model>/<version>/<init>.ensemble.zarr`` (the
    members) and ``<init>.ensemble.stations.zarr`` (station quantiles and exceedance probabilities)."""
    from obscast.components.model.ensemble import (
        ensemble_forecast,
        gridded_ensemble_product,
        station_ensemble_product,
    )

    st = store_of(config)
    e = config.ensemble
    model, meta = load_model(st, config.model.name, version)
    truth, tables = open_target(st, config), load_tables(st, config)
    steps = n_steps or config.forecast.n_steps
    init = pd.Timestamp(init_time or config.forecast.init_time or _first_test_init(config, truth))
    ds, out = ensemble_forecast(model, config, tables, truth, meta["statistics"], init, steps, e.members, e.seed, latent_noise=e.latent_noise)
    attrs = {"title": "obscast ensemble forecast (ensemble of data assimilations)", "model": meta["name"],
             "model_version": meta["version"], "code_version": meta["code_version"], "ensemble_seed": int(e.seed)}
    stem = f"{init:%Y%m%dT%H%M}"
    grid = ds.denormalise(out["grid"]).numpy()
    products = {f"{stem}.ensemble.zarr": gridded_ensemble_product(grid, ds.channels, ds.out_latitude, ds.out_longitude, init, config.model.step, attrs)}
    rows = [("ensemble members", f"(realization, lead_time, level, latitude, longitude), {e.members} members")]
    source = config.experiment.target.stations
    if "stations" in out and len(ds.station_latitude):
        stations = ds.denormalise(out["stations"], channel_axis=-1, channels=ds.station_channels).numpy()
        lat, lon = ds.station_latitude.numpy().astype(float), ds.station_longitude.numpy().astype(float)
        ids = station_identifiers(ObsTable(st, f"obs/{source}.zarr").read(), lat, lon)
        products[f"{stem}.ensemble.stations.zarr"] = station_ensemble_product(
            stations, ds.station_channels, ids, lat, lon, init, config.model.step, e.quantiles, e.thresholds, {**attrs, "stations_from": source})
        rows.append(("station quantiles and exceedance probabilities",
                     f"(percentile, lead_time, station) at {len(lat)} {source} positions; thresholds {dict(e.thresholds)}"))
    urls = write_products(config, ("forecasts", meta["name"], meta["version"]), products)
    table = "\n".join(f"| {name} | `{url}` | {content} |" for (name, content), url in zip(rows, urls.values()))
    create_markdown_artifact(
        key="ensemble-products",
        markdown=(f"## Ensemble forecast from init time {init:%Y-%m-%d %H:%M} UTC\n\n- model {meta['name']} {meta['version']}\n"
                  f"- {e.members} members, seed {e.seed}: observations perturbed by their errors, cycled, forecast\n\n"
                  f"| product | URL | content |\n|---|---|---|\n{table}\n"),
        description="Ensemble forecast products and where they are stored",
    )
    result = {"ensemble": urls[f"{stem}.ensemble.zarr"], "init_time": str(init), "members": e.members}
    if f"{stem}.ensemble.stations.zarr" in urls:
        result["stations"] = urls[f"{stem}.ensemble.stations.zarr"]
    return result


@task(name="ensemble-scores")
def ensemble_scores_task(config, version: str | None) -> dict[str, Any]:
    """Score the ensemble on ``ensemble.inits`` test inits (every ``ensemble.every``-th) beside
    the deterministic model; write ``scores/<model>/<version>/ensemble/`` and publish the
    ``ensemble-scores`` artifact (table and rank histograms)."""
    from obscast.components.model.ensemble import ensemble_hindcasts
    from obscast.components.verification.ensemble import (
        ensemble_markdown,
        ensemble_scores,
        rank_histogram_png,
    )

    logger = get_run_logger()
    st = store_of(config)
    model, meta = load_model(st, config.model.name, version)
    truth, tables = open_target(st, config), load_tables(st, config)
    h = ensemble_hindcasts(model, config, tables, truth, meta["statistics"], config.forecast.n_steps)
    scores = ensemble_scores(h["ensemble"], h["truth"], h["deterministic"])
    channels = config.verify.channels
    n_inits = h["truth"].sizes["init_time"]
    label = f"{meta['name']} {meta['version']}"
    md = ensemble_markdown(scores, f"{label}: ensemble of data assimilations on {n_inits} test inits, latitude-weighted", channels)
    products: dict[str, Any] = {"ensemble_scores.zarr": scores}
    if "station_ensemble" in h:
        st_scores = ensemble_scores(h["station_ensemble"], h["station_truth"], spatial_dims=("station",), weighted=False)
        md += "\n" + ensemble_markdown(st_scores, f"At {h['station_truth'].sizes['station']} {config.experiment.target.stations} positions (station decoder)")
        products["ensemble_station_scores.zarr"] = st_scores
    png = rank_histogram_png(scores, title=f"Rank histograms, {label} ({scores.attrs['members']} members)", channels=channels)
    products.update({"ensemble_scores.md": md.encode(), "rank_histogram.png": png})
    urls = write_products(config, ("scores", meta["name"], meta["version"], "ensemble"), products)
    create_markdown_artifact(
        key="ensemble-scores",
        markdown=f"{md}\n## Rank histograms\n\n{png_markdown(png, 'rank histograms')}\n\nPlot stored at `{urls['rank_histogram.png']}`\n",
        description="Fair CRPS, spread/skill and ensemble-mean RMSE against the deterministic model, with rank histograms",
    )
    publish_table("ensemble-scores-table", markdown_tables(md), f"{label}: ensemble scores, one row per channel and lead time")
    logger.info("ensemble scored on %d test inits; table %s", n_inits, urls["ensemble_scores.md"])
    return {"scores": urls["ensemble_scores.zarr"], "table": urls["ensemble_scores.md"], "plot": urls["rank_histogram.png"], "markdown": md}


@flow(name="ensemble", log_prints=True)
def ensemble_flow(config_path: str | None = None, store: str | None = None, init_time: str | None = None,
                  n_steps: int | None = None, version: str | None = None, score: bool = True) -> dict[str, Any]:
    """Write the ensemble products (``forecasts/<model>/<version>/<init>.ensemble*.zarr``) and,
    with ``score``, the ensemble scores (``scores/<model>/<version>/ensemble/``).

    Returns
    -------
    dict
        ``ensemble`` and ``stations`` product URLs, ``init_time``, ``members``; with ``score``
        also ``scores``, ``table``, ``plot`` URLs and the ``markdown`` table.
    """
    config = load(config_path, store)
    result = ensemble_forecast_task(config, init_time, n_steps, version)
    if score:
        result.update(ensemble_scores_task(config, version))
    return result
