"""The dinosaur primitive-equation core with Held-Suarez forcing, as used by the nature run.

:func:`build_dycore` builds (and memoises) the jitted stepper for one numerical setup;
:func:`to_si` turns its nondimensional diagnostics into SI fields. ``jax`` and ``dinosaur``
are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Exponential filter of dinosaur's Held-Suarez example notebook:
#: e-folding time in dinosaur's nondimensional time unit 1 / (2 Omega)
#: (0.0087504 * 6856.8 s ~= 60 s for the highest total wavenumber), filter
#: order and cutoff as a fraction of the maximum total wavenumber.
_FILTER_TAU_NONDIM = 0.0087504
_FILTER_ORDER = 1.5
_FILTER_CUTOFF = 0.8

#: Initial state (dinosaur ``isothermal_rest_atmosphere``): isothermal 288 K
#: atmosphere at rest, mean surface pressure p0 = 1000 hPa (also the Held &
#: Suarez 1994 reference pressure) and a Gaussian wavenumber-4 surface-pressure
#: perturbation of amplitude 50 hPa whose position is drawn from ``seed``.
_T_INIT_K = 288.0
_P0_PA = 1.0e5
_P1_PA = 5.0e3


def build_dycore(
    truncation: str,
    n_sigma_layers: int,
    dt_minutes: float,
    steps_per_output: int,
    level_indices: tuple[int, ...],
) -> dict[str, Any]:
    """Build (and memoise) the jitted dinosaur stepper for one numerical setup.

    Returns a dict with ``coords``, ``physics_specs``, ``aux`` (reference
    temperatures, nodal orography), ``advance`` (jitted: state -> (state after
    one output interval, nondimensional diagnostics on the output levels)) and
    ``scales`` (SI factors).  Memoised so runs that differ only in seed,
    length or start time reuse the compiled function.
    """
    key = (truncation, n_sigma_layers, float(dt_minutes), steps_per_output, level_indices)
    cached = _MODEL_CACHE.get(key)
    if cached is not None:
        return cached

    import jax
    import jax.numpy as jnp
    from dinosaur import (
        coordinate_systems,
        held_suarez,
        primitive_equations,
        primitive_equations_states,
        scales,
        sigma_coordinates,
        spherical_harmonic,
        time_integration,
        xarray_utils,
    )

    units = scales.units
    grid = getattr(spherical_harmonic.Grid, truncation)()
    coords = coordinate_systems.CoordinateSystem(
        horizontal=grid,
        vertical=sigma_coordinates.SigmaCoordinates.equidistant(n_sigma_layers),
    )
    # Earth constants of dinosaur.scales (radius 6.37122e6 m, Omega 7.292e-5
    # s-1, g 9.80616 m s-2, cp 1004 J kg-1 K-1, kappa 2/7), nondimensionalised
    # with radius and 1/(2 Omega) as length and time scales.
    physics_specs = primitive_equations.PrimitiveEquationsSpecs.from_si()
    init_fn, aux_features = primitive_equations_states.isothermal_rest_atmosphere(
        coords=coords,
        physics_specs=physics_specs,
        tref=_T_INIT_K * units.degK,
        p0=_P0_PA * units.pascal,
        p1=_P1_PA * units.pascal,
    )
    ref_temps = np.asarray(aux_features[xarray_utils.REF_TEMP_KEY])
    modal_orography = primitive_equations.truncated_modal_orography(
        aux_features[xarray_utils.OROGRAPHY], coords
    )
    nodal_orography = np.asarray(grid.to_nodal(modal_orography))

    dycore = primitive_equations.PrimitiveEquations(ref_temps, modal_orography, coords, physics_specs)
    # Held & Suarez (1994) constants are dinosaur's defaults: sigma_b = 0.7,
    # k_f = 1/day, k_a = 1/40 day, k_s = 1/4 day, T in [200, 315] K,
    # dT_y = 60 K, dtheta_z = 10 K, p0 = 1000 hPa.
    forcing = held_suarez.HeldSuarezForcingSigma(
        coords=coords,
        physics_specs=physics_specs,
        reference_temperature=ref_temps,
        p0=_P0_PA * units.pascal,
    )
    equation = time_integration.compose_equations([dycore, forcing])
    dt = physics_specs.nondimensionalize(dt_minutes * units.minute)
    step = time_integration.imex_rk_sil3(equation, dt)
    step = time_integration.step_with_filters(
        step,
        [
            time_integration.exponential_step_filter(
                grid, dt, tau=_FILTER_TAU_NONDIM, order=_FILTER_ORDER, cutoff=_FILTER_CUTOFF
            )
        ],
    )
    interval = time_integration.repeated(step, steps_per_output)
    idx = np.asarray(level_indices)

    def diagnose(state: Any) -> dict[str, Any]:
        # dinosaur nodal arrays are ordered (level, longitude, latitude).
        u, v = spherical_harmonic.vor_div_to_uv_nodal(grid, state.vorticity, state.divergence)
        temperature = grid.to_nodal(state.temperature_variation) + ref_temps[:, None, None]
        # Hydrostatic geopotential at layer mid-points with the dycore's own
        # discretisation (Durran 2010, sec. 8.6.5; dinosaur
        # get_geopotential_on_sigma): phi = phi_s + G @ T.
        phi = primitive_equations.get_geopotential_on_sigma(
            temperature,
            nodal_orography=nodal_orography,
            sigma=coords.vertical,
            gravity_acceleration=physics_specs.g,
            ideal_gas_constant=physics_specs.R,
        )
        log_ps = grid.to_nodal(state.log_surface_pressure)[0]
        return {
            "air_temperature": temperature[idx],
            "eastward_wind": u[idx],
            "northward_wind": v[idx],
            "geopotential": phi[idx],
            "log_surface_pressure": log_ps,
        }

    def advance(state: Any) -> tuple[Any, dict[str, Any]]:
        new = interval(state)
        return new, diagnose(new)

    def dim(unit: Any) -> float:
        return float(physics_specs.dimensionalize(1.0, unit).m)

    model = {
        "coords": coords,
        "physics_specs": physics_specs,
        "init_fn": init_fn,
        "advance": jax.jit(advance),
        "initial_diagnostics": jax.jit(diagnose),
        "scales": {
            "air_temperature": dim(units.degK),
            "eastward_wind": dim(units.m / units.s),
            "northward_wind": dim(units.m / units.s),
            "geopotential": dim(units.m**2 / units.s**2),
            "pascal": dim(units.pascal),
        },
        "jax": jax,
        "jnp": jnp,
    }
    _MODEL_CACHE[key] = model
    return model


_MODEL_CACHE: dict[tuple, dict[str, Any]] = {}


def to_si(diag: dict[str, Any], scales_: dict[str, float], lat_order: np.ndarray) -> dict[str, np.ndarray]:
    """Nondimensional (level, lon, lat) diagnostics -> SI float32 (level, lat, lon)."""
    out: dict[str, np.ndarray] = {}
    for name in ("air_temperature", "eastward_wind", "northward_wind", "geopotential"):
        arr = np.asarray(diag[name], dtype=np.float64) * scales_[name]
        out[name] = np.swapaxes(arr, -1, -2)[..., lat_order, :].astype(np.float32)
    log_ps = np.asarray(diag["log_surface_pressure"], dtype=np.float64)
    ps = np.exp(log_ps + math.log(scales_["pascal"]))
    out["surface_air_pressure"] = np.swapaxes(ps, -1, -2)[lat_order, :].astype(np.float32)
    return out
