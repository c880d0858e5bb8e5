"""The classical NWP baseline: cycled 3D-Var analyses and forecasts with the nature run's dycore.

Two systems assimilate the same accepted (QC'd) observations as obscast:

- the **identical twin**: the nature run's own model (same truncation, dynamics and forcing),
  so its forecasts have no model error, only initial-condition error: the upper reference;
- the **fraternal twin**: the same dycore at a coarser truncation (T21), whose jet sits too far
  equatorward: model error as a real NWP system has it.

Each cycle (every ``window``, 6 h) analyses the window ``(t - 6 h, t]`` with
:class:`~obscast.components.nwp.var3d.Var3D` and takes the analysis' 6 h forecast as the next
background. The cycle starts cold from a nature-run state ``cold_start_days`` earlier
(weather unrelated to the period, the model's own climate) ``spinup_cycles`` windows before
the first scored init, with observations only.

The background-error covariance (:class:`~obscast.components.nwp.spectral.SpectralCovariance`)
is estimated on the training period from time-lagged differences of nature-run states,
``x(t + 6 h) - x(t)`` (a proxy of the NMC method of Parrish & Derber 1992, which takes
differences of forecasts valid at the same time; the lagged-difference proxy needs no prior
cycle), and its variance scale is tuned on the validation period (the scale with the smallest
analysis error against the truth among ``variance_scales``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from obscast.components.data.fields import coarsen_fields
from obscast.components.nwp.operators import G0, build_obs
from obscast.components.nwp.spectral import (
    FIELDS,
    SpectralCovariance,
    pad_state,
    truncate_state,
)
from obscast.components.nwp.var3d import Var3D, state_fields, state_from_fields

logger = logging.getLogger(__name__)

#: Systems of the baseline, and the dataset names they are stored under.
SYSTEMS = ("nwp_identical_twin", "nwp_fraternal_twin")
#: Bump when the baseline's numerics change (enters :func:`baseline_hash`).
BASELINE_SCHEMA_VERSION = 1


@dataclass
class Twin:
    """One NWP system: its dycore, its 3D-Var, and how its states map to the output grid."""

    name: str
    dycore: dict[str, Any]
    var3d: Var3D
    to_output: Callable[[Any], Any]  # state -> a state diagnosed by the output Var3D

    def advance(self, state):
        """The 6 h forecast of a state."""
        new, _ = self.dycore["advance"](state)
        return new


def channels_of(var3d: Var3D, state, coarsen: int) -> np.ndarray:
    """A state's fields as output channels ``(channel, lat, lon)`` float32, in the order of
    :func:`obscast.components.data.fields.truth_channels` (temperature, winds, geopotential
    per level, then surface pressure), area-averaged over ``coarsen x coarsen`` blocks."""
    f = var3d.fields_si(state)
    x = np.concatenate([f["air_temperature"], f["eastward_wind"], f["northward_wind"], f["geopotential_height"] * G0,
                        f["surface_air_pressure"][None]]).astype(np.float32)
    return coarsen_fields(x, var3d.latitude, coarsen)


def lagged_differences(advance: Callable[[Any], Any], template, states: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``x(t + 6 h) - x(t)`` for each state, the 6 h forecast by ``advance``.

    Parameters
    ----------
    advance : callable
        State -> its 6 h forecast (the dycore).
    template : dinosaur State
        Supplies ``tracers`` and ``sim_time``.
    states : mapping
        Variable -> (n, K, M, L) modal states.

    Returns
    -------
    dict
        Variable -> (n, K, M, L) float32 differences.
    """
    n = len(states[FIELDS[0]])
    out = {f: [] for f in FIELDS}
    for i in range(n):
        x0 = state_from_fields(template, {f: states[f][i] for f in FIELDS})
        x1 = state_fields(advance(x0))
        for f in FIELDS:
            out[f].append(x1[f] - states[f][i])
    return {f: np.stack(v) for f, v in out.items()}


def run_cycle(
    twin: Twin,
    output: Var3D,
    first_background,
    tables: Mapping[str, pd.DataFrame],
    analysis_times: pd.DatetimeIndex,
    window: pd.Timedelta,
    errors: Mapping[str, float],
    coarsen: int,
    score_from: pd.Timestamp,
    forecast_inits: Sequence[pd.Timestamp] = (),
    n_steps: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Cycle the twin's 3D-Var through ``analysis_times`` and forecast from some analyses.

    Parameters
    ----------
    twin : Twin
    output : Var3D
        The output model's 3D-Var (its grid and diagnostics give the output channels).
    first_background : dinosaur State
        Background of the first analysis (the twin's truncation).
    tables : mapping
        Source name -> accepted observations.
    analysis_times : pandas.DatetimeIndex
        Consecutive analysis times, ``window`` apart.
    window : pandas.Timedelta
    errors : mapping
        Observation-error standard deviations (see :func:`~obscast.components.nwp.operators.build_obs`).
    coarsen : int
        Output block size.
    score_from : pandas.Timestamp
        Analyses from this time on are returned (the earlier ones spin up the cycle).
    forecast_inits : sequence
        Analysis times to forecast from.
    n_steps : int
        Forecast length in windows.
    progress : callable, optional
        ``progress(done, total)`` after each cycle.

    Returns
    -------
    dict
        ``analysis_time`` (DatetimeIndex), ``analysis`` (n, channel, lat, lon),
        ``forecast_init`` (DatetimeIndex), ``forecast`` (n_inits, n_steps + 1, channel, lat,
        lon) with lead 0 the analysis, and ``info``: per-cycle 3D-Var diagnostics (list of dict).
    """
    v = twin.var3d
    wanted = {pd.Timestamp(t) for t in forecast_inits}
    background, earlier = first_background, None
    analyses, a_times, forecasts, f_times, infos = [], [], [], [], []
    for i, t in enumerate(pd.DatetimeIndex(analysis_times)):
        ps_b = v.fields_si(background)["surface_air_pressure"]
        obs = build_obs(tables, t, window, v.latitude, v.longitude, v.sigma_levels, ps_b, errors)
        analysis, info = v.analyse(background, obs, earlier)
        info["time"] = str(t)
        info["rejected_outside_levels"] = obs.rejected.get("outside_levels", 0)
        infos.append(info)
        if t >= score_from:
            analyses.append(channels_of(output, twin.to_output(analysis), coarsen))
            a_times.append(t)
        if t in wanted:
            steps = [analyses[-1]]
            x = analysis
            for _ in range(n_steps):
                x = twin.advance(x)
                steps.append(channels_of(output, twin.to_output(x), coarsen))
            forecasts.append(np.stack(steps))
            f_times.append(t)
        earlier, background = analysis, twin.advance(analysis)
        if progress is not None:
            progress(i + 1, len(analysis_times))
    return {
        "analysis_time": pd.DatetimeIndex(a_times), "analysis": np.stack(analyses) if analyses else None,
        "forecast_init": pd.DatetimeIndex(f_times), "forecast": np.stack(forecasts) if forecasts else None, "info": infos,
    }


def baseline_hash(payload: Mapping[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the canonical JSON of ``payload`` and
    :data:`BASELINE_SCHEMA_VERSION`: the cache key of a baseline run."""
    text = json.dumps({"schema": BASELINE_SCHEMA_VERSION, **payload}, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_twins(nature_cfg: Any, covariance: SpectralCovariance, fraternal_truncation: str, max_iterations: int,
                background_check: float) -> tuple[Twin, Twin, Var3D]:
    """The identical twin (the nature run's dycore) and the fraternal twin (``fraternal_truncation``).

    Returns
    -------
    identical, fraternal : Twin
    output : Var3D
        The identical twin's 3D-Var, whose diagnostics give the output channels of both (the
        fraternal twin's states are padded to the nature run's truncation: exact spectral
        interpolation to its grid).
    """
    from obscast.components.osse.dycore import build_dycore

    levels = tuple(nature_cfg.level_indices())
    sigma = np.asarray(nature_cfg.output_sigma_levels, np.float64)
    # the nature run's world (orography, Held-Suarez knobs): the twins run the same physics
    d42 = build_dycore(nature_cfg.truncation, nature_cfg.n_sigma_layers, nature_cfg.dt_minutes, nature_cfg.steps_per_output, levels,
                       **nature_cfg.world_kwargs())
    v42 = Var3D(d42, covariance, sigma, max_iterations, background_check)
    identical = Twin("nwp_identical_twin", d42, v42, lambda s: s)
    d21 = build_dycore(fraternal_truncation, nature_cfg.n_sigma_layers, nature_cfg.dt_minutes, nature_cfg.steps_per_output, levels,
                       **nature_cfg.world_kwargs())
    m21, l21 = d21["coords"].horizontal.modal_shape
    m42, l42 = d42["coords"].horizontal.modal_shape
    v21 = Var3D(d21, covariance.truncated(m21, l21), sigma, max_iterations, background_check)

    def up(state):
        return state_from_fields(state, pad_state(state_fields(state), m42, l42))

    fraternal = Twin("nwp_fraternal_twin", d21, v21, up)
    return identical, fraternal, v42


def to_twin(twin: Twin, fields: Mapping[str, np.ndarray], template):
    """A nature-run state (modal fields) as a state of ``twin`` (truncated when coarser)."""
    m, l = twin.dycore["coords"].horizontal.modal_shape
    f = {k: np.asarray(v) for k, v in fields.items()}
    if f[FIELDS[0]].shape[-2:] != (m, l):
        f = truncate_state(f, m, l)
    return state_from_fields(template, f)


def initial_template(twin: Twin):
    """A state of the twin's shapes (``tracers``, ``sim_time``) to fill with fields."""
    import jax

    return twin.dycore["init_fn"](rng_key=jax.random.PRNGKey(0))


def analysis_error(analysis: np.ndarray, truth: np.ndarray, latitude: np.ndarray) -> np.ndarray:
    """Latitude-weighted RMSE per channel over times: (time, channel, lat, lon) twice -> (channel,).

    Weights: :func:`obscast.processor.grid.latitude_weights` (cell area)."""
    from obscast.processor.grid import latitude_weights

    w = np.asarray(latitude_weights(np.asarray(latitude)), np.float64)[:, None]
    mse = ((analysis.astype(np.float64) - truth) ** 2 * w).mean(axis=(-2, -1)) / w.mean()
    return np.sqrt(mse.mean(0))


__all__ = [
    "BASELINE_SCHEMA_VERSION", "SYSTEMS", "Twin", "analysis_error", "baseline_hash", "build_twins", "channels_of",
    "initial_template", "lagged_differences", "run_cycle", "to_twin",
]
