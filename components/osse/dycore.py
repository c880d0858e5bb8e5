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

#: Held & Suarez (1994) radiative-equilibrium constants (dinosaur's defaults):
#: surface equatorial equilibrium temperature ``maxT`` and equator-to-pole
#: contrast ``dTy``, K.  The area mean of the surface (p = p0) equilibrium
#: temperature ``maxT - dTy sin^2(lat)`` is ``maxT - dTy / 3`` = 295 K.
HS_MAX_T_K = 315.0
HS_DELTA_T_Y_K = 60.0

#: Earth radius of dinosaur.scales, km (for mountain distances).
_EARTH_RADIUS_KM = 6371.22


def held_suarez_temperatures(equilibrium_warming_k: float = 0.0, equator_pole_contrast_k: float = HS_DELTA_T_Y_K) -> tuple[float, float]:
    """Held-Suarez ``(maxT, dTy)`` in K for a shifted radiative-equilibrium climate.

    Parameters
    ----------
    equilibrium_warming_k : float
        Shift of the area-mean surface (p = p0) equilibrium temperature, K.
    equator_pole_contrast_k : float
        Equator-to-pole difference ``dTy`` of the surface equilibrium temperature, K.

    Returns
    -------
    tuple of float
        ``maxT = 315 + warming + (dTy - 60) / 3`` and ``dTy``, so that the area mean of the
        surface equilibrium temperature ``maxT - dTy sin^2(lat)`` (whose global mean is
        ``maxT - dTy / 3``, as the mean of ``sin^2`` over the sphere is 1/3) is
        ``295 K + warming`` whatever the contrast: the two knobs are independent.
        Held & Suarez (1994), eq. for T_eq; the defaults give (315, 60) exactly.
    """
    dty = float(equator_pole_contrast_k)
    return HS_MAX_T_K + float(equilibrium_warming_k) + (dty - HS_DELTA_T_Y_K) / 3.0, dty


def idealised_orography(
    shape: str,
    latitude_deg: float,
    longitude_deg: float,
    height_m: float,
    width_km: float,
    length_km: float | None,
    latitude_rad: np.ndarray,
    longitude_rad: np.ndarray,
) -> np.ndarray:
    """Surface height of an idealised mountain, m, on the points given.

    Parameters
    ----------
    shape : {"gaussian", "ridge"}
        ``"gaussian"``: an isolated circular mountain ``h = H exp(-(r / W)^2)``, ``r`` the
        great-circle distance (km) from the centre. ``"ridge"``: a north-south ridge
        ``h = H exp(-(x / W)^2 - (y / L)^2)``, ``x = a cos(lat) dlon`` the zonal and
        ``y = a (lat - lat0)`` the meridional distance (km), ``a`` = 6371.22 km.
    latitude_deg, longitude_deg : float
        Centre, degrees north / east.
    height_m : float
        Peak height ``H``, m.
    width_km : float
        e-folding half-width ``W`` (across a ridge), km.
    length_km : float or None
        e-folding half-length ``L`` along a ridge, km (None for ``"gaussian"``).
    latitude_rad, longitude_rad : numpy.ndarray
        Points (any matching shapes, e.g. dinosaur's nodal mesh (lon, lat)), radians.

    Returns
    -------
    numpy.ndarray
        float64 surface height, m, shape of the inputs.

    Raises
    ------
    ValueError
        On an unknown shape or a ridge without ``length_km``.
    """
    lat0, lon0 = np.deg2rad(latitude_deg), np.deg2rad(longitude_deg)
    lat, lon = np.asarray(latitude_rad, np.float64), np.asarray(longitude_rad, np.float64)
    dlon = np.mod(lon - lon0 + np.pi, 2 * np.pi) - np.pi
    if shape == "gaussian":
        cos_r = np.sin(lat) * np.sin(lat0) + np.cos(lat) * np.cos(lat0) * np.cos(dlon)
        r = _EARTH_RADIUS_KM * np.arccos(np.clip(cos_r, -1.0, 1.0))
        return float(height_m) * np.exp(-((r / float(width_km)) ** 2))
    if shape == "ridge":
        if length_km is None:
            raise ValueError("a ridge needs length_km (e-folding half-length along the ridge, km)")
        x = _EARTH_RADIUS_KM * np.cos(lat) * dlon
        y = _EARTH_RADIUS_KM * (lat - lat0)
        return float(height_m) * np.exp(-((x / float(width_km)) ** 2) - (y / float(length_km)) ** 2)
    raise ValueError(f"unknown orography shape {shape!r}; expected 'gaussian' or 'ridge'")


def build_dycore(
    truncation: str,
    n_sigma_layers: int,
    dt_minutes: float,
    steps_per_output: int,
    level_indices: tuple[int, ...],
    orography: Any = None,
    equilibrium_warming_k: float = 0.0,
    equator_pole_contrast_k: float = HS_DELTA_T_Y_K,
) -> dict[str, Any]:
    """Build (and memoise) the jitted dinosaur stepper for one numerical setup.

    Parameters
    ----------
    truncation, n_sigma_layers, dt_minutes, steps_per_output, level_indices
        Numerics (see :class:`obscast.components.osse.nature.NatureRunConfig`).
    orography : hashable, optional
        An idealised mountain with the attributes ``shape``, ``latitude_deg``,
        ``longitude_deg``, ``height_m``, ``width_km``, ``length_km`` (e.g. a frozen
        :class:`obscast.components.osse.nature.OrographyConfig`); None for a flat planet.
        Its surface height (:func:`idealised_orography`) is spectrally filtered the way
        dinosaur's ``isothermal_rest_atmosphere_with_orography_path`` filters real orography
        (``filtered_modal_orography`` with ``filtering.exponential_filter``), the initial
        surface pressure is lowered over it (dinosaur ``isothermal_rest_atmosphere``'s
        standard-atmosphere ``surface_height``), and the dycore takes its modal field
        truncated by one wavenumber (``truncated_modal_orography``).
    equilibrium_warming_k, equator_pole_contrast_k : float
        Held-Suarez radiative-equilibrium knobs, K (:func:`held_suarez_temperatures`).

    Returns a dict with ``coords``, ``physics_specs``, ``init_fn``, ``advance`` (jitted:
    state -> (state after one output interval, nondimensional diagnostics on the output
    levels)), ``initial_diagnostics``, ``scales`` (SI factors) and ``surface_altitude_m``
    (the surface height the dycore sees, m, float64 (n_lon, n_lat) in dinosaur's nodal
    order: zeros on a flat planet).  Memoised so runs that differ only in seed, length or
    start time reuse the compiled function.
    """
    key = (
        truncation, n_sigma_layers, float(dt_minutes), steps_per_output, level_indices,
        orography, float(equilibrium_warming_k), float(equator_pole_contrast_k),
    )
    cached = _MODEL_CACHE.get(key)
    if cached is not None:
        return cached

    import jax
    import jax.numpy as jnp
    from dinosaur import (
        coordinate_systems,
        filtering,
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
    surface_height: dict[str, Any] = {}
    if orography is not None:
        lon_mesh, sin_lat_mesh = grid.nodal_mesh
        height_m = idealised_orography(
            orography.shape, orography.latitude_deg, orography.longitude_deg, orography.height_m,
            orography.width_km, orography.length_km, np.arcsin(sin_lat_mesh), lon_mesh,
        )
        # As dinosaur's isothermal_rest_atmosphere_with_orography_path: filter the nodal
        # height spectrally (removes most Gibbs ringing), back to nodal, hand it over in metres.
        filtered = primitive_equations.filtered_modal_orography(
            physics_specs.nondimensionalize(height_m * units.meter), coords,
            filter_fns=[filtering.exponential_filter(grid)],
        )
        surface_height["surface_height"] = physics_specs.dimensionalize(
            np.asarray(grid.to_nodal(filtered)), units.meter
        )
    init_fn, aux_features = primitive_equations_states.isothermal_rest_atmosphere(
        coords=coords,
        physics_specs=physics_specs,
        tref=_T_INIT_K * units.degK,
        p0=_P0_PA * units.pascal,
        p1=_P1_PA * units.pascal,
        **surface_height,
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
    # equilibrium_warming_k / equator_pole_contrast_k move maxT and dTy
    # (held_suarez_temperatures); only passed when changed, so the default
    # forcing is built exactly as before.
    knobs: dict[str, Any] = {}
    if float(equilibrium_warming_k) != 0.0 or float(equator_pole_contrast_k) != HS_DELTA_T_Y_K:
        max_t, d_ty = held_suarez_temperatures(equilibrium_warming_k, equator_pole_contrast_k)
        knobs = {"maxT": max_t * units.degK, "dTy": d_ty * units.degK}
    forcing = held_suarez.HeldSuarezForcingSigma(
        coords=coords,
        physics_specs=physics_specs,
        reference_temperature=ref_temps,
        p0=_P0_PA * units.pascal,
        **knobs,
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
        # get_geopotential_on_sigma): phi = phi_s + G @ T, phi_s = g * the
        # dycore's own (truncated) nodal orography.
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
        "surface_altitude_m": np.asarray(nodal_orography, np.float64) * dim(units.meter),
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
