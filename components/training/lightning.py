"""PyTorch Lightning training of the OSSE model: module, step sampler, checkpoint callback, trainer.

:func:`obscast.components.training.trainer.train_network` builds the pieces here and runs one
:class:`pytorch_lightning.Trainer`. The design keeps the data side cheap: the
:class:`~torch.utils.data.DataLoader` only yields, per optimiser step, the *global* sample
indices of that step (:class:`StepSampler`, deterministic from ``seed`` and the epoch); the
:class:`~obscast.components.training.trainer.FeatureCache` and the truth tensors of the
datasets do the heavy work inside the step.

Distributed data parallel: every rank sees the same global indices and the same random draws
(station subset, source-dropout masks: one ``torch.Generator`` seeded identically on every rank)
and takes a contiguous share of the global batch (:func:`share`). Each rank's loss, the mean over
its ``b_r`` samples, is scaled by ``b_r * world / B`` before the backward pass, so DDP's gradient
average equals the gradient of the mean over the global batch ``B``: a run on W processes follows
the 1-process run up to floating-point reduction order.

Exact resume: a checkpoint holds, besides what Lightning stores (weights, AdamW, scheduler,
loop progress), the dropout/station generator state, the cycling background of every stream
(gathered from all ranks), the epoch's running sums, the history and the best epoch's weights
(:meth:`OsseModule.on_save_checkpoint`), and the position of the sampler in the epoch. Lightning
2.6 restores a mid-epoch run by restoring its batch progress (the loop continues at batch k of
the epoch, without calling ``on_train_epoch_start``) and by calling ``load_state_dict`` on every
train *DataLoader* that has ``state_dict``/``load_state_dict`` (``CombinedLoader._state_dicts``;
the sampler itself is not asked). :class:`StepLoader` forwards both to :class:`StepSampler`,
which then skips the k steps already taken. The sampler cannot count those itself, since
Lightning's fetcher pre-fetches one batch; the module tells it after each step.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from obscast.components.data.obs import ObsWindowDataset
from obscast.components.model.model import ObsCastModel
from obscast.components.training.sampling import (
    StepLoader,
    StepPlan,
    StepSampler,
    share,
)
from obscast.components.training.trainer import (
    FeatureCache,
    _batch_loss,
    _consecutive,
    _keep_masks,
    _lat_weights,
    _rollout_for,
    select_device,
    validation_loss,
)
from obscast.encoders.setconv import SetConvEncoder
from pytorch_lightning.callbacks import Checkpoint


class LastCheckpoint(Checkpoint):
    """Write ``dirpath/last.ckpt`` every ``every_n_steps`` optimiser steps and at each epoch end.

    The file is written to ``last.ckpt.tmp`` and renamed, so a process killed while writing
    leaves the previous checkpoint intact. Being a :class:`Checkpoint`, its epoch-end save runs
    after the module's ``on_train_epoch_end`` (validation, history).
    """

    def __init__(self, dirpath: str, every_n_steps: int | None = None) -> None:
        self.dirpath = os.fspath(dirpath)
        self.every_n_steps = every_n_steps
        self.path = os.path.join(self.dirpath, "last.ckpt")

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.is_global_zero:
            os.makedirs(self.dirpath, exist_ok=True)
        tmp = self.path + ".tmp"
        trainer.save_checkpoint(tmp, weights_only=False)  # every rank (collectives in on_save_checkpoint); rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier("LastCheckpoint")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)


def _world(trainer: pl.Trainer) -> tuple[int, int]:
    return int(trainer.global_rank), int(trainer.world_size)


class OsseModule(pl.LightningModule):
    """LightningModule wrapping :class:`ObsCastModel` for :func:`train_network` (see there for the loss).

    Parameters
    ----------
    net : ObsCastModel
        The model (its SetConv lengthscales frozen, as the cache requires).
    cache : FeatureCache
        Features of every window of ``train_data`` and ``val_data``.
    train_data, val_data : ObsWindowDataset
    plan : StepPlan
    epochs : int
        For the learning-rate schedule.
    options : dict
        ``lr``, ``weight_decay``, ``rollout_schedule``, ``val_steps``, ``source_dropout``,
        ``station_points``, ``station_weight``, ``analysis_weight``, ``batch_size``,
        ``max_seconds``, ``seed``, ``log_progress_bar`` (see :func:`train_network`).
    progress : callable, optional
        Called on global rank 0 with each epoch's record.
    """

    def __init__(self, net: ObsCastModel, cache: FeatureCache, train_data: ObsWindowDataset, val_data: ObsWindowDataset | None,
                 plan: StepPlan, epochs: int, options: Mapping[str, Any], progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        super().__init__()
        self.net = net
        self.cache_cpu = cache
        self.cache = cache
        self.train_data, self.val_data = train_data, val_data
        self.plan, self.epochs, self.opt = plan, int(epochs), dict(options)
        self.progress = progress
        self.loader = StepLoader(plan)
        self.names = sorted(cache.index)
        self.gen = torch.Generator().manual_seed(int(self.opt["seed"]))
        self.records: list[dict[str, Any]] = []
        self.best_val, self.best_state, self.best_epoch = math.inf, None, None
        self._background: torch.Tensor | None = None
        self._background_to_load: torch.Tensor | None = None
        self._acc = np.zeros(6)  # loss*b, grid*b, station*b, b, data s, step s (this rank)
        self._acc_epoch = 0
        self._started: int | None = None  # epoch whose start (spin-up, zeroed sums) has run
        self._pending_end = False
        self._elapsed_before = 0.0
        self._start = time.perf_counter()
        self._last_end = self._t0 = time.perf_counter()
        self.resumed_from: str | None = None

    # ------------------------------------------------------------------ set-up
    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.opt["lr"], weight_decay=self.opt["weight_decay"])
        total = max(1, self.epochs * self.plan.n_batches)
        warmup = min(50, total // 10 + 1)

        def factor(s: int) -> float:  # linear warm-up, then cosine decay to 5 % of lr
            if s < warmup:
                return (s + 1) / warmup
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, total - warmup))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def train_dataloader(self):
        return self.loader

    def _share(self, total: int) -> tuple[int, int]:
        rank, world = _world(self.trainer)
        return share(total, rank, world)

    def on_train_start(self) -> None:
        self.cache = self.cache_cpu.to(self.device)
        self._weights = _lat_weights(self.train_data.out_latitude, self.device)
        self._start = time.perf_counter()
        if self._background_to_load is not None:
            lo, hi = self._share(self._background_to_load.shape[0])
            self._background = self._background_to_load[lo:hi].to(self.device)
            self._background_to_load = None
        if self._pending_end:  # resumed from a checkpoint written after an epoch's last step, before its end
            self._finish_epoch()
        self._last_end = time.perf_counter()

    # ------------------------------------------------------------------ steps
    def on_train_epoch_start(self) -> None:
        self._start_epoch(self.current_epoch)

    def _start_epoch(self, epoch: int) -> None:
        if self._pending_end:
            self._finish_epoch()
        self._acc[:] = 0.0
        self._acc_epoch = self._started = epoch
        self._background = None
        spin = self.plan.spinup_steps(epoch)
        if spin:
            lo, hi = self._share(self.plan.global_batch)
            with torch.no_grad(), self.trainer.precision_plugin.train_step_context():
                for idx in spin:
                    latent = self.net.fuse(self.cache.encode(self.net, self.train_data, idx[lo:hi], None, self.device), background=self._background)
                    self._background = self.net.next_background(latent)
        self._last_end = time.perf_counter()

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self._started != self.current_epoch:  # Lightning skips on_train_epoch_start after some restarts
            self._start_epoch(self.current_epoch)
        self._t0 = time.perf_counter()
        self._acc[4] += self._t0 - self._last_end

    def training_step(self, batch: list[int], batch_idx: int) -> torch.Tensor:
        rank, world = _world(self.trainer)
        o = self.opt
        k = self.plan.backprop_cycles
        n_steps = _rollout_for(o["rollout_schedule"], self.current_epoch)
        n_st = len(self.train_data.station_latitude)
        total = len(batch) // k  # the global batch of one cycle
        lo, hi = share(total, rank, world)
        loss = torch.zeros((), device=self.device)
        bg = self._background
        for c in range(k):  # k consecutive cycles: the background carries the gradient between them
            idx = batch[c * total : (c + 1) * total][lo:hi]
            st_idx = torch.randperm(n_st, generator=self.gen)[: o["station_points"]] if o["station_points"] and n_st else None
            keep = None
            if o["source_dropout"] > 0 and self.names:  # drawn for the global batch on every rank, then sliced
                keep = {name: v[lo:hi] for name, v in _keep_masks(self.names, total, o["source_dropout"], self.gen).items()}
            part, gl, sl, bg = _batch_loss(
                self.net, self.cache, self.train_data, idx, n_steps, self._weights, st_idx, o["station_weight"], self.device,
                keep, o["analysis_weight"], bg,
            )
            loss = loss + part / k
            self._acc[:4] += (float(part.detach()) * len(idx), gl * len(idx), sl * len(idx), len(idx))
        self._background = None if bg is None else bg.detach()
        self.loader.batch_sampler.processed = batch_idx + 1
        self._pending_end = batch_idx + 1 >= self.plan.n_batches
        b = hi - lo
        if o.get("log_progress_bar"):
            self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=b)
        return loss if b * world == total else loss * (b * world / total)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self._last_end = time.perf_counter()
        self._acc[5] += self._last_end - self._t0

    # ------------------------------------------------------------------ epoch end
    def _reduce(self, x: np.ndarray) -> np.ndarray:
        if self.trainer.world_size == 1:
            return x.copy()
        t = torch.as_tensor(x, dtype=torch.float64, device=self.device)
        return self.trainer.strategy.reduce(t, reduce_op="sum").cpu().numpy()

    def on_train_epoch_end(self) -> None:
        self._finish_epoch()

    def _finish_epoch(self) -> None:
        epoch = self._acc_epoch
        acc = self._reduce(self._acc)
        world = self.trainer.world_size
        count = max(acc[3], 1.0)
        rec: dict[str, Any] = {
            "epoch": epoch + 1,
            "rollout": _rollout_for(self.opt["rollout_schedule"], epoch),
            "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
            "train_loss": float(acc[0] / count),
            "train_grid": float(acc[1] / count),
            "train_station": float(acc[2] / count),
        }
        if self.val_data is not None:
            rec["val_loss"] = validation_loss(self.net, self.val_data, self.opt["val_steps"], self.cache, batch_size=self.opt["batch_size"],
                                              station_weight=self.opt["station_weight"], device=self.device)
            if rec["val_loss"] < self.best_val:
                self.best_val, self.best_epoch = rec["val_loss"], epoch + 1
                self.best_state = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        rec["seconds"] = self.elapsed()
        rec["steps"] = self.plan.n_batches
        rec["samples"] = int(acc[3])
        rec["data_seconds"] = float(acc[4] / world)  # mean over ranks
        rec["step_seconds"] = float(acc[5] / world)
        self.records.append(rec)
        self._pending_end = False
        if self.progress is not None and self.trainer.is_global_zero:
            self.progress(dict(rec))
        stop = self.opt["max_seconds"] is not None and rec["seconds"] > self.opt["max_seconds"]
        if self.trainer.world_size > 1:
            stop = bool(self.trainer.strategy.broadcast(stop, src=0))
        if stop:
            self.trainer.should_stop = True

    def elapsed(self) -> float:
        """Training seconds so far, runs before a resume included."""
        return self._elapsed_before + time.perf_counter() - self._start

    # ------------------------------------------------------------------ checkpoint
    def _gather_background(self) -> torch.Tensor | None:
        bg = None if self._background is None else self._background.detach().cpu()
        if self.trainer.world_size == 1 or not dist.is_available() or not dist.is_initialized():
            return bg
        parts: list[Any] = [None] * self.trainer.world_size
        dist.all_gather_object(parts, bg)
        return None if any(p is None for p in parts) else torch.cat(parts)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["obscast"] = {
            "plan": self.plan.key(),
            "generator": self.gen.get_state(),
            "background": self._gather_background(),
            "acc": [float(v) for v in self._reduce(self._acc)],  # plain floats: Lightning may load with weights_only
            "acc_epoch": self._acc_epoch,
            "started": self._started,
            "pending_end": self._pending_end,
            "records": copy.deepcopy(self.records),
            "best_val": float(self.best_val),
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "elapsed": self.elapsed(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        s = checkpoint["obscast"]
        if s["plan"] != self.plan.key():
            raise ValueError(f"checkpoint was written for another training set-up: {s['plan']} != {self.plan.key()}")
        self.gen.set_state(s["generator"])
        self._background_to_load = s["background"]
        rank = int(self.trainer.global_rank) if self._trainer is not None else 0
        self._acc = np.asarray(s["acc"], float).copy() if rank == 0 else np.zeros(6)
        self._acc_epoch, self._pending_end, self._started = int(s["acc_epoch"]), bool(s["pending_end"]), s["started"]
        self.records = list(s["records"])
        self.best_val, self.best_epoch, self.best_state = s["best_val"], s["best_epoch"], s["best_state"]
        self._elapsed_before = float(s["elapsed"])


def _strategy(strategy: str, world: int, accelerator: str):
    if strategy in ("ddp", "auto") and world > 1:
        from pytorch_lightning.strategies import DDPStrategy

        # unused parameters (e.g. the station decoder without station loss) must not stall the reducer
        return DDPStrategy(find_unused_parameters=True, process_group_backend="nccl" if accelerator == "gpu" else "gloo")
    return strategy


def fit(
    module: OsseModule,
    *,
    accelerator: str,
    devices: int,
    num_nodes: int,
    strategy: str,
    precision: str,
    grad_clip: float,
    checkpoint_dir: str | None,
    checkpoint_every_n_steps: int | None,
    resume: bool,
    progress_bar: bool,
    callbacks: Sequence[pl.Callback] = (),
) -> pl.Trainer:
    """Run :class:`pytorch_lightning.Trainer.fit` on ``module`` (see :func:`train_network` for the arguments)."""
    import warnings

    cbs = list(callbacks)
    ckpt_path = None
    if checkpoint_dir is not None:
        cbs.append(LastCheckpoint(checkpoint_dir, checkpoint_every_n_steps))
        last = os.path.join(checkpoint_dir, "last.ckpt")
        if resume and os.path.exists(last):
            ckpt_path = last
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=_strategy(strategy, devices * num_nodes, accelerator),
        precision=precision,
        max_epochs=module.epochs,
        gradient_clip_val=grad_clip or None,
        gradient_clip_algorithm="norm",
        logger=False,
        enable_checkpointing=checkpoint_dir is not None,
        callbacks=cbs,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        default_root_dir=checkpoint_dir,
    )
    module.resumed_from = ckpt_path
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")
        trainer.fit(module, ckpt_path=ckpt_path)
    return trainer


def finish(module: OsseModule) -> ObsCastModel:
    """The best epoch's weights (the last epoch's without validation) in ``module.net``, on the CPU, in eval mode,
    with the SetConv lengthscales trainable again."""
    net = module.net
    if module.best_state is not None:
        net.load_state_dict(module.best_state)
    for e in net.encoders.values():
        if isinstance(e, SetConvEncoder):
            e.lengthscale.log_km.requires_grad_(True)
    net.eval()
    return net.cpu()


def train(
    model_args: Mapping[str, Any], train_data: ObsWindowDataset, val_data: ObsWindowDataset | None, *, epochs: int, lr: float,
    weight_decay: float, batch_size: int, rollout_schedule: Sequence[int] | int, val_steps: int | None, source_dropout: float,
    station_points: int, station_weight: float, analysis_weight: float, grad_clip: float, device: str, seed: int,
    max_seconds: float | None, cache: FeatureCache | None, progress: Callable[[dict[str, Any]], None] | None, spinup_cycles: int,
    backprop_cycles: int, init_state: Mapping[str, torch.Tensor] | None, devices: int, num_nodes: int, strategy: str, precision: str | None,
    checkpoint_dir: str | None, checkpoint_every_n_steps: int | None, resume: bool, progress_bar: bool | None,
    callbacks: Sequence[pl.Callback],
) -> tuple[ObsCastModel, dict[str, Any]]:
    """The implementation of :func:`obscast.components.training.trainer.train_network` (see there)."""
    dev = select_device(device)
    torch.manual_seed(seed)
    longest = max([rollout_schedule] if isinstance(rollout_schedule, int) else list(rollout_schedule))
    if longest > train_data.n_steps:
        raise ValueError(f"rollout {longest} exceeds the {train_data.n_steps} target steps of the training data")
    model = ObsCastModel(**copy.deepcopy(dict(model_args)))
    if init_state is not None:
        model.load_state_dict(init_state)
    if cache is None:
        cache = FeatureCache(model, [d for d in (train_data, val_data) if d is not None])
    else:
        for e in model.encoders.values():
            if isinstance(e, SetConvEncoder):
                e.lengthscale.log_km.requires_grad_(False)
    cycling = bool(model_args.get("cycling"))
    if cycling and not _consecutive(train_data)[1:].all():
        raise ValueError("cycling training needs consecutive training init times (one window apart)")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    plan = StepPlan(len(train_data), batch_size, seed, cycling=cycling, spinup=spinup_cycles, backprop_cycles=backprop_cycles)
    world = int(devices) * int(num_nodes)
    if plan.global_batch < world:
        raise ValueError(f"a global batch of {plan.global_batch} samples cannot be shared by {world} processes")
    if val_steps is None:
        val_steps = longest if val_data is None else min(longest, val_data.n_steps)
    if precision is None:
        precision = "bf16-mixed" if dev.type == "cuda" else "32-true"
    bar = sys.stderr.isatty() if progress_bar is None else bool(progress_bar)
    options = {
        "lr": lr, "weight_decay": weight_decay, "rollout_schedule": rollout_schedule, "val_steps": val_steps,
        "source_dropout": source_dropout, "station_points": station_points, "station_weight": station_weight,
        "analysis_weight": analysis_weight, "batch_size": batch_size, "max_seconds": max_seconds, "seed": seed, "log_progress_bar": bar,
    }
    module = OsseModule(model, cache, train_data, val_data, plan, epochs, options, progress)
    trainer = fit(
        module, accelerator="gpu" if dev.type == "cuda" else "cpu", devices=devices, num_nodes=num_nodes, strategy=strategy,
        precision=precision, grad_clip=grad_clip, checkpoint_dir=checkpoint_dir, checkpoint_every_n_steps=checkpoint_every_n_steps,
        resume=resume, progress_bar=bar, callbacks=callbacks,
    )
    hist: dict[str, Any] = {
        "epochs": list(module.records),
        "best_epoch": module.best_epoch if module.best_state is not None else len(module.records),
        "device": str(dev),
        "cache_seconds": cache.seconds,
        "precision": str(trainer.precision),
        "world_size": int(trainer.world_size),
        "global_step": int(trainer.global_step),
        "resumed_from": module.resumed_from,
        "seconds": module.elapsed(),
    }
    model = finish(module)
    hist["parameters"] = int(sum(p.numel() for p in model.parameters()))
    hist["val_steps"] = val_steps
    return model, hist


__all__ = ["LastCheckpoint", "OsseModule", "StepLoader", "StepPlan", "StepSampler", "finish", "fit", "share", "train"]
