"""Verification plots (matplotlib, headless Agg backend)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

#: Colour and line style per system (others: default colours, ``-x``).
STYLE = {
    "model": ("C0", "-o"), "persistence": ("C1", "--s"), "climatology": ("C2", ":^"),
    "station_decoder": ("C3", "-d"), "gridded_interpolated": ("C4", "-.v"),
    "nwp_identical_twin": ("C5", "-P"), "nwp_fraternal_twin": ("C6", "-X"), "model_at_baseline_inits": ("C0", ":o"),
    "truth": ("C7", ":"),
}


def rmse_vs_lead_png(
    results: xr.Dataset | dict[str, xr.Dataset],
    units: dict[str, str] | None = None,
    title: str = "",
    metric: str = "rmse",
) -> bytes:
    """PNG of a score against lead time: one panel per channel, one curve per system.

    Parameters
    ----------
    results : xarray.Dataset or dict
        A score Dataset of dims ``(system, channel, lead_time)`` with a ``units`` coordinate
        along ``channel`` (:func:`obscast.components.verification.metrics.combine_systems`,
        ``scores.zarr``), or system name to a Dataset with ``metric`` of dims
        ``(lead_time, channel)`` (either order).
    units : dict, optional
        Channel name to its units, for the y labels; default: the Dataset's ``units``
        coordinate (none: no units in the labels).
    title : str
        Figure title.
    metric : str
        Data variable to plot (``"rmse"`` or ``"bias"``).

    Returns
    -------
    bytes
        The PNG image.
    """
    if isinstance(results, xr.Dataset):
        ds = results
        if units is None and "units" in ds.coords:
            units = dict(zip(ds["channel"].values.tolist(), np.broadcast_to(ds["units"].values, (ds.sizes["channel"],)).tolist()))
        results = {str(s): ds.sel(system=s) for s in ds["system"].values}
    units = units or {}
    channels = list(next(iter(results.values()))["channel"].values)
    ncol = min(len(channels), 2)
    nrow = (len(channels) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.4 * nrow), squeeze=False)
    label = {"rmse": "RMSE", "bias": "bias"}.get(metric, metric)
    for ax, channel in zip(axes.flat, channels):
        for name, ds in results.items():
            values = ds[metric].sel(channel=channel)
            lead = values["lead_time"].values
            hours = pd.to_timedelta(lead) / pd.Timedelta(hours=1) if np.issubdtype(lead.dtype, np.timedelta64) else lead
            color, style = STYLE.get(name, (None, "-x"))
            ax.plot(hours, values.values, style, color=color, label=name)
        ax.set_title(channel)
        ax.set_xlabel("lead time (h)")
        u = units.get(channel, "")
        ax.set_ylabel(f"{label} ({u})" if u else label)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(channels):]:
        ax.set_visible(False)
    axes.flat[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
