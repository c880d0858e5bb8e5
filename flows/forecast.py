"""Forecast flow: from an init time, run the model and write gridded and station products."""

from __future__ import annotations

from typing import Any

import pandas as pd
from obscast.components.data.experiment import load_tables, open_target
from obscast.components.model.forecasting import (
    gridded_forecast_dataset,
    load_model,
    station_forecast_dataset,
    station_identifiers,
)
from obscast.components.store.obstable import ObsTable
from obscast.flows.common import load, publish_products, store_of, task, write_products
from prefect import flow


@task(name="forecast")
def forecast_task(config, init_time: str | None, n_steps: int | None, version: str | None) -> dict[str, Any]:
    """Forecast from ``init_time`` (default ``forecast.init_time``, else the first test init) and
    write ``forecasts/<model>/<version>/<init>.zarr`` and ``<init>.stations.zarr``."""
    from obscast.components.training.workflow import forecast_at

    st = store_of(config)
    model, meta = load_model(st, config.model.name, version)
    truth, tables = open_target(st, config), load_tables(st, config)
    steps = n_steps or config.forecast.n_steps
    init = pd.Timestamp(init_time or config.forecast.init_time or _first_test_init(config, truth))
    ds, out = forecast_at(model, config, tables, truth, meta["statistics"], init, steps)
    grid = ds.denormalise(out["grid"])[0].numpy()
    attrs = {"title": "obscast forecast", "model": meta["name"], "model_version": meta["version"], "code_version": meta["code_version"]}
    products = {f"{init:%Y%m%dT%H%M}.zarr": gridded_forecast_dataset(grid, ds.channels, ds.out_latitude, ds.out_longitude, init, config.model.step, attrs)}
    rows = [("gridded forecast", "(lead_time, level, latitude, longitude)")]
    source = config.experiment.target.stations
    if "stations" in out and len(ds.station_latitude):
        stations = ds.denormalise(out["stations"], channel_axis=-1, channels=ds.station_channels)[0].numpy()
        lat, lon = ds.station_latitude.numpy().astype(float), ds.station_longitude.numpy().astype(float)
        station_ids = station_identifiers(ObsTable(st, f"obs/{source}.zarr").read(), lat, lon)
        products[f"{init:%Y%m%dT%H%M}.stations.zarr"] = station_forecast_dataset(
            stations, ds.station_channels, station_ids, lat, lon, init, config.model.step, {**attrs, "stations_from": source})
        rows.append(("station forecasts", f"(lead_time, station) at {len(lat)} {source} positions"))
    urls = write_products(config, ("forecasts", meta["name"], meta["version"]), products)
    leads = [f"{(k + 1) * config.model.step / pd.Timedelta(hours=1):g} h" for k in range(steps)]
    publish_products(f"Forecast from init time {init:%Y-%m-%d %H:%M} UTC",
                     [f"model {meta['name']} {meta['version']}", f"lead times: {', '.join(leads)}"],
                     [(name, url, content) for (name, content), url in zip(rows, urls.values())])
    result = {"forecast": urls[f"{init:%Y%m%dT%H%M}.zarr"], "init_time": str(init), "lead_times": leads}
    if len(urls) > 1:
        result["stations"] = urls[f"{init:%Y%m%dT%H%M}.stations.zarr"]
    return result


def _first_test_init(config, truth) -> pd.Timestamp:
    split = config.experiment.split
    if split.by == "period":
        return pd.Timestamp(split.test.start)
    return pd.Timestamp(truth["time"].values[0])


@flow(name="forecast", log_prints=True)
def forecast_flow(
    config_path: str | None = None, store: str | None = None, init_time: str | None = None,
    n_steps: int | None = None, version: str | None = None,
) -> dict[str, Any]:
    """Write ``forecasts/<model>/<version>/<init>.zarr`` and ``<init>.stations.zarr``.

    Returns
    -------
    dict
        ``forecast`` and ``stations`` URLs, ``init_time`` and ``lead_times``.
    """
    return forecast_task(load(config_path, store), init_time, n_steps, version)
