"""3D-Var on the dinosaur state: the analysis that minimises ``J_b + J_o``.

The cost function in the control variable ``chi`` (Courtier et al. 1998, QJRMS 124,
1783-1807, eq. 1-3; the control-variable transform of :mod:`~obscast.components.nwp.spectral`)::

    x = x_b + S chi
    J(chi) = chi^T chi / 2
           + sum_i ((d_i - [H_i(x) - H_i(x_b)]) / sigma_i)^2 / 2,    d_i = y_i - H_i(x_b(t_i))

is the 3D-FGAT form (first guess at the appropriate time; Lawless 2010, QJRMS 136, 1094-1104):
each innovation ``d_i`` is taken against the background valid nearest to the observation
(the analysis time, or the previous analysis 6 h before it for reports in the first half of
the window), and the increment is applied at the analysis time. ``H`` is
:mod:`~obscast.components.nwp.operators`. The minimisation is incremental (Courtier et al.
1994): ``H`` is linearised at the background (its tangent-linear and adjoint from JAX,
``jax.linearize`` and ``jax.linear_transpose``, through dinosaur's spectral transforms), and the
quadratic cost is minimised by ``max_iterations`` conjugate-gradient iterations, the whole
loop compiled by XLA. The observation operators are linear in the diagnosed fields, so the
only nonlinearity left out is the surface pressure's ``exp`` of the log-pressure control
variable (small increments).

A background check rejects reports whose innovation departs from the median of their
(source, variable) by more than ``background_check`` robust standard deviations
(1.4826 x median absolute deviation), the usual first-guess check.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from obscast.components.nwp.operators import G0, ObsBatch, apply, field_vector
from obscast.components.nwp.spectral import FIELDS, SpectralCovariance, apply_sqrt

#: Observation counts are padded up to a power of two, at least this, so the jitted cost
#: function compiles for few distinct shapes.
PAD_MULTIPLE = 4096


class Var3D:
    """The 3D-Var of one model (truncation): diagnostics, cost function and minimisation.

    Parameters
    ----------
    dycore : dict
        :func:`obscast.components.osse.dycore.build_dycore` output (its ``initial_diagnostics``
        diagnoses a state on the output levels, its ``coords`` give the grid).
    covariance : SpectralCovariance
        ``B`` in this truncation.
    sigma_levels : array-like
        (n_levels,) ascending sigma of the diagnosed (output) levels, those the observations
        were simulated on.
    max_iterations : int
        Conjugate-gradient iterations per analysis.
    background_check : float
        Rejection threshold in robust standard deviations of the innovations (0: none).
    """

    def __init__(self, dycore: dict[str, Any], covariance: SpectralCovariance, sigma_levels: Any,
                 max_iterations: int = 30, background_check: float = 5.0) -> None:
        import jax
        import jax.numpy as jnp

        self.dycore = dycore
        self.set_covariance(covariance)
        self.sigma_levels = np.asarray(sigma_levels, np.float64)
        self.max_iterations = int(max_iterations)
        self.background_check = float(background_check)
        grid = dycore["coords"].horizontal
        self.latitude = np.rad2deg(np.asarray(grid.latitudes, np.float64))
        self.longitude = np.mod(np.rad2deg(np.asarray(grid.longitudes, np.float64)), 360.0)
        if np.any(np.diff(self.latitude) <= 0):
            raise ValueError("expected dinosaur's Gaussian latitudes ascending")
        sc = dycore["scales"]
        diagnose = dycore["initial_diagnostics"]

        def si(state):
            d = diagnose(state)
            out = {name: jnp.swapaxes(d[name], -1, -2) * sc[name] for name in ("air_temperature", "eastward_wind", "northward_wind")}
            out["geopotential_height"] = jnp.swapaxes(d["geopotential"], -1, -2) * (sc["geopotential"] / G0)
            out["surface_air_pressure"] = jnp.exp(jnp.swapaxes(d["log_surface_pressure"], -1, -2)) * sc["pascal"]
            return out

        self._si = jax.jit(si)
        self._h = jax.jit(lambda state, index, weight: apply(field_vector(si(state)), index, weight))

        def with_fields(state, fields):
            return dataclasses.replace(state, **fields)

        def cost(chi, sqrt, mask, state_b, index, weight, d, hxb, sigma, valid):
            inc = apply_sqrt(sqrt, mask, chi)
            x = with_fields(state_b, {f: getattr(state_b, f) + inc[f] for f in FIELDS})
            hx = apply(field_vector(si(x)), index, weight)
            r = jnp.where(valid, (d - (hx - hxb)) / sigma, 0.0)
            jb = 0.5 * sum(jnp.sum(chi[f] ** 2) for f in FIELDS)
            jo = 0.5 * jnp.sum(r**2)
            return jb + jo, (jb, jo)

        def solve(sqrt, mask, state_b, index, weight, d, sigma, valid, n_iter):
            # Incremental 3D-Var (Courtier et al. 1994, QJRMS 120, 1367-1387): H linearised at
            # x_b, the quadratic J minimised by conjugate gradients on the Hessian
            # I + S^T H^T R^-1 H S (S symmetric per block, so S^T = S).
            xb = {f: getattr(state_b, f) for f in FIELDS}
            h = lambda fields: apply(field_vector(si(with_fields(state_b, fields))), index, weight)
            _, h_tl = jax.linearize(h, xb)
            h_ad = jax.linear_transpose(h_tl, xb)
            rinv = jnp.where(valid, 1.0 / sigma**2, 0.0)

            def hessian(chi):
                (g,) = h_ad(h_tl(apply_sqrt(sqrt, mask, chi)) * rinv)
                inc = apply_sqrt(sqrt, mask, g)
                return {f: chi[f] + inc[f] for f in FIELDS}

            (g0,) = h_ad(jnp.where(valid, d, 0.0) * rinv)
            b = apply_sqrt(sqrt, mask, g0)
            chi, _ = jax.scipy.sparse.linalg.cg(hessian, b, maxiter=n_iter)
            return chi

        self._cost = jax.jit(cost)
        self._solve = jax.jit(solve, static_argnames="n_iter")
        self._increment = jax.jit(apply_sqrt)

    def set_covariance(self, covariance: SpectralCovariance) -> None:
        """Use ``covariance`` as ``B`` from the next analysis on (no recompilation when its
        shapes are unchanged)."""
        self.B = covariance
        self._b_arrays = covariance.jax_arrays()

    def fields_si(self, state) -> dict[str, np.ndarray]:
        """SI fields of a state on the output levels: ``air_temperature`` [K],
        ``eastward_wind``, ``northward_wind`` [m s-1], ``geopotential_height`` [m] as
        (level, lat, lon), ``surface_air_pressure`` [Pa] as (lat, lon); latitudes ascending."""
        return {k: np.asarray(v) for k, v in self._si(state).items()}

    def observe(self, state, obs: ObsBatch) -> np.ndarray:
        """``H(state)`` for every observation of ``obs``, (n,) in SI units."""
        if len(obs) == 0:
            return np.zeros(0)
        index, weight, *_ = obs.padded(_padded_size(len(obs)))
        return np.asarray(self._h(state, index, weight))[: len(obs)].astype(np.float64)

    def innovations(self, background, obs: ObsBatch, earlier=None) -> np.ndarray:
        """``d = y - H(x_b(t_i))``: against ``earlier`` (the state 6 h before) for the reports
        in the first half of the window when given, else against ``background``."""
        hb = self.observe(background, obs)
        if earlier is not None and obs.earlier.any():
            he = self.observe(earlier, obs)
            hb = np.where(obs.earlier, he, hb)
        return obs.value - hb

    def analyse(self, background, obs: ObsBatch, earlier=None) -> tuple[Any, dict[str, Any]]:
        """One analysis.

        Parameters
        ----------
        background : dinosaur State
            ``x_b`` at the analysis time (the previous analysis' 6 h forecast).
        obs : ObsBatch
            The window's observations (:func:`~obscast.components.nwp.operators.build_obs`).
        earlier : dinosaur State, optional
            The state 6 h before the analysis time (the previous analysis), for 3D-FGAT.

        Returns
        -------
        analysis : dinosaur State
        info : dict
            ``n_obs`` used, ``n_rejected`` by the background check, ``cost_before`` /
            ``cost_after`` (``J`` at ``chi = 0`` and at the minimum), ``jo_after``,
            ``iterations``, ``seconds``, and the RMS of the innovations (``omb_rms``) and of the
            analysis departures (``oma_rms``) normalised by ``sigma``, of the reports valid at
            the analysis time.
        """
        import jax.numpy as jnp

        start = time.perf_counter()
        info: dict[str, Any] = {"n_obs": 0, "n_rejected": 0, "iterations": 0}
        if len(obs) == 0:
            info["seconds"] = time.perf_counter() - start
            return background, info
        d = self.innovations(background, obs, earlier)
        keep = np.ones(len(obs), bool)
        if self.background_check > 0:
            for key in set(zip(obs.source, obs.variable)):
                sel = (obs.source == key[0]) & (obs.variable == key[1])
                z = d[sel] / obs.sigma[sel]
                med = np.median(z)
                mad = 1.4826 * np.median(np.abs(z - med))
                keep[sel] = np.abs(z - med) <= self.background_check * max(mad, 1.0)
        info["n_rejected"] = int((~keep).sum())
        obs, d = obs.subset(keep), d[keep]
        size = _padded_size(len(obs))
        index, weight, _, sigma, valid = obs.padded(size)
        dpad = np.zeros(size, np.float32)
        dpad[: len(obs)] = d
        hxb = np.zeros(size, np.float32)
        hxb[: len(obs)] = self.observe(background, obs)
        args = (*self._b_arrays, background, index, weight, dpad, hxb, sigma, valid)
        zero = {f: jnp.zeros_like(getattr(background, f)) for f in FIELDS}
        j0, _ = self._cost(zero, *args)
        chi = self._solve(*self._b_arrays, background, index, weight, dpad, sigma, valid, n_iter=self.max_iterations)
        inc = self._increment(*self._b_arrays, chi)
        analysis = dataclasses.replace(background, **{f: getattr(background, f) + inc[f] for f in FIELDS})
        j1, (_jb, jo) = self._cost(chi, *args)
        now = ~obs.earlier  # departures of the reports valid at the analysis time
        oma = (obs.value - self.observe(analysis, obs)) / obs.sigma
        info.update(
            n_obs=len(obs), cost_before=float(j0), cost_after=float(j1), jo_after=float(jo), iterations=self.max_iterations,
            omb_rms=float(np.sqrt(np.mean((d[now] / obs.sigma[now]) ** 2))) if now.any() else float("nan"),
            oma_rms=float(np.sqrt(np.mean(oma[now] ** 2))) if now.any() else float("nan"),
            seconds=time.perf_counter() - start,
        )
        return analysis, info


def _padded_size(n: int) -> int:
    """The next power of two >= ``n`` (at least :data:`PAD_MULTIPLE`): few shapes, few compilations."""
    return max(PAD_MULTIPLE, 1 << max(0, int(n) - 1).bit_length())


def state_from_fields(template, fields: Mapping[str, np.ndarray]):
    """A dinosaur State like ``template`` with the modal ``fields`` (numpy, (K, M, L))."""
    import jax.numpy as jnp

    return dataclasses.replace(template, **{f: jnp.asarray(fields[f], jnp.float32) for f in FIELDS})


def state_fields(state) -> dict[str, np.ndarray]:
    """The modal fields of a dinosaur State as float32 numpy arrays (K, M, L)."""
    return {f: np.asarray(getattr(state, f), np.float32) for f in FIELDS}


__all__ = ["PAD_MULTIPLE", "Var3D", "state_fields", "state_from_fields"]
