"""Verify flow: scores of a model version against persistence and climatology, with plot and artifact."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from components.forecasting import Forecaster
from components.gridstore import open_gridded
from components.metrics import score_table, to_markdown
from components.plots import rmse_vs_lead_png
from components.variables import VARIABLES
from components.verification import verify
from flows.common import load, publish_scores, store_of, task, write_products
from flows.forecast import station_positions


@task(name="score")
def score_task(config, forecaster, gridded, stations):
    return verify(
        forecaster, gridded, config.train.test_members, config.train.train_members, config.forecast.n_steps,
        stations["latitude"].to_numpy(), stations["longitude"].to_numpy(),
    )


@flow(name="verify", log_prints=True)
def verify_flow(config_path: str | None = None, store: str | None = None, version: str | None = None) -> dict[str, Any]:
    """Write ``scores/<model>/<version>/scores.zarr``, ``scores.md`` and ``rmse.png``; publish the table.

    Returns
    -------
    dict
        ``scores``, ``table`` and ``plot`` URLs and the markdown table.
    """
    config = load(config_path, store)
    if config.osse is not None:
        from flows.osse import verify_osse_task

        return verify_osse_task(config, version)
    st = store_of(config)
    forecaster = Forecaster.load(st, config.model.name, version)
    meta = forecaster.metadata
    gridded = open_gridded(st, config.train.dataset).load()
    stations = station_positions(st, config.forecast.station_source)
    result = score_task(config, forecaster, gridded, stations)
    base = ("scores", meta["name"], meta["version"])
    title = f"{meta['name']} {meta['version']}: latitude-weighted RMSE, held-out members {config.train.test_members}"
    markdown = to_markdown(result.table(), title)
    if result.stations:
        markdown += "\n" + to_markdown(score_table(result.stations, "rmse"), f"RMSE at the {len(stations)} {config.forecast.station_source} station positions")
    markdown += "\n" + to_markdown(score_table(result.gridded, "bias"), "Bias (forecast minus truth)")
    units = {c: VARIABLES[c.rsplit("_", 1)[0]].units for c in forecaster.channels}
    png = rmse_vs_lead_png(result.gridded, units, f"{meta['name']} {meta['version']}")
    urls = write_products(config, base, {"scores.zarr": result.to_dataset(), "scores.md": markdown.encode(), "rmse.png": png})
    scores_url, table_url, plot_url = urls["scores.zarr"], urls["scores.md"], urls["rmse.png"]
    publish_scores(markdown, png, plot_url, f"RMSE against lead time, {meta['name']} {meta['version']}")
    get_run_logger().info("scored %d forecasts; table %s", result.n_forecasts, table_url)
    return {"scores": scores_url, "table": table_url, "plot": plot_url, "markdown": markdown}
