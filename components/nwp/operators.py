"""Observation operators of the 3D-Var, in JAX: model state -> every simulated observation.

They sample the state exactly as the OSSE's simulation samples the nature run
(:mod:`obscast.components.osse.simulate`, :mod:`obscast.components.osse.operators`):

- the state is diagnosed on the nature run's output sigma levels (dinosaur's own
  diagnostics, :func:`obscast.components.osse.dycore.build_dycore`);
- horizontally, bilinear interpolation with the weights of
  :class:`obscast.components.data.interp.PointInterpolator`;
- SYNOP-like reports without a pressure: ``surface_air_pressure`` and the lowest output level;
- reports with a pressure (TEMP, aircraft, AMV): linear in ``log sigma`` between the output
  levels, ``sigma = p / p_s`` with the background's ``p_s`` at the report (so the operator is
  linear in the diagnosed fields; reports outside the levels are not used);
- ``geopotential_height = geopotential / g0`` (WMO, g0 = 9.80665 m s-2);
- satellite ``brightness_temperature`` of channel ``c``: row ``c - 1`` of
  :func:`obscast.components.osse.operators.brightness_weights` applied to the temperature
  column.

Every observation is then a weighted sum of at most :data:`N_TERMS` entries of one flat
vector of the diagnosed SI fields (:func:`field_vector`), so ``H`` is a gather and a sum,
and its tangent-linear and adjoint are JAX's ``jvp`` and ``vjp``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from obscast.components.data.interp import PointInterpolator
from obscast.components.obs.variables import geopotential_to_height
from obscast.components.osse.operators import brightness_weights

#: Observed variables the operators cover, in the order of :attr:`ObsBatch.variable` codes.
VARIABLES = ("air_temperature", "eastward_wind", "northward_wind", "geopotential_height", "surface_air_pressure", "brightness_temperature")
#: Level fields of :func:`field_vector` (then ``surface_air_pressure``).
LEVEL_FIELDS = ("air_temperature", "eastward_wind", "northward_wind", "geopotential_height")
#: Entries of the field vector per observation (4 horizontal neighbours x up to 4 levels).
N_TERMS = 16
#: Standard gravity g0 used for geopotential height (WMO), m s-2; the same as
#: :func:`obscast.components.obs.variables.geopotential_to_height`.
G0 = float(1.0 / geopotential_to_height(1.0))


def field_vector(si: Mapping[str, object]):
    """Flat vector of the diagnosed SI fields (jax or numpy).

    Parameters
    ----------
    si : mapping
        ``air_temperature`` [K], ``eastward_wind``, ``northward_wind`` [m s-1],
        ``geopotential_height`` [m] as (n_levels, lat, lon) and ``surface_air_pressure`` [Pa]
        as (lat, lon), latitudes ascending.

    Returns
    -------
    array
        (4 * n_levels * lat * lon + lat * lon,): the level fields in :data:`LEVEL_FIELDS`
        order (level-major), then the surface pressure.
    """
    import jax.numpy as jnp

    return jnp.concatenate([jnp.ravel(si[name]) for name in LEVEL_FIELDS] + [jnp.ravel(si["surface_air_pressure"])])


@dataclass
class ObsBatch:
    """The observations of one analysis, as gathers from :func:`field_vector`.

    Attributes
    ----------
    index : numpy.ndarray
        (n, N_TERMS) int32 indices into the field vector.
    weight : numpy.ndarray
        (n, N_TERMS) float32 weights (0 for unused terms).
    value : numpy.ndarray
        (n,) observed values, SI units.
    sigma : numpy.ndarray
        (n,) observation-error standard deviations, same units.
    variable : numpy.ndarray
        (n,) int8 index into :data:`VARIABLES`.
    source : numpy.ndarray
        (n,) source name of each observation (object).
    earlier : numpy.ndarray
        (n,) bool: observed in the first half of the window, ``(t - 6 h, t - 3 h)``, hence
        compared with the state 6 h before the analysis time (3D-FGAT).
    rejected : dict
        Reports not used, by reason (``outside_levels``, ``unknown_variable``), counts.
    """

    index: np.ndarray
    weight: np.ndarray
    value: np.ndarray
    sigma: np.ndarray
    variable: np.ndarray
    source: np.ndarray
    earlier: np.ndarray
    rejected: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.value)

    def subset(self, keep: np.ndarray) -> ObsBatch:
        """The observations where ``keep`` (bool, (n,)) is true."""
        return ObsBatch(self.index[keep], self.weight[keep], self.value[keep], self.sigma[keep], self.variable[keep],
                        self.source[keep], self.earlier[keep], dict(self.rejected))

    def padded(self, size: int) -> tuple[np.ndarray, ...]:
        """``(index, weight, value, sigma, valid)`` padded to ``size`` rows (padding: weight
        0, valid False), so a jitted cost function sees few distinct shapes."""
        n = len(self)
        pad = size - n
        if pad < 0:
            raise ValueError(f"{n} observations do not fit in {size}")
        index = np.concatenate([self.index, np.zeros((pad, N_TERMS), np.int32)])
        weight = np.concatenate([self.weight, np.zeros((pad, N_TERMS), np.float32)])
        value = np.concatenate([self.value, np.zeros(pad)]).astype(np.float32)
        sigma = np.concatenate([self.sigma, np.ones(pad)]).astype(np.float32)
        valid = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
        return index, weight, value, sigma, valid


def apply(vector, index, weight):
    """``H`` on a field vector: (V,) -> (n,), ``sum_k weight[:, k] * vector[index[:, k]]``."""
    return (vector[index] * weight).sum(axis=1)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    keys = ("index", "weight", "value", "sigma", "variable", "source", "earlier")
    if not parts:
        return {"index": np.zeros((0, N_TERMS), np.int32), "weight": np.zeros((0, N_TERMS), np.float32),
                "value": np.zeros(0), "sigma": np.zeros(0), "variable": np.zeros(0, np.int8),
                "source": np.zeros(0, object), "earlier": np.zeros(0, bool)}
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def build_obs(
    tables: Mapping[str, pd.DataFrame],
    analysis_time: pd.Timestamp,
    window: pd.Timedelta,
    latitude: np.ndarray,
    longitude: np.ndarray,
    sigma_levels: np.ndarray,
    background_ps: np.ndarray,
    errors: Mapping[str, float],
) -> ObsBatch:
    """The observations of the window ``(t - window, t]`` as gathers from the field vector.

    Parameters
    ----------
    tables : mapping
        Source name -> accepted observations as stored, sorted by time (``time``, ``latitude``, ``longitude``,
        the variable columns, ``pressure`` [Pa] and/or ``height`` [m] for upper-air kinds,
        ``channel`` for satellite radiances).
    analysis_time : pandas.Timestamp
        ``t``, the end of the window.
    window : pandas.Timedelta
        Length of the window (6 h).
    latitude, longitude : numpy.ndarray
        (lat,) ascending and (lon,) grid of the state, degrees.
    sigma_levels : numpy.ndarray
        (n_levels,) ascending sigma of the diagnosed levels.
    background_ps : numpy.ndarray
        (lat, lon) background surface pressure [Pa], for ``sigma = p / p_s``.
    errors : mapping
        Observation-error standard deviation per variable of :data:`VARIABLES` (and
        ``wind_component`` for both wind components), SI units.

    Returns
    -------
    ObsBatch

    Raises
    ------
    KeyError
        If a variable present in a table has no error in ``errors``.
    ValueError
        If there are fewer than 2 or more than 4 diagnosed levels, or a table is not sorted by time.
    """
    t = pd.Timestamp(analysis_time)
    n_lev = len(sigma_levels)
    if not 2 <= n_lev <= N_TERMS // 4:
        raise ValueError(f"the operators need 2 to {N_TERMS // 4} diagnosed levels, got {n_lev}")
    g = len(latitude) * len(longitude)
    offset = {name: i * n_lev * g for i, name in enumerate(LEVEL_FIELDS)}
    ps_offset = len(LEVEL_FIELDS) * n_lev * g
    log_sigma = np.log(np.asarray(sigma_levels, np.float64))
    weights_tb = brightness_weights(np.asarray(sigma_levels, np.float64))
    parts: list[dict[str, np.ndarray]] = []
    rejected = {"outside_levels": 0}

    def sigma_of(var: str) -> float:
        if var in errors:
            return float(errors[var])
        if var in ("eastward_wind", "northward_wind") and "wind_component" in errors:
            return float(errors["wind_component"])
        raise KeyError(f"no observation error for {var!r}")

    for name, table in tables.items():
        tv = table["time"].to_numpy("datetime64[ns]")
        if len(tv) > 1 and (tv[1:] < tv[:-1]).any():
            raise ValueError(f"observation table {name!r} is not sorted by time")
        a = np.searchsorted(tv, (t - window).to_datetime64(), side="right")
        b = np.searchsorted(tv, t.to_datetime64(), side="right")
        if b <= a:
            continue
        df = table.iloc[a:b]
        when = pd.DatetimeIndex(df["time"])
        earlier = np.asarray(when < t - window / 2)
        lat = df["latitude"].to_numpy(np.float64)
        lon = df["longitude"].to_numpy(np.float64)
        h = PointInterpolator(latitude, longitude, lat, lon)
        n = len(df)
        has_p = "pressure" in df or "height" in df
        if has_p:
            p = df["pressure"].to_numpy(np.float64).copy() if "pressure" in df else np.full(n, np.nan)
            if "height" in df and np.isnan(p).any():
                from obscast.encoders.setconv import (
                    pressure_from_height,  # lazy: imports torch
                )

                use = np.isnan(p)
                p[use] = pressure_from_height(df["height"].to_numpy(np.float64)[use]).double().numpy()
            ps_b = (background_ps.reshape(-1)[h.index] * h.weight).sum(1)
            target = np.log(p / ps_b)
            k = np.clip(np.searchsorted(log_sigma, target, side="right") - 1, 0, n_lev - 2)
            wv = (target - log_sigma[k]) / (log_sigma[k + 1] - log_sigma[k])
            inside = (target >= log_sigma[0] - 1e-12) & (target <= log_sigma[-1] + 1e-12)
        for var in VARIABLES:
            if var not in df:
                continue
            y = df[var].to_numpy(np.float64)
            ok = np.isfinite(y)
            index = np.zeros((n, N_TERMS), np.int32)
            weight = np.zeros((n, N_TERMS), np.float32)
            if var == "brightness_temperature":
                ch = df["channel"].to_numpy(np.int64) - 1
                ok &= (ch >= 0) & (ch < n_lev)
                wl = weights_tb[np.clip(ch, 0, n_lev - 1)]  # (n, n_lev)
                for lev in range(n_lev):
                    index[:, 4 * lev : 4 * lev + 4] = offset["air_temperature"] + lev * g + h.index
                    weight[:, 4 * lev : 4 * lev + 4] = wl[:, lev : lev + 1] * h.weight
            elif var == "surface_air_pressure":
                index[:, :4] = ps_offset + h.index
                weight[:, :4] = h.weight
            elif has_p:  # an upper-air report at its pressure (NaN pressure: outside)
                rejected["outside_levels"] += int((ok & ~inside).sum())
                ok &= inside
                index[:, :4] = offset[var] + k[:, None] * g + h.index
                weight[:, :4] = (1 - wv)[:, None] * h.weight
                index[:, 4:8] = offset[var] + (k + 1)[:, None] * g + h.index
                weight[:, 4:8] = wv[:, None] * h.weight
            else:  # a surface report: the lowest output level
                index[:, :4] = offset[var] + (n_lev - 1) * g + h.index
                weight[:, :4] = h.weight
            if not ok.any():
                continue
            parts.append({
                "index": index[ok], "weight": weight[ok], "value": y[ok], "sigma": np.full(int(ok.sum()), sigma_of(var)),
                "variable": np.full(int(ok.sum()), VARIABLES.index(var), np.int8),
                "source": np.full(int(ok.sum()), name, object), "earlier": earlier[ok],
            })
    return ObsBatch(**_concat(parts), rejected=rejected)


__all__ = ["G0", "LEVEL_FIELDS", "N_TERMS", "VARIABLES", "ObsBatch", "apply", "build_obs", "field_vector"]
