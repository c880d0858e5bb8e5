"""Observation windows and truth targets for training on an OSSE (observing-system simulation).

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
import torch
import xarray as xr

#: Data variables of the nature run on model levels, and its surface variable.
LEVEL_VARIABLES = ("air_temperature", "eastward_wind", "northward_wind", "geopotential")
SURFACE_VARIABLES = ("surface_air_pressure",)
#: Columns of observation tables that are coordinates or metadata, never values.
COORDINATE_COLUMNS = ("time", "latitude", "longitude", "station_id", "pressure", "height", "channel", "surface_altitude")
#: Value columns used by default per source (kind) name; other sources use every numeric
#: non-coordinate column that is not derived (:data:`DERIVED_COLUMNS`) and not all-NaN.
DEFAULT_VARIABLES: dict[str, tuple[str, ...]] = {
    "synop": ("surface_air_pressure", "air_temperature", "eastward_wind", "northward_wind"),
    "temp": ("air_temperature", "eastward_wind", "northward_wind", "geopotential_height"),
    "aircraft": ("air_temperature", "eastward_wind", "northward_wind"),
}
#: Columns that duplicate others (wind speed and direction are the same as u, v).
DERIVED_COLUMNS = ("wind_speed", "wind_from_direction")
#: Observations further than this many standard deviations from the observation climatology
#: are treated as gross errors (NaN) -- a guard only; run :func:`components.qc.apply_qc` first.
GROSS_SIGMA = 8.0
#: Name of the static gridded source holding the climatology (see :func:`static_source_spec`).
STATIC_SOURCE = "climatology"
#: Extra static channels appended to the climatology.
STATIC_EXTRA = ("sin_latitude", "cos_latitude")
#: Default layer centres (Pa) of profile sources: the standard levels 850..250 hPa.
DEFAULT_PRESSURE_LEVELS = (85000.0, 70000.0, 50000.0, 40000.0, 30000.0, 25000.0)
STATISTICS_VERSION = 1


# ----------------------------------------------------------------------------- truth helpers
def level_channel(variable: str, sigma: float) -> str:
    """Channel name of a variable on a sigma level, e.g. ``air_temperature_sigma045``."""
    return f"{variable}_sigma{int(round(float(sigma) * 100)):03d}"


def truth_channels(truth: xr.Dataset) -> list[str]:
    """Output channels of a nature run: level variables (variable-major, levels in store order),
    then the surface variables present."""
    levels = truth["level"].values
    out = [level_channel(v, s) for v in LEVEL_VARIABLES if v in truth for s in levels]
    return out + [v for v in SURFACE_VARIABLES if v in truth]


def stack_truth(truth: xr.Dataset, times: Sequence | None = None) -> np.ndarray:
    """Truth as a float32 array (time, channel, lat, lon) in the order of :func:`truth_channels`.

    Parameters
    ----------
    truth : xarray.Dataset
        Nature run, dims (time, level, latitude, longitude) and (time, latitude, longitude).
    times : sequence, optional
        Valid times to select (default all).
    """
    ds = truth if times is None else truth.sel(time=pd.DatetimeIndex(times))
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
    """Bilinear weights of points on a lat-lon grid (periodic longitude, nearest row beyond the
    outermost latitudes).

    Parameters
    ----------
    src_lat : numpy.ndarray
        (n_lat,) strictly ascending latitudes, degrees.
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
    """
    src_lat, src_lon = np.asarray(src_lat, float), np.asarray(src_lon, float)
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    i = np.clip(np.searchsorted(src_lat, lat, side="right") - 1, 0, src_lat.size - 2)
    ti = np.clip((lat - src_lat[i]) / (src_lat[i + 1] - src_lat[i]), 0.0, 1.0)
    n = src_lon.size
    ext = np.append(src_lon, src_lon[0] + 360.0)
    x = src_lon[0] + np.mod(lon - src_lon[0], 360.0)
    j = np.clip(np.searchsorted(ext, x, side="right") - 1, 0, n - 1)
    tj = np.clip((x - ext[j]) / (ext[j + 1] - ext[j]), 0.0, 1.0)
    j1 = (j + 1) % n
    index = np.stack([i * n + j, i * n + j1, (i + 1) * n + j, (i + 1) * n + j1], axis=1)
    weight = np.stack([(1 - ti) * (1 - tj), (1 - ti) * tj, ti * (1 - tj), ti * tj], axis=1)
    return index.astype(np.int64), weight.astype(np.float32)


def interpolate_points(fields: np.ndarray, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Apply :func:`point_weights`: ``(..., lat, lon)`` -> ``(..., P)``."""
    flat = fields.reshape(*fields.shape[:-2], -1)
    return (flat[..., index] * weight).sum(-1).astype(np.float32)


# ----------------------------------------------------------------------------- obs tables
def prepare_table(
    table: pd.DataFrame, variables: Sequence[str] | None = None, name: str | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Validate an observation table, pivot satellite channels into variables, fill pressure.

    Idempotent: a prepared table can be passed again (e.g. prepare once, then give the result
    to both :func:`fit_statistics` and :class:`ObsWindowDataset`).

    Parameters
    ----------
    table : pandas.DataFrame
        Observation table (see the module docstring).
    variables : sequence of str, optional
        Value columns to keep (after pivoting, e.g. ``brightness_temperature_ch1``). Default:
        :data:`DEFAULT_VARIABLES` of ``name``, else every numeric column that is neither a
        coordinate, nor derived, nor all-NaN, in table order.
    name : str, optional
        Source name, to look up the default variables.

    Returns
    -------
    table : pandas.DataFrame
        Columns ``time``, ``latitude``, ``longitude`` (in [-180, 180)), ``pressure`` [Pa] when
        the table has ``pressure`` or ``height`` (NaN pressure filled from the height through
        the ICAO standard atmosphere, :func:`encoders.setconv.pressure_from_height`), and the
        variables as float64; rows without a valid time, position or any value dropped.
    variables : list of str

    Raises
    ------
    ValueError
        If a required column or a requested variable is missing, or no value column remains.
    """
    missing = [c for c in ("time", "latitude", "longitude") if c not in table]
    if missing:
        raise ValueError(f"observation table lacks columns {missing} (has {list(table.columns)})")
    df = table
    value_cols = [
        c for c in df.columns
        if c not in COORDINATE_COLUMNS and c not in DERIVED_COLUMNS and pd.api.types.is_numeric_dtype(df[c])
    ]
    if "height" in df:
        from encoders.setconv import pressure_from_height

        p_h = pressure_from_height(np.array(df["height"], dtype=np.float64)).numpy()
        p = df["pressure"].to_numpy(np.float64) if "pressure" in df else np.full(len(df), np.nan)
        df = df.assign(pressure=np.where(np.isfinite(p), p, p_h))
    keys = ["time", "latitude", "longitude"] + (["pressure"] if "pressure" in df else [])
    if "channel" in df:
        df, value_cols = _pivot_channels(df, keys, value_cols)
    if variables is None:
        default = DEFAULT_VARIABLES.get(name or "")
        if default is not None and all(v in df for v in default):
            variables = list(default)
        else:
            variables = [c for c in value_cols if df[c].notna().any()]
    variables = list(variables)
    absent = [v for v in variables if v not in df]
    if absent:
        raise ValueError(f"variables {absent} not in the observation table (value columns: {value_cols})")
    if not variables:
        raise ValueError("observation table has no value column")
    out = pd.DataFrame(
        {
            "time": pd.to_datetime(df["time"]).to_numpy(),
            "latitude": df["latitude"].to_numpy(np.float64),
            "longitude": np.mod(df["longitude"].to_numpy(np.float64) + 180.0, 360.0) - 180.0,
        }
    )
    if "pressure" in df:
        out["pressure"] = df["pressure"].to_numpy(np.float64)
    for v in variables:
        out[v] = df[v].to_numpy(np.float64)
    ok = out["time"].notna() & np.isfinite(out["latitude"]) & np.isfinite(out["longitude"]) & out[variables].notna().any(axis=1)
    return out[ok.to_numpy()].reset_index(drop=True), variables


def _pivot_channels(df: pd.DataFrame, keys: list[str], value_cols: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """One row per distinct ``keys`` with a column ``<variable>_ch<channel>`` per value column and
    channel (mean of duplicates, NaN where a channel is absent)."""
    df = df[df["channel"].notna()]
    group = df.groupby(keys, sort=True, dropna=False).ngroup().to_numpy()
    channels = np.sort(df["channel"].unique())
    cidx = np.searchsorted(channels, df["channel"].to_numpy())
    n = int(group.max()) + 1 if len(group) else 0
    first = np.full(n, len(df), np.int64)
    np.minimum.at(first, group, np.arange(len(df)))
    out = {k: df[k].to_numpy()[first] for k in keys}
    names = []
    for v in value_cols:
        vals = df[v].to_numpy(float)
        for ci, c in enumerate(channels):
            sel = (cidx == ci) & np.isfinite(vals)
            s = np.bincount(group[sel], weights=vals[sel], minlength=n)
            m = np.bincount(group[sel], minlength=n)
            name = f"{v}_ch{int(c)}"
            out[name] = np.where(m > 0, s / np.maximum(m, 1), np.nan)
            names.append(name)
    return pd.DataFrame(out), names


def _layer_index(pressure: np.ndarray, levels: Sequence[float] | None) -> np.ndarray:
    """Nearest layer in log-pressure (0 everywhere without levels; -1 for unusable pressure)."""
    if not levels:
        return np.zeros(len(pressure), np.int64)
    p = np.asarray(pressure, float)
    ok = np.isfinite(p) & (p > 0)
    logp = np.log(np.where(ok, p, 1.0))
    idx = np.abs(logp[:, None] - np.log(np.asarray(levels, float))[None]).argmin(1)
    return np.where(ok, idx, -1)


def _band_index(latitude: np.ndarray, band_deg: float) -> np.ndarray:
    n = max(1, int(math.ceil(180.0 / band_deg)))
    return np.clip(((np.asarray(latitude, float) + 90.0) // band_deg).astype(np.int64), 0, n - 1)


def window_ends(times: pd.Series | np.ndarray, window: pd.Timedelta) -> np.ndarray:
    """End of the window ``(end - window, end]`` holding each time (ends at multiples of ``window``
    since 1970-01-01), as int64 nanoseconds."""
    t = pd.DatetimeIndex(times).as_unit("ns").asi8
    w = int(pd.Timedelta(window).value)
    return -((-t) // w) * w


# ----------------------------------------------------------------------------- statistics
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

    Returns
    -------
    dict
        JSON-ready: ``version``, ``window_hours``, ``train_period`` (ISO start, end),
        ``grid`` {``channels``, ``mean``, ``std``, ``latitude``, ``longitude`` (output grid),
        ``climatology_kind``, ``climatology`` (channel, lat) or (channel, lat, lon) normalised},
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
        raise ValueError(f"{len(missing)} training times not in the nature run, e.g. {missing[0]}")
    lat = np.asarray(truth["latitude"].values, float)
    lon = np.asarray(truth["longitude"].values, float)
    flip = lat[0] > lat[-1]
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
    w = np.cos(np.deg2rad(clat))[None, None, :, None]
    std = np.sqrt((anom.astype(np.float64) ** 2 * w).sum(axis=(0, 2, 3)) / (w.sum() * anom.shape[0] * anom.shape[3]))
    std = np.maximum(std, 1e-6)
    clim_norm = (clim - mean[:, None, None]) / std[:, None, None]
    if climatology == "zonal":
        clim_norm = clim_norm[..., 0]
    # observation statistics, training windows only
    ends = set(window_ends(times, window).tolist()) | set(pd.DatetimeIndex(times).as_unit("ns").asi8.tolist())
    sources = {}
    for name, table in sorted(tables.items()):
        df, vars_ = prepare_table(table, None if variables is None else variables.get(name), name=name)
        if "pressure" in df:
            levels = list((pressure_levels or {}).get(name, DEFAULT_PRESSURE_LEVELS))
        else:
            levels = None
        in_train = np.isin(window_ends(df["time"], window), np.fromiter(ends, np.int64))
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
        },
        "sources": sources,
    }


def climatology_field(statistics: Mapping[str, Any]) -> np.ndarray:
    """The normalised climatology of ``statistics`` as (channel, lat, lon) float32."""
    g = statistics["grid"]
    clim = np.asarray(g["climatology"], np.float32)
    if clim.ndim == 2:
        clim = np.repeat(clim[..., None], len(g["longitude"]), axis=-1)
    return clim


def static_fields(statistics: Mapping[str, Any]) -> np.ndarray:
    """Input of the static source: normalised climatology plus sin/cos latitude,
    (channel + 2, lat, lon) float32 on the output grid."""
    g = statistics["grid"]
    clim = climatology_field(statistics)
    phi = np.deg2rad(np.asarray(g["latitude"], np.float32))[:, None] * np.ones((1, clim.shape[-1]), np.float32)
    return np.concatenate([clim, np.sin(phi)[None], np.cos(phi)[None]], axis=0).astype(np.float32)


def static_source_spec(statistics: Mapping[str, Any]) -> dict[str, Any]:
    """ObsCastModel source spec of the static climatology source (a gridded encoder)."""
    g = statistics["grid"]
    return {
        "type": "gridded",
        "variables": list(g["channels"]) + list(STATIC_EXTRA),
        "in_lat": list(g["latitude"]),
        "in_lon": list(g["longitude"]),
    }


def source_key(name: str, lag: int) -> str:
    """Input name of source ``name`` in the window ``lag`` windows before the latest one."""
    return name if lag == 0 else f"{name}_lag{lag}"


# ----------------------------------------------------------------------------- dataset
class _SourceCache:
    """One source's normalised observations sorted by window, as flat arrays plus offsets."""

    def __init__(self, df: pd.DataFrame, stats: Mapping[str, Any], window: pd.Timedelta, superob: tuple[int, int] | None):
        variables = list(stats["variables"])
        levels = stats["pressure_levels"]
        self.variables = variables
        self.has_pressure = levels is not None
        ends = window_ends(df["time"], window)
        lat = df["latitude"].to_numpy(float)
        lon = df["longitude"].to_numpy(float)
        vals = df[variables].to_numpy(float)
        pres = df["pressure"].to_numpy(float) if self.has_pressure else np.full(len(df), np.nan)
        layer = _layer_index(pres, levels) if self.has_pressure else np.zeros(len(df), np.int64)
        if superob is not None:
            ends, lat, lon, vals, pres, layer = _superob(ends, lat, lon, vals, pres, layer, superob)
        band = _band_index(lat, float(stats["lat_band_deg"]))
        mean = np.asarray(stats["mean"], float)
        std = np.asarray(stats["std"], float)
        lk = np.maximum(layer, 0)
        norm = (vals - mean[band, lk]) / std[lk]
        norm[layer < 0] = np.nan
        norm[np.abs(norm) > GROSS_SIGMA] = np.nan  # gross-error guard
        order = np.argsort(ends, kind="stable")
        self.ends = ends[order]
        self.lat = lat[order].astype(np.float32)
        self.lon = lon[order].astype(np.float32)
        self.values = norm[order].astype(np.float32)
        self.pressure = pres[order].astype(np.float32)
        uniq, start = np.unique(self.ends, return_index=True)
        stop = np.append(start[1:], len(self.ends))
        self.slices = {int(u): (int(a), int(b)) for u, a, b in zip(uniq, start, stop)}

    def window(self, end_ns: int) -> dict[str, torch.Tensor]:
        a, b = self.slices.get(int(end_ns), (0, 0))
        out = {
            "latitude": torch.from_numpy(self.lat[a:b]),
            "longitude": torch.from_numpy(self.lon[a:b]),
            "values": torch.from_numpy(self.values[a:b]),
        }
        if self.has_pressure:
            out["pressure"] = torch.from_numpy(self.pressure[a:b])
        return out


def _superob(ends, lat, lon, vals, pres, layer, shape):
    """Average observations per (window, cell of a regular ``shape`` grid, layer): NaN-aware
    mean of values, mean unit vector of positions, geometric mean of pressure."""
    n_lat, n_lon = shape
    i = np.clip(((lat + 90.0) / 180.0 * n_lat).astype(np.int64), 0, n_lat - 1)
    j = np.mod(((lon + 180.0) / 360.0 * n_lon).astype(np.int64), n_lon)
    _, key_ends = np.unique(ends, return_inverse=True)
    key = ((key_ends.astype(np.int64) * n_lat + i) * n_lon + j) * (layer.max(initial=0) + 2) + (layer + 1)
    uniq, inv = np.unique(key, return_inverse=True)
    m = len(uniq)
    cnt = np.bincount(inv, minlength=m).astype(float)
    phi, lam = np.deg2rad(lat), np.deg2rad(lon)
    xyz = [np.bincount(inv, weights=c, minlength=m) for c in (np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi))]
    new_lat = np.rad2deg(np.arctan2(xyz[2], np.hypot(xyz[0], xyz[1])))
    new_lon = np.rad2deg(np.arctan2(xyz[1], xyz[0]))
    new_vals = np.empty((m, vals.shape[1]))
    for c in range(vals.shape[1]):
        ok = np.isfinite(vals[:, c])
        s = np.bincount(inv[ok], weights=vals[ok, c], minlength=m)
        n = np.bincount(inv[ok], minlength=m)
        new_vals[:, c] = np.where(n > 0, s / np.maximum(n, 1), np.nan)
    okp = np.isfinite(pres) & (pres > 0)
    lp = np.bincount(inv[okp], weights=np.log(pres[okp]), minlength=m)
    np_ = np.bincount(inv[okp], minlength=m)
    new_pres = np.where(np_ > 0, np.exp(lp / np.maximum(np_, 1)), np.nan)
    first = np.zeros(m, np.int64)
    first[inv[::-1]] = np.arange(len(inv))[::-1]
    del cnt
    return ends[first], new_lat, new_lon, new_vals, new_pres, layer[first]


class ObsWindowDataset(torch.utils.data.Dataset):
    """OSSE samples: observation windows before an init time and the truth after it.

    Parameters
    ----------
    tables : mapping
        Source name to observation table (see the module docstring); sources absent from
        ``statistics["sources"]`` are ignored.
    truth : xarray.Dataset
        Nature run (see :mod:`components.nature`), loaded into memory for the needed times.
    init_times : sequence
        Init times (multiples of ``window``); each needs the truth at ``t0`` and
        ``t0 + k·step``, k = 1..n_steps.
    statistics : dict
        From :func:`fit_statistics` on the training period.
    n_steps : int
        Rollout length of the targets, >= 1.
    step : pandas.Timedelta
        Δt of one model step (6 h).
    history : int
        Number of observation windows per source: window ``h`` (h = 0..history-1) is
        ``(t0 - (h + 1) Δ, t0 - h Δ]`` and appears in the inputs as
        :func:`source_key` ``(name, h)``.
    station_points : tuple of array-like, optional
        ``(latitude, longitude)`` of the station targets (degrees); default the distinct
        positions of the ``synop`` table (none without one).
    station_channels : sequence of str, optional
        Output channels interpolated to the stations; default the SYNOP quantities
        ``surface_air_pressure`` and T, u, v at the lowest sigma level.
    superob : mapping, optional
        Source name to a ``(n_lat, n_lon)`` grid on which that source's observations are
        averaged per window, cell and layer (thins dense satellite swaths; each superob keeps
        its mean position).

    Attributes
    ----------
    init_times : pandas.DatetimeIndex
    channels, station_channels : list of str
    station_latitude, station_longitude : torch.Tensor
        (P,) degrees.
    out_latitude, out_longitude : numpy.ndarray
        Output grid, degrees.
    truth : torch.Tensor
        (n_times, channel, lat, lon) normalised truth on the output grid at the needed times.
    station_truth : torch.Tensor
        (n_times, P, station_channel) normalised truth at the stations.
    static : torch.Tensor
        (channel + 2, lat, lon) input of the static source (:func:`static_fields`).

    Items are ``(inputs, targets, station_targets)``: ``inputs`` maps each source key to an obs
    dict of unbatched tensors (``latitude``, ``longitude`` (N,), ``values`` (N, V) NaN-missing,
    ``pressure`` (N,) for profile sources) plus :data:`STATIC_SOURCE` -> (C + 2, lat, lon);
    ``targets`` is (n_steps, C, lat, lon) and ``station_targets`` (n_steps, P, C_st), both
    normalised, step ``k`` valid at ``t0 + (k + 1) step``. Batch with :func:`collate_obs`.

    Raises
    ------
    ValueError
        If ``n_steps`` < 1, an init time is not a multiple of the window, a needed truth time
        is missing, or a station channel is unknown.
    """

    def __init__(
        self,
        tables: Mapping[str, pd.DataFrame],
        truth: xr.Dataset,
        init_times: Sequence,
        statistics: Mapping[str, Any],
        n_steps: int = 1,
        step: pd.Timedelta = pd.Timedelta(hours=6),
        history: int = 1,
        station_points: tuple[Sequence[float], Sequence[float]] | None = None,
        station_channels: Sequence[str] | None = None,
        superob: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.statistics = statistics
        self.n_steps = int(n_steps)
        self.step = pd.Timedelta(step)
        self.window = pd.Timedelta(hours=float(statistics["window_hours"]))
        self.history = int(history)
        self.init_times = pd.DatetimeIndex(init_times).as_unit("ns")
        w = int(self.window.value)
        if (self.init_times.asi8 % w != 0).any():
            raise ValueError(f"init times must be multiples of the {self.window} window")
        g = statistics["grid"]
        self.channels = list(g["channels"])
        self.coarsen = int(g["coarsen"])
        self.out_latitude = np.asarray(g["latitude"], float)
        self.out_longitude = np.asarray(g["longitude"], float)
        self.mean = np.asarray(g["mean"], np.float32)
        self.std = np.asarray(g["std"], np.float32)
        # truth at all needed times
        offsets = [k * self.step for k in range(self.n_steps + 1)]
        needed = pd.DatetimeIndex(sorted({t + o for t in self.init_times for o in offsets})).as_unit("ns")
        have = pd.DatetimeIndex(truth["time"].values).as_unit("ns")
        lacking = needed.difference(have)
        if len(lacking):
            raise ValueError(f"{len(lacking)} truth times needed by the samples are not in the nature run, e.g. {lacking[0]}")
        data = stack_truth(truth, needed)
        lat = np.asarray(truth["latitude"].values, float)
        lon = np.asarray(truth["longitude"].values, float)
        if lat[0] > lat[-1]:
            data, lat = data[..., ::-1, :], lat[::-1]
        data = np.ascontiguousarray(data)
        coarse = coarsen_fields(data, lat, self.coarsen)
        self.truth = torch.from_numpy((coarse - self.mean[:, None, None]) / self.std[:, None, None])
        self._time_pos = {int(t): i for i, t in enumerate(needed.asi8)}
        self._targets = torch.tensor(
            [[self._time_pos[int((t + o).value)] for o in offsets] for t in self.init_times], dtype=torch.long
        ).reshape(len(self.init_times), self.n_steps + 1)
        # stations
        if station_points is None:
            syn = tables.get("synop")
            if syn is not None and len(syn):
                pos = syn[["latitude", "longitude"]].astype(float).drop_duplicates()
                station_points = (pos["latitude"].to_numpy(), pos["longitude"].to_numpy())
            else:
                station_points = (np.zeros(0), np.zeros(0))
        slat = np.asarray(station_points[0], float)
        slon = np.mod(np.asarray(station_points[1], float) + 180.0, 360.0) - 180.0
        if station_channels is None:
            lowest = float(np.max(truth["level"].values))
            station_channels = [c for c in ["surface_air_pressure"] + [level_channel(v, lowest) for v in LEVEL_VARIABLES[:3]] if c in self.channels]
        unknown = [c for c in station_channels if c not in self.channels]
        if unknown:
            raise ValueError(f"station channels {unknown} not among {self.channels}")
        self.station_channels = list(station_channels)
        ci = [self.channels.index(c) for c in self.station_channels]
        idx, wgt = point_weights(lat, lon, slat, slon)
        st = interpolate_points(data[:, ci], idx, wgt)  # (time, C_st, P)
        st = (st - self.mean[ci, None]) / self.std[ci, None]
        self.station_truth = torch.from_numpy(np.ascontiguousarray(st.transpose(0, 2, 1)))
        self.station_latitude = torch.tensor(slat, dtype=torch.float32)
        self.station_longitude = torch.tensor(slon, dtype=torch.float32)
        # observations
        self.static = torch.from_numpy(static_fields(statistics))
        self.sources: dict[str, _SourceCache] = {}
        for name, table in sorted(tables.items()):
            if name not in statistics["sources"]:
                continue
            st_src = statistics["sources"][name]
            df, _ = prepare_table(table, st_src["variables"], name=name)
            self.sources[name] = _SourceCache(df, st_src, self.window, (superob or {}).get(name))

    @property
    def source_keys(self) -> list[str]:
        """Input names of the observation sources (all lags)."""
        return [source_key(n, h) for n in self.sources for h in range(self.history)]

    def __len__(self) -> int:
        return len(self.init_times)

    def window_end(self, idx: int, lag: int = 0) -> int:
        """End (int64 ns since 1970) of the observation window ``lag`` of sample ``idx``."""
        return int(self.init_times[idx].value) - lag * int(self.window.value)

    def window_ends(self) -> list[int]:
        """All window ends used by the samples (every lag), sorted."""
        return sorted({self.window_end(i, h) for i in range(len(self)) for h in range(self.history)})

    def observations(self, name: str, end: int) -> dict[str, torch.Tensor]:
        """Unbatched obs dict of source ``name`` in the window ending at ``end`` (ns)."""
        return self.sources[name].window(end)

    def __getitem__(self, idx: int):
        t0 = int(self.init_times[idx].value)
        w = int(self.window.value)
        inputs: dict[str, Any] = {}
        for name, cache in self.sources.items():
            for h in range(self.history):
                inputs[source_key(name, h)] = cache.window(t0 - h * w)
        inputs[STATIC_SOURCE] = self.static
        pos = self._targets[idx]
        return inputs, self.truth[pos[1:]], self.station_truth[pos[1:]]

    def targets(self, indices: Sequence[int], n_steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised targets of several samples without their inputs: (B, n_steps, C, lat, lon)
        on the grid and (B, n_steps, P, C_st) at the stations."""
        n = self.n_steps if n_steps is None else int(n_steps)
        pos = self._targets[torch.as_tensor(list(indices), dtype=torch.long)][:, 1 : n + 1]
        return self.truth[pos], self.station_truth[pos]

    def initial_truth(self, idx: int | slice | Sequence[int]) -> torch.Tensor:
        """Normalised truth at the init time(s): (C, lat, lon) or (n, C, lat, lon) (persistence)."""
        return self.truth[self._targets[idx, 0]]

    def initial_station_truth(self, idx: int | slice | Sequence[int]) -> torch.Tensor:
        """Normalised station truth at the init time(s): (P, C_st) or (n, P, C_st)."""
        return self.station_truth[self._targets[idx, 0]]

    def denormalise(self, x: torch.Tensor, channel_axis: int = -3, channels: Sequence[str] | None = None) -> torch.Tensor:
        """Physical units from normalised values along ``channel_axis`` (default: grid channels;
        pass ``channels=dataset.station_channels`` and ``channel_axis=-1`` for stations)."""
        ci = [self.channels.index(c) for c in (channels or self.channels)]
        shape = [1] * x.ndim
        shape[channel_axis] = -1
        std = torch.as_tensor(self.std[ci], dtype=x.dtype, device=x.device).reshape(shape)
        mean = torch.as_tensor(self.mean[ci], dtype=x.dtype, device=x.device).reshape(shape)
        return x * std + mean

    def station_points(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(latitude, longitude)`` (batch, P) for ``ObsCastModel.forward(station_points=...)``."""
        return self.station_latitude.expand(batch, -1), self.station_longitude.expand(batch, -1)


def pad_obs(items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Batch unbatched obs dicts (``latitude``, ``longitude`` (N,), ``values`` (N, V), optional
    ``pressure`` (N,)) by padding to the largest N: latitude/longitude 0, values and pressure
    NaN, ``mask`` False on padding."""
    n = max(int(it["latitude"].shape[0]) for it in items)
    v = items[0]["values"].shape[-1]
    bsz = len(items)
    out = {
        "latitude": torch.zeros(bsz, n),
        "longitude": torch.zeros(bsz, n),
        "values": torch.full((bsz, n, v), float("nan")),
        "mask": torch.zeros(bsz, n, dtype=torch.bool),
    }
    if "pressure" in items[0]:
        out["pressure"] = torch.full((bsz, n), float("nan"))
    for i, it in enumerate(items):
        m = it["latitude"].shape[0]
        out["latitude"][i, :m] = it["latitude"]
        out["longitude"][i, :m] = it["longitude"]
        out["values"][i, :m] = it["values"]
        out["mask"][i, :m] = True
        if "pressure" in out:
            out["pressure"][i, :m] = it["pressure"]
    return out


def collate_obs(batch: Sequence[tuple[dict, torch.Tensor, torch.Tensor]]):
    """Batch :class:`ObsWindowDataset` items, padding each source's points to the batch maximum
    (:func:`pad_obs`).

    Returns
    -------
    inputs : dict
        Per observation source: ``latitude``, ``longitude`` (B, N) (0 on padding), ``values``
        (B, N, V) (NaN on padding), ``mask`` (B, N) bool, ``pressure`` (B, N) (NaN on padding)
        when present; the static source stacked to (B, C, lat, lon).
    targets : torch.Tensor
        (B, n_steps, C, lat, lon).
    station_targets : torch.Tensor
        (B, n_steps, P, C_st).
    """
    inputs: dict[str, Any] = {}
    for key in batch[0][0]:
        items = [b[0][key] for b in batch]
        inputs[key] = torch.stack(items) if isinstance(items[0], torch.Tensor) else pad_obs(items)
    return inputs, torch.stack([b[1] for b in batch]), torch.stack([b[2] for b in batch])


def split_times(
    times: Sequence, fractions: Sequence[float] = (0.7, 0.1, 0.2), n_steps: Sequence[int] | int = 20,
    step: pd.Timedelta = pd.Timedelta(hours=6), history: int = 1, window: pd.Timedelta = pd.Timedelta(hours=6),
) -> list[dict[str, pd.DatetimeIndex]]:
    """Consecutive train/validation/test periods and the init times inside each.

    A period's init times leave room for ``history`` windows of observations and for
    ``n_steps`` targets inside the same period, so no truth or observation is shared between
    periods.

    Parameters
    ----------
    times : sequence
        Valid times of the nature run, regular.
    fractions : sequence of float
        Fraction of the times in each period (summing to at most 1).
    n_steps : int or sequence of int
        Target rollout length per period.

    Returns
    -------
    list of dict
        Per period ``{"times": all valid times, "init_times": usable init times}``.

    Raises
    ------
    ValueError
        If a period is too short for one sample.
    """
    times = pd.DatetimeIndex(times)
    steps = [n_steps] * len(fractions) if isinstance(n_steps, int) else list(n_steps)
    out, start = [], 0
    for frac, ns in zip(fractions, steps):
        stop = start + int(round(frac * len(times)))
        period = times[start:stop]
        if len(period) == 0:
            raise ValueError("empty period")
        last = period[-1] - ns * step
        inits = period[(period - (history - 1) * window >= period[0]) & (period <= last)]
        if len(inits) == 0:
            raise ValueError(f"period {period[0]}..{period[-1]} too short for {ns} steps")
        out.append({"times": period, "init_times": inits})
        start = stop
    return out


__all__ = [
    "STATIC_SOURCE",
    "ObsWindowDataset",
    "climatology_field",
    "coarse_coordinates",
    "coarsen_fields",
    "collate_obs",
    "pad_obs",
    "fit_statistics",
    "interpolate_points",
    "point_weights",
    "prepare_table",
    "source_key",
    "split_times",
    "stack_truth",
    "static_fields",
    "static_source_spec",
    "truth_channels",
]
