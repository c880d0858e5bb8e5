"""The trainer of the observation-to-forecast model, the same for every experiment (Prefect-free).

The model (:class:`obscast.components.model.model.ObsCastModel`) has one SetConv encoder per observation source
(and per history window), a static gridded source carrying the training climatology and latitude
(:func:`obscast.components.data.statistics.static_fields`), which is also its residual, so the gridded
decoder predicts the anomaly from climatology. Training minimises, over a multi-step rollout,

``mean_k,c,i,j w_i (forecast - truth)^2 + station_weight * mean_k,p,c (station - truth_p)^2``

in normalised units, ``w_i`` the cell-area latitude weights (:func:`obscast.processor.grid.latitude_weights`, mean 1, as the verification), the
station term at a random subset of the SYNOP positions. The rollout length follows a curriculum
(e.g. 1, 2, 4, 8 steps): training on long rollouts with the MSE teaches the model to damp
unpredictable scales towards the climatology, which is what keeps its error below both
persistence and climatology at long leads (autoregression continues beyond the trained length).
Source dropout (GraphDOP, Alexe et al. 2024, arXiv:2412.15687) hides whole observation sources
per sample, so the model copes with outages and does not lean on a single source.

Cycling (``cycling=True`` in :func:`build_model_args`): one window of sparse observations cannot
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
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from obscast.components.data.obs import ObsWindowDataset, collate_obs, pad_obs
from obscast.components.data.statistics import STATIC_SOURCE
from obscast.components.model.model import ObsCastModel
from obscast.encoders.setconv import SetConvEncoder


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
    when built by :func:`build_model_args`), so one feature map per (source, window) serves
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

    def to(self, device: torch.device | str) -> FeatureCache:
        """This cache with its feature tensors on ``device`` (itself if there already; the index is shared)."""
        dev = torch.device(device)
        if all(t.device == dev for t in self.x.values()):
            return self
        out = copy.copy(self)
        out.x = {k: v.to(dev) for k, v in self.x.items()}
        out.density = {k: v.to(dev) for k, v in self.density.items()}
        return out

    def encode(
        self,
        model: ObsCastModel,
        data: ObsWindowDataset,
        indices: Sequence[int],
        keep: Mapping[str, torch.Tensor] | None = None,
        device: torch.device | str = "cpu",
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Encoder outputs ``{source key: (latent, density)}`` of samples ``indices`` of ``data``
        (static source included), as :meth:`ObsCastModel.fuse` takes them (features instead of
        the latent for the model's ``innovation_sources``).

        ``keep`` optionally maps a source name to a (batch,) float 0/1 tensor: 0 hides that
        source (all lags) for that sample, as source dropout does.
        """
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for key, enc in model.encoders.items():
            if key == STATIC_SOURCE:
                static = data.static_batch(list(indices)).to(device)
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
            out[key] = (x, den) if key in model.innovation_sources else (enc.mlp(x), den)
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
    """The loss's latitude weights, :func:`obscast.processor.grid.latitude_weights` (cell area,
    mean 1, as the verification) shaped (1, 1, 1, lat, 1)."""
    from obscast.processor.grid import latitude_weights

    return torch.as_tensor(latitude_weights(latitude), dtype=torch.float32, device=device).view(1, 1, 1, -1, 1)


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
    static = data.static_batch(list(indices)).to(device)
    out = model.forecast(latent, n_steps, points, residual=static)
    grid_loss = ((out["grid"] - targets) ** 2 * weights).mean()
    loss, st = grid_loss, 0.0
    if analysis_weight > 0:
        analysis = model.decode_analysis(latent, static)
        init = data.initial_truth(list(indices)).to(device)
        loss = loss + analysis_weight * ((analysis - init) ** 2 * weights[:, 0]).mean()
    if points is not None:
        st_loss = ((out["stations"] - st_targets[:, :, station_idx].to(device)) ** 2).mean()
        loss = loss + station_weight * st_loss
        st = float(st_loss.detach())
    return loss, float(grid_loss.detach()), st, out.get("background")


def _consecutive(data: ObsWindowDataset) -> np.ndarray:
    """(n,) bool: sample i continues sample i - 1's cycle (:meth:`ObsWindowDataset.consecutive`)."""
    return data.consecutive()


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


def train_network(
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
    backprop_cycles: int = 1,
    init_state: Mapping[str, torch.Tensor] | None = None,
    devices: int = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    precision: str | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every_n_steps: int | None = None,
    resume: bool = False,
    progress_bar: bool | None = None,
    callbacks: Sequence[Any] = (),
) -> tuple[ObsCastModel, dict[str, Any]]:
    """Train encoders, processor and decoders end to end on OSSE samples (one PyTorch Lightning trainer).

    The SetConv features of all observation windows are computed once (:class:`FeatureCache`,
    kernel lengthscales frozen at their initial values); every optimiser step then runs the
    encoders' MLPs, the fusion, the rollout and both decoders, exactly as
    :meth:`ObsCastModel.forward` does on the observations. The loop is a
    :class:`pytorch_lightning.Trainer` over :class:`~obscast.components.training.lightning.OsseModule`
    (see :mod:`obscast.components.training.lightning` for the sampler, DDP and checkpoint design).

    Parameters
    ----------
    model_args : dict
        From :func:`build_model_args`.
    train_data, val_data : ObsWindowDataset
        Training and validation periods (``n_steps`` at least the longest rollout used).
    epochs : int
        Passes over ``train_data``.
    lr, weight_decay : float
        AdamW; the learning rate rises linearly over the first steps (at most 50) and then
        follows a cosine decay to 5 % of ``lr``.
    batch_size : int
        Samples per optimiser step: the *global* batch, shared out between the DDP processes.
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
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    seed : int
        Seeds initialisation, the sample order (per epoch), dropout and station draws.
    max_seconds : float, optional
        Stop after the epoch during which this training time is exceeded (decided on rank 0).
    cache : FeatureCache, optional
        Features of the windows of both datasets, built by this function if not given (its
        time is reported in ``history["cache_seconds"]``).
    progress : callable, optional
        Called (on global rank 0) after each epoch with that epoch's history record.
    spinup_cycles : int
        Cycling models only (``model_args["cycling"]``): training then runs ``batch_size``
        parallel analysis cycles, each through a contiguous stretch of the training inits
        (random phase per epoch), one optimiser step per cycle; the background of each cycle is
        the previous cycle's one-step forecast, detached (truncated backpropagation through
        time of one cycle). The first ``spinup_cycles`` cycles of each stretch only spin the
        background up (no optimiser step).
    backprop_cycles : int
        Cycling models only: cycles per optimiser step. With ``k > 1`` each step runs ``k``
        consecutive cycles of every stream and backpropagates the mean of their losses through
        the backgrounds linking them (truncated backpropagation through time of ``k`` cycles);
        an epoch then has ``k`` times fewer steps.
    init_state : dict, optional
        State dict to start from (warm start, e.g. the champion's weights for a retrain); it
        must fit ``model_args``.
    devices, num_nodes : int
        Processes per node and nodes (``devices * num_nodes > 1``: distributed data parallel;
        launch with ``torchrun --nproc_per_node devices``, or let Lightning start the processes).
    strategy : str
        ``"auto"`` or ``"ddp"`` (DDP over gloo on the CPU, NCCL on CUDA, unused parameters
        allowed), or any Lightning strategy name.
    precision : str, optional
        Lightning precision; default ``"bf16-mixed"`` on CUDA, ``"32-true"`` on the CPU.
    checkpoint_dir : str, optional
        Where ``last.ckpt`` is written (each epoch end, and every ``checkpoint_every_n_steps``
        optimiser steps); it holds everything needed to resume exactly.
    checkpoint_every_n_steps : int, optional
        Also checkpoint mid-epoch every this many optimiser steps.
    resume : bool
        Resume from ``checkpoint_dir/last.ckpt`` when it exists (the same data, ``batch_size``,
        ``seed``, ``spinup_cycles``, ``backprop_cycles`` and model are needed; the process count may differ).
    progress_bar : bool, optional
        Lightning's progress bar; default: when stderr is a terminal.
    callbacks : sequence of pytorch_lightning.Callback
        Extra Lightning callbacks.

    Returns
    -------
    model : ObsCastModel
        The weights of the epoch with the lowest validation loss (the last epoch without
        validation data), on the CPU, in eval mode.
    history : dict
        ``epochs``: per-epoch records (``epoch``, ``rollout``, ``lr``, ``train_loss``,
        ``train_grid``, ``train_station``, ``val_loss``, ``seconds`` since the start of
        training, ``steps``, ``samples``, ``data_seconds`` waiting for the data loader, ``step_seconds``
        in the steps, checkpoint writes included: both per process); ``best_epoch``,
        ``seconds`` (training), ``cache_seconds``, ``device``, ``precision``, ``world_size``,
        ``global_step``, ``resumed_from``, ``parameters``, ``val_steps``.

    Raises
    ------
    ValueError
        If a rollout exceeds the targets of ``train_data``, a cycling model's training inits
        are not consecutive windows or too few for ``spinup_cycles`` plus ``backprop_cycles``, the global batch has
        fewer samples than there are processes, ``resume`` lacks ``checkpoint_dir``, or the
        checkpoint to resume was written for another set-up.
    """
    from obscast.components.training.lightning import train

    return train(
        model_args, train_data, val_data, epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
        rollout_schedule=rollout_schedule, val_steps=val_steps, source_dropout=source_dropout, station_points=station_points,
        station_weight=station_weight, analysis_weight=analysis_weight, grad_clip=grad_clip, device=device, seed=seed,
        max_seconds=max_seconds, cache=cache, progress=progress, spinup_cycles=spinup_cycles, backprop_cycles=backprop_cycles,
        init_state=init_state,
        devices=devices, num_nodes=num_nodes, strategy=strategy, precision=precision, checkpoint_dir=checkpoint_dir,
        checkpoint_every_n_steps=checkpoint_every_n_steps, resume=resume, progress_bar=progress_bar, callbacks=callbacks,
    )


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


__all__ = [
    "FeatureCache",
    "cycle_analyses",
    "select_device",
    "train_network",
    "validation_loss",
]
