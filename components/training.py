"""Training of encoders + processor + decoders on gridded transitions (Prefect-free).

The loss is the mean squared error of the normalised fields over the rollout, latitude-weighted
(cos φ, as the verification), plus the station decoder's MSE at random grid points of the target
(the decoder learns to answer arbitrary points; the station forecasts use it at the SYNOP sites).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import xarray as xr

from components.config import Config
from components.errors import ConfigError
from components.datasets import Normaliser, TransitionDataset, stack_channels
from processor.model import ObsCastModel

GRIDDED_SOURCE = "analysis"


def select_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def model_args(config: Config, channels: list[str], latitude: np.ndarray, longitude: np.ndarray) -> dict[str, Any]:
    """Constructor arguments of :class:`processor.model.ObsCastModel` (stored in metadata.json).

    The gridded analysis is one source (Gaussian-free bilinear encoder); each configured
    observation source gets a SetConv encoder (surface: SYNOP; profiles: TEMP, aircraft).
    """
    m = config.model
    sources: dict[str, dict[str, Any]] = {
        GRIDDED_SOURCE: {"type": "gridded", "variables": channels, "in_lat": latitude.tolist(), "in_lon": longitude.tolist()}
    }
    for name, src in config.sources.items():
        spec: dict[str, Any] = {"type": "setconv", "variables": OBS_VARIABLES[src.kind], "lengthscale_km": m.encoder_lengthscale}
        if src.kind in ("temp", "aircraft"):
            spec["pressure_levels"] = [p * 100.0 for p in m.profile_levels_hpa]
        sources[name] = spec
    return {
        "sources": sources,
        "n_lat": m.latent_grid.n_lat,
        "n_lon": m.latent_grid.n_lon,
        "latent_channels": m.latent_channels,
        "processor_hidden": m.hidden_channels,
        "decoder_hidden": m.hidden_channels,
        "n_blocks": m.n_blocks,
        "output_variables": channels,
        "out_lat": latitude.tolist(),
        "out_lon": longitude.tolist(),
        "station_lengthscale_km": m.decoder_lengthscale,
        "residual_source": GRIDDED_SOURCE if m.residual else None,
    }


#: Observed variables fed to each observation family's encoder (CF names, columns of the obs tables).
OBS_VARIABLES = {
    "synop": ["air_temperature", "air_pressure_at_mean_sea_level", "eastward_wind", "northward_wind"],
    "temp": ["air_temperature", "geopotential_height", "eastward_wind", "northward_wind"],
    "aircraft": ["air_temperature", "eastward_wind", "northward_wind"],
}


def build_model(args: dict[str, Any]) -> ObsCastModel:
    """Build the model from :func:`model_args` output."""
    return ObsCastModel(**args)


@dataclass
class TrainResult:
    model: ObsCastModel
    normaliser: Normaliser
    channels: list[str]
    loss_curve: list[float] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"


def train(
    config: Config,
    gridded: xr.Dataset,
    progress: Callable[[int, float], None] | None = None,
    epochs: int | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train a model on the transitions of the training members.

    Parameters
    ----------
    config : Config
    gridded : xarray.Dataset
        ``(member, time, level, latitude, longitude)`` as ingested.
    progress : callable, optional
        Called as ``progress(epoch, mean_loss)`` after each epoch.
    epochs : int, optional
        Overrides ``config.train.epochs``.
    init_state : dict, optional
        Warm start: a state dict (e.g. the champion's checkpoint) loaded into the new model
        before the first epoch; the model must have the same architecture and channels.

    Returns
    -------
    TrainResult
        The trained model (on the CPU), normaliser, channel names and per-epoch loss curve.

    Raises
    ------
    ValueError
        If a training member is not in the dataset or there is no full transition.
    ConfigError
        If ``init_state`` does not fit the model built from the configuration (``model:``
        section or channels changed since that checkpoint was trained).
    """
    tc = config.train
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    members = list(gridded["member"].values)
    missing = [m for m in tc.train_members + tc.test_members if m not in members]
    if missing:
        raise ValueError(f"members {missing} not in the gridded dataset {tc.dataset!r} (it has {members})")
    stacked = stack_channels(gridded)
    channels = list(stacked["channel"].values)
    values = stacked.values
    train_pos = [members.index(m) for m in tc.train_members]
    normaliser = Normaliser.fit(values[train_pos])
    data = normaliser.normalise(values).astype("float32")
    dataset = TransitionDataset(data, gridded["time"].values, train_pos, config.model.step, tc.rollout_steps)
    device = select_device(tc.device)
    lat, lon = np.array(gridded["latitude"].values), np.array(gridded["longitude"].values)
    model = build_model(model_args(config, channels, lat, lon)).to(device)
    if init_state is not None:
        try:
            model.load_state_dict(init_state)
        except RuntimeError as exc:
            raise ConfigError(f"model: the configured model does not fit the warm-start checkpoint (architecture or channels "
                              f"changed?): {str(exc).splitlines()[0]}") from exc
    optimiser = torch.optim.AdamW(model.parameters(), lr=tc.learning_rate)
    n_epochs = epochs or tc.epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=n_epochs)
    weights = torch.as_tensor(np.cos(np.deg2rad(lat)).clip(0), dtype=torch.float32, device=device)
    weights = (weights / weights.mean()).view(1, 1, 1, -1, 1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=tc.batch_size, shuffle=True, generator=torch.Generator().manual_seed(tc.seed))
    n_lat, n_lon = len(lat), len(lon)
    lat_t = torch.as_tensor(lat, dtype=torch.float32, device=device)
    lon_t = torch.as_tensor(lon, dtype=torch.float32, device=device)
    curve: list[float] = []
    start = time.perf_counter()
    model.train()
    for epoch in range(n_epochs):
        total, count = 0.0, 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            b = x.shape[0]
            points = None
            if tc.station_points:
                iy = torch.as_tensor(rng.integers(0, n_lat, (b, tc.station_points)), device=device)
                ix = torch.as_tensor(rng.integers(0, n_lon, (b, tc.station_points)), device=device)
                points = (lat_t[iy], lon_t[ix])
            out = model({GRIDDED_SOURCE: x}, n_steps=tc.rollout_steps, station_points=points, source_dropout=tc.source_dropout)
            loss = ((out["grid"] - y) ** 2 * weights).mean()
            if points is not None:
                # (b, steps, channel, P) -> (b, steps, P, channel)
                target = y[torch.arange(b, device=device)[:, None], :, :, iy, ix].permute(0, 2, 1, 3)
                loss = loss + ((out["stations"] - target) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * b
            count += b
        sched.step()
        curve.append(total / count)
        if progress:
            progress(epoch + 1, curve[-1])
    model.eval()
    return TrainResult(model.cpu(), normaliser, channels, curve, time.perf_counter() - start, str(device))


def training_metadata(config: Config, result: TrainResult, gridded: xr.Dataset, args: dict[str, Any], code: str) -> dict[str, Any]:
    """metadata.json content: config (no secrets), data range, code version, loss curve, normalisation."""
    times = pd.to_datetime(gridded["time"].values)
    return {
        "config": config.public_dict(),
        "model_args": args,
        "channels": result.channels,
        "normaliser": result.normaliser.to_dict(),
        "data": {
            "dataset": config.train.dataset,
            "time_start": str(times.min()),
            "time_end": str(times.max()),
            "train_members": config.train.train_members,
            "test_members": config.train.test_members,
        },
        "step_hours": config.model.step / pd.Timedelta(hours=1),
        "code_version": code,
        "loss_curve": result.loss_curve,
        "train_seconds": round(result.seconds, 2),
        "device": result.device,
        "parameters": int(sum(p.numel() for p in result.model.parameters())),
        "created": pd.Timestamp.now(tz="UTC").isoformat(),
    }
