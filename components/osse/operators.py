"""The OSSE's observation operators: where and how each kind samples the nature run.

Horizontal: bilinear (:class:`obscast.components.data.interp.PointInterpolator`, longitude
periodic, nearest row poleward of the outermost latitudes); vertical: linear in log sigma
between the output levels; satellite channels: fixed weighting functions
(:func:`brightness_weights`). See :mod:`obscast.components.osse.simulate` for each kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from obscast.components.data.interp import PointInterpolator

__all__ = ["CHANNEL_WIDTH", "brightness_weights"]

#: Width (standard deviation in log sigma) of the channel weighting functions.
CHANNEL_WIDTH: float = 0.3


def brightness_weights(sigma: np.ndarray, width: float = CHANNEL_WIDTH) -> np.ndarray:
    """Weighting functions of the simulated satellite channels.

    Parameters
    ----------
    sigma : numpy.ndarray
        Output sigma levels, shape (n_levels,), ascending (top first).
    width : float
        Standard deviation of the Gaussian in ``log sigma``.

    Returns
    -------
    numpy.ndarray
        Shape (n_channels, n_levels) with n_channels = n_levels: row ``c``
        is ``exp(-0.5 ((log sigma_k - log sigma_c) / width)^2)`` normalised to
        sum 1, i.e. channel ``c + 1`` peaks at level ``c`` (channel 1 highest,
        like HIRS channel 1 in the stratosphere and 7 near the surface).
    """
    logs = np.log(np.asarray(sigma, dtype=np.float64))
    w = np.exp(-0.5 * ((logs[None, :] - logs[:, None]) / width) ** 2)
    return w / w.sum(axis=1, keepdims=True)


class _Horizontal(PointInterpolator):
    """Bilinear interpolation of n points on the nature grid: the one bilinear interpolation,
    :class:`obscast.components.data.interp.PointInterpolator` (longitude periodic, nearest row
    poleward of the outermost latitude); ``h(values)`` maps (..., lat, lon) to (..., n)."""

    @classmethod
    def at(cls, lat_grid: np.ndarray, lon_grid: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> _Horizontal:
        return cls(lat_grid, lon_grid, lat, lon)


def _vertical(columns: np.ndarray, log_sigma: np.ndarray, log_target: np.ndarray) -> np.ndarray:
    """Linear interpolation in log sigma of columns (n_levels, n) to targets (n,); NaN outside."""
    k = np.clip(np.searchsorted(log_sigma, log_target, side="right") - 1, 0, len(log_sigma) - 2)
    w = (log_target - log_sigma[k]) / (log_sigma[k + 1] - log_sigma[k])
    idx = np.arange(columns.shape[1])
    out = columns[k, idx] * (1 - w) + columns[k + 1, idx] * w
    eps = 1e-12
    inside = (log_target >= log_sigma[0] - eps) & (log_target <= log_sigma[-1] + eps)
    return np.where(inside, out, np.nan)


class _Nature:
    """The nature run, one snapshot (time index) at a time."""

    def __init__(self, ds: Any) -> None:
        for name in ("air_temperature", "eastward_wind", "northward_wind", "geopotential", "surface_air_pressure"):
            if name not in ds.data_vars:
                raise ValueError(f"nature dataset lacks {name!r}")
        self.ds = ds
        self.times = pd.DatetimeIndex(ds["time"].values)
        if len(self.times) > 1 and not (np.diff(self.times.asi8) == np.diff(self.times.asi8)[0]).all():
            raise ValueError("nature times must be regularly spaced")
        self.step = self.times[1] - self.times[0] if len(self.times) > 1 else pd.Timedelta(hours=6)
        self.sigma = np.asarray(ds["level"].values, dtype=np.float64)
        if not (np.all(np.diff(self.sigma) > 0) and len(self.sigma) >= 2):
            raise ValueError("nature 'level' must hold at least two ascending sigma values")
        self.log_sigma = np.log(self.sigma)
        self.lat = np.asarray(ds["latitude"].values, dtype=np.float64)
        self.lon = np.asarray(ds["longitude"].values, dtype=np.float64)
        if not np.all(np.diff(self.lat) > 0):
            raise ValueError("nature latitudes must be ascending")
        dlon = np.diff(self.lon)
        if not np.allclose(dlon, 360.0 / len(self.lon)):
            raise ValueError("nature longitudes must be regular and cover [0, 360)")
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None

    def fields(self, t: int) -> dict[str, np.ndarray]:
        """Fields at time index t as float64: 3-D (level, lat, lon), ``surface_air_pressure`` 2-D."""
        if self._cache is None or self._cache[0] != t:
            snap = self.ds.isel(time=t)
            self._cache = (t, {name: np.asarray(snap[name].values, dtype=np.float64) for name in (
                "air_temperature", "eastward_wind", "northward_wind", "geopotential", "surface_air_pressure")})
        return self._cache[1]

    def nearest(self, times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
        """Index of the nature time t with ``t - 3 h <= time < t + 3 h`` (may lie outside the run)."""
        offset = (pd.DatetimeIndex(times) - self.times[0] + self.step / 2) // self.step
        return np.asarray(offset, dtype=np.int64)


def _period(nature: _Nature, start: Any, end: Any) -> np.ndarray:
    """Indices of the nature times in [start, end]."""
    t = nature.times
    lo = t[0] if start is None else pd.Timestamp(start)
    hi = t[-1] if end is None else pd.Timestamp(end)
    for b in (lo, hi):
        if b.tzinfo is not None:
            raise ValueError("start/end must be naive UTC times")
    if lo > hi:
        raise ValueError(f"start {lo} is after end {hi}")
    idx = np.flatnonzero((t >= lo) & (t <= hi))
    if idx.size == 0:
        raise ValueError(f"no nature time in [{lo}, {hi}] (nature run {t[0]} .. {t[-1]})")
    return idx
