"""The OSSE's train, forecast and verify flows (used by the generic flows when the
configuration has an ``osse`` section). Orchestration only: the science is in
``components/osse_workflow.py``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger

from components.forecasting import gridded_forecast_dataset, station_forecast_dataset
from components.metrics import to_markdown
from components.obstable import ObsTable
from components.osse_workflow import build_datasets, forecast_at, load_tables, open_nature, train_model, verify_osse
from components.plots import rmse_vs_lead_png
from components.registry import code_version, load_model_files, resolve_version, save_model
from components.variables import VARIABLES
from flows.common import publish_products, publish_scores, store_of, task
from processor.model import ObsCastModel

#: Channels shown in the score tables: mid-troposphere temperature and wind, surface pressure.
HEADLINE = ["air_temperature_sigma045", "eastward_wind_sigma045", "northward_wind_sigma045",
            "air_temperature_sigma065", "surface_air_pressure"]


def _load(config, version: str | None):
    st = store_of(config)
    state, meta = load_model_files(st, config.model.name, resolve_version(st, config.model.name, version))
    model = ObsCastModel(**meta["model_args"])
    model.load_state_dict(state)
    return model.eval(), meta


@task(name="train-osse")
def train_osse_task(config, epochs: int | None, init_state: dict | None = None) -> dict[str, Any]:
    logger = get_run_logger()
    st = store_of(config)
    nature = open_nature(st)
    tables = load_tables(st, config)
    data = build_datasets(config, tables, nature)
    logger.info("samples: train %d, validation %d, test %d; sources %s", len(data.train), len(data.validation), len(data.test), list(tables))

    def progress(rec: dict[str, Any]) -> None:
        logger.info("epoch %d (rollout %d steps): train loss %.4f, validation loss %.4f, %.0f s",
                    rec["epoch"], rec["rollout"], rec["train_loss"], rec.get("val_loss", float("nan")), rec["seconds"])

    model, history, args, _ = train_model(config, data, progress, epochs, init_state)
    times = pd.DatetimeIndex(nature["time"].values)
    meta = {
        "kind": "osse",
        "config": config.public_dict(),
        "model_args": args,
        "statistics": data.statistics,
        "data": {"dataset": "nature", "time_start": str(times[0]), "time_end": str(times[-1]),
                 "train_period": [str(config.osse.train_period.start), str(config.osse.train_period.end)]},
        "step_hours": config.model.step / pd.Timedelta(hours=1),
        "code_version": code_version(),
        "loss_curve": [e["train_loss"] for e in history["epochs"]],
        "validation_curve": [e.get("val_loss") for e in history["epochs"]],
        "history": {k: v for k, v in history.items() if k != "epochs"},
        "created": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    version = save_model(st, config.model.name, model.state_dict(), meta)
    url = st.url("models", config.model.name, version)
    logger.info("saved %s", url)
    return {"name": config.model.name, "version": version, "url": url, "loss_curve": meta["loss_curve"], "model": url}


@task(name="forecast-osse")
def forecast_osse_task(config, init_time: str | None, n_steps: int | None, version: str | None) -> dict[str, Any]:
    st = store_of(config)
    model, meta = _load(config, version)
    nature, tables = open_nature(st), load_tables(st, config)
    steps = n_steps or config.forecast.n_steps
    init = pd.Timestamp(init_time or config.osse.test_period.start)
    ds, out = forecast_at(model, config, tables, nature, meta["statistics"], init, steps)
    grid = ds.denormalise(out["grid"])[0].numpy()
    stations = ds.denormalise(out["stations"], channel_axis=-1, channels=ds.station_channels)[0].numpy()
    attrs = {"title": "obscast OSSE forecast", "model": meta["name"], "model_version": meta["version"], "code_version": meta["code_version"]}
    gds = gridded_forecast_dataset(grid, ds.channels, ds.out_latitude, ds.out_longitude, init, config.model.step, attrs)
    raw = ObsTable(st, f"obs/{config.forecast.station_source}.zarr").read().drop_duplicates(["latitude", "longitude"])
    ids = dict(zip(zip(raw["latitude"].round(4), raw["longitude"].round(4)), raw["station_id"]))
    lat, lon = ds.station_latitude.numpy().astype(float), ds.station_longitude.numpy().astype(float)
    station_ids = np.array([ids.get((round(a, 4), round(b, 4)), "") for a, b in zip(lat, lon)], dtype=object)
    sds = station_forecast_dataset(stations, ds.station_channels, station_ids,
                                   ds.station_latitude.numpy(), ds.station_longitude.numpy(), init, config.model.step,
                                   {**attrs, "stations_from": config.forecast.station_source})
    base = ("forecasts", meta["name"], meta["version"])
    stem = init.strftime("%Y%m%dT%H%M")
    url = st.write_dataset(gds, *base, f"{stem}.zarr")
    surl = st.write_dataset(sds, *base, f"{stem}.stations.zarr")
    publish_products(f"OSSE forecast from init time {init:%Y-%m-%d %H:%M} UTC",
                     [f"model {meta['name']} {meta['version']}", f"{steps} steps of {config.model.step}"],
                     [("gridded forecast", url, "(lead_time, level, latitude, longitude) on sigma levels"),
                      ("station forecasts", surl, f"(lead_time, station) at {config.forecast.station_source} positions")])
    return {"forecast": url, "stations": surl, "init_time": str(init)}


@task(name="verify-osse")
def verify_osse_task(config, version: str | None) -> dict[str, Any]:
    logger = get_run_logger()
    st = store_of(config)
    model, meta = _load(config, version)
    data = build_datasets(config, load_tables(st, config), open_nature(st), statistics=meta["statistics"])
    result = verify_osse(config, model, data, channels=HEADLINE)
    title = f"{meta['name']} {meta['version']}: latitude-weighted RMSE on the test period"
    md = to_markdown(result["gridded"], title)
    md += "\n" + to_markdown(result["stations"], f"RMSE at {result['raw'].get('n_stations', 0)} SYNOP positions")
    if "withheld" in result:
        md += "\n" + to_markdown(result["withheld"], "RMSE of the model with one source withheld (every 4th test init)")
    base = ("scores", meta["name"], meta["version"])
    table_url = st.write_bytes(md.encode(), *base, "scores.md")
    raw_url = st.write_json(result["raw"], *base, "scores.json")
    import xarray as xr

    systems = {}
    raw = result["raw"]
    lead = pd.to_timedelta(raw["lead_hours"], unit="h").to_numpy()
    for name in ("model", "persistence", "climatology"):
        systems[name] = xr.Dataset({"rmse": (("channel", "lead_time"), np.asarray(raw["rmse"][name]))},
                                   coords={"channel": raw["channels"], "lead_time": lead}).sel(channel=HEADLINE)
    units = {c: VARIABLES[c.rsplit("_sigma", 1)[0]].units for c in HEADLINE}
    png = rmse_vs_lead_png(systems, units, f"{meta['name']} {meta['version']} (OSSE test period)")
    plot_url = st.write_bytes(png, *base, "rmse.png")
    scores_url = st.write_dataset(xr.concat(list(systems.values()), dim=pd.Index(list(systems), name="system")), *base, "scores.zarr")
    publish_scores(md, png, plot_url, f"RMSE against lead time, {meta['name']} {meta['version']} (OSSE test period)")
    logger.info("scored %d test inits; table %s", raw["n_inits"], table_url)
    return {"scores": scores_url, "table": table_url, "plot": plot_url, "raw_scores": raw_url, "markdown": md}
