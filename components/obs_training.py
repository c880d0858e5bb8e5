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

Cycling (``cycling=True`` in :func:`osse_model_args`): one window of sparse observations cannot
pin down the global state better than the truth changes in 6 h, so a forecast from it loses to
persistence at short leads. As in NWP data assimilation, each analysis therefore also takes a
background, the model's own one-step (6 h) forecast from the previous analysis, as a gridded
normalised anomaly encoded like a gridded source (:func:`cycle_analyses`). Training runs
``batch_size`` parallel cycles through contiguous stretches of the training period, one optimiser step per cycle, with the background detached
between cycles (truncated backpropagation through time of one cycle); verification runs the
cycle continuously through the test period after a spin-up.

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
    pad_obs,
    point_weights,
    source_key,
    static_source_spec,
)
from encoders.setconv import SetConvEncoder
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
    station_residual: bool | str = True,
    cycling: bool = False,
    analysis_blocks: int = 0,
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
    station_residual : bool or {"forecast"}
        True: add the climatology at the stations to the station decoder's output (the decoder
        then learns anomalies, as the gridded one does); ``"forecast"``: add the gridded
        forecast interpolated to the stations (the decoder learns a correction to it).
    cycling : bool
        Cycled analysis: the previous cycle's one-step forecast (gridded normalised anomaly)
        is the background of the next analysis (see :class:`ObsCastModel`, :func:`cycle_analyses`).
    analysis_blocks : int
        Residual blocks turning the fused state into the analysis (see :class:`ObsCastModel`).

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
        **({"station_residual": station_residual} if station_residual else {}),
        **({"cycling": True} if cycling else {}),
        **({"analysis_blocks": int(analysis_blocks)} if analysis_blocks else {}),
    }


def _to_device(inputs: dict, device: torch.device) -> dict:
    out = {}
    for k, v in inputs.items():
        out[k] = v.to(device) if isinstance(v, torch.Tensor) else {kk: vv.to(device) for kk, vv in v.items()}
    return out


def _split_key(key: str) -> tuple[str, int]:
    name, sep, lag = key.rpartition("_lag")
    return (name, int(lag)) if sep and lag.isdigit() else (key, 0)


class FeatureCache:
    """SetConv features (:meth:`SetConvEncoder.features`, the input of its MLP) of every observation window, per source.

    The kernel lengthscales of the model's SetConv encoders are frozen (``requires_grad``
    False) when the cache is built: they stay at their initial values, the encoders' MLPs still
    learn. All history encoders of a source must share the lengthscale and layers (they do
    when built by :func:`osse_model_args`), so one feature map per (source, window) serves
    every lag.

    Parameters
    ----------
    model : ObsCastModel
    datasets : sequence of ObsWindowDataset
        Every window used by their samples is computed (once).
    batch_size : int
        Windows per scatter call.

    Attributes
    ----------
    x, density : dict
        Source name -> (n_windows, 2c, lat, lon) and (n_windows, 1, lat, lon) float32 (CPU).
    index : dict
        Source name -> {window end (ns): row}.
    seconds : float
        Time taken to build.
    """

    def __init__(self, model: ObsCastModel, datasets: Sequence[ObsWindowDataset], batch_size: int = 8) -> None:
        start = time.perf_counter()
        self.x: dict[str, torch.Tensor] = {}
        self.density: dict[str, torch.Tensor] = {}
        self.index: dict[str, dict[int, int]] = {}
        keys = [k for k, e in model.encoders.items() if isinstance(e, SetConvEncoder)]
        by_name: dict[str, list[str]] = {}
        for k in keys:
            by_name.setdefault(_split_key(k)[0], []).append(k)
        for name, ks in by_name.items():
            encs = [model.encoders[k] for k in ks]
            for e in encs:
                e.lengthscale.log_km.requires_grad_(False)
            ref = encs[0]
            for e in encs[1:]:
                if float(e.lengthscale()) != float(ref.lengthscale()) or e.pressure_levels != ref.pressure_levels:
                    raise ValueError(f"history encoders of {name!r} differ in lengthscale or layers; cannot share features")
            holders = [d for d in datasets if name in d.sources]
            ends = sorted({e for d in holders for e in d.window_ends()})
            owner = {}
            for d in holders:
                for e in d.window_ends():
                    owner.setdefault(e, d)
            xs, ds_ = [], []
            with torch.no_grad():
                for i in range(0, len(ends), batch_size):
                    chunk = ends[i : i + batch_size]
                    obs = pad_obs([owner[e].observations(name, e) for e in chunk])
                    x, den = ref.features(obs)
                    xs.append(x.cpu())
                    ds_.append(den.cpu())
            h, w = ref.grid.shape
            self.x[name] = torch.cat(xs) if xs else torch.zeros(0, 2 * ref.n_channels, h, w)
            self.density[name] = torch.cat(ds_) if ds_ else torch.zeros(0, 1, h, w)
            self.index[name] = {e: i for i, e in enumerate(ends)}
        self.seconds = time.perf_counter() - start

    def encode(
        self,
        model: ObsCastModel,
        data: ObsWindowDataset,
        indices: Sequence[int],
        keep: Mapping[str, torch.Tensor] | None = None,
        device: torch.device | str = "cpu",
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Encoder outputs ``{source key: (latent, density)}`` of samples ``indices`` of ``data``
        (static source included), as :meth:`ObsCastModel.fuse` takes them.

        ``keep`` optionally maps a source name to a (batch,) float 0/1 tensor: 0 hides that
        source (all lags) for that sample, as source dropout does.
        """
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for key, enc in model.encoders.items():
            if key == STATIC_SOURCE:
                static = data.static.to(device).expand(len(indices), -1, -1, -1)
                out[key] = enc(static)
                continue
            name, lag = _split_key(key)
            if name not in self.index:
                continue
            rows = [self.index[name][data.window_end(i, lag)] for i in indices]
            x = self.x[name][rows].to(device)
            den = self.density[name][rows].to(device)
            if keep is not None and name in keep:
                k = keep[name].to(device).view(-1, 1, 1, 1)
                x, den = x * k, den * k
            out[key] = (enc.mlp(x), den)
        return out


def _keep_masks(names: Sequence[str], batch: int, p: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per source name a (batch,) 0/1 float mask, each source hidden with probability ``p``,
    at least one kept per sample."""
    keep = torch.rand(batch, len(names), generator=generator) >= p
    none = ~keep.any(1)
    if none.any():
        pick = torch.randint(len(names), (batch,), generator=generator)
        keep[none, pick[none]] = True
    return {n: keep[:, i].float() for i, n in enumerate(names)}


def _lat_weights(latitude: np.ndarray, device: torch.device) -> torch.Tensor:
    w = torch.as_tensor(np.cos(np.deg2rad(np.asarray(latitude, float))).clip(0), dtype=torch.float32, device=device)
    return (w / w.mean()).view(1, 1, 1, -1, 1)


def _batch_loss(
    model: ObsCastModel,
    cache: FeatureCache,
    data: ObsWindowDataset,
    indices: Sequence[int],
    n_steps: int,
    weights: torch.Tensor,
    station_idx: torch.Tensor | None,
    station_weight: float,
    device: torch.device,
    keep: Mapping[str, torch.Tensor] | None = None,
    analysis_weight: float = 0.0,
    background: torch.Tensor | None = None,
    latent: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float, float, torch.Tensor | None]:
    """Loss of one batch: lat-weighted grid MSE + station_weight * station MSE (normalised)
    + analysis_weight * lat-weighted MSE of the decoded initial state against the truth at init.

    ``background`` is the cycling background (see :meth:`ObsCastModel.fuse`); ``latent``, if
    given, replaces the fused initial state (e.g. from :func:`cycle_analyses`). Also returns
    the next cycle's background (None without cycling)."""
    targets, st_targets = data.targets(indices, n_steps)
    targets = targets.to(device)
    b = len(indices)
    if latent is None:
        latent = model.fuse(cache.encode(model, data, indices, keep, device), background=background)
    points = None
    if station_idx is not None and station_weight > 0:
        points = (data.station_latitude[station_idx].to(device).expand(b, -1), data.station_longitude[station_idx].to(device).expand(b, -1))
    static = data.static.to(device).expand(b, -1, -1, -1)
    out = model.forecast(latent, n_steps, points, residual=static)
    grid_loss = ((out["grid"] - targets) ** 2 * weights).mean()
    loss, st = grid_loss, 0.0
    if analysis_weight > 0:
        analysis = model.grid_decoder(latent) + model.residual_regrid(static[:, model.residual_index])[0]
        init = data.initial_truth(list(indices)).to(device)
        loss = loss + analysis_weight * ((analysis - init) ** 2 * weights[:, 0]).mean()
    if points is not None:
        st_loss = ((out["stations"] - st_targets[:, :, station_idx].to(device)) ** 2).mean()
        loss = loss + station_weight * st_loss
        st = float(st_loss.detach())
    return loss, float(grid_loss.detach()), st, out.get("background")


def _consecutive(data: ObsWindowDataset) -> np.ndarray:
    """(n,) bool: sample i's init time is one window after sample i - 1's (False for i = 0)."""
    t = data.init_times.asi8
    ok = np.zeros(len(t), bool)
    ok[1:] = np.diff(t) == int(data.window.value)
    return ok


@torch.no_grad()
def cycle_analyses(
    model: ObsCastModel,
    data: ObsWindowDataset,
    cache: FeatureCache | None = None,
    keep: Mapping[str, float] | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Run the analysis cycle through ``data``'s init times in order (one window per cycle).

    Cycle i fuses the observations of the window ending at init time i with the background,
    the model's one-step forecast from analysis i - 1 (:meth:`ObsCastModel.next_background`;
    a cold start, zero background = the climatology, at the first init and after any gap in
    the init times). This is the learned analogue of cycled data assimilation (e.g. Kalnay 2003, *Atmospheric Modeling, Data Assimilation and
    Predictability*, ch. 5): information from earlier windows is carried by the background.

    Parameters
    ----------
    model : ObsCastModel
        With ``cycling`` (without, every analysis is a cold one, i.e. plain :meth:`~ObsCastModel.fuse`).
    data : ObsWindowDataset
        Init times in increasing order.
    cache : FeatureCache, optional
        Cached SetConv features of ``data``'s windows; default: run the encoders on the
        observations.
    keep : mapping, optional
        Source name -> 0.0 hides that source in every cycle (as source dropout does).
    device : str or torch.device

    Returns
    -------
    torch.Tensor
        (n_inits, latent_channels, lat, lon) analyses (CPU).
    """
    dev = torch.device(device)
    model = model.to(dev)
    was_training = model.training
    model.eval()
    new = _consecutive(data)
    masks = None if not keep else {k: torch.tensor([float(v)]) for k, v in keep.items()}
    out, bg = [], None
    for i in range(len(data)):
        if not new[i]:
            bg = None
        if cache is not None:
            encoded = cache.encode(model, data, [i], masks, dev)
            latent = model.fuse(encoded, background=bg)
        else:
            inputs, _, _ = collate_obs([data[i]])
            for k, v in inputs.items():  # a hidden source: no valid point, as a zero keep mask
                if masks and isinstance(v, dict) and masks.get(_split_key(k)[0], torch.ones(1)).item() == 0:
                    v["mask"] = torch.zeros_like(v["mask"])
            latent = model.encode(_to_device(inputs, dev), background=bg)
        out.append(latent.cpu())
        if model.cycling:
            bg = model.next_background(latent)
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def _station_subset(n: int, max_stations: int | None) -> torch.Tensor | None:
    """Evenly spaced station indices (all when ``max_stations`` is None or >= n); None if n == 0."""
    if n == 0:
        return None
    if max_stations is None or max_stations >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, max_stations).round().long().unique()


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
    lr: float = 2e-3,
    weight_decay: float = 1e-5,
    batch_size: int = 8,
    rollout_schedule: Sequence[int] | int = (1, 2, 4, 4, 8, 8),
    val_steps: int | None = None,
    source_dropout: float = 0.3,
    station_points: int = 256,
    station_weight: float = 1.0,
    analysis_weight: float = 0.5,
    grad_clip: float = 1.0,
    device: str = "auto",
    seed: int = 0,
    max_seconds: float | None = None,
    cache: FeatureCache | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    spinup_cycles: int = 4,
    init_state: Mapping[str, torch.Tensor] | None = None,
) -> tuple[ObsCastModel, dict[str, Any]]:
    """Train encoders, processor and decoders end to end on OSSE samples.

    The SetConv features of all observation windows are computed once (:class:`FeatureCache`,
    kernel lengthscales frozen at their initial values); every optimiser step then runs the
    encoders' MLPs, the fusion, the rollout and both decoders, exactly as
    :meth:`ObsCastModel.forward` does on the observations.

    Parameters
    ----------
    model_args : dict
        From :func:`osse_model_args`.
    train_data, val_data : ObsWindowDataset
        Training and validation periods (``n_steps`` at least the longest rollout used).
    epochs : int
        Passes over ``train_data``.
    lr, weight_decay : float
        AdamW; the learning rate rises linearly over the first steps (at most 50) and then
        follows a cosine decay to 5 % of ``lr``.
    batch_size : int
        Samples per optimiser step.
    rollout_schedule : int or sequence of int
        Rollout steps per epoch (the last value repeats), e.g. ``(1, 2, 4, 8)``.
    val_steps : int, optional
        Rollout of the validation loss (default the longest of the schedule, capped by
        ``val_data.n_steps``).
    source_dropout : float
        Probability of hiding each observation source (all its history windows) per sample,
        at least one source kept (GraphDOP-style); the static climatology is never hidden.
    station_points : int
        SYNOP positions drawn per batch for the station loss (0: no station loss).
    station_weight : float
        Weight of the station term.
    analysis_weight : float
        Weight of an auxiliary loss on the initial state: the gridded decoder applied to the
        fused latent (before any step) against the truth at the init time. It supervises the
        encoders directly (the "analysis"); the forecast itself never outputs this state.
    grad_clip : float
        Gradient norm clip (0: none).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    seed : int
        Seeds initialisation, shuffling, dropout and station draws.
    max_seconds : float, optional
        Stop after the epoch during which this training time is exceeded.
    cache : FeatureCache, optional
        Features of the windows of both datasets, built by this function if not given (its
        time is reported in ``history["cache_seconds"]``).
    init_state : dict, optional
        State dict to start from (warm start, e.g. the champion's weights for a retrain); it
        must fit ``model_args``.
    progress : callable, optional
        Called after each epoch with that epoch's history record.
    spinup_cycles : int
        Cycling models only (``model_args["cycling"]``): training then runs ``batch_size``
        parallel analysis cycles, each through a contiguous stretch of the training inits
        (random phase per epoch), one optimiser step per cycle; the background of each cycle is
        the previous cycle's one-step forecast, detached (truncated backpropagation through
        time of one cycle). The first ``spinup_cycles`` cycles of each stretch only spin the
        background up (no optimiser step).

    Returns
    -------
    model : ObsCastModel
        The weights of the epoch with the lowest validation loss (the last epoch without
        validation data), on the CPU, in eval mode.
    history : dict
        ``epochs``: per-epoch records (``epoch``, ``rollout``, ``lr``, ``train_loss``,
        ``train_grid``, ``train_station``, ``val_loss``, ``seconds``); ``best_epoch``,
        ``seconds`` (training), ``cache_seconds``, ``device``, ``parameters``, ``val_steps``.

    Raises
    ------
    ValueError
        If a rollout exceeds the targets of ``train_data``, or a cycling model's training inits
        are not consecutive windows or too few for ``spinup_cycles``.
    """
    dev = select_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    longest = max([rollout_schedule] if isinstance(rollout_schedule, int) else list(rollout_schedule))
    if longest > train_data.n_steps:
        raise ValueError(f"rollout {longest} exceeds the {train_data.n_steps} target steps of the training data")
    model = ObsCastModel(**copy.deepcopy(dict(model_args)))
    if init_state is not None:
        model.load_state_dict(init_state)
    model = model.to(dev)
    if cache is None:
        cache = FeatureCache(model, [d for d in (train_data, val_data) if d is not None])
    else:
        for e in model.encoders.values():
            if isinstance(e, SetConvEncoder):
                e.lengthscale.log_km.requires_grad_(False)
    weights = _lat_weights(train_data.out_latitude, dev)
    n_st = len(train_data.station_latitude)
    n = len(train_data)
    n_batches = max(1, n // batch_size)
    cycling = bool(model_args.get("cycling"))
    if cycling:
        if not _consecutive(train_data)[1:].all():
            raise ValueError("cycling training needs consecutive training init times (one window apart)")
        n_streams = min(batch_size, max(1, n // (spinup_cycles + 1)))
        stream_len = n // n_streams
        if stream_len <= spinup_cycles:
            raise ValueError(f"{n} training inits are too few for {spinup_cycles} spin-up cycles")
        n_batches = stream_len - spinup_cycles
    total_steps = max(1, epochs * n_batches)
    warmup = min(50, total_steps // 10 + 1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda s: (s + 1) / warmup if s < warmup else 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, total_steps - warmup)))),
    )
    if val_steps is None:
        val_steps = longest if val_data is None else min(longest, val_data.n_steps)
    names = sorted(cache.index)
    hist: dict[str, Any] = {"epochs": [], "best_epoch": None, "device": str(dev), "cache_seconds": cache.seconds}
    best_val, best_state = math.inf, None
    start = time.perf_counter()
    for epoch in range(epochs):
        n_steps = _rollout_for(rollout_schedule, epoch)
        model.train()
        tot = grid_tot = st_tot = 0.0
        count = 0
        perm = torch.randperm(n, generator=gen).tolist()
        background = None
        if cycling:
            phase = int(torch.randint(n - n_streams * stream_len + 1, (1,), generator=gen))
            starts = [phase + k * stream_len for k in range(n_streams)]
            with torch.no_grad():
                for c in range(spinup_cycles):
                    idx = [s0 + c for s0 in starts]
                    background = model.fuse(cache.encode(model, train_data, idx, None, dev), background=background)
                    background = model.next_background(background)
        for bi in range(n_batches):
            if cycling:
                idx = [s0 + spinup_cycles + bi for s0 in starts]
            else:
                idx = perm[bi * batch_size : (bi + 1) * batch_size] if n >= batch_size else perm
            st_idx = torch.randperm(n_st, generator=gen)[:station_points] if station_points and n_st else None
            keep = _keep_masks(names, len(idx), source_dropout, gen) if source_dropout > 0 and names else None
            loss, gl, sl, background = _batch_loss(
                model, cache, train_data, idx, n_steps, weights, st_idx, station_weight, dev, keep, analysis_weight, background
            )
            if background is not None:
                background = background.detach()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimiser.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
            grid_tot += gl * len(idx)
            st_tot += sl * len(idx)
            count += len(idx)
        rec = {
            "epoch": epoch + 1,
            "rollout": n_steps,
            "lr": optimiser.param_groups[0]["lr"],
            "train_loss": tot / count,
            "train_grid": grid_tot / count,
            "train_station": st_tot / count,
        }
        if val_data is not None:
            rec["val_loss"] = validation_loss(model, val_data, val_steps, cache, batch_size=batch_size, station_weight=station_weight, device=dev)
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
    for e in model.encoders.values():
        if isinstance(e, SetConvEncoder):
            e.lengthscale.log_km.requires_grad_(True)
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
    cache: FeatureCache,
    batch_size: int = 8,
    station_weight: float = 1.0,
    device: torch.device | str = "cpu",
    max_stations: int = 512,
) -> float:
    """The training loss (no dropout; a fixed, evenly spaced subset of at most ``max_stations``
    stations) averaged over ``data`` at rollout ``n_steps``; a cycling model cycles through
    ``data`` from a cold start (:func:`cycle_analyses`)."""
    dev = torch.device(device)
    was_training = model.training
    model.eval()
    weights = _lat_weights(data.out_latitude, dev)
    st_idx = _station_subset(len(data.station_latitude), max_stations)
    analyses = cycle_analyses(model, data, cache, device=dev) if model.cycling else None
    tot = 0.0
    for i in range(0, len(data), batch_size):
        idx = list(range(i, min(len(data), i + batch_size)))
        latent = None if analyses is None else analyses[idx].to(dev)
        loss, _, _, _ = _batch_loss(model, cache, data, idx, n_steps, weights, st_idx, station_weight, dev, latent=latent)
        tot += float(loss) * len(idx)
    model.train(was_training)
    return tot / max(len(data), 1)


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
    max_stations: int | None = 1000,
    cache: FeatureCache | None = None,
    spinup: int = 0,
    keep: Mapping[str, float] | None = None,
    every: int = 1,
) -> dict[str, Any]:
    """Latitude-weighted RMSE per channel and lead of the model and of the baselines.

    A cycling model (``model.cycling``) runs the analysis cycle continuously through ``data``'s
    inits (:func:`cycle_analyses`) and forecasts from each analysis.

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
    max_stations : int, optional
        Score the station decoder on an evenly spaced subset of at most this many stations
        (None: all; 0: no station scores) against the gridded forecast interpolated
        bilinearly to them and against persistence (RMSE over stations and inits, unweighted).
    cache : FeatureCache, optional
        Use cached SetConv features of ``data``'s windows (same result, faster); default: run
        the model on the observations (:meth:`ObsCastModel.forward`).
    spinup : int
        The first ``spinup`` inits are not scored (they spin up a cycling model's background).
    keep : mapping, optional
        Source name -> 0.0 withholds that source (cycling models only).
    every : int
        Score every ``every``-th init after the spin-up (the cycle still runs through all).

    Returns
    -------
    dict
        ``lead_hours`` (L,), ``channels`` (C,), ``rmse`` {``model``, ``persistence``,
        ``climatology``: lists (C, L) in physical units}; with stations: ``station_channels``,
        ``n_stations`` and ``station_rmse`` {``decoder``, ``interpolated``, ``persistence``:
        (C_st, L)}; ``n_inits``.

    Raises
    ------
    ValueError
        If ``n_steps`` exceeds ``data.n_steps``, ``spinup`` leaves no init to score, or
        ``keep`` is given for a model without cycling.
    """
    n_steps = data.n_steps if n_steps is None else int(n_steps)
    if n_steps > data.n_steps:
        raise ValueError(f"n_steps {n_steps} exceeds the {data.n_steps} target steps of the data")
    if not 0 <= spinup < len(data):
        raise ValueError(f"spinup {spinup} must leave inits to score among the {len(data)}")
    if keep and not model.cycling:
        raise ValueError("keep (withholding by mask) needs a cycling model; build a dataset without the source instead")
    dev = select_device(device)
    model = model.to(dev).eval()
    analyses = cycle_analyses(model, data, cache, keep, dev) if model.cycling else None
    scored = list(range(spinup, len(data), max(1, int(every))))
    w = np.cos(np.deg2rad(data.out_latitude)).clip(0)
    w = torch.as_tensor(w / w.mean(), dtype=torch.float64).view(1, 1, 1, -1, 1)
    C, L = len(data.channels), n_steps
    sse = {k: torch.zeros(C, L, dtype=torch.float64) for k in ("model", "persistence", "climatology")}
    st_ci = [data.channels.index(c) for c in data.station_channels]
    st_idx = None if max_stations == 0 else _station_subset(len(data.station_latitude), max_stations)
    st_sse = {k: torch.zeros(len(st_ci), L, dtype=torch.float64) for k in ("decoder", "interpolated", "persistence")}
    if st_idx is not None:
        slat, slon = data.station_latitude[st_idx], data.station_longitude[st_idx]
        pidx, pwgt = point_weights(data.out_latitude, data.out_longitude, slat.numpy(), slon.numpy())
    clim = None if climatology is None else torch.as_tensor(climatology, dtype=torch.float64)
    st_kw = {"channel_axis": -1, "channels": data.station_channels}
    n = 0
    for i in range(0, len(scored), batch_size):
        idx = scored[i : i + batch_size]
        b = len(idx)
        points = None if st_idx is None else (slat.expand(b, -1).to(dev), slon.expand(b, -1).to(dev))
        if analyses is not None:
            out = model.forecast(analyses[idx].to(dev), n_steps, points, residual=data.static.to(dev).expand(b, -1, -1, -1))
        elif cache is not None:
            latent = model.fuse(cache.encode(model, data, idx, device=dev))
            out = model.forecast(latent, n_steps, points, residual=data.static.to(dev).expand(b, -1, -1, -1))
        else:
            inputs, _, _ = collate_obs([data[j] for j in idx])
            out = model(_to_device(inputs, dev), n_steps=n_steps, station_points=points)
        targets, st_targets = data.targets(idx, n_steps)
        fc = data.denormalise(out["grid"].cpu()).double()
        truth = data.denormalise(targets).double()
        init = data.denormalise(data.initial_truth(idx)).double()[:, None]
        wmean = lambda e: (e**2 * w).mean(dim=(-2, -1)).sum(0).T  # (C, L)
        sse["model"] += wmean(fc - truth)
        sse["persistence"] += wmean(init - truth)
        if clim is not None:
            sse["climatology"] += wmean(clim[None, None] - truth)
        if st_idx is not None:
            st_truth = data.denormalise(st_targets[:, :, st_idx], **st_kw).double()
            st_fc = data.denormalise(out["stations"].cpu(), **st_kw).double()
            interp = torch.from_numpy(interpolate_points(fc[:, :, st_ci].float().numpy(), pidx, pwgt)).double().transpose(-1, -2)
            st_init = data.denormalise(data.initial_station_truth(idx)[:, st_idx], **st_kw).double()[:, None]
            for k, f in (("decoder", st_fc), ("interpolated", interp), ("persistence", st_init)):
                st_sse[k] += ((f - st_truth) ** 2).mean(dim=2).sum(0).T
        n += b
    res: dict[str, Any] = {
        "lead_hours": [float((k + 1) * data.step / pd.Timedelta(hours=1)) for k in range(L)],
        "channels": list(data.channels),
        "n_inits": n,
        "rmse": {k: torch.sqrt(v / n).tolist() for k, v in sse.items() if k != "climatology" or clim is not None},
    }
    if st_idx is not None:
        res["station_channels"] = list(data.station_channels)
        res["n_stations"] = int(len(st_idx))
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
    "FeatureCache",
    "cycle_analyses",
    "evaluate",
    "gridpoint_climatology",
    "osse_model_args",
    "select_device",
    "skill_table",
    "train_osse",
    "validation_loss",
]
