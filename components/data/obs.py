"""The experiment dataset: observation windows before an init time and the truth after it.

A sample is everything the forecast can see at an init time ``t0`` -- the observations of each
source in the window ``(t0 - Δ, t0]`` (and optionally earlier windows) and the prior state (the
climatology, or the gridded target's analysis at ``t0``) -- and what it must predict: the target
at ``t0 + k·Δt`` for ``k = 1..n_steps``, on the output grid and at the station positions. The
normalisation is :mod:`obscast.components.data.statistics`; the tables
:mod:`obscast.components.data.tables`; the gridded target :mod:`obscast.components.data.fields`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from obscast.components.data.fields import LEVEL_VARIABLES, coarsen_fields, interpolate_points, level_channel, point_weights, stack_truth
from obscast.components.data.statistics import GROSS_SIGMA, STATIC_SOURCE, orography_field, source_key, static_fields
from obscast.components.data.tables import _band_index, _layer_index, prepare_table, window_ends

#: Data variables of the nature run on model levels, and its surface variable.





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
        Nature run (see :mod:`obscast.components.osse.nature`), loaded into memory for the needed times.
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
    members : sequence of int, optional
        Members of a target with a ``member`` dimension (split by member): the samples are
        every (member, init time) pair, member-major. None for a target without one.
    prior : {"climatology", "analysis"}
        The gridded state the static source carries and the model's residual: the training
        climatology (observations-only experiments, e.g. the OSSE), or the target's own
        analysis at the init time (when the experiment's inputs include the gridded target,
        e.g. ERA5), so the network learns the increment over persistence.

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
        (channel + 2, lat, lon) input of the static source (:func:`static_fields`); per sample
        see :meth:`static_batch`.
    sample_members : numpy.ndarray
        (n_samples,) member of each sample (-1 without a member dimension).

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
        members: Sequence[int] | None = None,
        prior: str = "climatology",
    ) -> None:
        if prior not in ("climatology", "analysis"):
            raise ValueError(f"prior must be 'climatology' or 'analysis', got {prior!r}")
        if ("member" in truth.dims) != (members is not None):
            raise ValueError("give members exactly when the gridded target has a member dimension")
        self.prior = prior
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.statistics = statistics
        self.n_steps = int(n_steps)
        self.step = pd.Timedelta(step)
        self.window = pd.Timedelta(hours=float(statistics["window_hours"]))
        self.history = int(history)
        inits = pd.DatetimeIndex(init_times).as_unit("ns")
        member_list = [-1] if members is None else [int(m) for m in members]
        self.sample_members = np.repeat(np.asarray(member_list, np.int64), len(inits))
        self.init_times = pd.DatetimeIndex(np.tile(inits.asi8, len(member_list))).as_unit("ns")
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
        if members is None:
            data = stack_truth(truth, needed)
        else:
            data = np.concatenate([stack_truth(truth.sel(member=m), needed) for m in member_list])
        lat = np.asarray(truth["latitude"].values, float)
        lon = np.asarray(truth["longitude"].values, float)
        if lat[0] > lat[-1]:
            data, lat = data[..., ::-1, :], lat[::-1]
        data = np.ascontiguousarray(data)
        coarse = coarsen_fields(data, lat, self.coarsen)
        self.truth = torch.from_numpy((coarse - self.mean[:, None, None]) / self.std[:, None, None])
        # row of (member, valid time) in the stacked truth: member-major blocks of the needed times
        self._time_pos = {(m, int(t)): k * len(needed) + i for k, m in enumerate(member_list) for i, t in enumerate(needed.asi8)}
        self._targets = torch.tensor(
            [[self._time_pos[(int(m), int((t + o).value))] for o in offsets] for m, t in zip(self.sample_members, self.init_times)],
            dtype=torch.long,
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
            # lowest level: the largest sigma or pressure
            lowest = float(np.max(truth["level"].values)) if "level" in truth.coords else 0.0
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
        # the orography channel (if the model has one) comes from this truth: a moved mountain moves it
        self.static = torch.from_numpy(static_fields(statistics, orography_field(truth, statistics)))
        self._latitude_fields = self.static[len(self.channels):]  # sin/cos latitude (+ orography)
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
        inputs[STATIC_SOURCE] = self.static_batch([idx])[0]
        pos = self._targets[idx]
        return inputs, self.truth[pos[1:]], self.station_truth[pos[1:]]

    def static_batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Input of the static source for samples ``indices``: (B, channel + 2 [+ 1], lat, lon), the
        prior state (climatology, or the analysis at each init time, normalised) plus
        ``sin``/``cos`` latitude (plus the orography, :func:`orography_field`, in a world with one). It is also the model's residual (``residual_source``)."""
        b = len(indices)
        if self.prior == "climatology":
            return self.static.expand(b, -1, -1, -1)
        analysis = self.initial_truth(list(indices))
        return torch.cat([analysis, self._latitude_fields.expand(b, -1, -1, -1)], dim=1)

    def consecutive(self) -> np.ndarray:
        """(n,) bool: sample i's init time is one window after sample i - 1's, in the same
        member (False for i = 0); a cycle restarts cold where this is False."""
        ok = np.zeros(len(self), bool)
        ok[1:] = (np.diff(self.init_times.asi8) == int(self.window.value)) & (np.diff(self.sample_members) == 0)
        return ok

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
