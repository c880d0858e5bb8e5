"""Ensemble verification: fair CRPS, spread/skill, rank histogram and ensemble-mean RMSE (``scores``).

Definitions, per channel and lead time, for ``N`` members ``x_1..x_N`` and the truth ``y`` at
each grid point (or station) and init time; ``<.>`` is the latitude-weighted spatial mean
(:func:`obscast.processor.grid.latitude_weights`, the one latitude weight of obscast; an
unweighted mean over stations) then the mean over init times:

* **fair CRPS** (Ferro 2014, QJRMS 140, 1917, eq. 4; Zamo & Naveau 2018, Math. Geosci. 50, 209)::

      CRPS_fair = <(1/N) sum_i |x_i - y|  -  1/(2 N (N - 1)) sum_i sum_j |x_i - x_j|>

  the CRPS an ensemble of ``N`` exchangeable members would have as ``N`` tends to infinity,
  so ensembles of different size compare fairly. Computed by
  ``scores.probability.crps_for_ensemble(method="fair")``.
* **spread** ``sqrt(<s^2>)``, ``s^2 = 1/(N - 1) sum_i (x_i - mean)^2`` the unbiased ensemble
  variance (the ``N/(N-1)`` correction of the member variance);
* **ensemble-mean RMSE** ``sqrt(<(mean - y)^2>)`` (WeatherBench 2's RMSE, :mod:`.metrics`);
* **spread/skill ratio** ``sqrt((N + 1) / N) * spread / RMSE_mean``: for a perfectly
  reliable ensemble (the truth and the members draws from the same distribution) the
  ensemble mean's expected squared error is ``(N + 1)/N`` times the expected unbiased variance
  (Fortin et al. 2014, J. Hydrometeor. 15, 1708, eq. 7; as WeatherBench 2, Rasp et al. 2024),
  so the ratio is 1; below 1 is an under-dispersive ensemble, above 1 an over-dispersive one;
* **rank histogram** (Hamill 2001, Mon. Wea. Rev. 129, 550): the relative frequency of the
  truth's rank 1..N+1 among the members (ties shared), latitude-weighted,
  ``scores.probability.rank_histogram``; flat for a reliable ensemble;
* **deterministic RMSE**: the unperturbed model's RMSE, beside the ensemble mean's.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scores
import xarray as xr
from obscast.components.verification.metrics import (
    FORECAST_DIMS,
    SPATIAL_DIMS,
    channel_units,
    latitude_weights,
    rmse_and_bias,
    to_markdown,
    with_units,
)

#: Ensemble member dimension of the forecasts these functions take.
MEMBER_DIM = "member"


def _units_of(da: xr.DataArray) -> str | list[str]:
    """The truth's ``units`` coordinate or attribute, else :func:`channel_units` of its channels."""
    if "units" in da.coords:
        return [str(u) for u in np.broadcast_to(da["units"].values, (da.sizes["channel"],))] if "channel" in da.dims else str(da["units"].values)
    if "units" in da.attrs or "channel" not in da.dims:
        return str(da.attrs.get("units", ""))
    return channel_units(da["channel"].values.tolist())


def _weights(da: xr.DataArray, spatial_dims: Sequence[str], weighted: bool) -> xr.DataArray:
    """Latitude weights broadcast over the spatial dims (ones for stations)."""
    if weighted:
        return latitude_weights(da["latitude"]).broadcast_like(da.isel({d: 0 for d in da.dims if d not in spatial_dims}, drop=True))
    return xr.ones_like(da.isel({d: 0 for d in da.dims if d not in spatial_dims}, drop=True))


def fair_crps(ensemble: xr.DataArray, truth: xr.DataArray, spatial_dims: Sequence[str] = SPATIAL_DIMS,
              forecast_dims: Sequence[str] = FORECAST_DIMS, weighted: bool = True) -> xr.DataArray:
    """Fair CRPS averaged over space (latitude-weighted) and forecasts, by ``scores``.

    Parameters
    ----------
    ensemble : xarray.DataArray
        ``(member, init_time, lead_time, channel, latitude, longitude)`` (or ``station`` in
        place of the spatial dims), physical units.
    truth : xarray.DataArray
        The same dims less ``member``.
    spatial_dims, forecast_dims : sequence of str
        Dims averaged over (space, with the latitude weights when ``weighted``; then forecasts).
    weighted : bool
        Latitude weights (gridded); False for stations.

    Returns
    -------
    xarray.DataArray
        The remaining dims, e.g. ``(lead_time, channel)``, in the variable's unit. NaN truth is
        left out.

    Raises
    ------
    ValueError
        If the ensemble has fewer than 2 members (the fair CRPS divides by ``N - 1``).
    """
    if ensemble.sizes[MEMBER_DIM] < 2:
        raise ValueError(f"the fair CRPS needs at least 2 members, got {ensemble.sizes[MEMBER_DIM]}")
    weights = _weights(truth, spatial_dims, weighted)
    return scores.probability.crps_for_ensemble(ensemble, truth, MEMBER_DIM, method="fair",
                                                reduce_dims=[*spatial_dims, *forecast_dims], weights=weights)


def spread(ensemble: xr.DataArray, spatial_dims: Sequence[str] = SPATIAL_DIMS, forecast_dims: Sequence[str] = FORECAST_DIMS,
           weighted: bool = True) -> xr.DataArray:
    """``sqrt`` of the mean unbiased ensemble variance (``ddof=1``), latitude-weighted (see the module docstring).

    Parameters
    ----------
    ensemble : xarray.DataArray
        As :func:`fair_crps`.

    Returns
    -------
    xarray.DataArray
        The remaining dims, e.g. ``(lead_time, channel)``, in the variable's unit.
    """
    var = ensemble.var(MEMBER_DIM, ddof=1)
    w = _weights(var, spatial_dims, weighted)
    dims = list(spatial_dims)
    spatial = var.weighted(w).mean(dims)
    return np.sqrt(spatial.mean(list(forecast_dims)))


def rank_histogram(ensemble: xr.DataArray, truth: xr.DataArray, preserve_dims: Sequence[str] = ("lead_time", "channel"),
                   weighted: bool = True) -> xr.DataArray:
    """Relative frequency of the truth's rank among the members (``scores.probability.rank_histogram``).

    Returns
    -------
    xarray.DataArray
        ``(*preserve_dims, rank)``, ranks 1..N+1, summing to 1 over ``rank``; latitude-weighted
        when ``weighted``.
    """
    weights = _weights(truth, [d for d in truth.dims if d in ("latitude", "longitude", "station")], weighted) if weighted else None
    return scores.probability.rank_histogram(ensemble, truth, MEMBER_DIM, preserve_dims=list(preserve_dims), weights=weights)


def ensemble_scores(ensemble: xr.DataArray, truth: xr.DataArray, deterministic: xr.DataArray | None = None,
                    spatial_dims: Sequence[str] = SPATIAL_DIMS, forecast_dims: Sequence[str] = FORECAST_DIMS,
                    weighted: bool = True) -> xr.Dataset:
    """Every ensemble score per channel and lead time (module docstring).

    Parameters
    ----------
    ensemble : xarray.DataArray
        ``(member, init_time, lead_time, channel, latitude, longitude)`` (stations:
        ``station`` in place of latitude and longitude, ``weighted=False``), physical units,
        with a ``units`` coordinate along ``channel`` (else a ``units`` attribute).
    truth : xarray.DataArray
        The same dims less ``member``.
    deterministic : xarray.DataArray, optional
        The deterministic (unperturbed) forecast, dims as ``truth``.

    Returns
    -------
    xarray.Dataset
        ``crps`` (fair), ``spread``, ``ensemble_mean_rmse``, ``spread_skill`` (dimensionless)
        and, with ``deterministic``, ``deterministic_rmse``: ``(channel, lead_time)``;
        ``rank_histogram`` ``(channel, lead_time, rank)``; attribute ``members``.

    Raises
    ------
    ValueError
        Fewer than 2 members, or coordinates that do not match.
    """
    n = ensemble.sizes[MEMBER_DIM]
    units = _units_of(truth)
    crps = fair_crps(ensemble, truth, spatial_dims, forecast_dims, weighted)
    spr = spread(ensemble, spatial_dims, forecast_dims, weighted)
    mean_rmse = rmse_and_bias(ensemble.mean(MEMBER_DIM), truth, forecast_dims, spatial_dims, weighted, units=units)["rmse"]
    ds = xr.Dataset({"crps": crps, "spread": spr, "ensemble_mean_rmse": mean_rmse})
    if deterministic is not None:
        ds["deterministic_rmse"] = rmse_and_bias(deterministic, truth, forecast_dims, spatial_dims, weighted, units=units)["rmse"]
    ds = ds.reset_coords(drop=True).transpose("channel", "lead_time", ...)
    ds = with_units(ds, units)
    ds["spread_skill"] = (np.sqrt((n + 1) / n) * ds["spread"] / ds["ensemble_mean_rmse"]).assign_attrs(units="1")
    rh = rank_histogram(ensemble, truth, weighted=weighted).reset_coords(drop=True)
    ds["rank_histogram"] = rh.transpose("channel", "lead_time", "rank").assign_attrs(units="1")
    ds.attrs["members"] = int(n)
    return ds


def ensemble_markdown(ds: xr.Dataset, title: str, channels: Sequence[str] | None = None, floatfmt: str = ".3g") -> str:
    """A markdown table of :func:`ensemble_scores`: one row per channel and lead time.

    Columns: fair CRPS, spread, ensemble-mean RMSE, deterministic RMSE (when scored) and
    spread/skill; channels labelled with their units.
    """
    cols = [c for c in ("crps", "spread", "ensemble_mean_rmse", "deterministic_rmse", "spread_skill") if c in ds]
    units = dict(zip(ds["channel"].values.tolist(), np.broadcast_to(ds["units"].values, (ds.sizes["channel"],)).tolist())) if "units" in ds.coords else {}
    rows = []
    for ch in ds["channel"].values.tolist():
        if channels and ch not in channels:
            continue
        for lead in ds["lead_time"].values:
            hours = pd.Timedelta(lead) / pd.Timedelta(hours=1)
            rows.append({"channel": f"{ch} [{units[ch]}]" if units.get(ch) else ch, "lead_time": f"{hours:g} h",
                         **{c: float(ds[c].sel(channel=ch, lead_time=lead)) for c in cols}})
    table = pd.DataFrame(rows).set_index(["channel", "lead_time"]).rename(columns={
        "crps": "fair CRPS", "spread": "spread", "ensemble_mean_rmse": "ensemble-mean RMSE",
        "deterministic_rmse": "deterministic RMSE", "spread_skill": "spread/skill"})
    return to_markdown(table, f"{title} ({ds.attrs.get('members', '?')} members)", floatfmt)


def rank_histogram_png(ds: xr.Dataset, title: str = "", channels: Sequence[str] | None = None, max_leads: int = 4) -> bytes:
    """PNG of the rank histograms: one panel per channel, one set of bars per lead time shown.

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`ensemble_scores` (``rank_histogram`` of dims ``(channel, lead_time, rank)``).
    title : str
    channels : sequence of str, optional
        Channels to plot (default all).
    max_leads : int
        At most this many lead times are drawn, evenly spaced from the first to the last.

    Returns
    -------
    bytes
        The PNG image; a dashed line marks the flat histogram ``1 / (N + 1)``.
    """
    rh = ds["rank_histogram"]
    chans = [c for c in rh["channel"].values.tolist() if not channels or c in channels]
    ncol = min(len(chans), 2)
    nrow = (len(chans) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.2 * nrow), squeeze=False)
    ranks = rh["rank"].values
    all_leads = rh["lead_time"].values
    leads = all_leads[np.unique(np.linspace(0, len(all_leads) - 1, min(max_leads, len(all_leads))).round().astype(int))]
    width = 0.8 / len(leads)
    for ax, ch in zip(axes.flat, chans):
        for k, lead in enumerate(leads):
            hours = pd.Timedelta(lead) / pd.Timedelta(hours=1)
            ax.bar(ranks - 0.4 + (k + 0.5) * width, rh.sel(channel=ch, lead_time=lead).values, width, label=f"{hours:g} h")
        ax.axhline(1.0 / len(ranks), color="k", ls="--", lw=1)
        ax.set_title(ch)
        ax.set_xlabel("rank of the truth")
        ax.set_ylabel("relative frequency")
        ax.grid(alpha=0.3, axis="y")
    for ax in list(axes.flat)[len(chans):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, title="lead time", loc="lower center", ncol=len(leads), fontsize="small")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


__all__ = ["MEMBER_DIM", "ensemble_markdown", "ensemble_scores", "fair_crps", "rank_histogram", "rank_histogram_png", "spread"]
