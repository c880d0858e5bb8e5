"""Gridded targets as channel arrays: channel names, stacking, coarsening and point interpolation.

A gridded target (nature run or reanalysis) has level variables ``(time, level, latitude,
longitude)`` and surface variables ``(time, latitude, longitude)``; obscast stacks them into
channels ``(time, channel, lat, lon)`` named by :func:`level_channel`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from obscast.components.data.interp import PointInterpolator

#: Level variables of a gridded target, and its surface variable (channel order).
LEVEL_VARIABLES = ("air_temperature", "eastward_wind", "northward_wind", "geopotential")
SURFACE_VARIABLES = ("surface_air_pressure",)


def level_channel(variable: str, level: float) -> str:
    """Channel name of a variable on a level: ``air_temperature_sigma045`` on a sigma level
    (``level`` <= 1.5, dimensionless) or ``air_temperature_500hPa`` on a pressure level (Pa)."""
    level = float(level)
    if level <= 1.5:
        return f"{variable}_sigma{int(round(level * 100)):03d}"
    return f"{variable}_{int(round(level / 100))}hPa"


def truth_channels(truth: xr.Dataset) -> list[str]:
    """Output channels of a gridded target (nature run or reanalysis): level variables
    (variable-major, levels in store order), then the surface variables present.

    Raises
    ------
    ValueError
        If the dataset holds none of :data:`LEVEL_VARIABLES` and :data:`SURFACE_VARIABLES`.
    """
    levels = truth["level"].values if "level" in truth.coords else []
    out = [level_channel(v, s) for v in LEVEL_VARIABLES if v in truth for s in levels]
    out += [v for v in SURFACE_VARIABLES if v in truth]
    if not out:
        raise ValueError(f"gridded target has none of {LEVEL_VARIABLES + SURFACE_VARIABLES}; it has {list(truth.data_vars)}")
    return out


def stack_truth(truth: xr.Dataset, times: Sequence | None = None) -> np.ndarray:
    """Truth as a float32 array (time, channel, lat, lon) in the order of :func:`truth_channels`.

    Parameters
    ----------
    truth : xarray.Dataset
        Gridded target, dims (time, level, latitude, longitude) and (time, latitude, longitude),
        one member (select it first where the dataset has a ``member`` dimension).
    times : sequence, optional
        Valid times to select (default all).
    """
    ds = truth if times is None else truth.sel(time=pd.DatetimeIndex(times))
    if "member" in ds.dims:
        raise ValueError("stack_truth takes one member: select it with .sel(member=m)")
    parts = []
    for v in LEVEL_VARIABLES:
        if v in ds:
            parts.append(np.asarray(ds[v].transpose("time", "level", "latitude", "longitude").values, np.float32))
    for v in SURFACE_VARIABLES:
        if v in ds:
            parts.append(np.asarray(ds[v].transpose("time", "latitude", "longitude").values, np.float32)[:, None])
    return np.concatenate(parts, axis=1)


def coarse_coordinates(latitude: np.ndarray, longitude: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of ``factor x factor`` blocks: cos-weighted mean latitude, mean longitude.

    Raises
    ------
    ValueError
        If ``factor`` does not divide both grid sizes.
    """
    lat, lon = np.asarray(latitude, float), np.asarray(longitude, float)
    if factor < 1 or lat.size % factor or lon.size % factor:
        raise ValueError(f"coarsen factor {factor} must divide the grid {lat.size}x{lon.size}")
    w = np.cos(np.deg2rad(lat)).reshape(-1, factor)
    clat = (lat.reshape(-1, factor) * w).sum(1) / w.sum(1)
    clon = lon.reshape(-1, factor).mean(1)
    return clat, clon


def coarsen_fields(x: np.ndarray, latitude: np.ndarray, factor: int) -> np.ndarray:
    """Area-average (cos-latitude weights) ``(..., lat, lon)`` over ``factor x factor`` blocks."""
    if factor == 1:
        return x
    w = np.cos(np.deg2rad(np.asarray(latitude, float))).astype(np.float32)
    *lead, h, wdt = x.shape
    xw = (x * w[:, None]).reshape(*lead, h // factor, factor, wdt // factor, factor).sum(axis=(-3, -1))
    ws = w.reshape(-1, factor).sum(1)[:, None] * factor
    return (xw / ws).astype(np.float32)


def point_weights(
    src_lat: np.ndarray, src_lon: np.ndarray, lat: np.ndarray, lon: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear weights of points on a lat-lon grid: those of
    :class:`obscast.components.data.interp.PointInterpolator` (periodic longitude, nearest row
    beyond the outermost latitudes).

    Parameters
    ----------
    src_lat : numpy.ndarray
        (n_lat,) strictly monotonic latitudes, degrees.
    src_lon : numpy.ndarray
        (n_lon,) strictly ascending longitudes spanning < 360 degrees.
    lat, lon : numpy.ndarray
        (P,) point coordinates, degrees (any longitude convention).

    Returns
    -------
    index : numpy.ndarray
        (P, 4) int64 indices into the row-major flattened grid.
    weight : numpy.ndarray
        (P, 4) float32 weights summing to 1.

    Raises
    ------
    ValueError
        If a coordinate is invalid (see :class:`~obscast.components.data.interp.PointInterpolator`).
    """
    interp = PointInterpolator(src_lat, src_lon, lat, lon)
    return interp.index, interp.weight.astype(np.float32)


def interpolate_points(fields: np.ndarray, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Apply :func:`point_weights`: ``(..., lat, lon)`` -> ``(..., P)``, float32."""
    flat = fields.reshape(*fields.shape[:-2], -1)
    return (flat[..., index] * weight).sum(-1).astype(np.float32)
