"""Verification plots (matplotlib, headless Agg backend)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

STYLE = {"model": ("C0", "-o"), "persistence": ("C1", "--s"), "climatology": ("C2", ":^")}


def rmse_vs_lead_png(results: dict[str, xr.Dataset], units: dict[str, str], title: str) -> bytes:
    """PNG of latitude-weighted RMSE against lead time, one panel per channel.

    Parameters
    ----------
    results : dict
        System name to a Dataset with ``rmse`` of dims ``(lead_time, channel)``.
    units : dict
        Channel name to its units (axis labels).
    title : str
        Figure title.

    Returns
    -------
    bytes
        The PNG image.
    """
    channels = list(next(iter(results.values()))["channel"].values)
    ncol = min(len(channels), 2)
    nrow = (len(channels) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.4 * nrow), squeeze=False)
    for ax, channel in zip(axes.flat, channels):
        for name, ds in results.items():
            rmse = ds["rmse"].sel(channel=channel)
            hours = pd.to_timedelta(rmse["lead_time"].values) / pd.Timedelta(hours=1)
            color, style = STYLE.get(name, (None, "-x"))
            ax.plot(hours, rmse.values, style, color=color, label=name)
        ax.set_title(channel)
        ax.set_xlabel("lead time (h)")
        ax.set_ylabel(f"RMSE ({units.get(channel, '')})")
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
