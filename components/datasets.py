"""Training and forecast samples from the store (DESIGN.md §1, ``components/datasets``).

A gridded dataset ``(member, time, level, latitude, longitude)`` is stacked into channels
``<cf_name>_<level>hPa`` so that the networks see ``(batch, channel, lat, lon)``. A sample is the
analysis at an init time and the targets at init + k·Δt, k = 1..n, within one member
(12-hour transitions of the ERA5 ensemble sample: member k at t to member k at t + 12 h).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import xarray as xr


def channel_names(ds: xr.Dataset, variables: list[str] | None = None) -> list[str]:
    """Channel names ``<variable>_<level in hPa>hPa`` in stacking order (variable-major)."""
    variables = variables or sorted(ds.data_vars)
    return [f"{v}_{int(round(float(lev) / 100))}hPa" for v in variables for lev in ds["level"].values]


def stack_channels(ds: xr.Dataset, variables: list[str] | None = None) -> xr.DataArray:
    """Stack variables and levels into one ``channel`` dimension.

    Parameters
    ----------
    ds : xarray.Dataset
        Dims ``(member, time, level, latitude, longitude)``.
    variables : list of str, optional
        CF names, default all data variables sorted by name.

    Returns
    -------
    xarray.DataArray
        ``(member, time, channel, latitude, longitude)``, float32, ``channel`` labelled by
        :func:`channel_names`.

    Raises
    ------
    KeyError
        If a variable is not in the dataset (the message lists the ones that are).
    """
    variables = variables or sorted(ds.data_vars)
    missing = [v for v in variables if v not in ds]
    if missing:
        raise KeyError(f"variables {missing} not in the gridded dataset (it has {sorted(ds.data_vars)})")
    arr = xr.concat([ds[v] for v in variables], dim="variable").transpose("member", "time", "variable", "level", ...)
    arr = arr.stack(channel=("variable", "level")).transpose("member", "time", "channel", "latitude", "longitude")
    arr = arr.drop_vars(["channel", "variable", "level"]).assign_coords(channel=channel_names(ds, variables))
    return arr.astype("float32")


@dataclass
class Normaliser:
    """Per-channel standardisation ``(x - mean) / std`` with statistics from the training data only.

    Attributes
    ----------
    mean, std : numpy.ndarray
        ``(channel,)`` in the channel's physical units.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, data: np.ndarray) -> "Normaliser":
        """Fit on ``(..., channel, lat, lon)`` training data (latitude-unweighted moments)."""
        axes = tuple(i for i in range(data.ndim) if i != data.ndim - 3)
        mean = data.mean(axis=axes, dtype=np.float64)
        std = data.std(axis=axes, dtype=np.float64)
        return cls(mean.astype("float32"), np.maximum(std, 1e-6).astype("float32"))

    def normalise(self, x, channel_axis: int = -3):
        """Standardise an array or tensor whose channel axis is ``channel_axis``."""
        return (x - self._b(x, channel_axis, self.mean)) / self._b(x, channel_axis, self.std)

    def denormalise(self, x, channel_axis: int = -3):
        """Undo :meth:`normalise`."""
        return x * self._b(x, channel_axis, self.std) + self._b(x, channel_axis, self.mean)

    @staticmethod
    def _b(x, axis: int, stat: np.ndarray):
        axis = axis % x.ndim
        shape = [1] * x.ndim
        shape[axis] = -1
        if isinstance(x, torch.Tensor):
            return torch.as_tensor(stat, dtype=x.dtype, device=x.device).reshape(shape)
        return stat.reshape(shape)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "Normaliser":
        return cls(np.asarray(data["mean"], "float32"), np.asarray(data["std"], "float32"))


def transition_indices(times: np.ndarray, step: pd.Timedelta, n_steps: int) -> list[int]:
    """Indices ``i`` of ``times`` such that ``times[i] + k * step`` exists for k = 1..n_steps."""
    present = {pd.Timestamp(t): i for i, t in enumerate(times)}
    return [
        i
        for i, t in enumerate(times)
        if all(pd.Timestamp(t) + k * step in present for k in range(1, n_steps + 1))
    ]


class TransitionDataset(torch.utils.data.Dataset):
    """Samples ``(analysis at t, targets at t + k·Δt)`` within each member.

    Parameters
    ----------
    stacked : numpy.ndarray
        ``(member, time, channel, lat, lon)`` normalised fields.
    times : numpy.ndarray
        ``(time,)`` datetime64 valid times.
    members : list of int
        Positions along the member axis to draw from.
    step : pandas.Timedelta
        Δt of one processor step.
    n_steps : int
        Rollout length of the targets.

    Each item is ``(x, y)``: ``x`` ``(channel, lat, lon)`` and ``y`` ``(n_steps, channel, lat, lon)``.

    Raises
    ------
    ValueError
        If no (member, time) pair has a full rollout of targets.
    """

    def __init__(self, stacked: np.ndarray, times: np.ndarray, members: list[int], step: pd.Timedelta, n_steps: int):
        self.data = torch.from_numpy(np.ascontiguousarray(stacked))
        steps = [int((pd.Timestamp(t) - pd.Timestamp(times[0])) / step) for t in times]
        time_pos = {s: i for i, s in enumerate(steps)}
        self.items = [
            (m, i, [time_pos[steps[i] + k] for k in range(1, n_steps + 1)])
            for m in members
            for i in transition_indices(times, step, n_steps)
        ]
        if not self.items:
            raise ValueError(f"no {n_steps}-step transitions of {step} in times {list(times)}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int):
        m, i, targets = self.items[idx]
        return self.data[m, i], self.data[m, targets]
