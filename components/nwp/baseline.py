"""Run (or reuse) the classical NWP baseline of an OSSE and store its analyses and forecasts.

:func:`run_baseline` estimates ``B`` on the training period, tunes its variance scale on the
validation period, cycles both twins (:mod:`obscast.components.nwp.cycle`) through the test
period and forecasts from every ``every``-th test init. :func:`load_or_run_baseline` caches
the result in the store under ``baselines/nwp/<hash>/<system>.zarr``, keyed by
:func:`~obscast.components.nwp.cycle.baseline_hash` of everything that determines it.

Each stored dataset (one per system of :data:`~obscast.components.nwp.cycle.SYSTEMS`) holds

``forecast`` (init_time, lead_time, channel, latitude, longitude)
    physical units per channel (``units`` coordinate), lead 0 the analysis;
``analysis`` (time, channel, latitude, longitude)
    every analysis of the test period (after the spin-up);

on obscast's output grid (the nature grid coarsened by ``model.coarsen``), with the 3D-Var
diagnostics and the tuning in the attributes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
from obscast.components.data.fields import (
    coarse_coordinates,
    coarsen_fields,
    stack_truth,
    truth_channels,
)
from obscast.components.nwp.cycle import (
    SYSTEMS,
    Twin,
    analysis_error,
    baseline_hash,
    build_twins,
    initial_template,
    lagged_differences,
    run_cycle,
    to_twin,
)
from obscast.components.nwp.spectral import FIELDS, SpectralCovariance
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)


class NwpBaselineConfig(BaseModel):
    """The classical NWP baseline of an OSSE (``osse.nwp``; docs/architecture.md).

    Attributes
    ----------
    fraternal_truncation : {"T21", "T31"}
        Truncation of the fraternal twin (model error).
    every : int
        Forecast from every ``every``-th test init (the cycle runs through all of them).
    test_days : float, optional
        Cycle and forecast over the first ``test_days`` of the test period only (cost; the
        model is compared with the twins on the same inits). None: the whole test period.
    spinup_cycles : int
        Cycles before the first scored init, from a cold start.
    cold_start_days : float
        The first background is the nature-run state this many days before the first cycle.
    covariance_samples : int
        Lagged-difference samples (training period) for ``B``.
    variance_scales : list of float
        Candidate factors of ``B``; the one with the smallest validation analysis error is used
        (one value: used as it is, no tuning cycles).
    tuning_cycles : int
        Scored validation cycles per candidate (after ``spinup_cycles``).
    max_iterations : int
        L-BFGS iterations per analysis.
    background_check : float
        First-guess check threshold, robust standard deviations (0: none).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fraternal_truncation: Literal["T21", "T31"] = "T21"
    every: int = Field(default=4, ge=1)
    test_days: float | None = Field(default=None, gt=0)
    spinup_cycles: int = Field(default=12, ge=0)
    cold_start_days: float = Field(default=30.0, gt=0)
    covariance_samples: int = Field(default=40, ge=2)
    variance_scales: list[float] = Field(default_factory=lambda: [0.25, 1.0, 4.0], min_length=1)
    tuning_cycles: int = Field(default=8, ge=1)
    max_iterations: int = Field(default=25, ge=1)
    background_check: float = Field(default=5.0, ge=0.0)


def _nearest_state(times: np.ndarray, when: pd.Timestamp) -> int:
    """Index of the stored state nearest to ``when`` (clipped to the stored range)."""
    t = pd.DatetimeIndex(times)
    return int(np.argmin(np.abs((t - when).total_seconds())))


def run_baseline(
    nature_path: str,
    nature_cfg: Any,
    nwp: NwpBaselineConfig,
    errors: Mapping[str, float],
    tables: Mapping[str, pd.DataFrame],
    truth: xr.Dataset,
    train: tuple[pd.Timestamp, pd.Timestamp],
    validation: tuple[pd.Timestamp, pd.Timestamp],
    test_inits: pd.DatetimeIndex,
    n_steps: int,
    coarsen: int,
    window: pd.Timedelta,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, xr.Dataset]:
    """Both twins over the test period.

    Parameters
    ----------
    nature_path : str
        The nature run's local zarr store (its ``states`` group, :func:`~obscast.components.osse.nature.load_states`).
    nature_cfg : NatureRunConfig
    nwp : NwpBaselineConfig
    errors : mapping
        Observation-error standard deviation per variable (the OSSE's error model).
    tables : mapping
        Source name -> accepted observations (as stored, after QC).
    truth : xarray.Dataset
        The nature run (for tuning against the truth on the validation period).
    train, validation : tuple
        (start, end) of the periods.
    test_inits : pandas.DatetimeIndex
        The inits obscast is verified on; the twins forecast from every ``nwp.every``-th (of the
        first ``nwp.test_days``).
    n_steps : int
        Forecast length in windows.
    coarsen : int
        Output block size (``model.coarsen``).
    window : pandas.Timedelta
        The analysis window (``ingest.window``).
    progress : callable, optional
        ``progress(phase, done, total)``.

    Returns
    -------
    dict
        System name -> dataset (module docstring).

    Raises
    ------
    KeyError
        If the nature run has no stored states.
    ValueError
        If no stored state lies in the training period.
    """
    from obscast.components.osse.nature import load_states

    t_start = time.perf_counter()
    state_times, states = load_states(nature_path)
    st = pd.DatetimeIndex(state_times)
    in_train = np.flatnonzero((st >= train[0]) & (st <= train[1]))
    if in_train.size == 0:
        raise ValueError(f"no nature-run state in the training period {train[0]} .. {train[1]}")
    pick = in_train[np.unique(np.linspace(0, in_train.size - 1, min(nwp.covariance_samples, in_train.size)).round().astype(int))]
    lat, lon = np.asarray(truth["latitude"].values), np.asarray(truth["longitude"].values)
    channels = truth_channels(truth)
    out_lat, out_lon = coarse_coordinates(lat, lon, coarsen)

    import jax
    from obscast.components.osse.dycore import build_dycore

    d42 = build_dycore(nature_cfg.truncation, nature_cfg.n_sigma_layers, nature_cfg.dt_minutes, nature_cfg.steps_per_output,
                       tuple(nature_cfg.level_indices()), **nature_cfg.world_kwargs())
    template42 = d42["init_fn"](rng_key=jax.random.PRNGKey(0))
    diffs = lagged_differences(lambda s: d42["advance"](s)[0], template42, {f: states[f][pick] for f in FIELDS})
    base_b = SpectralCovariance.estimate(diffs, np.asarray(d42["coords"].horizontal.mask))
    identical, fraternal, output = build_twins(nature_cfg, base_b, nwp.fraternal_truncation, nwp.max_iterations, nwp.background_check)
    by_name = {identical.name: identical, fraternal.name: fraternal}
    m21, l21 = fraternal.dycore["coords"].horizontal.modal_shape
    timings = {"covariance_s": time.perf_counter() - t_start}

    def truth_at(times: pd.DatetimeIndex) -> np.ndarray:
        return coarsen_fields(stack_truth(truth, times), lat, coarsen)

    def cycle(twin: Twin, output, first: pd.Timestamp, last: pd.Timestamp, score_from: pd.Timestamp,
              inits=(), phase: str = "") -> dict[str, Any]:
        times = pd.date_range(first, last, freq=window)
        cold = _nearest_state(state_times, first - pd.Timedelta(days=nwp.cold_start_days))
        x0 = to_twin(twin, {f: states[f][cold] for f in FIELDS}, initial_template(twin))
        cb = None if progress is None else (lambda d, n: progress(phase, d, n))
        return run_cycle(twin, output, x0, tables, times, window, errors, coarsen, score_from, inits, n_steps, cb)

    # Tuning on the validation period: the variance scale with the smallest analysis error.
    v0 = pd.Timestamp(validation[0]) + window * nwp.spinup_cycles
    v_last = min(pd.Timestamp(validation[1]), v0 + window * (nwp.tuning_cycles - 1))
    clim_std = truth_at(pd.date_range(v0, v_last, freq=window)).std(axis=(0, 2, 3)) + 1e-6
    results: dict[str, xr.Dataset] = {}
    tuning: dict[str, dict[str, float]] = {}
    t_tune = time.perf_counter()
    twins: dict[str, tuple[float, float]] = {}

    def use_scale(scale: float) -> None:
        b = base_b.scaled(scale)
        identical.var3d.set_covariance(b)
        fraternal.var3d.set_covariance(b.truncated(m21, l21))

    candidates = list(nwp.variance_scales)
    if len(candidates) == 1:  # nothing to tune
        twins = {name: (float("nan"), candidates[0]) for name in by_name}
        candidates = []
    for scale in candidates:
        use_scale(scale)
        for twin in (identical, fraternal):
            r = cycle(twin, output, pd.Timestamp(validation[0]), v_last, v0, phase=f"tune {twin.name} x{scale:g}")
            err = analysis_error(r["analysis"], truth_at(r["analysis_time"]), out_lat) / clim_std
            score = float(np.mean(err))
            tuning.setdefault(twin.name, {})[f"{scale:g}"] = score
            best = twins.get(twin.name)
            if best is None or score < best[0]:
                twins[twin.name] = (score, scale)
    timings["tuning_s"] = time.perf_counter() - t_tune

    test_inits = pd.DatetimeIndex(test_inits)
    if nwp.test_days is not None:
        test_inits = test_inits[test_inits < test_inits[0] + pd.Timedelta(days=nwp.test_days)]
    fc_inits = test_inits[:: nwp.every]
    first = test_inits[0] - window * nwp.spinup_cycles
    lead = pd.to_timedelta(np.arange(n_steps + 1) * window).to_numpy()
    from obscast.components.verification.metrics import channel_units

    units = channel_units(channels)
    for name in SYSTEMS:
        scale = twins[name][1]
        t0 = time.perf_counter()
        use_scale(scale)
        twin = by_name[name]
        r = cycle(twin, output, first, test_inits[-1], test_inits[0], fc_inits, phase=name)
        info = r["info"]
        ds = xr.Dataset(
            {
                "forecast": (("init_time", "lead_time", "channel", "latitude", "longitude"), r["forecast"]),
                "analysis": (("time", "channel", "latitude", "longitude"), r["analysis"]),
            },
            coords={"init_time": r["forecast_init"].to_numpy(), "lead_time": lead, "channel": channels, "time": r["analysis_time"].to_numpy(),
                    "latitude": out_lat, "longitude": out_lon, "units": ("channel", units)},
            attrs={
                "system": name, "variance_scale": scale, "tuning_normalised_analysis_error": tuning.get(name, {}),
                "truncation": nature_cfg.truncation if name == SYSTEMS[0] else nwp.fraternal_truncation,
                "n_cycles": len(info), "mean_obs_per_cycle": float(np.mean([i["n_obs"] for i in info])),
                "mean_rejected_per_cycle": float(np.mean([i["n_rejected"] for i in info])),
                "mean_iterations": float(np.mean([i["iterations"] for i in info])),
                "omb_rms_normalised": float(np.mean([i.get("omb_rms", np.nan) for i in info])),
                "oma_rms_normalised": float(np.mean([i.get("oma_rms", np.nan) for i in info])),
                "seconds": time.perf_counter() - t0, **timings,
                "method": "cycled 3D-FGAT (obscast.components.nwp), spectral B from lagged nature differences",
            },
        )
        results[name] = ds
        logger.info("%s: %d cycles, %d forecasts, B x%g, O-B %.2f -> O-A %.2f (normalised), %.0f s", name, len(info),
                    len(r["forecast_init"]), scale, ds.attrs["omb_rms_normalised"], ds.attrs["oma_rms_normalised"], ds.attrs["seconds"])
    return results


def load_or_run_baseline(store: Any, key: Mapping[str, Any], compute: Callable[[], dict[str, xr.Dataset]]) -> tuple[dict[str, xr.Dataset], bool]:
    """The stored baseline of ``key`` (:func:`~obscast.components.nwp.cycle.baseline_hash`), or
    ``compute()`` written there first.

    Returns
    -------
    datasets : dict
        System name -> dataset (loaded into memory).
    cached : bool
        Whether it came from the store.
    """
    digest = baseline_hash(key)
    folder = ("baselines", "nwp", digest)
    if all(store.exists(*folder, f"{s}.zarr", "zarr.json") for s in SYSTEMS):
        return {s: store.open_dataset(*folder, f"{s}.zarr").load() for s in SYSTEMS}, True
    results = compute()
    for s, ds in results.items():
        out = ds.copy()
        out.attrs = {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in ds.attrs.items()} | {"baseline_hash": digest}
        store.write_dataset(out, *folder, f"{s}.zarr")
    return results, False





def experiment_key(config: Any, test_inits: pd.DatetimeIndex) -> dict[str, Any]:
    """What determines an experiment's NWP baseline (the payload of its cache key)."""
    from obscast.components.osse.nature import config_hash

    e = config.experiment
    return {
        "nature": config_hash(config.osse.nature), "error_model": config.osse.error_model.model_dump(mode="json"),
        "nwp": config.osse.nwp.model_dump(mode="json"), "sources": sorted(n for n in e.inputs if n in config.sources),
        "split": e.split.model_dump(mode="json"), "test_inits": [str(t) for t in pd.DatetimeIndex(test_inits)],
        "n_steps": config.forecast.n_steps, "coarsen": config.model.coarsen, "window": str(config.ingest.window),
    }


def experiment_baseline(store: Any, config: Any, truth: xr.Dataset, test_inits: pd.DatetimeIndex, run: bool = True,
                        progress: Callable[[str, int, int], None] | None = None) -> tuple[dict[str, xr.Dataset], bool] | None:
    """The NWP baseline of an OSSE experiment (``osse.nwp``), from the store or run now.

    Parameters
    ----------
    store : Store
        Holds ``gridded/nature.zarr`` (with its states) and ``obs/<source>.zarr``.
    config : Config
    truth : xarray.Dataset
        The nature run.
    test_inits : pandas.DatetimeIndex
        The scored test inits.
    run : bool
        Compute it when not stored (False: return None instead).
    progress : callable, optional
        ``progress(phase, done, total)``.

    Returns
    -------
    (datasets, cached) or None
        None without ``osse.nwp`` or, with ``run=False``, when not stored.
    """
    from obscast.components.osse.errors import ErrorModel
    from obscast.components.store.obstable import ObsTable

    if config.osse is None or config.osse.nwp is None:
        return None
    key = experiment_key(config, test_inits)
    if not run:
        folder = ("baselines", "nwp", baseline_hash(key))
        if not all(store.exists(*folder, f"{s}.zarr", "zarr.json") for s in SYSTEMS):
            return None
    split = config.experiment.split
    em: ErrorModel = config.osse.error_model
    variables = ("air_temperature", "eastward_wind", "northward_wind", "geopotential_height", "surface_air_pressure", "brightness_temperature")
    errors = {v: em.std(v) for v in variables}

    def compute() -> dict[str, xr.Dataset]:
        window = pd.Timedelta(config.ingest.window)
        lo = pd.Timestamp(split.validation.start) - window
        tables = {}
        for name in key["sources"]:
            table = ObsTable(store, f"obs/{name}.zarr").read(lo, pd.Timestamp(test_inits[-1]))
            if len(table):
                tables[name] = table.sort_values("time", kind="stable").reset_index(drop=True)
        return run_baseline(
            store.zarr_store("gridded", "nature.zarr"), config.osse.nature, config.osse.nwp, errors, tables, truth,
            (pd.Timestamp(split.train.start), pd.Timestamp(split.train.end)),
            (pd.Timestamp(split.validation.start), pd.Timestamp(split.validation.end)),
            pd.DatetimeIndex(test_inits), config.forecast.n_steps, config.model.coarsen, window, progress,
        )

    return load_or_run_baseline(store, key, compute)

__all__ = ["NwpBaselineConfig", "experiment_baseline", "experiment_key", "load_or_run_baseline", "run_baseline"]
