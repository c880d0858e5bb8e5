"""Train, forecast and verify one experiment from the store (Prefect-free; the flows call these).

Every configuration goes through these functions: the experiment's datasets
(:mod:`obscast.components.data.experiment`), one model assembly
(:func:`obscast.components.model.assembly.build_model_args`), one trainer
(:func:`~obscast.components.training.trainer.train_network`) and one evaluator
(:func:`obscast.components.verification.evaluate.evaluate`).

A cycling model (``model.cycling``, docs/architecture.md) fuses each window of observations with
a background, its own Δt forecast from the previous analysis, so information accumulates over
windows as in NWP data assimilation. Verification and forecasts therefore run the cycle
continuously, starting cold ``verify.spinup_cycles`` windows before the first init they score
(the spin-up uses observations only, never the truth).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pandas as pd
import torch
import xarray as xr

from obscast.components.config import Config
from obscast.components.data.experiment import ExperimentData, cycling_inits, dataset
from obscast.components.data.obs import ObsWindowDataset, collate_obs
from obscast.components.model.model import ObsCastModel
from obscast.components.training.trainer import FeatureCache, cycle_analyses, train_network
from obscast.components.model.assembly import build_model_args
from obscast.components.verification.evaluate import evaluate, gridpoint_climatology, station_observations


def is_global_zero() -> bool:
    """True in the process that saves results: rank 0 of a distributed run (torchrun or
    Lightning's launcher), or the only process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0 and int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def model_args(config: Config, data: ExperimentData) -> dict[str, Any]:
    """Constructor arguments of the model (stored in the model card), from ``model.*``."""
    m = config.model
    return build_model_args(
        data.statistics, data.train.station_channels, history=m.history, n_lat=m.latent_grid.n_lat, n_lon=m.latent_grid.n_lon,
        latent_channels=m.latent_channels, processor_hidden=m.processor_hidden, n_blocks=m.n_blocks,
        decoder_hidden=m.decoder_hidden, encoder_hidden=m.encoder_hidden, lengthscale_km=m.encoder_lengthscale,
        station_lengthscale_km=m.station_lengthscale, cycling=m.cycling, station_residual="forecast",
        analysis_blocks=m.analysis_blocks, innovations=m.innovations,
    )


def train_model(config: Config, data: ExperimentData, progress: Callable[[dict[str, Any]], None] | None = None,
                epochs: int | None = None, init_state: dict[str, torch.Tensor] | None = None,
                learning_rate: float | None = None, checkpoint_dir: str | None = None):
    """Train on the training split, keep the best epoch on the validation split.

    Parameters
    ----------
    config : Config
        ``model.*`` (architecture) and ``train.*`` (optimisation) are used.
    data : ExperimentData
    progress : callable, optional
        Called with each epoch's record.
    epochs, learning_rate : optional
        Override ``train.epochs`` / ``train.learning_rate`` (retraining).
    init_state : dict, optional
        A state dict of the same architecture to warm-start from.
    checkpoint_dir : str, optional
        Local directory of ``last.ckpt`` (``train.checkpoint_dir`` wins when set); None and no
        ``train.checkpoint_dir``: no checkpoints.

    Returns
    -------
    (model, history, args, cache)
    """
    t = config.train
    args = model_args(config, data)
    torch.manual_seed(t.seed)
    cache = FeatureCache(ObsCastModel(**args), [data.train, data.validation, data.test])
    model, history = train_network(
        args, data.train, data.validation, epochs=epochs or t.epochs, lr=learning_rate or t.learning_rate,
        weight_decay=t.weight_decay, batch_size=t.batch_size, rollout_schedule=t.rollout_schedule,
        source_dropout=t.source_dropout, station_points=t.station_points, station_weight=t.station_weight,
        analysis_weight=t.analysis_weight, grad_clip=t.grad_clip, device=t.device, seed=t.seed,
        max_seconds=t.max_minutes * 60 if t.max_minutes else None, cache=cache, progress=progress,
        spinup_cycles=min(t.spinup_cycles, max(0, len(data.train) // 2 - 1)), backprop_cycles=t.backprop_cycles, init_state=init_state,
        devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy, precision=t.precision,
        checkpoint_dir=t.checkpoint_dir or checkpoint_dir, checkpoint_every_n_steps=t.checkpoint_every_n_steps, resume=t.resume,
    )
    return model, history, args, cache


def forecast_at(model: ObsCastModel, config: Config, tables: dict[str, pd.DataFrame], truth: xr.Dataset,
                statistics: dict[str, Any], init: pd.Timestamp, n_steps: int,
                member: int | None = None) -> tuple[ObsWindowDataset, dict[str, torch.Tensor]]:
    """One forecast from the observations (and, with an analysis prior, the analysis) up to ``init``.

    A cycling model first runs the analysis cycle from a cold start ``verify.spinup_cycles``
    windows before ``init`` (as far as the target reaches).

    Parameters
    ----------
    member : int, optional
        Member of a target with a member dimension (default: the first test member).

    Returns
    -------
    dataset : ObsWindowDataset
        Whose last sample is ``init`` (its grid, channels, stations and :meth:`~ObsWindowDataset.denormalise`).
    output : dict
        ``grid`` (1, n_steps, C, lat, lon) and ``stations`` (1, n_steps, P, C_st), normalised.
    """
    window, init = config.ingest.window, pd.Timestamp(init)
    cycling = bool(getattr(model, "cycling", False))
    inits = cycling_inits(truth, pd.DatetimeIndex([init]), window, config.verify.spinup_cycles)[0] if cycling else pd.DatetimeIndex([init])
    members = None
    if "member" in truth.dims:
        members = [member if member is not None else config.experiment.split.test[0]]
    ds = dataset(config, tables, truth, statistics, inits, n_steps, members)
    with torch.no_grad():
        if cycling:
            latent = cycle_analyses(model, ds)[-1:]
            out = model.forecast(latent, n_steps, ds.station_points(1), residual=ds.static_batch([len(ds) - 1]))
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


def verify(config: Config, model: ObsCastModel, data: ExperimentData, cache=None, withhold: bool = True,
           baselines: dict[str, xr.Dataset] | None = None, store=None) -> dict[str, Any]:
    """Scores on the test split: gridded (model, persistence, climatology), stations, and per withheld source.

    Returns
    -------
    dict
        ``gridded``: DataFrame (channel, lead) x systems; ``stations``: DataFrame (channel, lead)
        x (decoder, interpolated) (when the target has stations); ``withheld``: DataFrame
        (channel, lead) x sources with the model's RMSE when that source is left out (every
        ``verify.withhold_every``-th test init, ``verify.withhold_steps`` leads; not when 0);
        ``probes``: with ``verify.probes`` and a ``store`` holding the OSSE's nature run, the
        network-probe table of :func:`obscast.components.verification.probes.probe_scores`;
        ``raw``: the :func:`evaluate` output
        (with ``baselines``, e.g. the NWP twins of :func:`obscast.components.nwp.baseline.experiment_baseline`,
        scored beside the model; with a station source, station scores against its reports too).

    A cycling model runs the analysis cycle through the test split after
    ``data.test_spinup`` spin-up windows; withholding a source hides it in every cycle.
    """
    v = config.verify
    channels = v.channels
    clim = gridpoint_climatology(data.train)
    cycling = bool(getattr(model, "cycling", False))
    if cycling and cache is None:
        cache = FeatureCache(model, [data.test])
    spinup = data.test_spinup
    n_steps = config.forecast.n_steps
    observations = None
    station_source = config.experiment.target.stations
    if station_source in data.tables and len(data.test.station_latitude):
        test = data.test
        valid = pd.DatetimeIndex(sorted({t + k * test.step for t in test.init_times[spinup:] for k in range(n_steps + 1)}))
        observations = station_observations(data.tables[station_source], test.station_latitude.numpy(), test.station_longitude.numpy(),
                                            test.station_channels, valid)
    result = evaluate(model, data.test, n_steps, climatology=clim, cache=cache, max_stations=v.max_stations,
                      device=config.train.device, spinup=spinup, baselines=baselines, observations=observations)
    out: dict[str, Any] = {
        "raw": result,
        "gridded": _table(result, "rmse", {k: k for k in result["rmse"]}, channels),
    }
    if "station_rmse" in result:
        out["stations"] = _table(result, "station_rmse", {"decoder": "station_decoder", "interpolated": "gridded_interpolated"})
    used = [n for n in data.tables if n in data.statistics["sources"]]
    if withhold and v.withhold_every > 0 and used:
        every = v.withhold_every
        steps = min(v.withhold_steps or n_steps, n_steps)
        columns = {}
        for name in [None, *used]:
            label = "all sources" if name is None else f"without {name}"
            if cycling:
                r = evaluate(model, data.test, steps, climatology=None, max_stations=0, device=config.train.device,
                             cache=cache, spinup=spinup, every=every, keep=None if name is None else {name: 0.0})
            else:
                tables = {k: t for k, t in data.tables.items() if k != name}
                sub = _every(config, data, tables, every)
                r = evaluate(model, sub, steps, climatology=None, max_stations=0, device=config.train.device)
            columns[label] = _table(r, "rmse", {"model": "model"}, channels)["model"]
        out["withheld"] = pd.DataFrame(columns)
    if v.probes and store is not None and config.osse is not None:
        from obscast.components.verification.probes import probe_scores

        out["probes"] = probe_scores(config, model, data, store, v.probes, v.probe_every, v.probe_steps)
    return out


def _every(config: Config, data: ExperimentData, tables: dict[str, pd.DataFrame], every: int) -> ObsWindowDataset:
    """Every ``every``-th test sample (after the spin-up) rebuilt from ``tables``."""
    test = data.test
    keep = list(range(data.test_spinup, len(test), every))
    inits = pd.DatetimeIndex(test.init_times[keep]).unique()
    members = sorted(set(int(m) for m in test.sample_members[keep])) if (test.sample_members >= 0).any() else None
    return dataset(config, tables, data.truth, data.statistics, inits, test.n_steps, members)


__all__ = ["forecast_at", "is_global_zero", "model_args", "train_model", "verify"]
