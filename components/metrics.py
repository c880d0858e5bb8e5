"""Verification metrics, computed with the ``scores`` library.

Definitions follow WeatherBench 2 (Rasp et al. 2024, JAMES, eq. 1 and the bias definition of
§4.1): for each forecast (init time, member) the latitude-weighted RMSE over the globe is

    RMSE = sqrt( sum_ij w_i (f_ij - o_ij)^2 / sum_ij w_i ),   w_i = cos(latitude_i)

and the reported RMSE at a lead time is its mean over forecasts. The bias is the weighted mean of
``f - o`` over space and forecasts. Weights come from ``scores.functions.create_latitude_weights``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scores
import xarray as xr

SPATIAL_DIMS = ("latitude", "longitude")


def latitude_weights(latitude: xr.DataArray) -> xr.DataArray:
    """``cos(latitude)`` weights, clipped at zero (exact poles get weight 0)."""
    return scores.functions.create_latitude_weights(latitude).clip(min=0.0)


def gridded_scores(forecast: xr.DataArray, truth: xr.DataArray, forecast_dims: tuple[str, ...]) -> xr.Dataset:
    """Latitude-weighted RMSE and bias per channel and lead time.

    Parameters
    ----------
    forecast, truth : xarray.DataArray
        Same dims, e.g. ``(member, init_time, lead_time, channel, latitude, longitude)``, in
        physical units.
    forecast_dims : tuple of str
        Dims that index separate forecasts (averaged after the spatial RMSE), e.g.
        ``("member", "init_time")``.

    Returns
    -------
    xarray.Dataset
        ``rmse`` and ``bias`` with the remaining dims (e.g. ``(lead_time, channel)``), in the
        fields' units.

    Raises
    ------
    ValueError
        If forecast and truth do not share their coordinates.
    """
    forecast, truth = xr.align(forecast, truth, join="exact")
    weights = latitude_weights(forecast["latitude"])
    per_forecast = scores.continuous.rmse(forecast, truth, reduce_dims=SPATIAL_DIMS, weights=weights)
    rmse = per_forecast.mean(forecast_dims)
    bias = scores.continuous.additive_bias(forecast, truth, reduce_dims=SPATIAL_DIMS + tuple(forecast_dims), weights=weights)
    return xr.Dataset({"rmse": rmse, "bias": bias})


def point_scores(forecast: xr.DataArray, truth: xr.DataArray, point_dim: str, forecast_dims: tuple[str, ...]) -> xr.Dataset:
    """RMSE and bias at points (stations): unweighted over ``point_dim`` then averaged over forecasts.

    Missing truth values (NaN) are ignored, as ``scores`` does.
    """
    forecast, truth = xr.align(forecast, truth, join="exact")
    per_forecast = scores.continuous.rmse(forecast, truth, reduce_dims=[point_dim])
    bias = scores.continuous.additive_bias(forecast, truth, reduce_dims=[point_dim, *forecast_dims])
    return xr.Dataset({"rmse": per_forecast.mean(forecast_dims), "bias": bias})


def score_table(results: dict[str, xr.Dataset], metric: str = "rmse") -> pd.DataFrame:
    """A table (rows: channel and lead time; columns: the compared systems) of one metric.

    Parameters
    ----------
    results : dict
        System name (``"model"``, ``"persistence"``, ``"climatology"``) to the output of
        :func:`gridded_scores` with dims ``(lead_time, channel)``.
    """
    frames = []
    for name, ds in results.items():
        frame = ds[metric].to_dataframe(name=name)[[name]]
        frames.append(frame)
    table = pd.concat(frames, axis=1).reset_index()
    table["lead_time"] = (pd.to_timedelta(table["lead_time"]) / pd.Timedelta(hours=1)).astype(int).astype(str) + " h"
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
