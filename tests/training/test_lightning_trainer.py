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
    with pytest.raises(ValueError, match="needs cycling"):
        StepPlan(20, 4, seed=0, backprop_cycles=2)
    with pytest.raises(ValueError, match="cannot be shared by 8 processes"):
        W.run(devices=8, strategy="ddp")
    with pytest.raises(ValueError, match="checkpoint_dir"):
        W.run(resume=True)


def test_backpropagation_through_two_cycles():
    """``backprop_cycles=2``: each step takes two consecutive cycles of every stream (the same
    samples per epoch in half the steps), and its loss depends on the first cycle's weights
    through the background (not so for a detached background)."""
    import torch

    from obscast.components.training.trainer import FeatureCache, _batch_loss

    plan = StepPlan(20, 4, seed=0, cycling=True, spinup=1, backprop_cycles=2)
    assert (plan.n_streams, plan.n_batches, plan.global_batch) == (4, 2, 4)
    assert plan.steps(0)[0] == [1, 6, 11, 16, 2, 7, 12, 17] and plan.steps(0)[1] == [3, 8, 13, 18, 4, 9, 14, 19]
    records = []
    net, hist = W.run(epochs=1, backprop_cycles=2, progress=records.append)
    assert hist["global_step"] == 2 and records[0]["steps"] == 2 and records[0]["samples"] == 16
    assert torch.isfinite(torch.tensor(records[0]["train_loss"]))
    # the second cycle's loss reaches the first cycle's analysis through the background (the
    # trained net: an untrained one starts with the background's fusion weights at zero)
    _, train, _ = W.data()
    net.train()
    cache = FeatureCache(net, [train])
    weights = torch.ones(1, 1, len(train.out_latitude), 1)
    _, _, _, bg = _batch_loss(net, cache, train, [1, 6], 1, weights, None, 0.0, torch.device("cpu"))
    loss2, _, _, _ = _batch_loss(net, cache, train, [2, 7], 1, weights, None, 0.0, torch.device("cpu"), background=bg)
    (through,) = torch.autograd.grad(loss2, bg, retain_graph=True)
    assert bg.requires_grad and through.abs().max() > 0
    detached, _, _, _ = _batch_loss(net, cache, train, [2, 7], 1, weights, None, 0.0, torch.device("cpu"), background=bg.detach())
    torch.testing.assert_close(detached, loss2)  # the same value: only the gradient path differs
