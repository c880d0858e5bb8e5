"""Which samples each optimiser step of the Lightning trainer uses: the step plan, its batch
sampler and loader (exact resume mid-epoch), and the share of a global batch taken by each
distributed rank (see :mod:`obscast.components.training.lightning` for the design)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def share(total: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous slice ``[lo, hi)`` of ``total`` items taken by ``rank`` of ``world`` (sizes differ by at most 1)."""
    base, extra = divmod(total, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


class StepPlan:
    """Which samples every optimiser step of an epoch uses (deterministic from ``seed`` and the epoch).

    Without cycling, an epoch is a random permutation of the training samples cut into
    ``n // batch_size`` steps (all samples in one step when ``n < batch_size``). With cycling,
    ``n_streams = min(batch_size, n // (spinup + 1))`` parallel analysis cycles run through
    contiguous stretches of ``stream_len = n // n_streams`` inits from a random phase; the
    first ``spinup`` cycles of each stretch only spin the background up, each further cycle is
    one step; with ``backprop_cycles = k > 1`` each step takes ``k`` consecutive cycles of every
    stream (its batch lists them cycle by cycle, ``global_batch`` indices each), and the gradient
    flows through the backgrounds that link them.

    Parameters
    ----------
    n : int
        Training samples (init times, consecutive windows when ``cycling``).
    batch_size, seed, spinup : int
    cycling : bool
    backprop_cycles : int
        Cycles per optimiser step (cycling only; 1 without cycling).

    Raises
    ------
    ValueError
        If a cycling plan has too few inits for ``spinup`` spin-up cycles.
    """

    def __init__(self, n: int, batch_size: int, seed: int, cycling: bool = False, spinup: int = 0, backprop_cycles: int = 1) -> None:
        if n < 1:
            raise ValueError("no training samples")
        if backprop_cycles < 1 or (backprop_cycles > 1 and not cycling):
            raise ValueError(f"backprop_cycles={backprop_cycles}: needs cycling and at least 1")
        self.n, self.batch_size, self.seed, self.cycling, self.spinup = int(n), int(batch_size), int(seed), bool(cycling), int(spinup)
        self.backprop_cycles = int(backprop_cycles)
        if cycling:
            self.n_streams = min(batch_size, max(1, n // (spinup + backprop_cycles)))
            self.stream_len = n // self.n_streams
            if self.stream_len < spinup + backprop_cycles:
                raise ValueError(f"{n} training inits are too few for {spinup} spin-up cycles and {backprop_cycles} cycles per step")
            self.n_batches = (self.stream_len - spinup) // backprop_cycles
            self.global_batch = self.n_streams
        else:
            self.n_batches = max(1, n // batch_size)
            self.global_batch = min(batch_size, n)

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch)])

    def _starts(self, epoch: int) -> list[int]:
        phase = int(self._rng(epoch).integers(self.n - self.n_streams * self.stream_len + 1))
        return [phase + k * self.stream_len for k in range(self.n_streams)]

    def steps(self, epoch: int) -> list[list[int]]:
        """Global sample indices of each optimiser step of ``epoch`` (``n_batches`` lists of
        ``backprop_cycles * global_batch``, cycle by cycle)."""
        if self.cycling:
            starts = self._starts(epoch)
            k = self.backprop_cycles
            return [[s + self.spinup + b * k + c for c in range(k) for s in starts] for b in range(self.n_batches)]
        perm = self._rng(epoch).permutation(self.n).tolist()
        bs = self.global_batch
        return [perm[b * bs : (b + 1) * bs] for b in range(self.n_batches)]

    def spinup_steps(self, epoch: int) -> list[list[int]]:
        """Global sample indices of the spin-up cycles of ``epoch`` (empty without cycling)."""
        if not self.cycling:
            return []
        starts = self._starts(epoch)
        return [[s + c for s in starts] for c in range(self.spinup)]

    def key(self) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed."""
        return {"n": self.n, "batch_size": self.batch_size, "seed": self.seed, "cycling": self.cycling, "spinup": self.spinup,
                "backprop_cycles": self.backprop_cycles}


def _as_list(batch: list[int]) -> list[int]:
    return list(batch)


class _EpochProxy:
    """Lightning 2.6 calls ``set_epoch`` on ``loader.sampler`` and ``loader.batch_sampler.sampler`` only
    (``lightning_fabric.utilities.data._set_sampler_epoch``), never on the batch sampler itself."""

    def __init__(self, owner: StepSampler) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class StepSampler(torch.utils.data.Sampler):
    """Batch sampler yielding, per optimiser step, the global sample indices of :meth:`StepPlan.steps`.

    ``set_epoch`` (called by Lightning before each epoch, through ``.sampler``) selects the epoch;
    ``processed`` is the number of steps of that epoch already trained (set by :class:`OsseModule`).
    ``load_state_dict`` makes the next iteration over the saved epoch skip its processed steps.
    """

    def __init__(self, plan: StepPlan) -> None:
        self.plan = plan
        self.sampler = _EpochProxy(self)
        self.epoch = 0
        self.processed = 0
        self._resume: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.plan.n_batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        steps = self.plan.steps(self.epoch)
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = self._resume[1]
        self._resume = None
        self.processed = start
        yield from steps[start:]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "processed": self.processed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["processed"]))


class StepLoader(torch.utils.data.DataLoader):
    """DataLoader over :class:`StepSampler` (batches are lists of global sample indices), stateful for Lightning."""

    def __init__(self, plan: StepPlan) -> None:
        super().__init__(range(plan.n), batch_sampler=StepSampler(plan), collate_fn=_as_list, num_workers=0)

    def state_dict(self) -> dict[str, int]:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.batch_sampler.load_state_dict(state)


__all__ = ["StepLoader", "StepPlan", "StepSampler", "share"]
