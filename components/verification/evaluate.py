"""Verification of a trained model on a dataset's init times (Prefect-free).

:func:`evaluate` gives the RMSE and bias of :mod:`obscast.components.verification.metrics`
(WeatherBench 2, Rasp et al. 2024, JAMES 16, e2023MS004019:
``RMSE(lead) = sqrt(mean_inits sum_ij w_i (f - o)^2 / sum_ij w_i)`` with the cell-area
latitude weights ``w_i``) in physical units, with persistence (truth at init) and the
training-period mean per grid point (climatology) as baselines, and, at the station
positions, the station decoder against the gridded forecast interpolated bilinearly to the
stations (:class:`obscast.components.data.interp.PointInterpolator`) and against persistence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr
from obscast.components.data.interp import PointInterpolator
from obscast.components.data.obs import ObsWindowDataset, collate_obs
from obscast.components.model.model import ObsCastModel
from obscast.components.training.trainer import (
    FeatureCache,
    _station_subset,
    _to_device,
    cycle_analyses,
    select_device,
)
from obscast.components.verification.metrics import (
    GRID_DIMS,
    STATION_DIMS,
    aggregate_scores,
    channel_units,
    combine_systems,
    spatial_error_means,
)

#: Systems of :func:`evaluate`'s gridded scores and of its station scores (``scores`` and
#: ``station_scores`` Datasets), and the keys of the lists in ``rmse`` / ``station_rmse``.
SYSTEMS = ("model", "persistence", "climatology")
STATION_SYSTEMS = {"decoder": "station_decoder", "interpolated": "gridded_interpolated", "persistence": "persistence"}
#: The model scored on the inits of the gridded baselines only (the baselines may forecast from
#: a subset of the inits), for a like-for-like comparison.
SAME_INITS = "model_at_baseline_inits"
#: System of the observation-based station scores that is the truth itself (the observation
#: error, the floor of every system's score against observations).
TRUTH = "truth"


def channel_variable(channel: str) -> str:
    """The observed variable of an output channel: ``air_temperature_sigma085`` ->
    ``air_temperature``, ``eastward_wind_850hPa`` -> ``eastward_wind``, a surface channel unchanged."""
    import re

    return re.sub(r"_(sigma\d{3}|\d+hPa)$", "", channel)


def station_observations(table: pd.DataFrame, latitude: np.ndarray, longitude: np.ndarray, channels: Sequence[str],
                         times: pd.DatetimeIndex) -> xr.DataArray:
    """Reports of a station source at the station positions and valid times, as an array.

    A report counts for a valid time when its time equals it (to the minute) and its position
    is a station's (to 1e-4 degree); each channel takes the report's column of the channel's
    variable (:func:`channel_variable`). Several reports for one (time, station) are averaged.

    Parameters
    ----------
    table : pandas.DataFrame
        ``time``, ``latitude``, ``longitude`` and the variables (physical units).
    latitude, longitude : numpy.ndarray
        (P,) station positions, degrees (longitudes in [-180, 180)).
    channels : sequence of str
        Station channels.
    times : pandas.DatetimeIndex
        Valid times.

    Returns
    -------
    xarray.DataArray
        (time, station, channel), NaN where no report exists.
    """
    out = np.full((len(times), len(latitude), len(channels)), np.nan)
    if len(table):
        key = {(round(float(a), 4), round(float(o), 4)): i for i, (a, o) in enumerate(zip(latitude, longitude))}
        lon = np.mod(table["longitude"].to_numpy(float) + 180.0, 360.0) - 180.0
        st = np.array([key.get((round(a, 4), round(o, 4)), -1) for a, o in zip(table["latitude"].to_numpy(float), lon)])
        t = pd.DatetimeIndex(table["time"]).round("min")
        ti = pd.DatetimeIndex(times).get_indexer(t)
        ok = (st >= 0) & (ti >= 0)
        for c, ch in enumerate(channels):
            var = channel_variable(ch)
            if var not in table:
                continue
            v = table[var].to_numpy(float)
            good = ok & np.isfinite(v)
            total = np.zeros((len(times), len(latitude)))
            count = np.zeros_like(total)
            np.add.at(total, (ti[good], st[good]), v[good])
            np.add.at(count, (ti[good], st[good]), 1.0)
            with np.errstate(invalid="ignore"):
                out[:, :, c] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return xr.DataArray(out, dims=("time", "station", "channel"), coords={"time": pd.DatetimeIndex(times).to_numpy(), "channel": list(channels)})


def gridpoint_climatology(data: ObsWindowDataset) -> np.ndarray:
    """Mean truth per grid point over the valid times held by ``data`` (its init and target
    times), in physical units, (channel, lat, lon): the climatology baseline when ``data`` is
    the training set."""
    return data.denormalise(data.truth.mean(0)).numpy()


def _field(x: torch.Tensor, shape: torch.Size, dims: tuple[str, ...], coords: Mapping[str, Any]) -> xr.DataArray:
    """``x`` broadcast to ``shape`` as a DataArray (no copy); station fields reordered to
    :data:`~obscast.components.verification.metrics.STATION_DIMS`."""
    da = xr.DataArray(x.expand(shape).numpy(), dims=dims, coords=coords)
    return da.transpose(*STATION_DIMS) if "station" in dims else da


@torch.no_grad()
def evaluate(
    model: ObsCastModel,
    data: ObsWindowDataset,
    n_steps: int | None = None,
    climatology: np.ndarray | None = None,
    batch_size: int = 8,
    device: str = "auto",
    max_stations: int | None = 1000,
    cache: FeatureCache | None = None,
    spinup: int = 0,
    keep: Mapping[str, float] | None = None,
    every: int = 1,
    baselines: Mapping[str, xr.Dataset] | None = None,
    observations: xr.DataArray | None = None,
) -> dict[str, Any]:
    """Latitude-weighted RMSE and bias per channel and lead of the model and of the baselines.

    The scores are those of :func:`obscast.components.verification.metrics.rmse_and_bias`,
    streamed: each batch of inits contributes its per-init spatial means of the squared error
    and of the error (``scores``, :func:`~obscast.components.verification.metrics.spatial_error_means`),
    which are averaged over the inits at the end
    (:func:`~obscast.components.verification.metrics.aggregate_scores`).

    A cycling model (``model.cycling``) runs the analysis cycle continuously through ``data``'s
    inits (:func:`cycle_analyses`) and forecasts from each analysis.

    Parameters
    ----------
    model : ObsCastModel
    data : ObsWindowDataset
        Verification period (e.g. the test set), ``n_steps`` targets per init.
    n_steps : int, optional
        Leads verified (default ``data.n_steps``).
    climatology : numpy.ndarray, optional
        (channel, lat, lon) physical-unit climatology on the output grid, e.g.
        :func:`gridpoint_climatology` of the training data; omitted: no climatology baseline.
    batch_size : int
    device : str
    max_stations : int, optional
        Score the station decoder on an evenly spaced subset of at most this many stations
        (None: all; 0: no station scores) against the gridded forecast interpolated
        bilinearly to them and against persistence (RMSE over stations and inits, unweighted).
    cache : FeatureCache, optional
        Use cached SetConv features of ``data``'s windows (same result, faster); default: run
        the model on the observations (:meth:`ObsCastModel.forward`).
    spinup : int
        The first ``spinup`` inits are not scored (they spin up a cycling model's background).
    keep : mapping, optional
        Source name -> 0.0 withholds that source (cycling models only).
    every : int
        Score every ``every``-th init after the spin-up (the cycle still runs through all).
    baselines : mapping, optional
        Other forecasting systems (e.g. the NWP twins of :mod:`obscast.components.nwp`):
        name -> dataset with ``forecast`` (init_time, lead_time, channel, latitude, longitude)
        in physical units on the output grid, lead 0 the analysis, for some of the inits, and
        ``analysis`` (time, channel, latitude, longitude). Each is scored on its inits (gridded,
        and interpolated to the stations), and the model also on the first baseline's inits
        (system :data:`SAME_INITS`).
    observations : xarray.DataArray, optional
        Station reports (time, station, channel) for every station of ``data`` and every valid
        time (:func:`station_observations`), physical units, NaN where none: station scores
        against the observations as well (``station_obs_scores``).

    Returns
    -------
    dict
        ``lead_hours`` (L,), ``channels`` (C,), ``rmse`` {``model``, ``persistence``,
        ``climatology``: lists (C, L) in physical units}; with stations: ``station_channels``,
        ``n_stations`` and ``station_rmse`` {``decoder``, ``interpolated``, ``persistence``:
        (C_st, L)}; ``n_inits``; and ``scores``: an :class:`xarray.Dataset` of dims
        ``(system, channel, lead_time)`` (systems ``model``, ``persistence`` and, with a
        climatology, ``climatology``; ``lead_time`` timedelta64) holding ``rmse`` and ``bias``
        with a ``units`` coordinate along ``channel`` (written as ``scores.zarr``); with stations
        ``station_scores``, the same for the systems ``station_decoder``,
        ``gridded_interpolated`` and ``persistence`` (unweighted over the stations), and with
        baselines each baseline (interpolated to the stations); with ``observations``,
        ``station_obs_scores``: the same systems and :data:`TRUTH` against the reports;
        ``analysis_scores``: the analysis error (lead 0, ``(system, channel, lead_time)``) of
        a cycling model's decoded analysis, of each baseline's analysis and of the climatology.

    Raises
    ------
    ValueError
        If ``n_steps`` exceeds ``data.n_steps``, ``spinup`` leaves no init to score, or
        ``keep`` is given for a model without cycling.
    """
    n_steps = data.n_steps if n_steps is None else int(n_steps)
    if n_steps > data.n_steps:
        raise ValueError(f"n_steps {n_steps} exceeds the {data.n_steps} target steps of the data")
    if not 0 <= spinup < len(data):
        raise ValueError(f"spinup {spinup} must leave inits to score among the {len(data)}")
    if keep and not model.cycling:
        raise ValueError("keep (withholding by mask) needs a cycling model; build a dataset without the source instead")
    dev = select_device(device)
    model = model.to(dev).eval()
    analyses = cycle_analyses(model, data, cache, keep, dev) if model.cycling else None
    scored = list(range(spinup, len(data), max(1, int(every))))
    L = n_steps
    lead = pd.to_timedelta([(k + 1) * data.step for k in range(L)]).to_numpy()
    grid_coords = {"lead_time": lead, "channel": list(data.channels), "latitude": data.out_latitude, "longitude": data.out_longitude}
    st_ci = [data.channels.index(c) for c in data.station_channels]
    st_idx = None if max_stations == 0 else _station_subset(len(data.station_latitude), max_stations)
    if st_idx is not None:
        slat, slon = data.station_latitude[st_idx], data.station_longitude[st_idx]
        to_stations = PointInterpolator(data.out_latitude, data.out_longitude, slat.numpy(), slon.numpy())
        st_coords = {"lead_time": lead, "station": np.arange(len(st_idx)), "channel": list(data.station_channels)}
    clim = None if climatology is None else torch.as_tensor(climatology, dtype=torch.float64)
    st_kw = {"channel_axis": -1, "channels": data.station_channels}
    per: dict[str, list[xr.Dataset]] = {k: [] for k in SYSTEMS if k != "climatology" or clim is not None}
    st_per: dict[str, list[xr.Dataset]] = {k: [] for k in STATION_SYSTEMS}
    ob_per: dict[str, list[xr.Dataset]] = {}
    an_per: dict[str, list[xr.Dataset]] = {"model": []} if model.cycling else {}
    if clim is not None:
        an_per["climatology"] = []
    base = {}
    for name, ds in (baselines or {}).items():
        if not (np.allclose(ds["latitude"].values, data.out_latitude) and np.allclose(ds["longitude"].values, data.out_longitude)):
            raise ValueError(f"baseline {name!r} is not on the output grid")
        if ds.sizes["lead_time"] < n_steps + 1:
            raise ValueError(f"baseline {name!r} has {ds.sizes['lead_time'] - 1} leads, {n_steps} needed")
        base[name] = (ds["forecast"].sel(channel=list(data.channels)), ds["analysis"].sel(channel=list(data.channels)))
        per[name], an_per[name] = [], []
        if st_idx is not None:
            st_per[name] = []
    if base:
        per[SAME_INITS] = []
    if observations is not None and st_idx is not None:
        obs_st = observations.sel(channel=list(data.station_channels)).isel(station=st_idx.numpy() if torch.is_tensor(st_idx) else st_idx)
        ob_per = {k: [] for k in [*STATION_SYSTEMS, TRUTH, *base]}
    an_coords = {"lead_time": np.array([0], dtype="timedelta64[ns]"), "channel": list(data.channels),
                 "latitude": data.out_latitude, "longitude": data.out_longitude}
    n = 0
    for i in range(0, len(scored), batch_size):
        idx = scored[i : i + batch_size]
        b = len(idx)
        points = None if st_idx is None else (slat.expand(b, -1).to(dev), slon.expand(b, -1).to(dev))
        if analyses is not None:
            out = model.forecast(analyses[idx].to(dev), n_steps, points, residual=data.static_batch(idx).to(dev))
        elif cache is not None:
            latent = model.fuse(cache.encode(model, data, idx, device=dev))
            out = model.forecast(latent, n_steps, points, residual=data.static_batch(idx).to(dev))
        else:
            inputs, _, _ = collate_obs([data[j] for j in idx])
            out = model(_to_device(inputs, dev), n_steps=n_steps, station_points=points)
        targets, st_targets = data.targets(idx, n_steps)
        inits = {"init_time": data.init_times[idx].to_numpy()}
        fc = data.denormalise(out["grid"].cpu()).double()  # (batch, lead, channel, lat, lon)
        truth = data.denormalise(targets).double()
        init = data.denormalise(data.initial_truth(idx)).double()[:, None]
        gc = inits | grid_coords
        truth_da = _field(truth, truth.shape, GRID_DIMS, gc)
        per["model"].append(spatial_error_means(_field(fc, truth.shape, GRID_DIMS, gc), truth_da))
        per["persistence"].append(spatial_error_means(_field(init, truth.shape, GRID_DIMS, gc), truth_da))
        if clim is not None:
            per["climatology"].append(spatial_error_means(_field(clim[None, None], truth.shape, GRID_DIMS, gc), truth_da))
        times = data.init_times[idx]
        init_truth = data.denormalise(data.initial_truth(idx)).double()  # (batch, channel, lat, lon)
        an_truth = _field(init_truth[:, None], init_truth[:, None].shape, GRID_DIMS, inits | an_coords)
        if "model" in an_per:
            decoded = data.denormalise(model.decode_analysis(analyses[idx].to(dev), data.static_batch(idx).to(dev)).cpu()).double()
            an_per["model"].append(spatial_error_means(_field(decoded[:, None], an_truth.shape, GRID_DIMS, inits | an_coords), an_truth))
        if clim is not None:
            an_per["climatology"].append(spatial_error_means(_field(clim[None, None], an_truth.shape, GRID_DIMS, inits | an_coords), an_truth))
        base_fc: dict[str, tuple[list[int], torch.Tensor]] = {}
        for name, (bfc, ban) in base.items():
            at = [k for k, t in enumerate(times) if t in bfc.indexes["init_time"]]
            if at:
                f = torch.from_numpy(bfc.sel(init_time=times[at]).isel(lead_time=slice(1, n_steps + 1)).values).double()
                base_fc[name] = (at, f)
                per[name].append(spatial_error_means(_field(f, f.shape, GRID_DIMS, {"init_time": times[at].to_numpy()} | grid_coords),
                                                     truth_da.isel(init_time=at)))
                if name == next(iter(base)):
                    per[SAME_INITS].append(spatial_error_means(_field(fc, truth.shape, GRID_DIMS, gc).isel(init_time=at), truth_da.isel(init_time=at)))
            have = [k for k, t in enumerate(times) if t in ban.indexes["time"]]
            if have:
                a = torch.from_numpy(ban.sel(time=times[have]).values).double()[:, None]
                an_per[name].append(spatial_error_means(_field(a, a.shape, GRID_DIMS, {"init_time": times[have].to_numpy()} | an_coords),
                                                        an_truth.isel(init_time=have)))
        if st_idx is not None:
            st_truth = data.denormalise(st_targets[:, :, st_idx], **st_kw).double()  # (batch, lead, station, channel)
            st_fc = data.denormalise(out["stations"].cpu(), **st_kw).double()
            interp = torch.from_numpy(to_stations(fc[:, :, st_ci].numpy())).transpose(-1, -2)
            st_init = data.denormalise(data.initial_station_truth(idx)[:, st_idx], **st_kw).double()[:, None]
            sc, sd = inits | st_coords, ("init_time", "lead_time", "station", "channel")
            st_truth_da = _field(st_truth, st_truth.shape, sd, sc)
            systems = {"decoder": st_fc, "interpolated": interp, "persistence": st_init}
            for k, f in systems.items():
                st_per[k].append(spatial_error_means(_field(f, st_truth.shape, sd, sc), st_truth_da, spatial_dims=("station",), weighted=False))
            base_st = {}
            for name, (at, f) in base_fc.items():
                base_st[name] = (at, torch.from_numpy(to_stations(f[:, :, st_ci].numpy())).transpose(-1, -2))
                st_per[name].append(spatial_error_means(_field(base_st[name][1], base_st[name][1].shape, sd, {"init_time": times[at].to_numpy()} | st_coords),
                                                        st_truth_da.isel(init_time=at), spatial_dims=("station",), weighted=False))
            if ob_per:
                valid = times.to_numpy()[:, None] + lead[None, :]
                ob = torch.from_numpy(obs_st.reindex(time=valid.ravel()).values.reshape(b, L, len(st_idx), -1))
                ob_da = _field(ob, ob.shape, sd, sc)
                for k, f in {**systems, TRUTH: st_truth}.items():
                    ob_per[k].append(spatial_error_means(_field(f, ob.shape, sd, sc), ob_da, spatial_dims=("station",), weighted=False))
                for name, (at, f) in base_st.items():
                    ob_per[name].append(spatial_error_means(_field(f, f.shape, sd, {"init_time": times[at].to_numpy()} | st_coords),
                                                            ob_da.isel(init_time=at), spatial_dims=("station",), weighted=False))
        n += b
    units = channel_units(data.channels)
    scores = combine_systems({k: aggregate_scores(xr.concat(v, "init_time"), ("init_time",), units) for k, v in per.items() if v})
    scores.attrs["n_inits"] = n
    res: dict[str, Any] = {
        "lead_hours": [float((k + 1) * data.step / pd.Timedelta(hours=1)) for k in range(L)],
        "channels": list(data.channels),
        "n_inits": n,
        "rmse": {k: scores["rmse"].sel(system=k).transpose("channel", "lead_time").values.tolist() for k in per if per[k]},
        "scores": scores,
    }
    if any(an_per.values()):
        res["analysis_scores"] = combine_systems({k: aggregate_scores(xr.concat(v, "init_time"), ("init_time",), units) for k, v in an_per.items() if v})
    if st_idx is not None:
        st_units = channel_units(data.station_channels)
        st_scores = combine_systems({
            STATION_SYSTEMS.get(k, k): aggregate_scores(xr.concat(v, "init_time"), ("init_time",), st_units) for k, v in st_per.items() if v
        })
        st_scores.attrs.update(n_inits=n, n_stations=len(st_idx))
        res["station_channels"] = list(data.station_channels)
        res["n_stations"] = len(st_idx)
        res["station_rmse"] = {
            k: st_scores["rmse"].sel(system=name).transpose("channel", "lead_time").values.tolist() for k, name in STATION_SYSTEMS.items()
        }
        res["station_scores"] = st_scores
        if ob_per:
            ob_scores = combine_systems({
                STATION_SYSTEMS.get(k, k): aggregate_scores(xr.concat(v, "init_time"), ("init_time",), st_units) for k, v in ob_per.items() if v
            })
            ob_scores.attrs.update(n_inits=n, n_stations=len(st_idx), n_reports=int(np.isfinite(obs_st.values).sum()))
            res["station_obs_scores"] = ob_scores
    return res


def skill_table(result: Mapping[str, Any], channels: Sequence[str] | None = None, leads: Sequence[float] | None = None) -> pd.DataFrame:
    """Tidy table of :func:`evaluate` scores: one row per (channel, lead) with the RMSE of the
    model and each baseline (and, for station channels, the station decoder and interpolation)."""
    rows = []
    leads_all = result["lead_hours"]
    for ci, c in enumerate(result["channels"]):
        if channels is not None and c not in channels:
            continue
        for li, lead in enumerate(leads_all):
            if leads is not None and lead not in leads:
                continue
            row = {"channel": c, "lead_hours": lead}
            row.update({k: v[ci][li] for k, v in result["rmse"].items()})
            if "station_rmse" in result and c in result["station_channels"]:
                si = result["station_channels"].index(c)
                row.update({f"station_{k}": v[si][li] for k, v in result["station_rmse"].items()})
            rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["SAME_INITS", "STATION_SYSTEMS", "SYSTEMS", "TRUTH", "channel_variable", "evaluate", "gridpoint_climatology", "skill_table",
           "station_observations"]
