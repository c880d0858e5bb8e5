"""Ensemble forecasts of a trained model, with no retraining: an ensemble of data assimilations (Prefect-free).

Method: EDA (ensemble of data assimilations)
--------------------------------------------
Each member runs the model's own analysis cycle (:func:`obscast.components.training.trainer.cycle_analyses`:
a cold start ``verify.spinup_cycles`` windows before the init, then one analysis per window,
each fusing that window's observations with the member's own Δt background) on a copy of the
observations perturbed by random draws of their error, then forecasts from its last analysis.
This is the perturbed-observation ensemble of data assimilation (Houtekamer et al. 1996, Mon.
Wea. Rev. 124, 1225; Burgers et al. 1998, Mon. Wea. Rev. 126, 1719) as ECMWF's EDA runs it
(Isaksen et al. 2010, ECMWF Tech. Memo. 636): every observation ``y`` becomes
``y + e``, ``e ~ N(0, sigma_obs^2)`` drawn independently per member, report and variable.

Why this and not a CRPS-trained model with noise injection (AIFS-CRPS, Lang et al. 2024,
arXiv:2412.15832): that needs a new training objective and a stochastic processor, so a new
model and a new training run; the EDA needs neither. It perturbs the one thing the model
is uncertain about by construction, the observations it starts from, with the error statistics
the observations are known to have, and through the cycle the perturbations of earlier windows
reach the background, as in an EDA. Its spread therefore measures the analysis uncertainty
the observations leave; it carries no model error (a deterministic processor), which is why
an optional additive perturbation of the final analysis (``ensemble.latent_noise``) exists, and
why its spread/skill ratio is expected below 1 at long leads.

The error standard deviations (``sigma_obs``) are those the OSSE simulated the observations
with (``osse.error_model``, :class:`obscast.components.osse.errors.ErrorModel`), so in the OSSE
the perturbations have exactly the observation errors' distribution (a gross-error-free
Gaussian). For real data (no ``osse`` section) the same class's defaults serve as per-variable
defaults (1 K temperature, 2 m s-1 wind components, 100 Pa pressure, 15 m geopotential height,
0.5 K brightness temperature); :data:`EXTRA_ERROR_STD` covers the other variables obscast reads.

Why the observations are re-encoded and the :class:`~obscast.components.training.trainer.FeatureCache`
is not used: the cache holds the SetConv features of the *unperturbed* observations. The
features are linear in the normalised values, so one could add the features of the noise, but
the normalisation's gross-error guard (values beyond ``GROSS_SIGMA`` become missing) is not
linear, and the noise's features cost one scatter per member and window anyway, as much as
encoding the perturbed observations. So each member builds its own
:class:`~obscast.components.data.obs.ObsWindowDataset` from perturbed tables (restricted to the
windows the cycle uses) and runs the encoders on it, exactly as :func:`forecast_at` does
without a cache; the members are run together as one batch.

Members are exchangeable (all are perturbed; there is no unperturbed control), as the fair
CRPS assumes. Results are deterministic given ``seed``: member ``k``'s perturbations come from
``numpy.random.default_rng([seed, k, crc32(source name)])``, so a source's draws do not depend
on which other sources are present.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr
from obscast.components.config import Config
from obscast.components.data.experiment import (
    cycling_inits,
    init_times,
    period_times,
    prior_of,
    station_points,
)
from obscast.components.data.obs import ObsWindowDataset, collate_obs
from obscast.components.errors import ObscastError
from obscast.components.model.model import ObsCastModel
from obscast.components.osse.errors import ErrorModel

#: Observation error standard deviations (in the variable's canonical unit) of variables the
#: OSSE error model does not simulate; assumed typical values of surface and upper-air reports.
EXTRA_ERROR_STD: dict[str, float] = {
    "dew_point_temperature": 1.5,  # K
    "air_pressure_at_mean_sea_level": 100.0,  # Pa
    "geopotential": 15.0 * 9.80665,  # m2 s-2 (15 m of geopotential height)
    "specific_humidity": 1.0e-3,  # kg kg-1
}


def is_flag_column(column: str) -> bool:
    """True for quality-control flag columns (``qc``, and ``qc_ch<N>`` of pivoted satellite
    channels): codes, not measurements, so they have no observation error and are never perturbed."""
    return column == "qc" or column.startswith("qc_ch")


def observation_error_std(column: str, error_model: ErrorModel) -> float:
    """Observation error standard deviation of an observation-table value column.

    Parameters
    ----------
    column : str
        A prepared table's value column: a CF name (``air_temperature``, ``eastward_wind``, ...)
        or a pivoted satellite channel ``brightness_temperature_ch<N>``.
    error_model : ErrorModel
        Gives the standard deviations it knows (:meth:`ErrorModel.std`).

    Returns
    -------
    float
        In the column's unit (K, m s-1, Pa, m, ...).

    Raises
    ------
    ObscastError
        If no standard deviation is known for the column.
    """
    base = column.split("_ch")[0] if column.startswith("brightness_temperature_ch") else column
    try:
        return float(error_model.std(base))
    except AttributeError:
        pass
    if base in EXTRA_ERROR_STD:
        return EXTRA_ERROR_STD[base]
    raise ObscastError(f"ensemble: no observation error standard deviation for column {column!r}; "
                       f"known: those of osse.error_model and {sorted(EXTRA_ERROR_STD)}")


def error_model_of(config: Config) -> ErrorModel:
    """The observation errors the members are perturbed with: ``osse.error_model`` in an OSSE,
    else :class:`ErrorModel`'s defaults (see the module docstring)."""
    return config.osse.error_model if config.osse is not None else ErrorModel()


def perturb_tables(tables: Mapping[str, pd.DataFrame], variables: Mapping[str, Sequence[str]], error_model: ErrorModel,
                   seed: int, member: int) -> dict[str, pd.DataFrame]:
    """Copies of observation tables with Gaussian observation errors added (one EDA member).

    Parameters
    ----------
    tables : mapping
        Source name -> prepared observation table (:func:`obscast.components.data.tables.prepare_table`).
    variables : mapping
        Source name -> value columns to perturb (the model's input variables of that source;
        QC flag columns, :func:`is_flag_column`, are left as they are); tables of other sources
        are returned unchanged (the same object).
    error_model : ErrorModel
        Standard deviations (:func:`observation_error_std`).
    seed, member : int
        The draws of source ``name`` come from ``numpy.random.default_rng([seed, member, zlib.crc32(name)])``.

    Returns
    -------
    dict
        Source name -> table; perturbed columns get ``value + N(0, sigma^2)`` where finite
        (missing values stay missing).

    Raises
    ------
    ObscastError
        If a column to perturb is missing from its table or has no known error.
    """
    out = dict(tables)
    for name in sorted(tables):
        cols = [c for c in variables.get(name, ()) if not is_flag_column(c)]
        if not cols:
            continue
        table = tables[name]
        absent = [c for c in cols if c not in table]
        if absent:
            raise ObscastError(f"ensemble: observation table {name!r} lacks the input columns {absent} (has {list(table.columns)})")
        rng = np.random.default_rng([int(seed), int(member), zlib.crc32(name.encode())])
        copy = table.copy()
        noise = rng.standard_normal((len(table), len(cols)))
        for j, c in enumerate(cols):
            copy[c] = table[c].to_numpy(np.float64) + observation_error_std(c, error_model) * noise[:, j]
        out[name] = copy
    return out


def _window_rows(table: pd.DataFrame, first_end: pd.Timestamp, last_end: pd.Timestamp, window: pd.Timedelta) -> pd.DataFrame:
    """Rows in the windows ``(first_end - window, last_end]``."""
    t = pd.to_datetime(table["time"])
    return table[((t > first_end - window) & (t <= last_end)).to_numpy()]


def ensemble_forecast(model: ObsCastModel, config: Config, tables: Mapping[str, pd.DataFrame], truth: xr.Dataset,
                      statistics: Mapping[str, Any], init: pd.Timestamp, n_steps: int, members: int, seed: int, *,
                      latent_noise: float = 0.0, error_model: ErrorModel | None = None,
                      member: int | None = None) -> tuple[ObsWindowDataset, dict[str, torch.Tensor]]:
    """An EDA ensemble forecast from ``init`` (see the module docstring).

    The same cycle as :func:`obscast.components.training.workflow.forecast_at` (cold start
    ``verify.spinup_cycles`` windows before ``init`` for a cycling model), once per member on
    perturbed observations; with all error standard deviations zero and no ``latent_noise``
    every member equals :func:`forecast_at`'s forecast.

    Parameters
    ----------
    model : ObsCastModel
        Trained, any device (run on the CPU).
    config : Config
        ``ingest.window``, ``verify.spinup_cycles``, ``model.step``/``history``, the experiment.
    tables : mapping
        Source name -> prepared observation table (:func:`obscast.components.data.experiment.load_tables`).
    truth : xarray.Dataset
        The gridded target (its times index the cycle; it gives the verifying truth).
    statistics : mapping
        The model's normalisation statistics (model card).
    init : pandas.Timestamp
        Init time, a multiple of the window.
    n_steps : int
        Lead times, >= 1 (steps of ``model.step``).
    members : int
        Ensemble size, >= 1.
    seed : int
        Seeds every draw: the result is deterministic given it.
    latent_noise : float
        Optional extra perturbation of each member's final analysis: Gaussian noise of this
        many times the analysis' spatial standard deviation per latent channel (0: none).
    error_model : ErrorModel, optional
        Observation errors; default :func:`error_model_of` ``(config)``.
    member : int, optional
        Member of a target with a member dimension (default the first test member).

    Returns
    -------
    dataset : ObsWindowDataset
        Of the unperturbed observations, last sample at ``init`` (grid, channels, stations,
        :meth:`~ObsWindowDataset.denormalise`, :meth:`~ObsWindowDataset.targets`).
    output : dict
        ``grid`` (members, n_steps, channel, lat, lon) and ``stations`` (members, n_steps,
        station, station_channel), normalised; step ``k`` valid at ``init + (k + 1) model.step``.

    Raises
    ------
    ValueError
        If ``members`` < 1, ``latent_noise`` < 0, or the dataset cannot be built (see
        :class:`ObsWindowDataset`).
    ObscastError
        If an input column has no known observation error.
    """
    if members < 1:
        raise ValueError(f"ensemble members must be >= 1, got {members}")
    if latent_noise < 0:
        raise ValueError(f"latent_noise must be >= 0, got {latent_noise}")
    window, init = config.ingest.window, pd.Timestamp(init)
    em = error_model if error_model is not None else error_model_of(config)
    cycling = bool(getattr(model, "cycling", False))
    inits = cycling_inits(truth, pd.DatetimeIndex([init]), window, config.verify.spinup_cycles)[0] if cycling else pd.DatetimeIndex([init])
    split = config.require_experiment().split
    target_members = None
    if "member" in truth.dims:
        target_members = [member if member is not None else split.test[0]]
    m, t = config.model, config.experiment.target
    # Station positions from all reports (as forecast_at), before the tables are cut to the cycle's windows.
    points = station_points(dict(tables), t.stations)
    first = inits[0] - (m.history - 1) * window
    cut = {k: _window_rows(v, first, inits[-1], window) for k, v in tables.items()}
    variables = {k: statistics["sources"][k]["variables"] for k in cut if k in statistics["sources"]}

    def build(tabs: Mapping[str, pd.DataFrame]) -> ObsWindowDataset:
        return ObsWindowDataset(tabs, truth, inits, statistics, n_steps=n_steps, step=m.step, history=m.history,
                                station_points=points, station_channels=t.station_channels, members=target_members,
                                prior=prior_of(config))

    base = build(cut)
    sets = [build(perturb_tables(cut, variables, em, seed, k)) for k in range(members)]
    gen = torch.Generator().manual_seed(int(seed))
    model.eval()
    with torch.no_grad():
        model = model.to("cpu")
        new = base.consecutive()
        bg, latent = None, None
        for i in range(len(base) if cycling else 0):
            if not new[i]:
                bg = None
            inputs, _, _ = collate_obs([d[i] for d in sets])
            latent = model.encode(inputs, background=bg)
            if model.cycling:
                bg = model.next_background(latent)
        last = len(base) - 1
        if cycling:
            if latent_noise > 0:
                scale = latent.std(dim=(-2, -1), keepdim=True)
                latent = latent + latent_noise * scale * torch.randn(latent.shape, generator=gen)
            out = model.forecast(latent, n_steps, base.station_points(members), residual=base.static_batch([last] * members))
        else:
            inputs, _, _ = collate_obs([d[last] for d in sets])
            if latent_noise > 0:
                residual = inputs.get(model.residual_source) if model.residual_source else None
                latent = model.encode(inputs)
                scale = latent.std(dim=(-2, -1), keepdim=True)
                latent = latent + latent_noise * scale * torch.randn(latent.shape, generator=gen)
                out = model.forecast(latent, n_steps, base.station_points(members),
                                     residual=residual["values"] if isinstance(residual, dict) else residual)
            else:
                out = model(inputs, n_steps=n_steps, station_points=base.station_points(members))
    return base, {k: v for k, v in out.items() if k in ("grid", "stations")}


def ensemble_inits(config: Config, truth: xr.Dataset, n_steps: int) -> pd.DatetimeIndex:
    """The test inits the ensemble is scored on: every ``ensemble.every``-th init of the test
    split whose ``n_steps`` targets lie in it, at most ``ensemble.inits`` of them.

    Raises
    ------
    ValueError
        If the test split is too short for ``n_steps``.
    """
    e, m = config.ensemble, config.model
    split = config.require_experiment().split
    times = period_times(truth, split.test) if split.by == "period" else pd.DatetimeIndex(truth["time"].values)
    inits = init_times(times, n_steps, m.step, m.history, config.ingest.window)
    return inits[:: e.every][: e.inits]


def ensemble_hindcasts(model: ObsCastModel, config: Config, tables: Mapping[str, pd.DataFrame], truth: xr.Dataset,
                       statistics: Mapping[str, Any], n_steps: int, inits: Sequence[pd.Timestamp] | None = None) -> dict[str, xr.DataArray]:
    """Ensemble and deterministic forecasts with their truth on test inits, for scoring.

    Parameters
    ----------
    model, config, tables, truth, statistics :
        As :func:`ensemble_forecast`; ``ensemble.members``, ``seed``, ``latent_noise`` are used.
    n_steps : int
    inits : sequence of pandas.Timestamp, optional
        Default :func:`ensemble_inits`. Init ``j`` is drawn with seed ``ensemble.seed + j``.

    Returns
    -------
    dict
        ``ensemble`` (member, init_time, lead_time, channel, latitude, longitude);
        ``deterministic`` and ``truth`` (init_time, lead_time, channel, latitude, longitude):
        the model's unperturbed forecast (:func:`forecast_at`, the same cycle) and the target on
        the output grid; ``station_ensemble`` (member, init_time, lead_time, channel, station)
        and ``station_truth`` (init_time, lead_time, channel, station) when there are stations.
        Physical units; ``channel`` has a ``units`` coordinate.
    """
    from obscast.components.training.workflow import forecast_at
    from obscast.components.verification.metrics import channel_units

    e = config.ensemble
    inits = pd.DatetimeIndex(inits if inits is not None else ensemble_inits(config, truth, n_steps))
    ens, det, tru, st_ens, st_tru = [], [], [], [], []
    ds = None
    for j, init in enumerate(inits):
        ds, out = ensemble_forecast(model, config, tables, truth, statistics, init, n_steps, e.members, e.seed + j,
                                    latent_noise=e.latent_noise)
        _, d_out = forecast_at(model, config, tables, truth, statistics, init, n_steps)
        last = len(ds) - 1
        targets, st_targets = ds.targets([last], n_steps)
        ens.append(ds.denormalise(out["grid"]).double().numpy())
        det.append(ds.denormalise(d_out["grid"])[0].double().numpy())
        tru.append(ds.denormalise(targets)[0].double().numpy())
        if "stations" in out and len(ds.station_latitude):
            sc = ds.station_channels
            st_ens.append(ds.denormalise(out["stations"], channel_axis=-1, channels=sc).double().numpy())
            st_tru.append(ds.denormalise(st_targets, channel_axis=-1, channels=sc)[0].double().numpy())
    lead = pd.to_timedelta([config.model.step * (k + 1) for k in range(n_steps)]).to_numpy("timedelta64[ns]")
    coords = {"init_time": inits.as_unit("ns").to_numpy(), "lead_time": lead, "channel": ds.channels,
              "units": ("channel", channel_units(ds.channels)), "latitude": ds.out_latitude, "longitude": ds.out_longitude}
    dims = ("init_time", "lead_time", "channel", "latitude", "longitude")
    result = {
        "ensemble": xr.DataArray(np.stack(ens, axis=1), dims=("member", *dims), coords=coords),
        "deterministic": xr.DataArray(np.stack(det), dims=dims, coords=coords),
        "truth": xr.DataArray(np.stack(tru), dims=dims, coords=coords),
    }
    if st_ens:
        sc = ds.station_channels
        st_coords = {"init_time": coords["init_time"], "lead_time": lead, "channel": sc, "units": ("channel", channel_units(sc)),
                     "station": np.arange(len(ds.station_latitude)),
                     "latitude": ("station", ds.station_latitude.numpy().astype(float)),
                     "longitude": ("station", ds.station_longitude.numpy().astype(float))}
        st_dims = ("init_time", "lead_time", "station", "channel")
        result["station_ensemble"] = xr.DataArray(np.stack(st_ens, axis=1), dims=("member", *st_dims), coords=st_coords).transpose(
            "member", "init_time", "lead_time", "channel", "station")
        result["station_truth"] = xr.DataArray(np.stack(st_tru), dims=st_dims, coords=st_coords).transpose(
            "init_time", "lead_time", "channel", "station")
    return result


def _stations_coords(station_id: np.ndarray, latitude: np.ndarray, longitude: np.ndarray) -> dict[str, Any]:
    return {
        "station_id": ("station", np.asarray(station_id, dtype=object)),
        "latitude": ("station", np.asarray(latitude, "float64"), {"standard_name": "latitude", "units": "degrees_north"}),
        "longitude": ("station", np.asarray(longitude, "float64"), {"standard_name": "longitude", "units": "degrees_east"}),
    }


def station_ensemble_product(stations: np.ndarray, channels: Sequence[str], station_id: np.ndarray, latitude: np.ndarray,
                             longitude: np.ndarray, init_time: pd.Timestamp, step: pd.Timedelta, quantiles: Sequence[float],
                             thresholds: Mapping[str, Sequence[float]], attrs: Mapping[str, Any]) -> xr.Dataset:
    """The probabilistic station product: quantiles and exceedance probabilities, CF-1.10.

    Quantiles: per station channel a variable ``(percentile, lead_time, station)`` with the
    channel's CF ``standard_name`` and units and a ``percentile`` coordinate in % (the
    convention of the Met Office's IMPROVER and ECMWF's ENS percentile products), computed
    with ``numpy.quantile`` (linear interpolation between the sorted members, Hyndman & Fan
    1996 type 7), so they are ordered. Exceedance probabilities: per channel whose CF variable
    has thresholds, ``probability_of_<channel>_above_threshold`` ``(threshold, lead_time,
    station)``, units ``1``, the fraction of members strictly above each threshold; its
    threshold coordinate carries the variable's ``standard_name`` and units and
    ``spp__relative_to_threshold = "greater_than"`` (IMPROVER's convention; CF has no
    probability standard names).

    Parameters
    ----------
    stations : numpy.ndarray
        ``(member, n_steps, station, channel)``, physical units.
    channels : sequence of str
        Station channel names (``air_temperature_sigma095``, ...).
    station_id, latitude, longitude : numpy.ndarray
        ``(station,)`` identifiers and positions (degrees).
    init_time, step :
        Init time and the step of the lead times.
    quantiles : sequence of float
        Fractions in (0, 1), e.g. ``(0.1, 0.5, 0.9)``.
    thresholds : mapping
        CF variable -> thresholds in its unit (``ensemble.thresholds``).
    attrs : mapping
        Global attributes (title, model, version).

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    ValueError
        If ``stations`` is not 4-D with ``len(channels)`` channels.
    """
    from obscast.components.model.forecasting import (
        _cf_attrs,
        _time_coords,
        split_channels,
    )

    if stations.ndim != 4 or stations.shape[-1] != len(channels):
        raise ValueError(f"stations: expected (member, n_steps, station, {len(channels)} channels), found shape {stations.shape}")
    q = np.asarray(quantiles, float)
    values = np.quantile(stations, q, axis=0)  # (quantile, step, station, channel)
    data: dict[str, Any] = {}
    coords = {**_time_coords(init_time, step, stations.shape[1]), **_stations_coords(station_id, latitude, longitude),
              "percentile": ("percentile", 100.0 * q, {"long_name": "percentile of the ensemble distribution", "units": "%"})}
    for i, (name, (var, lev)) in enumerate(zip(channels, split_channels(list(channels)))):
        level = {} if lev is None else {"level": lev}
        data[name] = (("percentile", "lead_time", "station"), values[..., i].astype("float32"),
                      {**_cf_attrs(var), **level, "long_name": f"{_cf_attrs(var)['long_name']}, percentiles of the ensemble"})
        limits = list(thresholds.get(var, ()))
        if not limits:
            continue
        dim = f"threshold_{name}"
        above = (stations[None, ..., i] > np.asarray(limits, float)[:, None, None, None]).mean(axis=1)
        units = _cf_attrs(var)["units"]
        coords[dim] = (dim, np.asarray(limits, float), {"standard_name": var, "units": units, "long_name": f"threshold of {name}",
                                                        "spp__relative_to_threshold": "greater_than"})
        data[f"probability_of_{name}_above_threshold"] = ((dim, "lead_time", "station"), above.astype("float32"), {
            "long_name": f"probability of {name} above the threshold", "units": "1", "valid_min": 0.0, "valid_max": 1.0, **level})
    return xr.Dataset(data, coords=coords, attrs={"Conventions": "CF-1.10", "featureType": "timeSeries",
                                                  "ensemble_members": int(stations.shape[0]), **attrs})


def gridded_ensemble_product(grid: np.ndarray, channels: Sequence[str], latitude: np.ndarray, longitude: np.ndarray,
                             init_time: pd.Timestamp, step: pd.Timedelta, attrs: Mapping[str, Any]) -> xr.Dataset:
    """The gridded members, CF-1.10: :func:`~obscast.components.model.forecasting.gridded_forecast_dataset`
    per member, stacked along ``realization`` (CF standard name ``realization``).

    Parameters
    ----------
    grid : numpy.ndarray
        ``(member, n_steps, channel, lat, lon)``, physical units.

    Returns
    -------
    xarray.Dataset
        Variables ``(realization, lead_time, [level,] latitude, longitude)``.
    """
    from obscast.components.model.forecasting import gridded_forecast_dataset

    members = [gridded_forecast_dataset(g, list(channels), latitude, longitude, init_time, step, dict(attrs)) for g in grid]
    ds = xr.concat(members, dim="realization", coords="minimal", compat="override", combine_attrs="override")
    ds = ds.assign_coords(realization=("realization", np.arange(len(members), dtype="int32"), {"standard_name": "realization", "units": "1"}))
    ds.attrs["ensemble_members"] = len(members)
    return ds


__all__ = [
    "EXTRA_ERROR_STD", "ensemble_forecast", "ensemble_hindcasts", "ensemble_inits", "error_model_of",
    "gridded_ensemble_product", "is_flag_column", "observation_error_std", "perturb_tables", "station_ensemble_product",
]
