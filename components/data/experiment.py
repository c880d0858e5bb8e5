"""The experiment: one definition of inputs, target and split for every configuration (Prefect-free).

An experiment (config section ``experiment``) names

* ``inputs``: observation sources (one SetConv encoder each) and, optionally, the gridded target
  itself, whose analysis at the init time then becomes the model's prior state (see
  :class:`~obscast.components.data.obs.ObsWindowDataset`, ``prior="analysis"``);
* ``target``: the gridded dataset the model predicts (``gridded/<dataset>.zarr``: the OSSE's
  nature run or a reanalysis) and the source whose station positions the station decoder serves;
* ``split``: train / validation / test by period (a time series such as the nature run) or by
  member (independent realisations such as the ERA5 ensemble members).

The OSSE and real data differ only in where the raw files come from (the simulate stage) and in
the target; everything here serves both. Normalisation statistics and the climatology come from
the training split only and are stored with the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from obscast.components.config import Config, Period
from obscast.components.data.obs import ObsWindowDataset
from obscast.components.data.statistics import fit_statistics
from obscast.components.data.tables import prepare_table
from obscast.components.errors import ObscastError
from obscast.components.store.obstable import ObsTable
from obscast.components.store.storage import Store


def target_path(config: Config) -> str:
    """Store path of the gridded target, ``gridded/<experiment.target.dataset>.zarr``.

    Raises
    ------
    ConfigError
        If the configuration has no ``experiment`` section.
    """
    return f"gridded/{config.require_experiment().target.dataset}.zarr"


def open_target(store: Store, config: Config) -> xr.Dataset:
    """The gridded target (nature run or reanalysis), loaded into memory.

    Raises
    ------
    ObscastError
        If the store holds no such dataset (run ``obscast simulate`` / ``obscast ingest``).
    """
    path = target_path(config)
    if not store.exists(path):
        raise ObscastError(f"{store.url(path)}: no gridded target in the store (run `obscast ingest`, or `obscast simulate` for an OSSE)")
    return xr.open_zarr(store.zarr_store(path), consolidated=False, chunks=None).load()


def load_tables(store: Store, config: Config) -> dict[str, pd.DataFrame]:
    """Accepted observations of the experiment's observation inputs (and of the station
    source), prepared for the datasets; empty tables are left out."""
    config.require_experiment()
    names = [n for n in config.experiment.inputs if n in config.sources]
    stations = config.experiment.target.stations
    if stations is not None and stations not in names:
        names.append(stations)
    tables = {}
    for name in names:
        table = ObsTable(store, f"obs/{name}.zarr").read()
        if not table.empty:
            tables[name] = prepare_table(table, name=name)[0]
    return tables


def period_times(truth: xr.Dataset, period: Period) -> pd.DatetimeIndex:
    """Target times in ``[start, end]`` of a period."""
    times = pd.DatetimeIndex(truth["time"].values)
    return times[(times >= pd.Timestamp(period.start)) & (times <= pd.Timestamp(period.end))]


def init_times(times: pd.DatetimeIndex, n_steps: int, step: pd.Timedelta, history: int, window: pd.Timedelta) -> pd.DatetimeIndex:
    """Init times among ``times`` whose history windows and ``n_steps`` targets all lie inside them.

    Raises
    ------
    ValueError
        If no init time fits (the period is too short).
    """
    inits = times[(times - (history - 1) * window >= times[0]) & (times + n_steps * step <= times[-1])]
    if len(inits) == 0:
        raise ValueError(f"times {times[0]}..{times[-1]} are too short for {n_steps} steps of {step}")
    return inits


def cycling_inits(truth: xr.Dataset, inits: pd.DatetimeIndex, window: pd.Timedelta, spinup: int) -> tuple[pd.DatetimeIndex, int]:
    """Consecutive init times from up to ``spinup`` windows before ``inits[0]`` (as far as the
    target reaches) to ``inits[-1]``, and how many of them precede ``inits[0]``.

    Raises
    ------
    ValueError
        If ``inits`` are not consecutive windows.
    """
    inits = pd.DatetimeIndex(inits)
    if len(inits) > 1 and not (np.diff(inits.asi8) == int(window.value)).all():
        raise ValueError("cycled init times must be consecutive windows")
    first = pd.Timestamp(truth["time"].values[0])
    n_before = int(max(0, min(spinup, (inits[0] - first) // window)))
    full = pd.date_range(inits[0] - n_before * window, inits[-1], freq=window)
    return full, n_before


@dataclass
class ExperimentData:
    """Statistics, the three split datasets, and the tables and target they were built from."""

    statistics: dict[str, Any]
    train: ObsWindowDataset
    validation: ObsWindowDataset
    test: ObsWindowDataset
    tables: dict[str, pd.DataFrame]
    truth: xr.Dataset
    test_spinup: int = 0  #: leading inits of ``test`` that only spin the analysis cycle up (not scored)


def prior_of(config: Config) -> str:
    """``"analysis"`` when the experiment's inputs include its gridded target, else ``"climatology"``."""
    return "analysis" if config.experiment.target.dataset in config.experiment.inputs else "climatology"


def _split_parts(config: Config, truth: xr.Dataset, part: str) -> tuple[pd.DatetimeIndex, list[int] | None]:
    """Times and members of one split part (``train``, ``validation`` or ``test``)."""
    split = config.experiment.split
    value = getattr(split, part)
    if split.by == "period":
        if "member" in truth.dims:
            raise ObscastError(f"the target {config.experiment.target.dataset!r} has members: split it by member")
        return period_times(truth, value), None
    if "member" not in truth.dims:
        raise ObscastError(f"the target {config.experiment.target.dataset!r} has no member dimension: split it by period")
    have = set(int(m) for m in truth["member"].values)
    lacking = [m for m in value if m not in have]
    if lacking:
        raise ObscastError(f"experiment.split.{part}: members {lacking} are not in the target (it has {sorted(have)})")
    return pd.DatetimeIndex(truth["time"].values), list(value)


def dataset(config: Config, tables: dict[str, pd.DataFrame], truth: xr.Dataset, statistics: dict[str, Any],
            inits: pd.DatetimeIndex, n_steps: int, members: list[int] | None) -> ObsWindowDataset:
    """The experiment's dataset for given init times (and members)."""
    m, t = config.model, config.experiment.target
    return ObsWindowDataset(
        tables, truth, inits, statistics, n_steps=n_steps, step=m.step, history=m.history,
        station_points=station_points(tables, t.stations), station_channels=t.station_channels,
        members=members, prior=prior_of(config),
    )


def station_points(tables: dict[str, pd.DataFrame], source: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``(latitude, longitude)`` of a source's reports (none when absent)."""
    table = tables.get(source) if source else None
    if table is None or table.empty:
        return np.zeros(0), np.zeros(0)
    pos = table[["latitude", "longitude"]].astype(float).drop_duplicates()
    return pos["latitude"].to_numpy(), pos["longitude"].to_numpy()


def build_datasets(config: Config, tables: dict[str, pd.DataFrame], truth: xr.Dataset, statistics: dict[str, Any] | None = None) -> ExperimentData:
    """Statistics (from the training split, unless given) and the train, validation and test datasets.

    Training and validation samples carry targets for the longest rollout of
    ``train.rollout_schedule``; test samples for ``forecast.n_steps``. A cycling model's test
    set starts ``verify.spinup_cycles`` windows early to spin the cycle up.

    Raises
    ------
    ObscastError
        If the split does not fit the target (members or periods missing).
    ValueError
        If a split part is too short for its rollout.
    """
    m, window = config.model, config.ingest.window
    longest = max(config.train.rollout_schedule)
    train_times, train_members = _split_parts(config, truth, "train")
    if statistics is None:
        observed = {k: v for k, v in tables.items() if k in config.experiment.inputs}
        levels = {name: [p * 100.0 for p in m.pressure_levels_hpa] for name in observed}
        statistics = fit_statistics(observed, truth, train_times, window=window, coarsen=m.coarsen, climatology=m.climatology,
                                    members=train_members, pressure_levels=levels)

    def make(part: str, n_steps: int) -> tuple[ObsWindowDataset, int]:
        times, members = _split_parts(config, truth, part)
        inits = init_times(times, n_steps, m.step, m.history, window)
        spin = 0
        if part == "test" and m.cycling:
            inits, spin = cycling_inits(truth, inits, window, config.verify.spinup_cycles)
        return dataset(config, tables, truth, statistics, inits, n_steps, members), spin

    train, _ = make("train", longest)
    validation, _ = make("validation", longest)
    test, spinup = make("test", config.forecast.n_steps)
    return ExperimentData(statistics, train, validation, test, tables, truth, spinup)


__all__ = [
    "ExperimentData",
    "build_datasets",
    "cycling_inits",
    "dataset",
    "init_times",
    "load_tables",
    "open_target",
    "period_times",
    "prior_of",
    "station_points",
    "target_path",
]
