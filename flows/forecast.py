"""Forecast flow: from an init time, roll the model out and write gridded and station products."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger

from components.datasets import stack_channels
from components.errors import ObscastError
from components.forecasting import Forecaster, gridded_forecast_dataset, obs_batch, station_forecast_dataset
from components.gridstore import open_gridded
from components.obstable import ObsTable
from components.storage import Store
from flows.common import IO_RETRIES, load, publish_products, store_of, task, write_products


def station_positions(store: Store, source: str) -> pd.DataFrame:
    """One row per station (``station_id``, ``latitude``, ``longitude``) from a stored observation table."""
    table = ObsTable(store, f"obs/{source}.zarr").read()
    if table.empty:
        raise ObscastError(f"{store.url('obs', source + '.zarr')}: no observations to take station positions from (run `obscast ingest`)")
    return table.drop_duplicates("station_id")[["station_id", "latitude", "longitude"]].reset_index(drop=True)


@task(name="gather-inputs", **IO_RETRIES)
def gather_inputs(config, forecaster: Forecaster, init_time: pd.Timestamp) -> tuple[np.ndarray, dict[str, Any], dict[str, int]]:
    """The analysis at init time and the observation windows ``(init - window, init]`` per source."""
    st = store_of(config)
    gridded = open_gridded(st, config.train.dataset)
    member = config.train.test_members[0]
    times = pd.to_datetime(gridded["time"].values)
    if init_time not in times:
        raise ObscastError(f"{st.url('gridded', config.train.dataset + '.zarr')}: no analysis at init time {init_time} (have {[str(t) for t in times]})")
    analysis = stack_channels(gridded.sel(member=[member], time=[init_time]).load()).isel(time=0).values
    observations, counts = {}, {}
    stats = forecaster.metadata.get("obs_normaliser", {})
    for name, src in config.sources.items():
        rows = ObsTable(st, f"obs/{name}.zarr").read(init_time - config.ingest.window, init_time)
        counts[name] = len(rows)
        batch = obs_batch(rows, src.kind, stats.get(name)) if name in stats else None
        if batch is not None:
            observations[name] = batch
    return analysis, observations, counts


@flow(name="forecast", log_prints=True)
def forecast_flow(
    config_path: str | None = None, store: str | None = None, init_time: str | None = None,
    n_steps: int | None = None, version: str | None = None,
) -> dict[str, Any]:
    """Write ``forecasts/<model>/<version>/<init>.zarr`` and ``<init>.stations.zarr``.

    Returns
    -------
    dict
        ``forecast`` and ``stations`` URLs, ``init_time``, ``lead_times`` and the observation counts used.
    """
    config = load(config_path, store)
    if config.osse is not None:
        from flows.osse import forecast_osse_task

        return forecast_osse_task(config, init_time, n_steps, version)
    st = store_of(config)
    logger = get_run_logger()
    forecaster = Forecaster.load(st, config.model.name, version)
    meta = forecaster.metadata
    gridded = open_gridded(st, config.train.dataset)
    init = pd.Timestamp(init_time or config.forecast.init_time or gridded["time"].values[0])
    steps = n_steps or config.forecast.n_steps
    analysis, observations, counts = gather_inputs(config, forecaster, init)
    stations = station_positions(st, config.forecast.station_source)
    grid, points = forecaster.predict(analysis, steps, stations["latitude"].to_numpy(), stations["longitude"].to_numpy(), observations)
    attrs = {"title": "obscast forecast", "model": meta["name"], "model_version": meta["version"], "code_version": meta["code_version"]}
    ds = gridded_forecast_dataset(grid[0], forecaster.channels, gridded["latitude"].values, gridded["longitude"].values, init, forecaster.step, attrs)
    sds = station_forecast_dataset(points[0], forecaster.channels, stations["station_id"].to_numpy(), stations["latitude"].to_numpy(),
                                   stations["longitude"].to_numpy(), init, forecaster.step, {**attrs, "stations_from": config.forecast.station_source})
    stem = init.strftime("%Y%m%dT%H%M")
    base = ("forecasts", meta["name"], meta["version"])
    urls = write_products(config, base, {f"{stem}.zarr": ds, f"{stem}.stations.zarr": sds})
    url, surl = urls[f"{stem}.zarr"], urls[f"{stem}.stations.zarr"]
    leads = [f"{int(h)} h" for h in pd.to_timedelta(ds["lead_time"].values) / pd.Timedelta(hours=1)]
    logger.info("forecast from %s, lead times %s, observations used %s", init, leads, counts)
    publish_products(
        f"Forecast from init time {init:%Y-%m-%d %H:%M} UTC",
        [f"model {meta['name']} {meta['version']}", f"lead times: {', '.join(leads)}", f"observations in the window before init time: {counts}"],
        [("gridded forecast", url, "(lead_time, level, latitude, longitude)"),
         ("station forecasts", surl, f"(lead_time, station) at {len(stations)} {config.forecast.station_source} stations")],
    )
    return {"forecast": url, "stations": surl, "init_time": str(init), "lead_times": leads, "observations": counts}
