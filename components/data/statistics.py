"""Normalisation statistics of an experiment, from its training split only.

An OSSE sample is everything the forecast can see at an init time ``t0`` -- the observations of
each source in the assimilation window ``(t0 - Δ, t0]`` (and optionally earlier windows) -- and
what it must predict: the truth of the nature run at ``t0 + k·Δt`` for ``k = 1..n_steps``, on a
gridded output grid and at the SYNOP station positions.

Inputs are observation tables, one :class:`pandas.DataFrame` per source, with the columns
``time`` (datetime64), ``latitude``, ``longitude`` (degrees; any longitude convention),
optionally ``station_id``, ``pressure`` (Pa, vertical coordinate of profile sources such as
radiosondes and aircraft) and ``channel`` (satellite channel number), and one float column per
observed variable, named by its CF standard name (NaN where not observed). A table with a
``channel`` column is *pivoted*: each ``(time, latitude, longitude[, pressure])`` becomes one point
with one variable per channel, named ``<variable>_ch<channel>`` (e.g.
``brightness_temperature_ch3``).

Normalisation (:func:`fit_statistics`, from the training period only):

* observations: ``(value - mean(band, layer)) / std(layer)`` per variable, where ``mean`` is the
  training-period mean in latitude bands (10 degrees by default) and, for sources with a
  pressure coordinate, in layers around ``pressure_levels`` (nearest in log-pressure), and
  ``std`` the standard deviation of the resulting anomalies per layer. The encoders thus see
  anomalies from a (zonal, per-layer) observation climatology, O(1) and comparable across
  layers (geopotential height spans 1.5 to 10 km over 850-250 hPa, its anomalies ~100 m).
* gridded truth: per channel ``(x - mean) / std`` with ``mean`` the training mean and ``std`` the
  standard deviation of the anomaly from the training climatology, so every channel's
  predictable part is O(1) and the MSE weighs channels alike.
* climatology: the training-period mean per grid point (``"gridpoint"``) or per latitude
  (``"zonal"``, the default: the Held-Suarez forcing is zonally symmetric, and the zonal mean of
  100 days has far less sampling noise). It is given to the model as a static gridded source
  (normalised, plus ``sin`` and ``cos`` of latitude: the convolutional processor has no other
  notion of latitude, which sets the Coriolis parameter) and used as its residual, so an untrained
  model forecasts climatology and the network learns anomalies.

Output grid: the truth is area-averaged over ``coarsen x coarsen`` blocks of the nature grid
(``coarsen=2``: T42's 64 x 128 Gaussian grid to 32 x 64, the latent resolution; latitude of a
block = the ``cos``-weighted mean of its rows, longitude = the mean of its columns). Verification
uses the same grid. Station targets are the *native* truth interpolated bilinearly (periodic in
longitude, nearest row beyond the outermost latitudes) to the station positions.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from obscast.processor.grid import latitude_weights
from obscast.components.data.fields import coarse_coordinates, coarsen_fields, stack_truth, truth_channels
from obscast.components.data.tables import _band_index, _layer_index, prepare_table, window_ends

#: Observations further than this many standard deviations from the observation climatology
#: are treated as gross errors (NaN) -- a guard only; run :func:`obscast.components.obs.qc.apply_qc` first.
GROSS_SIGMA = 8.0
#: Name of the gridded source holding the prior state, the climatology or the analysis at init
#: (see :func:`static_source_spec` and :meth:`ObsWindowDataset.static_batch`); the model's residual.
STATIC_SOURCE = "prior"
#: Extra static channels appended to the prior state.
STATIC_EXTRA = ("sin_latitude", "cos_latitude")
#: Static surface-height field of a gridded target with orography (CF ``surface_altitude``, m;
#: written by the nature run only in a world with a mountain). When the training target has
#: it, it is one more static channel after :data:`STATIC_EXTRA`, divided by
#: :data:`OROGRAPHY_SCALE_M`, taken from the target each dataset is built on (so a model can
#: be verified on a world whose mountain has moved).
OROGRAPHY_VARIABLE = "surface_altitude"
#: Fixed scale of the orography channel, m (not fitted: the same for every world).
OROGRAPHY_SCALE_M = 1000.0
#: Default layer centres (Pa) of profile sources: the standard levels 850..250 hPa.
DEFAULT_PRESSURE_LEVELS = (85000.0, 70000.0, 50000.0, 40000.0, 30000.0, 25000.0)
STATISTICS_VERSION = 1


def _source_statistics(
    df: pd.DataFrame, variables: list[str], levels: list[float] | None, band_deg: float
) -> dict[str, Any]:
    """Band/layer means and layer anomaly std of one source, robust to gross errors: values
    further than ``GROSS_SIGMA`` robust standard deviations (1.4826 MAD) from their band/layer
    median are left out."""
    n_bands = max(1, int(math.ceil(180.0 / band_deg)))
    n_layers = len(levels) if levels else 1
    layer = _layer_index(df["pressure"].to_numpy() if levels else np.zeros(len(df)), levels)
    band = _band_index(df["latitude"].to_numpy(), band_deg)
    vals = df[variables].to_numpy(float).copy()
    for k in range(n_layers):
        for b in range(n_bands):
            sel = (layer == k) & (band == b)
            if sel.sum() < 10:
                continue
            sub = vals[sel]
            with np.errstate(all="ignore"), _quiet():
                med = np.nanmedian(sub, axis=0)
                mad = 1.4826 * np.nanmedian(np.abs(sub - med), axis=0)
            bad = np.abs(sub - med) > GROSS_SIGMA * np.maximum(np.nan_to_num(mad), 1e-6)
            sub[bad] = np.nan
            vals[sel] = sub
    mean = np.full((n_bands, n_layers, len(variables)), np.nan)
    std = np.ones((n_layers, len(variables)))
    for k in range(n_layers):
        in_layer = layer == k
        with _quiet():
            layer_mean = np.nanmean(vals[in_layer], axis=0) if in_layer.any() else np.zeros(len(variables))
        for b in range(n_bands):
            sel = in_layer & (band == b)
            if sel.any():
                cnt = np.isfinite(vals[sel]).sum(0)
                m = np.nansum(vals[sel], axis=0) / np.maximum(cnt, 1)
                mean[b, k] = np.where(cnt >= 10, m, np.nan)
        # bands with too few obs fall back on the layer mean (or 0 where a variable is never seen)
        mean[:, k] = np.where(np.isfinite(mean[:, k]), mean[:, k], np.nan_to_num(layer_mean)[None])
        if in_layer.any():
            anom = vals[in_layer] - mean[band[in_layer], k]
            cnt = np.isfinite(anom).sum(0)
            sd = np.sqrt(np.nansum(anom**2, axis=0) / np.maximum(cnt, 1))
            std[k] = np.where((cnt >= 10) & (sd > 1e-6), sd, 1.0)
    return {
        "variables": list(variables),
        "pressure_levels": list(levels) if levels else None,
        "lat_band_deg": float(band_deg),
        "mean": mean.tolist(),
        "std": std.tolist(),
    }


@contextlib.contextmanager
def _quiet():
    """Silence numpy's RuntimeWarnings (all-NaN slices give NaN on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def fit_statistics(
    tables: Mapping[str, pd.DataFrame],
    truth: xr.Dataset,
    train_times: Sequence,
    *,
    window: pd.Timedelta = pd.Timedelta(hours=6),
    variables: Mapping[str, Sequence[str]] | None = None,
    pressure_levels: Mapping[str, Sequence[float]] | None = None,
    lat_band_deg: float = 10.0,
    coarsen: int = 2,
    climatology: str = "zonal",
    members: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Normalisation statistics and climatology from the training period only.

    Parameters
    ----------
    tables : mapping
        Source name to observation table. Only rows in the windows ``(t - window, t]`` of the
        training times ``t`` are used.
    truth : xarray.Dataset
        Nature run; only ``train_times`` are read.
    train_times : sequence
        Valid times of the training period (init and target times: the statistics describe the
        period, not the samples).
    window : pandas.Timedelta
        Observation window.
    variables : mapping, optional
        Per source, the value columns to use (default all, see :func:`prepare_table`).
    pressure_levels : mapping, optional
        Per source with a ``pressure`` column, layer centres in Pa (default
        :data:`DEFAULT_PRESSURE_LEVELS`).
    lat_band_deg : float
        Width of the latitude bands of the observation means (180 for one global mean).
    coarsen : int
        Output grid = nature grid area-averaged over ``coarsen x coarsen`` blocks.
    climatology : {"zonal", "gridpoint"}
        Climatology given to the model (see the module docstring).
    members : sequence of int, optional
        Training members of a target with a ``member`` dimension (all their ``train_times``
        are pooled); None for a target without one.

    Returns
    -------
    dict
        JSON-ready: ``version``, ``window_hours``, ``train_period`` (ISO start, end),
        ``grid`` {``channels``, ``mean``, ``std``, ``latitude``, ``longitude`` (output grid),
        ``climatology_kind``, ``climatology`` (channel, lat) or (channel, lat, lon) normalised,
        and ``orography_scale_m`` only when ``truth`` has :data:`OROGRAPHY_VARIABLE`},
        ``sources`` {name: {``variables``, ``pressure_levels``, ``lat_band_deg``, ``mean``
        (band, layer, variable), ``std`` (layer, variable)}}.

    Raises
    ------
    ValueError
        If ``train_times`` is empty or not in the nature run, or ``climatology`` is unknown.
    """
    if climatology not in ("zonal", "gridpoint"):
        raise ValueError(f"climatology must be 'zonal' or 'gridpoint', got {climatology!r}")
    times = pd.DatetimeIndex(train_times)
    if len(times) == 0:
        raise ValueError("no training times")
    missing = times.difference(pd.DatetimeIndex(truth["time"].values))
    if len(missing):
        raise ValueError(f"{len(missing)} training times not in the gridded target, e.g. {missing[0]}")
    lat = np.asarray(truth["latitude"].values, float)
    lon = np.asarray(truth["longitude"].values, float)
    flip = lat[0] > lat[-1]
    if "member" in truth.dims:
        if not members:
            raise ValueError("the gridded target has a member dimension: give the training members")
        data = np.concatenate([stack_truth(truth.sel(member=m), times) for m in members])
    else:
        data = stack_truth(truth, times)
    if flip:
        data, lat = data[..., ::-1, :], lat[::-1]
    coarse = coarsen_fields(data, lat, coarsen)
    clat, clon = coarse_coordinates(lat, lon, coarsen)
    mean = coarse.mean(axis=(0, 2, 3), dtype=np.float64)
    clim = coarse.mean(axis=0, dtype=np.float64)  # (channel, lat, lon)
    if climatology == "zonal":
        clim = np.broadcast_to(clim.mean(axis=-1, keepdims=True), clim.shape)
    anom = coarse - clim[None]
    w = latitude_weights(clat)[None, None, :, None]
    std = np.sqrt((anom.astype(np.float64) ** 2 * w).sum(axis=(0, 2, 3)) / (w.sum() * anom.shape[0] * anom.shape[3]))
    std = np.maximum(std, 1e-6)
    clim_norm = (clim - mean[:, None, None]) / std[:, None, None]
    if climatology == "zonal":
        clim_norm = clim_norm[..., 0]
    # observation statistics, training windows only
    ends = set(window_ends(times, window).tolist()) | set(pd.DatetimeIndex(times).as_unit("ns").asi8.tolist())
    sources, excluded = {}, {}
    for name, table in sorted(tables.items()):
        df, vars_ = prepare_table(table, None if variables is None else variables.get(name), name=name)
        if "pressure" in df:
            levels = list((pressure_levels or {}).get(name, DEFAULT_PRESSURE_LEVELS))
        else:
            levels = None
        in_train = np.isin(window_ends(df["time"], window), np.fromiter(ends, np.int64))
        if not in_train.any():
            # No observation to normalise it by or to learn its encoder from: the source is
            # left out of the model (and recorded), never fed untrained.
            excluded[name] = f"no observations in the training period ({len(df)} rows elsewhere)"
            continue
        sources[name] = _source_statistics(df[in_train], vars_, levels, lat_band_deg)
    return {
        "version": STATISTICS_VERSION,
        "window_hours": pd.Timedelta(window) / pd.Timedelta(hours=1),
        "train_period": [times.min().isoformat(), times.max().isoformat()],
        "grid": {
            "channels": truth_channels(truth),
            "mean": mean.astype(np.float32).tolist(),
            "std": std.astype(np.float32).tolist(),
            "coarsen": int(coarsen),
            "latitude": clat.tolist(),
            "longitude": clon.tolist(),
            "climatology_kind": climatology,
            "climatology": np.asarray(clim_norm, np.float32).tolist(),
            **({"orography_scale_m": OROGRAPHY_SCALE_M} if OROGRAPHY_VARIABLE in truth.data_vars else {}),
        },
        "sources": sources,
        "excluded_sources": excluded,
    }


def climatology_field(statistics: Mapping[str, Any]) -> np.ndarray:
    """The normalised climatology of ``statistics`` as (channel, lat, lon) float32."""
    g = statistics["grid"]
    clim = np.asarray(g["climatology"], np.float32)
    if clim.ndim == 2:
        clim = np.repeat(clim[..., None], len(g["longitude"]), axis=-1)
    return clim


def orography_field(truth: xr.Dataset, statistics: Mapping[str, Any]) -> np.ndarray | None:
    """The orography channel of the static source for gridded target ``truth``.

    Parameters
    ----------
    truth : xarray.Dataset
        Gridded target; its :data:`OROGRAPHY_VARIABLE` (latitude, longitude), m, if any.
    statistics : dict
        From :func:`fit_statistics`; sets the output grid (``coarsen``) and whether the model
        has an orography channel (``grid.orography_scale_m``).

    Returns
    -------
    numpy.ndarray or None
        None when the model has no orography channel (the training target was flat); else
        (lat, lon) float32 surface height on the output grid (area-averaged like the truth,
        latitudes ascending) divided by ``orography_scale_m``; zeros when ``truth`` has no
        :data:`OROGRAPHY_VARIABLE` (a nature run stores none for a flat world).
    """
    g = statistics["grid"]
    scale = g.get("orography_scale_m")
    if scale is None:
        return None
    shape = (len(g["latitude"]), len(g["longitude"]))
    if OROGRAPHY_VARIABLE not in truth.data_vars:
        return np.zeros(shape, np.float32)
    h = np.asarray(truth[OROGRAPHY_VARIABLE].transpose("latitude", "longitude").values, np.float32)
    lat = np.asarray(truth["latitude"].values, float)
    if lat[0] > lat[-1]:
        h, lat = h[::-1], lat[::-1]
    out = coarsen_fields(np.ascontiguousarray(h), lat, int(g["coarsen"])) / np.float32(scale)
    if out.shape != shape:
        raise ValueError(f"{OROGRAPHY_VARIABLE} of shape {h.shape} coarsens to {out.shape}, not the output grid {shape}")
    return out.astype(np.float32)


def static_fields(statistics: Mapping[str, Any], orography: np.ndarray | None = None) -> np.ndarray:
    """Input of the static source: normalised climatology plus sin/cos latitude (plus the
    orography channel when the model has one), (channel + 2 [+ 1], lat, lon) float32 on the
    output grid.

    Parameters
    ----------
    statistics : dict
        From :func:`fit_statistics`.
    orography : numpy.ndarray, optional
        (lat, lon) from :func:`orography_field`; required exactly when ``statistics`` has
        ``grid.orography_scale_m``.

    Raises
    ------
    ValueError
        If the orography channel is missing or unexpected.
    """
    g = statistics["grid"]
    clim = climatology_field(statistics)
    phi = np.deg2rad(np.asarray(g["latitude"], np.float32))[:, None] * np.ones((1, clim.shape[-1]), np.float32)
    parts = [clim, np.sin(phi)[None], np.cos(phi)[None]]
    if ("orography_scale_m" in g) != (orography is not None):
        raise ValueError(
            f"the model {'has' if 'orography_scale_m' in g else 'has no'} {OROGRAPHY_VARIABLE} static channel "
            f"but orography was {'not ' if orography is None else ''}given (see orography_field)"
        )
    if orography is not None:
        parts.append(np.asarray(orography, np.float32)[None])
    return np.concatenate(parts, axis=0).astype(np.float32)


def static_source_spec(statistics: Mapping[str, Any]) -> dict[str, Any]:
    """ObsCastModel source spec of the static climatology source (a gridded encoder)."""
    g = statistics["grid"]
    return {
        "type": "gridded",
        "variables": list(g["channels"]) + list(STATIC_EXTRA) + ([OROGRAPHY_VARIABLE] if "orography_scale_m" in g else []),
        "in_lat": list(g["latitude"]),
        "in_lon": list(g["longitude"]),
    }


def source_key(name: str, lag: int) -> str:
    """Input name of source ``name`` in the window ``lag`` windows before the latest one."""
    return name if lag == 0 else f"{name}_lag{lag}"
