"""Verification scores: the one RMSE and bias of obscast, computed with the ``scores`` library.

Definition (WeatherBench 2: Rasp et al. 2024, JAMES 16, e2023MS004019, eqs. 1 and the bias of
§4.1), per channel and lead time::

    MSE_t  = sum_ij w_i (f_tij - o_tij)^2 / sum_ij w_i      (one forecast, init time t)
    RMSE   = sqrt( mean_t MSE_t )
    ME_t   = sum_ij w_i (f_tij - o_tij) / sum_ij w_i
    bias   = mean_t ME_t                                    (forecast minus truth)

``w_i`` are the cell-area latitude weights :func:`obscast.processor.grid.latitude_weights`
(the one latitude weight of obscast, poles included). The square root is taken *after* the mean
over init times (the WB2 convention), not per forecast. The spatial means are
``scores.continuous.mse`` and ``scores.continuous.additive_bias`` with ``reduce_dims`` the
spatial dims and ``weights`` the latitude weights; NaN truth is left out of every mean (a
forecast whose truth is all NaN, e.g. a lead beyond the data, does not count).

Station scores use the same definition with an unweighted mean over the stations in place of
the latitude-weighted spatial mean.

Every score DataArray has the units of its channel: a ``units`` coordinate along ``channel``
(always, where there is a ``channel`` dim) and a ``units`` attribute where all its channels
share one unit (or there is no ``channel`` dim).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scores
import xarray as xr
from obscast.components.obs.variables import VARIABLES
from obscast.processor.grid import latitude_weights as _latitude_weights

#: Spatial dims of gridded fields (averaged with the latitude weights).
SPATIAL_DIMS = ("latitude", "longitude")
#: Dims that index separate forecasts (averaged after the spatial mean, before the square root).
FORECAST_DIMS = ("init_time",)
#: Dims of the gridded fields :func:`rmse_and_bias` takes (other forecast dims such as
#: ``member`` may be added and named in ``forecast_dims``).
GRID_DIMS = ("init_time", "lead_time", "channel", "latitude", "longitude")
#: Dims of station fields (unweighted mean over ``station``).
STATION_DIMS = ("init_time", "lead_time", "channel", "station")
#: Dims of the score Datasets of :func:`combine_systems` (``scores.zarr``).
SCORE_DIMS = ("system", "channel", "lead_time")


def latitude_weights(latitude: xr.DataArray) -> xr.DataArray:
    """:func:`obscast.processor.grid.latitude_weights` as a DataArray along ``latitude``.

    Parameters
    ----------
    latitude : xarray.DataArray
        1-D latitude coordinate in degrees, strictly monotonic, within [-90, 90].

    Returns
    -------
    xarray.DataArray
        Cell-area weights, mean 1, same dim and coordinate as ``latitude``.

    Raises
    ------
    ValueError
        As :func:`obscast.processor.grid.latitude_weights`.
    """
    return xr.DataArray(_latitude_weights(latitude.values), dims=latitude.dims, coords=latitude.coords, name="latitude_weight")


def channel_units(channels: Iterable[str]) -> list[str]:
    """Units of output channels from :data:`obscast.components.obs.variables.VARIABLES`.

    A channel is a CF variable name, optionally followed by ``_<level>`` (e.g.
    ``air_temperature_sigma085``, ``geopotential_500hPa``); the longest matching variable name
    wins. Unknown channels get ``""``.

    Parameters
    ----------
    channels : iterable of str

    Returns
    -------
    list of str
        One units string per channel (UDUNITS spelling, e.g. ``"K"``, ``"m s-1"``).
    """
    out = []
    for c in channels:
        c = str(c)
        match = [v for v in VARIABLES if c == v or c.startswith(v + "_")]
        out.append(VARIABLES[max(match, key=len)].units if match else "")
    return out


def _units_of(truth: xr.DataArray | xr.Dataset, units: str | Sequence[str] | Mapping[str, str] | None) -> str | list[str]:
    """Units to attach: given, else the truth's ``units`` coordinate or attribute, else by channel name."""
    chans = [str(c) for c in truth["channel"].values] if "channel" in truth.dims else None
    if units is None:
        if "units" in truth.coords:
            u = truth["units"].values
            return [str(x) for x in np.broadcast_to(u, (len(chans),))] if chans is not None else str(u)
        if isinstance(truth, xr.DataArray) and "units" in truth.attrs:
            return str(truth.attrs["units"])
        return channel_units(chans) if chans is not None else ""
    if isinstance(units, str):
        return units
    if isinstance(units, Mapping):
        if chans is None:
            raise ValueError("units given per channel but the data has no channel dim")
        return [str(units.get(c, "")) for c in chans]
    return [str(u) for u in units]


def with_units(ds: xr.Dataset, units: str | Sequence[str]) -> xr.Dataset:
    """Attach units to every data variable of a score Dataset (see the module docstring).

    Parameters
    ----------
    ds : xarray.Dataset
        Scores, with or without a ``channel`` dim.
    units : str or sequence of str
        One unit for all, or one per channel (in ``ds``'s channel order).

    Returns
    -------
    xarray.Dataset
        ``ds`` with a ``units`` coordinate along ``channel`` (if present) and ``units``
        attributes where the unit is unique.

    Raises
    ------
    ValueError
        If a sequence is given whose length differs from the number of channels.
    """
    if "channel" in ds.dims:
        n = ds.sizes["channel"]
        per = [units] * n if isinstance(units, str) else list(units)
        if len(per) != n:
            raise ValueError(f"{len(per)} units for {n} channels")
        ds = ds.assign_coords(units=("channel", np.asarray(per, dtype=object).astype(str)))
        single = per[0] if len(set(per)) == 1 else None
    else:
        if not isinstance(units, str):
            raise ValueError("a sequence of units needs a channel dim")
        single = units
    for v in ds.data_vars:
        ds[v].attrs.pop("units", None)
        if single is not None:
            ds[v].attrs["units"] = single
    return ds


def spatial_error_means(
    forecast: xr.DataArray,
    truth: xr.DataArray,
    spatial_dims: Sequence[str] = SPATIAL_DIMS,
    weighted: bool = True,
) -> xr.Dataset:
    """Per-forecast spatial means of the squared error and of the error, by ``scores``.

    Parameters
    ----------
    forecast, truth : xarray.DataArray
        Same dims and coordinates, e.g. :data:`GRID_DIMS` ``(init_time, lead_time, channel,
        latitude, longitude)`` or :data:`STATION_DIMS`, in physical units.
    spatial_dims : sequence of str
        Dims to average over: ``("latitude", "longitude")`` (gridded) or ``("station",)``.
    weighted : bool
        Weight by :func:`latitude_weights` of ``forecast["latitude"]`` (gridded); False: an
        unweighted mean (stations).

    Returns
    -------
    xarray.Dataset
        ``mse`` (``scores.continuous.mse``) and ``mean_error`` (``scores.continuous.additive_bias``,
        forecast minus truth), with the dims of the inputs less ``spatial_dims``. NaN truth is
        left out; all-NaN gives NaN.

    Raises
    ------
    ValueError
        If forecast and truth do not share their coordinates (``xarray.align(join="exact")``).
    """
    forecast, truth = xr.align(forecast, truth, join="exact")
    weights = latitude_weights(forecast["latitude"]) if weighted else None
    dims = list(spatial_dims)
    mse = scores.continuous.mse(forecast, truth, reduce_dims=dims, weights=weights)
    me = scores.continuous.additive_bias(forecast, truth, reduce_dims=dims, weights=weights)
    return xr.Dataset({"mse": mse, "mean_error": me})


def aggregate_scores(
    per_forecast: xr.Dataset,
    forecast_dims: Sequence[str] = FORECAST_DIMS,
    units: str | Sequence[str] = "",
) -> xr.Dataset:
    """RMSE and bias from per-forecast spatial means (:func:`spatial_error_means`).

    ``rmse = sqrt(mean over forecast_dims of mse)``, ``bias = mean over forecast_dims of
    mean_error``; NaN (forecasts without truth) are skipped.

    Parameters
    ----------
    per_forecast : xarray.Dataset
        ``mse`` and ``mean_error`` with the dims ``forecast_dims`` among others.
    forecast_dims : sequence of str
        Dims indexing separate forecasts, e.g. ``("init_time",)`` or ``("member", "init_time")``.
    units : str or sequence of str
        Units of the channels (see :func:`with_units`).

    Returns
    -------
    xarray.Dataset
        ``rmse`` and ``bias`` (physical units) with the remaining dims, e.g. ``(lead_time, channel)``.
    """
    dims = list(forecast_dims)
    ds = xr.Dataset({
        "rmse": np.sqrt(per_forecast["mse"].mean(dims)),
        "bias": per_forecast["mean_error"].mean(dims),
    })
    return with_units(ds, units)


def rmse_and_bias(
    forecast: xr.DataArray,
    truth: xr.DataArray,
    forecast_dims: Sequence[str] = FORECAST_DIMS,
    spatial_dims: Sequence[str] = SPATIAL_DIMS,
    weighted: bool = True,
    units: str | Sequence[str] | Mapping[str, str] | None = None,
) -> xr.Dataset:
    """The RMSE and bias of obscast (WeatherBench 2; the module docstring gives the formulas).

    Parameters
    ----------
    forecast, truth : xarray.DataArray
        Gridded: dims :data:`GRID_DIMS` ``(init_time, lead_time, channel, latitude, longitude)``
        (any order; further forecast dims such as ``member`` allowed); stations: dims
        :data:`STATION_DIMS` with ``spatial_dims=("station",)`` and ``weighted=False``. Same
        coordinates, physical units; NaN truth is left out.
    forecast_dims : sequence of str
        Dims of separate forecasts, averaged after the spatial mean and before the square root.
    spatial_dims : sequence of str
        Dims of the spatial mean.
    weighted : bool
        Latitude-weighted spatial mean (gridded) or unweighted (stations).
    units : str, sequence or mapping, optional
        Units of the channels; default: the truth's ``units`` coordinate or attribute, else
        :func:`channel_units` of its channel names.

    Returns
    -------
    xarray.Dataset
        ``rmse`` and ``bias`` with the remaining dims (e.g. ``(lead_time, channel)``), each
        with units (module docstring).

    Raises
    ------
    ValueError
        If forecast and truth do not share their coordinates.
    """
    per = spatial_error_means(forecast, truth, spatial_dims, weighted)
    return aggregate_scores(per, forecast_dims, _units_of(truth, units))


def gridded_scores(forecast: xr.DataArray, truth: xr.DataArray, forecast_dims: tuple[str, ...] = FORECAST_DIMS) -> xr.Dataset:
    """Latitude-weighted RMSE and bias per channel and lead time: :func:`rmse_and_bias` of
    gridded fields (e.g. ``(member, init_time, lead_time, channel, latitude, longitude)`` with
    ``forecast_dims=("member", "init_time")``)."""
    return rmse_and_bias(forecast, truth, forecast_dims)


def point_scores(forecast: xr.DataArray, truth: xr.DataArray, point_dim: str = "station", forecast_dims: tuple[str, ...] = FORECAST_DIMS) -> xr.Dataset:
    """RMSE and bias at points (stations): :func:`rmse_and_bias` with an unweighted mean over
    ``point_dim``; missing truth (NaN) is left out."""
    return rmse_and_bias(forecast, truth, forecast_dims, spatial_dims=(point_dim,), weighted=False)


def combine_systems(results: Mapping[str, xr.Dataset]) -> xr.Dataset:
    """One score Dataset with a ``system`` dim, dims :data:`SCORE_DIMS` ``(system, channel,
    lead_time)`` (other dims after them), as written to ``scores.zarr``.

    Parameters
    ----------
    results : mapping
        System name (e.g. ``"model"``, ``"persistence"``, ``"climatology"``) to the output of
        :func:`rmse_and_bias` / :func:`aggregate_scores`; same channels and lead times.

    Returns
    -------
    xarray.Dataset
        ``rmse`` and ``bias`` with the ``units`` coordinate and attributes kept.
    """
    names = list(results)
    ds = xr.concat([results[n] for n in names], dim="system", coords="minimal", compat="override")
    ds = ds.assign_coords(system=np.asarray(names, dtype=str))
    order = [d for d in SCORE_DIMS if d in ds.dims]
    ds = ds.transpose(*order, ...)
    for v in ds.data_vars:
        units = results[names[0]][v].attrs.get("units")
        if units is not None:
            ds[v].attrs["units"] = units
    return ds


def _lead_label(lead: pd.Series) -> pd.Series:
    if pd.api.types.is_timedelta64_dtype(lead):
        hours = pd.to_timedelta(lead) / pd.Timedelta(hours=1)
    else:  # already hours
        hours = lead.astype(float)
    return hours.map(lambda h: f"{h:g} h")


def score_table(scores_: xr.Dataset | Mapping[str, xr.Dataset], metric: str = "rmse", channels: Sequence[str] | None = None) -> pd.DataFrame:
    """A table (rows: channel and lead time; columns: the compared systems) of one metric.

    Parameters
    ----------
    scores_ : xarray.Dataset or mapping
        A score Dataset with a ``system`` dim (:func:`combine_systems`, ``scores.zarr``), or
        system name to a Dataset of dims ``(lead_time, channel)`` (either order).
    metric : str
        ``"rmse"`` or ``"bias"``.
    channels : sequence of str, optional
        Channels to keep (default all).

    Returns
    -------
    pandas.DataFrame
        Index ``(channel, lead_time)`` with lead times as ``"6 h"``; one column per system.
    """
    if isinstance(scores_, xr.Dataset):
        results = {str(s): scores_.sel(system=s) for s in scores_["system"].values}
    else:
        results = dict(scores_)
    frames = []
    for name, ds in results.items():
        da = ds[metric]
        if channels is not None:
            da = da.sel(channel=[c for c in da["channel"].values if c in channels])
        da = da.reset_coords(drop=True).transpose("channel", "lead_time", ...)
        frames.append(da.to_dataframe(name=name)[[name]])
    table = pd.concat(frames, axis=1).reset_index()
    table["lead_time"] = _lead_label(table["lead_time"])
    return table.set_index(["channel", "lead_time"])


def to_markdown(table: pd.DataFrame, title: str, floatfmt: str = ".3g") -> str:
    """A score table as GitHub markdown (for the Prefect artifact and ``scores.md``)."""
    cols = list(table.columns)
    index_names = list(table.index.names)
    lines = [f"## {title}", "", "| " + " | ".join(index_names + cols) + " |", "|" + "---|" * (len(index_names) + len(cols))]
    for idx, row in table.iterrows():
        idx = idx if isinstance(idx, tuple) else (idx,)
        cells = [str(i) for i in idx] + [format(v, floatfmt) if np.isfinite(v) else "n/a" for v in row.to_numpy(float)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def scores_markdown(
    ds: xr.Dataset,
    title: str,
    metrics: Sequence[str] = ("rmse", "bias"),
    channels: Sequence[str] | None = None,
    floatfmt: str = ".3g",
) -> str:
    """Markdown tables of a score Dataset, one per metric, channels labelled with their units.

    Parameters
    ----------
    ds : xarray.Dataset
        Dims ``(system, channel, lead_time)`` (:func:`combine_systems`) with a ``units``
        coordinate along ``channel``.
    title : str
        Heading; each table's heading is ``"<title>: <METRIC>"``.
    metrics : sequence of str
        Data variables to tabulate.
    channels : sequence of str, optional
        Channels to keep.
    floatfmt : str

    Returns
    -------
    str
    """
    units = dict(zip(ds["channel"].values.tolist(), ds["units"].values.tolist())) if "units" in ds.coords else {}
    parts = []
    for metric in metrics:
        table = score_table(ds, metric, channels)
        table.index = table.index.set_levels(
            [f"{c} [{units[c]}]" if units.get(c) else str(c) for c in table.index.levels[0]], level=0
        )
        label = {"rmse": "RMSE", "bias": "bias (forecast minus truth)"}.get(metric, metric)
        parts.append(to_markdown(table, f"{title}: {label}", floatfmt))
    return "\n".join(parts)


__all__ = [
    "FORECAST_DIMS", "GRID_DIMS", "SCORE_DIMS", "SPATIAL_DIMS", "STATION_DIMS",
    "aggregate_scores", "channel_units", "combine_systems", "gridded_scores", "latitude_weights",
    "point_scores", "rmse_and_bias", "score_table", "scores_markdown", "spatial_error_means",
    "to_markdown", "with_units",
]
