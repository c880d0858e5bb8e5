"""Training throughput of the Lightning trainer (``train_network``) against a plain PyTorch loop, same process.

Builds a small synthetic OSSE (``tests/training/osse_synthetic.py``: travelling waves as the
truth, SYNOP/aircraft/satellite tables sampled from it; no store, no dinosaur), then trains the
cycling model for ``--epochs`` epochs twice, alternating:

* ``lightning``: :func:`obscast.components.training.trainer.train_network` (one ``pl.Trainer``, the
  step sampler, the feature cache);
* ``plain``: the same optimiser steps written as a bare loop (same :class:`StepPlan`, the same
  ``_batch_loss``, AdamW, gradient clipping, source dropout and station draws), no Lightning.

For each it prints training samples per second (over the epochs after the first, which warms
up), the share of the step loop spent waiting for the data loader (``data_seconds /
(data_seconds + step_seconds)`` of the epoch records; target <= 10 %), the peak memory (the
process's peak RSS on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA), and the achieved
FLOP rate: the FLOPs of one optimiser step counted with :class:`torch.utils.flop_counter.FlopCounterMode`
(forward and backward; matrix products and convolutions only, as that counter does) times the
steps per second; with ``--peak-tflops`` also the model FLOP utilisation (MFU = achieved /
peak). Speed is reported as the ratio ``lightning / plain`` of samples per second.

Run::

    .venv/bin/python benchmarks/training_throughput.py                      # CPU, 1 thread
    .venv/bin/python benchmarks/training_throughput.py --device cuda --peak-tflops 989 --batch-size 32 --days 30
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "training"))
from obscast.components.model.model import ObsCastModel
from obscast.components.training.lightning import StepPlan
from obscast.components.training.trainer import (
    FeatureCache,
    _batch_loss,
    _keep_masks,
    _lat_weights,
    _rollout_for,
    select_device,
    train_network,
)
from obscast.components.model.assembly import build_model_args
from obscast.encoders.setconv import SetConvEncoder
from osse_synthetic import synthetic_osse


def _peak_memory_mb(dev: torch.device) -> float:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def plain_loop(args, train, cache, opts, dev: torch.device) -> list[dict]:
    """The optimiser steps of ``train_network`` as a bare loop (no validation, no schedule): per-epoch step seconds and samples."""
    torch.manual_seed(opts["seed"])
    model = ObsCastModel(**args)
    for e in model.encoders.values():
        if isinstance(e, SetConvEncoder):
            e.lengthscale.log_km.requires_grad_(False)
    model = model.to(dev).train()
    cache = cache.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=opts["lr"])
    plan = StepPlan(len(train), opts["batch_size"], opts["seed"], cycling=True, spinup=opts["spinup_cycles"])
    gen = torch.Generator().manual_seed(opts["seed"])
    weights = _lat_weights(train.out_latitude, dev)
    names = sorted(cache.index)
    n_st = len(train.station_latitude)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    records = []
    for epoch in range(opts["epochs"]):
        n_steps = _rollout_for(opts["rollout_schedule"], epoch)
        bg = None
        with torch.no_grad(), autocast:
            for idx in plan.spinup_steps(epoch):
                bg = model.next_background(model.fuse(cache.encode(model, train, idx, None, dev), background=bg))
        _sync(dev)
        start = time.perf_counter()
        samples = 0
        for idx in plan.steps(epoch):
            st_idx = torch.randperm(n_st, generator=gen)[: opts["station_points"]]
            keep = _keep_masks(names, len(idx), opts["source_dropout"], gen)
            with autocast:
                loss, _, _, bg = _batch_loss(model, cache, train, idx, n_steps, weights, st_idx, 1.0, dev, keep, 0.5, bg)
            bg = bg.detach()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            float(loss.detach())  # as the trainer, which records each step's loss
            samples += len(idx)
        _sync(dev)
        records.append({"seconds": time.perf_counter() - start, "samples": samples})
    return records


def step_flops(args, train, cache, opts, dev: torch.device) -> int:
    """FLOPs (forward + backward) of one optimiser step at the longest rollout, counted by FlopCounterMode."""
    torch.manual_seed(0)
    model = ObsCastModel(**args).to(dev).train()
    plan = StepPlan(len(train), opts["batch_size"], opts["seed"], cycling=True, spinup=opts["spinup_cycles"])
    idx = plan.steps(0)[0]
    n_steps = _rollout_for(opts["rollout_schedule"], opts["epochs"] - 1)
    weights = _lat_weights(train.out_latitude, dev)
    counter = FlopCounterMode(display=False)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), autocast:  # a background to start from, not counted
        bg = model.next_background(model.fuse(cache.encode(model, train, idx, None, dev)))
    with counter, autocast:
        loss, *_ = _batch_loss(model, cache, train, idx, n_steps, weights, torch.arange(min(opts["station_points"], len(train.station_latitude))),
                               1.0, dev, None, 0.5, bg.detach())
        loss.backward()
    return int(counter.get_total_flops())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8, help="parallel analysis cycles per step (global batch)")
    p.add_argument("--days", type=float, default=12.0, help="length of the synthetic nature run (70 %% train)")
    p.add_argument("--latent-channels", type=int, default=32)
    p.add_argument("--hidden", type=int, default=32, help="processor, decoder and encoder hidden width")
    p.add_argument("--n-blocks", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--peak-tflops", type=float, help="peak TFLOP/s of the device for the MFU (e.g. 989 for H100/H200 bf16 dense)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = select_device(a.device)
    t0 = time.perf_counter()
    stats, train, val = synthetic_osse(days=a.days, n_steps=2, history=2)
    size = {"n_lat": 16, "n_lon": 32, "latent_channels": a.latent_channels, "processor_hidden": a.hidden, "n_blocks": a.n_blocks,
            "decoder_hidden": a.hidden, "encoder_hidden": a.hidden}
    args = build_model_args(stats, train.station_channels, history=2, cycling=True, **size)
    torch.manual_seed(0)
    cache = FeatureCache(ObsCastModel(**args), [train, val])
    opts = {"epochs": a.epochs, "lr": 3e-3, "batch_size": a.batch_size, "rollout_schedule": (1, 2), "station_points": 64,
            "source_dropout": 0.3, "spinup_cycles": 2, "seed": 0}
    print(f"data: {len(train)} training / {len(val)} validation samples, built in {time.perf_counter() - t0:.1f} s; "
          f"device {dev}, {a.threads} CPU thread(s)")
    flops = step_flops(args, train, cache, opts, dev)
    rows = {}
    for name in ("plain", "lightning", "plain", "lightning"):  # alternate, keep the second (warm) run of each
        _reset_peak(dev)
        if name == "lightning":
            _, hist = train_network(args, train, val, cache=cache, device=str(dev), progress_bar=False, **opts)
            recs = hist["epochs"][1:] or hist["epochs"]
            data_s = sum(r["data_seconds"] for r in recs)
            step_s = sum(r["step_seconds"] for r in recs)
            rows[name] = {"samples": sum(r["samples"] for r in recs), "seconds": data_s + step_s, "wait": data_s / max(data_s + step_s, 1e-12),
                          "steps": sum(r["steps"] for r in recs)}
        else:
            recs = plain_loop(args, train, cache, opts, dev)
            recs = recs[1:] or recs
            rows[name] = {"samples": sum(r["samples"] for r in recs), "seconds": sum(r["seconds"] for r in recs), "wait": math.nan,
                          "steps": sum(r["samples"] for r in recs) // StepPlan(len(train), a.batch_size, 0, True, 2).global_batch}
        rows[name]["memory"] = _peak_memory_mb(dev)
    print(f"\none step: {flops / 1e9:.3f} GFLOP (FlopCounterMode, forward + backward, rollout {_rollout_for(opts['rollout_schedule'], a.epochs - 1)})")
    head = f"{'loop':10s} {'samples/s':>10s} {'steps/s':>8s} {'data wait':>10s} {'peak MB':>9s} {'TFLOP/s':>9s}"
    if a.peak_tflops:
        head += f" {'MFU':>7s}"
    print(head)
    for name, r in rows.items():
        sps, steps = r["samples"] / r["seconds"], r["steps"] / r["seconds"]
        wait = "-" if math.isnan(r["wait"]) else f"{100 * r['wait']:.1f} %"
        line = f"{name:10s} {sps:10.1f} {steps:8.2f} {wait:>10s} {r['memory']:9.0f} {flops * steps / 1e12:9.4f}"
        if a.peak_tflops:
            line += f" {100 * flops * steps / (a.peak_tflops * 1e12):6.2f}%"
        print(line)
    ratio = (rows["lightning"]["samples"] / rows["lightning"]["seconds"]) / (rows["plain"]["samples"] / rows["plain"]["seconds"])
    print(f"\nratio lightning / plain (samples per second) = {ratio:.3f}   (1.0 = no framework overhead)")
    print(f"data-wait share (lightning) = {100 * rows['lightning']['wait']:.1f} %   (target <= 10 %)")
    if dev.type == "cpu":
        print("peak MB on the CPU is the process's peak RSS so far (it only grows), not per loop")


if __name__ == "__main__":
    main()
