"""One small cycling OSSE training run, shared by the Lightning tests (in process) and their subprocesses.

Run as a script (by ``torchrun`` or plainly) it trains with the arguments given and, on global
rank 0, saves ``{"history", "state"}`` with :func:`torch.save` to ``--out``.
``--kill-at N`` sends SIGKILL to itself before optimiser step N + 1 (after step N's checkpoint).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from functools import cache
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from obscast.components.training.trainer import train_network
from obscast.components.model.assembly import build_model_args
from osse_synthetic import SMALL, synthetic_osse

#: Training arguments of the shared run: 4 optimiser steps per epoch, 4 parallel cycles.
RUN = {"epochs": 3, "lr": 3e-3, "batch_size": 4, "rollout_schedule": (1, 2), "station_points": 32, "source_dropout": 0.3,
       "spinup_cycles": 1, "seed": 3, "device": "cpu", "progress_bar": False}


@cache
def data():
    """(model_args, train, validation) of the synthetic OSSE (history 2, 2 target steps, cycling)."""
    stats, train, val = synthetic_osse(days=8, n_steps=2, history=2)
    return build_model_args(stats, train.station_channels, history=2, cycling=True, **SMALL), train, val


def run(**kwargs):
    """:func:`train_network` on :func:`data` with :data:`RUN` updated by ``kwargs``."""
    args, train, val = data()
    return train_network(args, train, val, **{**RUN, **kwargs})


class KillAt(pl.Callback):
    """SIGKILL this process when ``step`` optimiser steps are done (before the next one starts)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--every", type=int)
    parser.add_argument("--kill-at", type=int)
    a = parser.parse_args()
    torch.set_num_threads(1)
    model, hist = run(devices=a.devices, strategy="ddp" if a.devices > 1 else "auto", checkpoint_dir=a.checkpoint_dir,
                      checkpoint_every_n_steps=a.every, callbacks=[KillAt(a.kill_at)] if a.kill_at is not None else [])
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:
        torch.save({"history": hist, "state": model.state_dict()}, a.out)


if __name__ == "__main__":
    main()
