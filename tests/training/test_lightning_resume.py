"""Checkpoints of the Lightning trainer: a run stopped mid-epoch and resumed ends with the weights of an uninterrupted run.

The run (``lightning_worker.RUN``) is a cycling model with source dropout and station draws, so the
checkpoint must carry the cycling background, the generator state and the sampler position.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lightning_worker as W
import pytorch_lightning as pl
from obscast.components.training.lightning import StepPlan, StepSampler

WORKER = Path(__file__).resolve().parent / "lightning_worker.py"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted run, without checkpoints (writing them must not change the numbers).

    On one thread, as the runs it is compared with (module fixtures are set up before the autouse
    function fixture; the thread count changes CPU reduction order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return W.run()
    finally:
        torch.set_num_threads(threads)


class _Stop(Exception):
    pass


class _RaiseAtStep(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise _Stop


class _RaiseAtEpochEnd(pl.Callback):
    """Raises in the first epoch end, before the module's validation and the epoch-end checkpoint."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        raise _Stop


def _assert_same(got, ref) -> None:
    (model, hist), (ref_model, ref_hist) = got, ref
    ref_state = ref_model.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    keys = ("epoch", "rollout", "lr", "train_loss", "train_grid", "train_station", "val_loss", "samples")
    assert [{k: r[k] for k in keys} for r in hist["epochs"]] == [{k: r[k] for k in keys} for r in ref_hist["epochs"]]
    assert hist["best_epoch"] == ref_hist["best_epoch"] and hist["global_step"] == ref_hist["global_step"] == 12


def test_step_sampler_skips_the_processed_steps_of_the_saved_epoch():
    plan = StepPlan(16, 4, seed=1)
    s = StepSampler(plan)
    s.set_epoch(2)
    full = list(s)
    assert len(full) == len(s) == 4 and sorted(i for step in full for i in step) == list(range(16))
    assert full != StepPlan(16, 4, seed=1).steps(3)  # another epoch, another order
    s.processed = 1
    state = s.state_dict()
    again = StepSampler(plan)
    again.load_state_dict(state)
    again.set_epoch(2)
    assert list(again) == full[1:]
    assert list(again) == full  # the skip applies once
    again.load_state_dict(state)
    again.set_epoch(3)  # the saved epoch had ended: nothing to skip
    assert list(again) == plan.steps(3)


def test_resume_after_a_stop_mid_epoch_is_exact(tmp_path, reference):
    with pytest.raises(_Stop):
        W.run(checkpoint_dir=str(tmp_path), checkpoint_every_n_steps=1, callbacks=[_RaiseAtStep(5)])
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 5 and ckpt["epoch"] == 1  # 4 steps per epoch: one step into the second epoch
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "processed": 1}]
    assert ckpt["obscast"]["background"].shape[0] == 4  # the 4 cycles' background
    assert len(ckpt["obscast"]["records"]) == 1
    records = []
    got = W.run(checkpoint_dir=str(tmp_path), checkpoint_every_n_steps=1, resume=True, progress=records.append)
    assert got[1]["resumed_from"] == str(tmp_path / "last.ckpt")
    assert [r["epoch"] for r in records] == [2, 3]  # only the epochs finished after the resume are reported
    _assert_same(got, reference)


def test_resume_between_last_step_and_epoch_end_is_exact(tmp_path, reference):
    with pytest.raises(_Stop):
        W.run(checkpoint_dir=str(tmp_path), checkpoint_every_n_steps=1, callbacks=[_RaiseAtEpochEnd()])
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4 and ckpt["obscast"]["pending_end"] and not ckpt["obscast"]["records"]
    got = W.run(checkpoint_dir=str(tmp_path), checkpoint_every_n_steps=1, resume=True)
    _assert_same(got, reference)


def test_resume_refuses_another_set_up(tmp_path):
    W.run(epochs=1, checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match="another training set-up"):
        W.run(epochs=1, seed=4, checkpoint_dir=str(tmp_path), resume=True)


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch_is_exact(tmp_path, reference):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(WORKER), "--out", str(tmp_path / "never.pt"), "--checkpoint-dir", str(tmp_path),
                           "--every", "2", "--kill-at", "7"], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not (tmp_path / "never.pt").exists()
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6  # written every 2 steps; killed before step 8
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "processed": 2}]
    got = W.run(checkpoint_dir=str(tmp_path), checkpoint_every_n_steps=2, resume=True)
    _assert_same(got, reference)
