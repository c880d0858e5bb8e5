"""Forecast latency: the learned model's rollout against the dinosaur dycore, in one process.

Two timings, both with their one-off costs (JAX compilation, first PyTorch calls) excluded by a
warm-up run that is not timed:

* **dycore**: the nature run's own jitted stepper
  (:func:`obscast.components.osse.dycore.build_dycore`, the configuration of ``osse.nature`` in
  ``configs/default.yaml``: T42, 10 equidistant sigma layers, Held-Suarez forcing, imex_rk_sil3
  with dt 30 min, diagnostics on the output levels every 6 h) integrating ``--days`` simulated
  days, one ``advance`` (6 h) at a time as :func:`obscast.components.osse.nature.run_nature` does,
  from the isothermal rest state plus its perturbation (the cost of a spectral step does not
  depend on the state). The warm-up compiles the stepper and integrates one day.
* **model**: :meth:`ObsCastModel.forecast` of the default OSSE architecture (the arguments of
  :func:`obscast.components.training.workflow.model_args`: ``build_model_args`` with
  ``model`` section of ``configs/default.yaml``, the cycling model with the ``"forecast"``
  station residual) with random weights, rolling ``--days * 4`` steps of 6 h at batch 1 from a
  random latent state, decoding every step to the gridded output (T42 averaged over 2 x 2, with
  the climatology residual) and to the SYNOP stations of ``data/networks/synop_stations.csv``
  (7,840 positions) exactly as the forecast flow does (:func:`obscast.components.training.workflow.
  forecast_at`: ``model.forecast(latent, n_steps, station_points, residual=static)`` under
  ``torch.no_grad``). The statistics dict that sets the model's shapes is synthetic (channels,
  grid and sources as the default OSSE's; values irrelevant to the cost).

The two alternate (dycore first) ``--repeats`` times; the medians and the ratio
``dycore / model`` (how many times faster the model is) are printed. Target: ratio >= 50.

Run::

    .venv/bin/python benchmarks/forecast_latency.py                    # 10 days, 3 repeats, 1 core
    .venv/bin/python benchmarks/forecast_latency.py --threads 2        # two cores for both
    .venv/bin/python benchmarks/forecast_latency.py --profile          # also the rollout's top ops

``--threads N`` (default 1) pins the process to N cores (``os.sched_setaffinity``, so JAX/XLA's
thread pool is confined too) and calls ``torch.set_num_threads(N)``; ``--threads 0`` leaves both
on every core the process may run on. On a shared machine use 1: PyTorch's thread pool with 2
threads on 2 busy cores was about 10 times slower per convolution than with 1 thread.
``--device`` places the PyTorch model (``cpu``, ``cuda``); the dycore runs on JAX's default
device. ``--min-ratio R`` exits 1 if the ratio is below R.
"""

from __future__ import annotations

import argparse
import os
import statistics as _stats
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SYNOP_STATIONS = REPO / "data" / "networks" / "synop_stations.csv"


# ----------------------------------------------------------------------------- dycore
def build_dycore(nature_cfg: Any) -> tuple[Any, Any, Any]:
    """The nature run's jitted 6-hour stepper: ``(advance, initial_state, jax)``."""
    from obscast.components.osse.dycore import build_dycore as _build_model

    model = _build_model(
        nature_cfg.truncation, nature_cfg.n_sigma_layers, nature_cfg.dt_minutes, nature_cfg.steps_per_output,
        tuple(nature_cfg.level_indices()),
    )  # fmt: skip
    jax = model["jax"]
    state = model["init_fn"](rng_key=jax.random.PRNGKey(nature_cfg.seed))
    return model["advance"], state, jax


def run_dycore(advance: Any, state: Any, jax: Any, n_intervals: int) -> tuple[Any, float]:
    """Integrate ``n_intervals`` output intervals (6 h each); returns (state, seconds)."""
    t0 = time.perf_counter()
    for _ in range(n_intervals):
        state, diag = advance(state)
    jax.block_until_ready((state, diag))
    return state, time.perf_counter() - t0


# ----------------------------------------------------------------------------- model
def gaussian_latitudes(n: int) -> np.ndarray:
    """Gaussian latitudes (degrees, ascending) of an ``n``-row Gaussian grid (as dinosaur's)."""
    nodes, _ = np.polynomial.legendre.leggauss(n)
    return np.sort(np.rad2deg(np.arcsin(nodes)))


def synthetic_statistics(nature_cfg: Any, coarsen: int) -> tuple[dict[str, Any], list[str]]:
    """A statistics dict shaped like :func:`obscast.components.data.statistics.fit_statistics`' for the
    default OSSE (channels, output grid, sources; values are placeholders), and the station
    channels of :class:`obscast.components.data.obs.ObsWindowDataset`."""
    from obscast.components.data.fields import LEVEL_VARIABLES, SURFACE_VARIABLES, coarse_coordinates, level_channel
    from obscast.components.data.statistics import DEFAULT_PRESSURE_LEVELS
    from obscast.components.data.tables import DEFAULT_VARIABLES  # fmt: skip

    n_lat, n_lon = nature_cfg.grid_shape
    lat = gaussian_latitudes(n_lat)
    lon = 360.0 / n_lon * np.arange(n_lon)
    clat, clon = coarse_coordinates(lat, lon, coarsen)
    levels = nature_cfg.output_sigma_levels
    channels = [level_channel(v, s) for v in LEVEL_VARIABLES for s in levels] + list(SURFACE_VARIABLES)
    n_ch = len(channels)
    sources = {}
    kinds = dict(DEFAULT_VARIABLES)
    kinds["satellite"] = tuple(f"brightness_temperature_channel_{c}" for c in range(1, 20))  # HIRS channels
    for name, variables in sorted(kinds.items()):
        plevels = list(DEFAULT_PRESSURE_LEVELS) if name in ("temp", "aircraft") else None
        n_layer = len(plevels) if plevels else 1
        sources[name] = {
            "variables": list(variables), "pressure_levels": plevels, "lat_band_deg": 180.0,
            "mean": np.zeros((1, n_layer, len(variables))).tolist(), "std": np.ones((n_layer, len(variables))).tolist(),
        }  # fmt: skip
    stats = {
        "version": 1, "window_hours": 6.0, "train_period": ["2000-01-01T00:00:00", "2000-04-09T18:00:00"],
        "grid": {
            "channels": channels, "mean": [0.0] * n_ch, "std": [1.0] * n_ch, "coarsen": coarsen,
            "latitude": clat.tolist(), "longitude": clon.tolist(), "climatology_kind": "zonal",
            "climatology": np.zeros((n_ch, clat.size)).tolist(),
        },
        "sources": sources,
    }  # fmt: skip
    lowest = max(levels)
    station_channels = ["surface_air_pressure"] + [level_channel(v, lowest) for v in LEVEL_VARIABLES[:3]]
    return stats, station_channels


def station_positions() -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude (degrees) of the SYNOP network of ``data/networks``."""
    import pandas as pd

    df = pd.read_csv(SYNOP_STATIONS)
    return df["latitude"].to_numpy(np.float32), df["longitude"].to_numpy(np.float32)


def build_model(config: Any, device: torch.device, seed: int = 0) -> tuple[Any, dict[str, Any], list[str]]:
    """The default OSSE model with random weights (every parameter, including those that start at
    zero in training, drawn at random), in eval mode on ``device``."""
    from obscast.components.model.model import ObsCastModel
    from obscast.components.model.assembly import build_model_args

    m = config.model
    stats, station_channels = synthetic_statistics(config.osse.nature, m.coarsen)
    if config.experiment.target.station_channels is not None:
        station_channels = list(config.experiment.target.station_channels)
    args = build_model_args(
        stats, station_channels, history=m.history, n_lat=m.latent_grid.n_lat, n_lon=m.latent_grid.n_lon,
        latent_channels=m.latent_channels, processor_hidden=m.processor_hidden, n_blocks=m.n_blocks,
        decoder_hidden=m.decoder_hidden, encoder_hidden=m.encoder_hidden, lengthscale_km=m.encoder_lengthscale,
        station_lengthscale_km=m.station_lengthscale, cycling=m.cycling, station_residual="forecast",
        analysis_blocks=m.analysis_blocks,
    )  # fmt: skip (as components.training.workflow.model_args)
    torch.manual_seed(seed)
    model = ObsCastModel(**args)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("log_km"):
                continue
            bound = 1.0 / np.sqrt(p[0].numel()) if p.ndim > 1 else 0.1
            p.uniform_(-bound, bound)
    return model.to(device).eval(), stats, station_channels


def rollout(model: Any, latent: torch.Tensor, n_steps: int, points: tuple[torch.Tensor, torch.Tensor], static: torch.Tensor) -> dict[str, torch.Tensor]:
    """One forecast as the forecast flow makes it (``forecast_at``, cycling model)."""
    with torch.no_grad():
        return model.forecast(latent, n_steps, points, residual=static)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_model(model: Any, latent: torch.Tensor, n_steps: int, points: Any, static: torch.Tensor, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    out = rollout(model, latent, n_steps, points, static)
    _sync(device)
    dt = time.perf_counter() - t0
    assert out["grid"].shape[1] == n_steps and out["stations"].shape[1] == n_steps
    return dt


def profile_model(model: Any, latent: torch.Tensor, n_steps: int, points: Any, static: torch.Tensor, rows: int = 15) -> str:
    """Table of the rollout's most expensive operators (torch.profiler, self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        rollout(model, latent, n_steps, points, static)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=10.0, help="simulated / forecast days (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="cores for both (default 1; 0: all the process may use)")
    parser.add_argument("--device", default="cpu", help="torch device of the model (default cpu)")
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--profile", action="store_true", help="print the rollout's top operators")
    parser.add_argument("--min-ratio", type=float, default=None, help="exit 1 if the ratio is below this")
    args = parser.parse_args(argv)

    if args.threads:
        cores = sorted(os.sched_getaffinity(0))[: args.threads]
        os.sched_setaffinity(0, cores)  # before JAX starts its thread pool
        torch.set_num_threads(args.threads)
    from obscast.components.config import load_config

    config = load_config(args.config)
    nature_cfg = config.osse.nature
    steps_per_day = 24.0 / nature_cfg.output_interval_hours
    n_intervals = int(round(args.days * steps_per_day))
    device = torch.device(args.device)

    print(f"cores: {len(os.sched_getaffinity(0))}, torch threads: {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"dycore: dinosaur {nature_cfg.truncation}, {nature_cfg.n_sigma_layers} sigma layers, dt {nature_cfg.dt_minutes:g} min, "
          f"{n_intervals} x {nature_cfg.output_interval_hours} h")  # fmt: skip
    advance, state, jax = build_dycore(nature_cfg)
    t0 = time.perf_counter()
    state, _ = run_dycore(advance, state, jax, int(steps_per_day))  # warm-up: compile + 1 day
    print(f"  warm-up (JIT compile + 1 day, not timed): {time.perf_counter() - t0:.1f} s")

    model, stats, _ = build_model(config, device)
    from obscast.components.data.statistics import static_fields

    gen = torch.Generator().manual_seed(1)
    latent = torch.randn(1, model.processor.channels, *model.grid.shape, generator=gen).to(device)
    static = torch.as_tensor(static_fields(stats))[None].to(device)
    lat, lon = station_positions()
    points = (torch.as_tensor(lat)[None].to(device), torch.as_tensor(lon)[None].to(device))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: latent {model.processor.channels} x {model.grid.shape}, {n_params:,} parameters, output "
          f"{len(model.output_variables)} x {len(model.grid_decoder.out_lat)} x {len(model.grid_decoder.out_lon)}, "
          f"{lat.size} stations, {n_intervals} steps, device {device}")  # fmt: skip
    t0 = time.perf_counter()
    run_model(model, latent, n_intervals, points, static, device)  # warm-up
    print(f"  warm-up (not timed): {time.perf_counter() - t0:.2f} s")

    dycore_s, model_s = [], []
    for r in range(args.repeats):
        state, dt_dycore = run_dycore(advance, state, jax, n_intervals)
        dt_model = run_model(model, latent, n_intervals, points, static, device)
        dycore_s.append(dt_dycore)
        model_s.append(dt_model)
        print(f"repeat {r + 1}: dycore {dt_dycore:.3f} s, model {dt_model:.4f} s, ratio {dt_dycore / dt_model:.1f}")
    d, m = _stats.median(dycore_s), _stats.median(model_s)
    print(f"\n{args.days:g}-day forecast, median of {args.repeats}:")
    print(f"  dycore (dinosaur {nature_cfg.truncation}) {d:8.3f} s  ({d / args.days:.3f} s per simulated day)")
    print(f"  model (ObsCastModel.forecast)   {m:8.4f} s  ({1000 * m / n_intervals:.2f} ms per 6 h step)")
    ratio = d / m
    print(f"  ratio dycore / model = {ratio:.1f}  (target >= 50)")
    if args.profile:
        print("\nrollout profile (torch.profiler, one rollout):")
        print(profile_model(model, latent, n_intervals, points, static))
    if args.min_ratio is not None and ratio < args.min_ratio:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
