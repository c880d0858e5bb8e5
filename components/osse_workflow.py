"""The OSSE's train and verify steps, from the store's observation tables and nature run (Prefect-free).

Training uses the configured temporal split (``osse.train_period`` / ``validation_period`` /
``test_period``): normalisation statistics and the climatology come from the training period
only and are stored with the model; the validation period picks the best epoch; the test period
is scored by :func:`verify_osse` against persistence (the truth at init time) and climatology
(the training-period mean per grid point), and again with each observation source withheld to
show its contribution.

The model cycles (DESIGN.md §2): each analysis fuses one window of observations with a
background, the model's own one-step (6 h) latent forecast from the previous analysis, so
information accumulates over windows as in NWP data assimilation. Verification and forecasts
therefore run the cycle continuously, starting cold :data:`SPINUP_CYCLES` windows before the
first init they score (the spin-up uses observations only, never the truth).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import xarray as xr

from components.config import Config
from components.obs_datasets import ObsWindowDataset, collate_obs, fit_statistics, prepare_table
from components.obs_training import FeatureCache, cycle_analyses, evaluate, gridpoint_climatology, osse_model_args, train_osse
from components.obstable import ObsTable
from components.storage import Store
from processor.model import ObsCastModel

NATURE = "gridded/nature.zarr"

#: Analysis cycles (windows) run before the first scored or forecast init time, from a cold start.
SPINUP_CYCLES = 8
#: Weight of the loss on the decoded analysis (the fused state at init) against the truth at init.
ANALYSIS_WEIGHT = 0.5


def cycling_inits(nature: xr.Dataset, inits: pd.DatetimeIndex, window: pd.Timedelta, spinup: int = SPINUP_CYCLES) -> tuple[pd.DatetimeIndex, int]:
    """Consecutive init times from up to ``spinup`` windows before ``inits[0]`` (as far as the
    nature run reaches) to ``inits[-1]``, and how many of them precede ``inits[0]``.

    Raises
    ------
    ValueError
        If ``inits`` are not consecutive windows.
    """
    inits = pd.DatetimeIndex(inits)
    if len(inits) > 1 and not (np.diff(inits.asi8) == int(window.value)).all():
        raise ValueError("cycled init times must be consecutive windows")
    first = pd.Timestamp(nature["time"].values[0])
    n_before = int(max(0, min(spinup, (inits[0] - first) // window)))
    full = pd.date_range(inits[0] - n_before * window, inits[-1], freq=window)
    return full, n_before


def open_nature(store: Store) -> xr.Dataset:
    """The nature run (truth) of the store, loaded into memory."""
    return xr.open_zarr(store.zarr_store(NATURE), consolidated=False, chunks=None).load()


def load_tables(store: Store, config: Config) -> dict[str, pd.DataFrame]:
    """Every configured source's accepted observations, prepared for the datasets."""
    tables = {}
    for name in config.sources:
        table = ObsTable(store, f"obs/{name}.zarr").read()
        if not table.empty:
            tables[name] = prepare_table(table, name=name)[0]
    return tables


def period_times(nature: xr.Dataset, period) -> pd.DatetimeIndex:
    """Nature times in ``[start, end]`` of a configured period."""
    times = pd.DatetimeIndex(nature["time"].values)
    return times[(times >= pd.Timestamp(period.start)) & (times <= pd.Timestamp(period.end))]


def init_times(times: pd.DatetimeIndex, n_steps: int, step: pd.Timedelta, history: int, window: pd.Timedelta) -> pd.DatetimeIndex:
    """Init times of a period whose history windows and ``n_steps`` targets all lie inside it.

    Raises
    ------
    ValueError
        If the period is too short.
    """
    inits = times[(times - (history - 1) * window >= times[0]) & (times + n_steps * step <= times[-1])]
    if len(inits) == 0:
        raise ValueError(f"period {times[0]}..{times[-1]} is too short for {n_steps} steps of {step}")
    return inits


@dataclass
class OsseData:
    """Statistics, the three period datasets, and the tables and truth they were built from."""

    statistics: dict[str, Any]
    train: ObsWindowDataset
    validation: ObsWindowDataset
    test: ObsWindowDataset
    tables: dict[str, pd.DataFrame]
    nature: xr.Dataset
    test_spinup: int = 0  #: leading inits of ``test`` that only spin the analysis cycle up (not scored)


def build_datasets(config: Config, tables: dict[str, pd.DataFrame], nature: xr.Dataset, statistics: dict[str, Any] | None = None) -> OsseData:
    """Statistics (from the training period, unless given) and the three datasets."""
    o, t = config.osse, config.osse.training
    step, window = config.model.step, config.ingest.window
    train_times = period_times(nature, o.train_period)
    if statistics is None:
        statistics = fit_statistics(tables, nature, train_times, window=window, coarsen=t.coarsen, climatology=t.climatology)
    longest = max(t.rollout_schedule)

    def make(inits, n_steps: int) -> ObsWindowDataset:
        return ObsWindowDataset(tables, nature, inits, statistics, n_steps=n_steps, step=step, history=t.history)

    def inits_of(period, n_steps: int) -> pd.DatetimeIndex:
        return init_times(period_times(nature, period), n_steps, step, t.history, window)

    test_inits, spinup = cycling_inits(nature, inits_of(o.test_period, config.forecast.n_steps), window)
    return OsseData(
        statistics, make(inits_of(o.train_period, longest), longest), make(inits_of(o.validation_period, longest), longest),
        make(test_inits, config.forecast.n_steps), tables, nature, spinup,
    )


def model_args(config: Config, data: OsseData) -> dict[str, Any]:
    """Constructor arguments of the OSSE model (stored in metadata.json)."""
    t = config.osse.training
    return osse_model_args(
        data.statistics, data.train.station_channels, history=t.history, n_lat=config.model.latent_grid.n_lat,
        n_lon=config.model.latent_grid.n_lon, latent_channels=t.latent_channels, processor_hidden=t.processor_hidden,
        n_blocks=t.n_blocks, decoder_hidden=t.decoder_hidden, cycling=True, station_residual="forecast",
        analysis_blocks=t.analysis_blocks,
    )


def train_model(config: Config, data: OsseData, progress: Callable[[dict[str, Any]], None] | None = None, epochs: int | None = None,
                init_state: dict[str, torch.Tensor] | None = None):
    """Train on the training period, keep the best epoch on the validation period; ``init_state``
    (a state dict of the same architecture) warm-starts the model.

    Returns
    -------
    (model, history, args, cache)
    """
    t = config.osse.training
    args = model_args(config, data)
    torch.manual_seed(config.train.seed)
    cache = FeatureCache(ObsCastModel(**args), [data.train, data.validation, data.test])
    model, history = train_osse(
        args, data.train, data.validation, epochs=epochs or config.train.epochs, lr=t.learning_rate, batch_size=t.batch_size,
        rollout_schedule=t.rollout_schedule, source_dropout=t.source_dropout, device=config.train.device, seed=config.train.seed,
        max_seconds=t.max_minutes * 60 if t.max_minutes else None, cache=cache, progress=progress,
        analysis_weight=ANALYSIS_WEIGHT, spinup_cycles=min(SPINUP_CYCLES // 2, max(0, len(data.train) // 2 - 1)),
        init_state=init_state,
    )
    return model, history, args, cache


def forecast_at(model: ObsCastModel, config: Config, tables: dict[str, pd.DataFrame], nature: xr.Dataset,
                statistics: dict[str, Any], init: pd.Timestamp, n_steps: int) -> tuple[ObsWindowDataset, dict[str, torch.Tensor]]:
    """One forecast from the observations up to ``init``, with the station decoder at the SYNOP positions.

    A cycling model first runs the analysis cycle from a cold start :data:`SPINUP_CYCLES`
    windows before ``init`` (as far as the nature run reaches).

    Returns
    -------
    dataset : ObsWindowDataset
        Whose last init is ``init`` (its grid, channels, stations and :meth:`~ObsWindowDataset.denormalise`).
    output : dict
        ``grid`` (1, n_steps, C, lat, lon) and ``stations`` (1, n_steps, P, C_st), normalised.
    """
    window, init = config.ingest.window, pd.Timestamp(init)
    inits = cycling_inits(nature, pd.DatetimeIndex([init]), window)[0] if getattr(model, "cycling", False) else pd.DatetimeIndex([init])
    ds = ObsWindowDataset(tables, nature, inits, statistics, n_steps=n_steps, step=config.model.step, history=config.osse.training.history)
    with torch.no_grad():
        if getattr(model, "cycling", False):
            latent = cycle_analyses(model, ds)[-1:]
            out = model.forecast(latent, n_steps, ds.station_points(1), residual=ds.static[None])
        else:
            inputs, _, _ = collate_obs([ds[len(ds) - 1]])
            out = model(inputs, n_steps=n_steps, station_points=ds.station_points(1))
    return ds, out


def _table(result: dict[str, Any], key: str, systems: dict[str, str], channels: list[str] | None = None) -> pd.DataFrame:
    rows = []
    chans = result["channels"] if key == "rmse" else result["station_channels"]
    for i, ch in enumerate(chans):
        if channels and ch not in channels:
            continue
        for j, lead in enumerate(result["lead_hours"]):
            rows.append({"channel": ch, "lead_time": f"{int(lead)} h", **{label: result[key][name][i][j] for name, label in systems.items()}})
    return pd.DataFrame(rows).set_index(["channel", "lead_time"])


def verify_osse(config: Config, model: ObsCastModel, data: OsseData, cache=None, channels: list[str] | None = None,
                withhold: bool = True) -> dict[str, Any]:
    """Scores on the test period: gridded (model, persistence, climatology), stations, and per withheld source.

    Returns
    -------
    dict
        ``gridded``: DataFrame (channel, lead) x systems; ``stations``: DataFrame (channel, lead)
        x (decoder, interpolated); ``withheld``: DataFrame (channel, lead) x sources with the
        model's RMSE when that source is left out; ``raw``: the :func:`evaluate` output.

    A cycling model runs the analysis cycle through the test period after
    ``data.test_spinup`` spin-up windows; withholding a source hides it in every cycle.
    """
    clim = gridpoint_climatology(data.train)
    cycling = bool(getattr(model, "cycling", False))
    if cycling and cache is None:
        cache = FeatureCache(model, [data.test])
    spinup = data.test_spinup
    result = evaluate(model, data.test, config.forecast.n_steps, climatology=clim, cache=cache, max_stations=1000,
                      device=config.train.device, spinup=spinup)
    out = {
        "raw": result,
        "gridded": _table(result, "rmse", {"model": "model", "persistence": "persistence", "climatology": "climatology"}, channels),
        "stations": _table(result, "station_rmse", {"decoder": "station_decoder", "interpolated": "gridded_interpolated"}),
    }
    if withhold:
        # Every 4th test init, with all sources and with each one left out in turn.
        inits = data.test.init_times[spinup::4]
        columns = {}
        for name in [None, *data.tables]:
            if cycling:
                r = evaluate(model, data.test, config.forecast.n_steps, climatology=None, max_stations=0, device=config.train.device,
                             cache=cache, spinup=spinup, every=4, keep=None if name is None else {name: 0.0})
                columns["all sources" if name is None else f"without {name}"] = _table(r, "rmse", {"model": "model"}, channels)["model"]
                continue
            tables = {k: v for k, v in data.tables.items() if k != name}
            sub = ObsWindowDataset(tables, data.nature, inits, data.statistics, n_steps=config.forecast.n_steps,
                                   step=config.model.step, history=config.osse.training.history)
            r = evaluate(model, sub, config.forecast.n_steps, climatology=None, max_stations=0, device=config.train.device)
            columns["all sources" if name is None else f"without {name}"] = _table(r, "rmse", {"model": "model"}, channels)["model"]
        out["withheld"] = pd.DataFrame(columns)
    return out
