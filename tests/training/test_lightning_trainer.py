"""The Lightning ``train_network``: epoch records, timing split, time limit and argument checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lightning_worker as W
from obscast.components.training.lightning import StepPlan


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_records_timing_split_and_time_limit():
    records = []
    model, hist = W.run(epochs=3, max_seconds=0.0, progress=records.append)
    assert len(records) == 1 and hist["epochs"] == records  # stopped after the first epoch: its time exceeds 0 s
    rec = records[0]
    assert set(rec) == {"epoch", "rollout", "lr", "train_loss", "train_grid", "train_station", "val_loss", "seconds", "steps",
                        "samples", "data_seconds", "step_seconds"}
    assert rec["steps"] == 4 and rec["samples"] == 16 and rec["rollout"] == 1
    assert 0 < rec["data_seconds"] < rec["step_seconds"] < rec["seconds"]
    assert hist["global_step"] == 4 and hist["world_size"] == 1 and hist["precision"] == "32-true" and hist["best_epoch"] == 1
    assert not model.training and all(p.requires_grad for p in model.parameters())


def test_plans_and_argument_checks():
    plan = StepPlan(20, 4, seed=0, cycling=True, spinup=1)
    assert (plan.n_streams, plan.stream_len, plan.n_batches, plan.global_batch) == (4, 5, 4, 4)
    steps, spin = plan.steps(0), plan.spinup_steps(0)
    assert spin == [[0, 5, 10, 15]] and steps[0] == [1, 6, 11, 16] and steps[-1] == [4, 9, 14, 19]  # contiguous stretches
    odd = StepPlan(23, 4, seed=0, cycling=True, spinup=1)
    assert {tuple(odd.spinup_steps(e)[0]) for e in range(20)} != {tuple(odd.spinup_steps(0)[0])}  # random phase per epoch
    with pytest.raises(ValueError, match="too few"):
        StepPlan(3, 4, seed=0, cycling=True, spinup=4)
    with pytest.raises(ValueError, match="cannot be shared by 8 processes"):
        W.run(devices=8, strategy="ddp")
    with pytest.raises(ValueError, match="checkpoint_dir"):
        W.run(resume=True)
