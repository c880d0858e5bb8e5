"""Verify flow: scores of a model version against persistence and climatology, with plot and artifact."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from components.forecasting import Forecaster
from components.gridstore import open_gridded
from components.metrics import score_table, to_markdown
from components.plots import rmse_vs_lead_png
from components.variables import VARIABLES
from components.verification import verify
from flows.common import load, store_of, task
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
    scores_url = st.write_dataset(result.to_dataset(), *base, "scores.zarr")
    table_url = st.write_bytes(markdown.encode(), *base, "scores.md")
    units = {c: VARIABLES[c.rsplit("_", 1)[0]].units for c in forecaster.channels}
    plot_url = st.write_bytes(rmse_vs_lead_png(result.gridded, units, f"{meta['name']} {meta['version']}"), *base, "rmse.png")
    create_markdown_artifact(key="verification-scores", markdown=markdown + f"\nPlot: `{plot_url}`\n", description="RMSE and bias vs lead time")
    get_run_logger().info("scored %d forecasts; table %s", result.n_forecasts, table_url)
    return {"scores": scores_url, "table": table_url, "plot": plot_url, "markdown": markdown}
