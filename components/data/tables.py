"""Observation tables prepared for the datasets: value columns, satellite channels pivoted,
layers and latitude bands, observation windows."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd


#: Data variables of the nature run on model levels, and its surface variable.


#: Columns of observation tables that are coordinates or metadata, never values.
COORDINATE_COLUMNS = ("time", "latitude", "longitude", "station_id", "pressure", "height", "channel", "surface_altitude",
                      # AMV metadata (obscast.components.obs.readers.amv.AMV_METADATA_COLUMNS)
                      "satellite_channel_centre_frequency", "wind_computation_method", "quality_indicator",
                      # the ingest's QC flags (obscast.components.obs.qc): metadata, never a model input
                      "qc")
#: Value columns used by default per source (kind) name; other sources use every numeric
#: non-coordinate column that is not derived (:data:`DERIVED_COLUMNS`) and not all-NaN.
DEFAULT_VARIABLES: dict[str, tuple[str, ...]] = {
    "synop": ("surface_air_pressure", "air_temperature", "eastward_wind", "northward_wind"),
    "temp": ("air_temperature", "eastward_wind", "northward_wind", "geopotential_height"),
    "aircraft": ("air_temperature", "eastward_wind", "northward_wind"),
}
#: Columns that duplicate others (wind speed and direction are the same as u, v).
DERIVED_COLUMNS = ("wind_speed", "wind_from_direction")


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
        the ICAO standard atmosphere, :func:`obscast.encoders.setconv.pressure_from_height`), and the
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
        from obscast.encoders.setconv import pressure_from_height

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
