"""Training and quick verification of the observation-to-forecast model on an OSSE (Prefect-free).

The model (:class:`processor.model.ObsCastModel`) has one SetConv encoder per observation source
(and per history window), a static gridded source carrying the training climatology and latitude
(:func:`components.obs_datasets.static_fields`), which is also its residual, so the gridded
decoder predicts the anomaly from climatology. Training minimises, over a multi-step rollout,

``mean_k,c,i,j w_i (forecast - truth)^2 + station_weight * mean_k,p,c (station - truth_p)^2``

in normalised units, ``w_i`` = cos(latitude) normalised to mean 1 (as the verification), the
station term at a random subset of the SYNOP positions. The rollout length follows a curriculum
(e.g. 1, 2, 4, 8 steps): training on long rollouts with the MSE teaches the model to damp
unpredictable scales towards the climatology, which is what keeps its error below both
persistence and climatology at long leads (autoregression continues beyond the trained length).
Source dropout (GraphDOP, Alexe et al. 2024, arXiv:2412.15687) hides whole observation sources
per sample, so the model copes with outages and does not lean on a single source.

:func:`evaluate` gives WeatherBench 2-style scores (Rasp et al. 2024, JAMES 16, e2023MS004019):
``RMSE(lead) = sqrt(mean_inits mean_ij w_i (f - o)^2)`` in physical units, with persistence
(truth at init) and the training-period mean per grid point (climatology) as baselines, and,
at the station positions, the station decoder against the gridded forecast interpolated
bilinearly to the stations.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from components.obs_datasets import (
    STATIC_SOURCE,
    ObsWindowDataset,
    collate_obs,
    interpolate_points,
    point_weights,
    source_key,
    static_source_spec,
)
from processor.model import ObsCastModel


def select_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else the CPU.

    Raises
    ------
    RuntimeError
        If ``"cuda"`` is asked for and none is available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    return torch.device(name)


def osse_model_args(
    statistics: Mapping[str, Any],
    station_channels: Sequence[str],
    *,
    history: int = 1,
    n_lat: int = 32,
    n_lon: int = 64,
    latent_channels: int = 64,
    processor_hidden: int = 96,
    n_blocks: int = 3,
    decoder_hidden: int = 64,
    encoder_hidden: int = 64,
    lengthscale_km: float | None = None,
    station_lengthscale_km: float | None = None,
) -> dict[str, Any]:
    """Constructor arguments of :class:`ObsCastModel` for an OSSE (JSON-ready).

    Parameters
    ----------
    statistics : dict
        From :func:`components.obs_datasets.fit_statistics`; sets the sources, their variables
        and pressure layers, the output channels and grid.
    station_channels : sequence of str
        Variables of the station decoder (``ObsWindowDataset.station_channels``).
    history : int
        Observation windows per source (one SetConv encoder each).
    n_lat, n_lon, latent_channels, processor_hidden, n_blocks, decoder_hidden : int
        Latent grid and network sizes (see :class:`ObsCastModel`).
    encoder_hidden : int
        Hidden width of the SetConv MLPs.
    lengthscale_km, station_lengthscale_km : float, optional
        Initial kernel lengthscales (defaults of the encoders/decoder).

    Returns
    -------
    dict
        Keyword arguments of :class:`ObsCastModel`.
    """
    sources: dict[str, dict[str, Any]] = {STATIC_SOURCE: static_source_spec(statistics)}
    for name, st in statistics["sources"].items():
        for h in range(history):
            spec: dict[str, Any] = {"type": "setconv", "variables": list(st["variables"]), "hidden": encoder_hidden}
            if lengthscale_km is not None:
                spec["lengthscale_km"] = float(lengthscale_km)
            if st["pressure_levels"]:
                spec["pressure_levels"] = list(st["pressure_levels"])
            sources[source_key(name, h)] = spec
    g = statistics["grid"]
    return {
        "sources": sources,
        "output_variables": list(g["channels"]),
        "out_lat": list(g["latitude"]),
        "out_lon": list(g["longitude"]),
        "n_lat": n_lat,
        "n_lon": n_lon,
        "latent_channels": latent_channels,
        "processor_hidden": processor_hidden,
        "n_blocks": n_blocks,
        "decoder_hidden": decoder_hidden,
        "station_variables": list(station_channels),
        "station_lengthscale_km": station_lengthscale_km,
        "residual_source": STATIC_SOURCE,
    }


def _to_device(inputs: dict, device: torch.device) -> dict:
    out = {}
    for k, v in inputs.items():
        out[k] = v.to(device) if isinstance(v, torch.Tensor) else {kk: vv.to(device) for kk, vv in v.items()}
    return out


def drop_sources(inputs: dict, p: float, generator: torch.Generator, history: int = 1) -> dict:
    """Hide each observation source (all its history windows together) of each sample with
    probability ``p`` by masking its points, keeping at least one source per sample.

    A SetConv encoder turns a sample without valid points into an exactly zero latent and
    density, the same as :meth:`ObsCastModel.encode`'s own dropout; the static source is never
    dropped (the model would lose its notion of latitude).

    Parameters
    ----------
    inputs : dict
        Batched inputs from :func:`components.obs_datasets.collate_obs`.
    p : float
        Drop probability in [0, 1).
    generator : torch.Generator
        Random generator (CPU).

    Returns
    -------
    dict
        A shallow copy of ``inputs`` with new ``mask`` tensors where sources were dropped.
    """
    names = sorted({k.split("_lag")[0] for k, v in inputs.items() if isinstance(v, dict)})
    if p <= 0 or not names:
        return inputs
    batch = next(v for v in inputs.values() if isinstance(v, dict))["latitude"].shape[0]
    keep = torch.rand(batch, len(names), generator=generator) >= p
    none = ~keep.any(1)
    if none.any():
        pick = torch.randint(len(names), (batch,), generator=generator)
        keep[none, pick[none]] = True
    out = dict(inputs)
    for i, name in enumerate(names):
        for key in [k for k in inputs if k == name or k.startswith(f"{name}_lag")]:
            obs = dict(inputs[key])
            obs["mask"] = obs["mask"] & keep[:, i, None].to(obs["mask"].device)
            out[key] = obs
    return out


def _lat_weights(latitude: np.ndarray, device: torch.device) -> torch.Tensor:
    w = torch.as_tensor(np.cos(np.deg2rad(np.asarray(latitude, float))).clip(0), dtype=torch.float32, device=device)
    return (w / w.mean()).view(1, 1, 1, -1, 1)


def _loss(model: ObsCastModel, batch, n_steps: int, weights: torch.Tensor, station_idx: torch.Tensor | None,
          station_weight: float, slat: torch.Tensor, slon: torch.Tensor, device: torch.device,
          dropout: float = 0.0, generator: torch.Generator | None = None) -> tuple[torch.Tensor, float, float]:
    inputs, targets, st_targets = batch
    if dropout > 0:
        inputs = drop_sources(inputs, dropout, generator)
    inputs = _to_device(inputs, device)
    targets = targets[:, :n_steps].to(device)
    b = targets.shape[0]
    points = None
    if station_idx is not None and station_weight > 0:
        points = (slat[station_idx].expand(b, -1), slon[station_idx].expand(b, -1))
    out = model(inputs, n_steps=n_steps, station_points=points)
    grid_loss = ((out["grid"] - targets) ** 2 * weights).mean()
    loss = grid_loss
    st = 0.0
    if points is not None:
        st_t = st_targets[:, :n_steps][:, :, station_idx.cpu()].to(device)
        st_loss = ((out["stations"] - st_t) ** 2).mean()
        loss = loss + station_weight * st_loss
        st = float(st_loss.detach())
    return loss, float(grid_loss.detach()), st


def _rollout_for(schedule: Sequence[int] | int, epoch: int) -> int:
    if isinstance(schedule, int):
        return schedule
    return int(schedule[min(epoch, len(schedule) - 1)])


def train_osse(
    model_args: Mapping[str, Any],
    train_data: ObsWindowDataset,
    val_data: ObsWindowDataset | None = None,
    *,
    epochs: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    batch_size: int = 8,
    rollout_schedule: Sequence[int] | int = (1, 2, 4, 4, 8, 8),
    val_steps: int | None = None,
    source_dropout: float = 0.3,
    station_points: int = 512,
    station_weight: float = 1.0,
    grad_clip: float = 1.0,
    device: str = "auto",
    seed: int = 0,
    max_seconds: float | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[ObsCastModel, dict[str, Any]]:
    """Train encoders, processor and decoders end to end on OSSE samples.

    Parameters
    ----------
    model_args : dict
        From :func:`osse_model_args`.
    train_data, val_data : ObsWindowDataset
        Training and validation periods (``n_steps`` at least the longest rollout used).
    epochs : int
        Passes over ``train_data``.
    lr, weight_decay : float
        AdamW; the learning rate follows a cosine decay to 5% over all steps after a short
        linear warm-up.
    batch_size : int
        Samples per optimiser step.
    rollout_schedule : int or sequence of int
        Rollout steps per epoch (the last value repeats), e.g. ``(1, 2, 4, 8)``.
    val_steps : int, optional
        Rollout of the validation loss (default the longest of the schedule, capped by
        ``val_data.n_steps``).
    source_dropout : float
        Probability of hiding each observation source per sample (:func:`drop_sources`).
    station_points : int
        SYNOP positions drawn per batch for the station loss (0: no station loss).
    station_weight : float
        Weight of the station term.
    grad_clip : float
        Gradient norm clip (0: none).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    seed : int
        Seeds initialisation, shuffling, dropout and station draws.
    max_seconds : float, optional
        Stop after the epoch during which this wall time is exceeded.
    progress : callable, optional
        Called after each epoch with that epoch's history record.

    Returns
    -------
    model : ObsCastModel
        The weights of the epoch with the lowest validation loss (the last epoch without
        validation data), on the CPU, in eval mode.
    history : dict
        ``epochs``: per-epoch records (``epoch``, ``rollout``, ``train_loss``, ``train_grid``,
        ``train_station``, ``val_loss``, ``seconds``); ``best_epoch``; ``seconds``; ``device``;
        ``parameters``.

    Raises
    ------
    ValueError
        If a rollout exceeds the targets of ``train_data``.
    """
    dev = select_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    longest = max([rollout_schedule] if isinstance(rollout_schedule, int) else list(rollout_schedule))
    if longest > train_data.n_steps:
        raise ValueError(f"rollout {longest} exceeds the {train_data.n_steps} target steps of the training data")
    model = ObsCastModel(**copy.deepcopy(dict(model_args))).to(dev)
    weights = _lat_weights(train_data.out_latitude, dev)
    slat, slon = train_data.station_latitude.to(dev), train_data.station_longitude.to(dev)
    n_st = len(slat)
    loader = torch.utils.data.DataLoader(
        train_data, batch_size=batch_size, shuffle=True, collate_fn=collate_obs, generator=gen, drop_last=len(train_data) > batch_size
    )
    total_steps = max(1, epochs * len(loader))
    warmup = min(50, total_steps // 10 + 1)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda s: (s + 1) / warmup if s < warmup else 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, total_steps - warmup)))),
    )
    if val_steps is None:
        val_steps = longest if val_data is None else min(longest, val_data.n_steps)
    hist: dict[str, Any] = {"epochs": [], "best_epoch": None, "device": str(dev)}
    best_val, best_state = math.inf, None
    start = time.perf_counter()
    for epoch in range(epochs):
        n_steps = _rollout_for(rollout_schedule, epoch)
        model.train()
        tot = grid_tot = st_tot = 0.0
        count = 0
        for batch in loader:
            idx = torch.randperm(n_st, generator=gen)[:station_points].to(dev) if station_points and n_st else None
            loss, gl, sl = _loss(model, batch, n_steps, weights, idx, station_weight, slat, slon, dev, source_dropout, gen)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimiser.step()
            sched.step()
            b = batch[1].shape[0]
            tot += float(loss.detach()) * b
            grid_tot += gl * b
            st_tot += sl * b
            count += b
        rec = {
            "epoch": epoch + 1,
            "rollout": n_steps,
            "train_loss": tot / count,
            "train_grid": grid_tot / count,
            "train_station": st_tot / count,
        }
        if val_data is not None:
            rec["val_loss"] = validation_loss(model, val_data, val_steps, batch_size=batch_size, station_weight=station_weight, device=dev)
            if rec["val_loss"] < best_val:
                best_val, best_state = rec["val_loss"], copy.deepcopy(model.state_dict())
                hist["best_epoch"] = epoch + 1
        rec["seconds"] = time.perf_counter() - start
        hist["epochs"].append(rec)
        if progress:
            progress(rec)
        if max_seconds is not None and rec["seconds"] > max_seconds:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        hist["best_epoch"] = len(hist["epochs"])
    hist["seconds"] = time.perf_counter() - start
    hist["parameters"] = int(sum(p.numel() for p in model.parameters()))
    hist["val_steps"] = val_steps
    model.eval()
    return model.cpu(), hist


@torch.no_grad()
def validation_loss(
    model: ObsCastModel,
    data: ObsWindowDataset,
    n_steps: int,
    batch_size: int = 8,
    station_weight: float = 1.0,
    device: torch.device | str = "cpu",
) -> float:
    """Training loss (all stations, no dropout) averaged over ``data`` at rollout ``n_steps``."""
    dev = torch.device(device)
    was_training = model.training
    model.eval()
    weights = _lat_weights(data.out_latitude, dev)
    slat, slon = data.station_latitude.to(dev), data.station_longitude.to(dev)
    idx = torch.arange(len(slat), device=dev) if len(slat) else None
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_obs)
    tot, count = 0.0, 0
    for batch in loader:
        loss, _, _ = _loss(model, batch, n_steps, weights, idx, station_weight, slat, slon, dev)
        tot += float(loss) * batch[1].shape[0]
        count += batch[1].shape[0]
    model.train(was_training)
    return tot / max(count, 1)


def gridpoint_climatology(data: ObsWindowDataset) -> np.ndarray:
    """Mean truth per grid point over the valid times held by ``data`` (its init and target
    times), in physical units, (channel, lat, lon): the climatology baseline when ``data`` is
    the training set."""
    return data.denormalise(data.truth.mean(0)).numpy()


@torch.no_grad()
def evaluate(
    model: ObsCastModel,
    data: ObsWindowDataset,
    n_steps: int | None = None,
    climatology: np.ndarray | None = None,
    batch_size: int = 8,
    device: str = "auto",
    stations: bool = True,
) -> dict[str, Any]:
    """Latitude-weighted RMSE per channel and lead of the model and of the baselines.

    Parameters
    ----------
    model : ObsCastModel
    data : ObsWindowDataset
        Verification period (e.g. the test set), ``n_steps`` targets per init.
    n_steps : int, optional
        Leads verified (default ``data.n_steps``).
    climatology : numpy.ndarray, optional
        (channel, lat, lon) physical-unit climatology on the output grid, e.g.
        :func:`gridpoint_climatology` of the training data; omitted: no climatology baseline.
    batch_size : int
    device : str
    stations : bool
        Also score the station decoder against the gridded forecast interpolated to the
        stations (RMSE over all stations and inits, unweighted).

    Returns
    -------
    dict
        ``lead_hours`` (L,), ``channels`` (C,), ``rmse`` {``model``, ``persistence``,
        ``climatology``: lists (C, L) in physical units}; with ``stations``:
        ``station_channels`` and ``station_rmse`` {``decoder``, ``interpolated``,
        ``persistence``: (C_st, L)}; ``n_inits``.

    Raises
    ------
    ValueError
        If ``n_steps`` exceeds ``data.n_steps``.
    """
    n_steps = data.n_steps if n_steps is None else int(n_steps)
    if n_steps > data.n_steps:
        raise ValueError(f"n_steps {n_steps} exceeds the {data.n_steps} target steps of the data")
    dev = select_device(device)
    model = model.to(dev).eval()
    w = np.cos(np.deg2rad(data.out_latitude)).clip(0)
    w = torch.as_tensor(w / w.mean(), dtype=torch.float64).view(1, 1, 1, -1, 1)
    C, L = len(data.channels), n_steps
    sse = {k: torch.zeros(C, L, dtype=torch.float64) for k in ("model", "persistence", "climatology")}
    st_ci = [data.channels.index(c) for c in data.station_channels]
    do_st = stations and len(data.station_latitude) > 0
    st_sse = {k: torch.zeros(len(st_ci), L, dtype=torch.float64) for k in ("decoder", "interpolated", "persistence")}
    if do_st:
        idx, wgt = point_weights(data.out_latitude, data.out_longitude, data.station_latitude.numpy(), data.station_longitude.numpy())
    clim = None if climatology is None else torch.as_tensor(climatology, dtype=torch.float64)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_obs)
    n, pos = 0, 0
    for inputs, targets, st_targets in loader:
        b = targets.shape[0]
        points = data.station_points(b) if do_st else None
        out = model(_to_device(inputs, dev), n_steps=n_steps, station_points=None if points is None else tuple(p.to(dev) for p in points))
        fc = data.denormalise(out["grid"].cpu()).double()
        truth = data.denormalise(targets[:, :n_steps]).double()
        init = data.denormalise(data.initial_truth(list(range(pos, pos + b)))).double()[:, None]
        wmean = lambda e: (e**2 * w).mean(dim=(-2, -1)).sum(0)  # (L, C)
        sse["model"] += wmean(fc - truth).T
        sse["persistence"] += wmean(init - truth).T
        if clim is not None:
            sse["climatology"] += wmean(clim[None, None] - truth).T
        if do_st:
            st_truth = data.denormalise(st_targets[:, :n_steps], channel_axis=-1, channels=data.station_channels).double()
            st_fc = data.denormalise(out["stations"].cpu(), channel_axis=-1, channels=data.station_channels).double()
            interp = torch.from_numpy(interpolate_points(fc[:, :, st_ci].float().numpy(), idx, wgt)).double().transpose(-1, -2)
            st_init = data.denormalise(data.initial_station_truth(list(range(pos, pos + b))), channel_axis=-1, channels=data.station_channels).double()[:, None]
            for k, f in (("decoder", st_fc), ("interpolated", interp), ("persistence", st_init)):
                st_sse[k] += ((f - st_truth) ** 2).mean(dim=2).sum(0).T
        n += b
        pos += b
    res: dict[str, Any] = {
        "lead_hours": [float((k + 1) * data.step / pd.Timedelta(hours=1)) for k in range(L)],
        "channels": list(data.channels),
        "n_inits": n,
        "rmse": {k: torch.sqrt(v / n).tolist() for k, v in sse.items() if k != "climatology" or clim is not None},
    }
    if do_st:
        res["station_channels"] = list(data.station_channels)
        res["station_rmse"] = {k: torch.sqrt(v / n).tolist() for k, v in st_sse.items()}
    return res


def skill_table(result: Mapping[str, Any], channels: Sequence[str] | None = None, leads: Sequence[float] | None = None) -> pd.DataFrame:
    """Tidy table of :func:`evaluate` scores: one row per (channel, lead) with the RMSE of the
    model and each baseline (and, for station channels, the station decoder and interpolation)."""
    rows = []
    leads_all = result["lead_hours"]
    for ci, c in enumerate(result["channels"]):
        if channels is not None and c not in channels:
            continue
        for li, lead in enumerate(leads_all):
            if leads is not None and lead not in leads:
                continue
            row = {"channel": c, "lead_hours": lead}
            row.update({k: v[ci][li] for k, v in result["rmse"].items()})
            if "station_rmse" in result and c in result["station_channels"]:
                si = result["station_channels"].index(c)
                row.update({f"station_{k}": v[si][li] for k, v in result["station_rmse"].items()})
            rows.append(row)
    return pd.DataFrame(rows)


__all__ = [
    "drop_sources",
    "evaluate",
    "gridpoint_climatology",
    "osse_model_args",
    "select_device",
    "skill_table",
    "train_osse",
    "validation_loss",
]
