"""Nature run: a Held-Suarez "truth" simulation with the ``dinosaur`` dynamical core.

The nature run integrates the dry hydrostatic primitive equations on sigma
levels with the idealised Held & Suarez (1994) forcing (Newtonian relaxation
of temperature towards a zonally symmetric radiative-equilibrium profile plus
Rayleigh friction in the boundary layer), starting from an isothermal
atmosphere at rest with a localised surface-pressure perturbation.  After a
spin-up period that is discarded, instantaneous snapshots are written every
``output_interval_hours`` to a zarr (v3) store in SI units with CF names.

The dynamical core is Google's ``dinosaur`` (JAX).  It is an optional
dependency of the simulation only: ``jax`` and ``dinosaur`` are imported
lazily inside the functions that need them, so ``import obscast.components.osse.nature``
(and :class:`NatureRunConfig`, :func:`config_hash`) work without them.

Numerics follow dinosaur's own Held-Suarez example: spectral transform on a
Gaussian grid, equidistant sigma layers, ``time_integration.imex_rk_sil3``
(Whitaker & Kar 2013, MWR 141, 3426-3434) with an exponential spectral
filter applied after every step.

References
----------
Held, I. M., and M. J. Suarez, 1994: A proposal for the intercomparison of
the dynamical cores of atmospheric general circulation models. *Bull. Amer.
Meteor. Soc.*, 75, 1825-1830.

Notes
-----
Store layout (``store_path``, zarr v3, unconsolidated metadata):

``air_temperature`` (time, level, latitude, longitude), K
``eastward_wind`` (time, level, latitude, longitude), m s-1
``northward_wind`` (time, level, latitude, longitude), m s-1
``geopotential`` (time, level, latitude, longitude), m2 s-2
``surface_air_pressure`` (time, latitude, longitude), Pa
``surface_altitude`` (latitude, longitude), m -- only in a world with orography
(``orography`` set): the surface height the dycore sees (after its spectral
filtering and truncation); a store without it is a flat world (height 0)

``level`` holds sigma = p / p_s at layer mid-points (dimensionless, CF
``atmosphere_sigma_coordinate`` with model top at p = 0), ``latitude`` the
Gaussian latitudes ascending in degrees north, ``longitude`` degrees east in
[0, 360).  All data variables are float32.  Group attributes record
``config_hash``, the config as JSON and ``complete`` (``True`` only once the
last block has been written).
"""

from __future__ import annotations

import logging
import os
import shutil
import time as _time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from obscast.components.osse.dycore import (
    _FILTER_CUTOFF,
    _FILTER_ORDER,
    _FILTER_TAU_NONDIM,
    build_dycore,
    held_suarez_temperatures,
    to_si,
)

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

__all__ = [
    "GRID_SHAPES",
    "NatureRunConfig",
    "OrographyConfig",
    "ProgressCallback",
    "config_hash",
    "load_states",
    "run_nature",
]

logger = logging.getLogger(__name__)

from obscast.components.osse.nature_config import (  # noqa: F401 - re-exported
    GRID_SHAPES,
    NATURE_SCHEMA_VERSION,
    NatureRunConfig,
    OrographyConfig,
    _is_integer,
    config_hash,
)


#: Snapshots per append block written to zarr (bounded RAM, see run_nature).
_BLOCK_SNAPSHOTS = 40

ProgressCallback = Callable[[str, float, float], None]
"""``progress(phase, done_days, total_days)``; ``phase`` is ``"spinup"`` or ``"run"``."""


# --------------------------------------------------------------------- caching
def _store_status(store_path: str) -> tuple[bool, dict[str, Any]]:
    """Return (is_zarr_group, attrs) of an existing path; (False, {}) if absent."""
    if not os.path.exists(store_path):
        return False, {}
    try:
        import zarr

        group = zarr.open_group(store_path, mode="r")
        return True, dict(group.attrs)
    except Exception:  # noqa: BLE001 - anything unreadable is "not a store"
        return False, {}


def _is_cached(store_path: str, digest: str) -> bool:
    is_group, attrs = _store_status(store_path)
    return is_group and attrs.get("config_hash") == digest and attrs.get("complete") is True


# -------------------------------------------------------------------- writing
_VAR_ATTRS: dict[str, dict[str, str]] = {
    "air_temperature": {"standard_name": "air_temperature", "long_name": "air temperature", "units": "K"},
    "eastward_wind": {"standard_name": "eastward_wind", "long_name": "eastward wind", "units": "m s-1"},
    "northward_wind": {"standard_name": "northward_wind", "long_name": "northward wind", "units": "m s-1"},
    "geopotential": {
        "standard_name": "geopotential",
        "long_name": "geopotential at sigma-layer mid-points",
        "units": "m2 s-2",
        "comment": "hydrostatic, dinosaur primitive_equations.get_geopotential_on_sigma "
        "(the dycore's vertical discretisation), flat surface (surface geopotential 0)",
    },
    "surface_air_pressure": {
        "standard_name": "surface_air_pressure",
        "long_name": "surface pressure",
        "units": "Pa",
    },
}


def _block_dataset(
    cfg: NatureRunConfig,
    fields: dict[str, np.ndarray],
    times: np.ndarray,
    lat_deg: np.ndarray,
    lon_deg: np.ndarray,
) -> xr.Dataset:
    import xarray as xr

    dims4 = ("time", "level", "latitude", "longitude")
    data_vars = {}
    for name, attrs in _VAR_ATTRS.items():
        dims = dims4 if fields[name].ndim == 4 else ("time", "latitude", "longitude")
        data_vars[name] = xr.Variable(dims, fields[name], attrs=dict(attrs))
    if cfg.orography is not None:
        data_vars["geopotential"].attrs["comment"] = (
            "hydrostatic, dinosaur primitive_equations.get_geopotential_on_sigma (the dycore's vertical "
            "discretisation), including the surface geopotential g * surface_altitude"
        )
    coords = {
        "time": xr.Variable("time", times, attrs={"standard_name": "time", "axis": "T"}),
        "level": xr.Variable(
            "level",
            np.asarray(cfg.output_sigma_levels, dtype=np.float64),
            attrs={
                "standard_name": "atmosphere_sigma_coordinate",
                "long_name": "sigma at model layer mid-points",
                "units": "1",
                "positive": "down",
                "axis": "Z",
                "comment": "p = level * surface_air_pressure (model top ptop = 0 Pa)",
            },
        ),
        "latitude": xr.Variable(
            "latitude",
            lat_deg,
            attrs={
                "standard_name": "latitude",
                "long_name": "latitude (Gaussian grid)",
                "units": "degrees_north",
                "axis": "Y",
            },
        ),
        "longitude": xr.Variable(
            "longitude",
            lon_deg,
            attrs={
                "standard_name": "longitude",
                "long_name": "longitude",
                "units": "degrees_east",
                "axis": "X",
            },
        ),
    }
    return xr.Dataset(data_vars, coords=coords)


_OROGRAPHY_ATTRS = {
    "standard_name": "surface_altitude",
    "long_name": "surface height of the idealised orography as seen by the dycore",
    "units": "m",
    "comment": "obscast.components.osse.dycore.idealised_orography, filtered with dinosaur "
    "filtered_modal_orography (exponential filter) and truncated_modal_orography; surface geopotential = "
    "9.80616 m s-2 x surface_altitude",
}


def _store_attrs(cfg: NatureRunConfig, digest: str) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def _version(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "unknown"

    max_t, d_ty = held_suarez_temperatures(cfg.equilibrium_warming_k, cfg.equator_pole_contrast_k)
    return {
        "Conventions": "CF-1.10",
        "title": "obscast Held-Suarez nature run",
        "held_suarez_maxT_K": max_t,
        "held_suarez_dTy_K": d_ty,
        "orography": "none (flat)" if cfg.orography is None else cfg.orography.model_dump_json(),
        "source": f"dinosaur {_version('dinosaur')} (jax {_version('jax')}): dry primitive equations on "
        f"{cfg.n_sigma_layers} equidistant sigma layers, {cfg.truncation}, imex_rk_sil3, "
        f"dt {cfg.dt_minutes:g} min, exponential filter (tau {_FILTER_TAU_NONDIM} nondim, order "
        f"{_FILTER_ORDER}, cutoff {_FILTER_CUTOFF})",
        "references": "Held, I. M. and M. J. Suarez, 1994: A proposal for the intercomparison of the "
        "dynamical cores of atmospheric general circulation models. Bull. Amer. Meteor. Soc., 75, 1825-1830.",
        "history": f"created {datetime.now(timezone.utc).isoformat(timespec='seconds')} by components.nature",
        "config_hash": digest,
        "config": cfg.model_dump_json(),
        "nature_schema_version": NATURE_SCHEMA_VERSION,
        "spinup_days": cfg.spinup_days,
        "complete": False,
    }


def _generate(
    cfg: NatureRunConfig,
    store_path: str,
    digest: str,
    progress: ProgressCallback | None,
) -> None:
    """Run spin-up + integration and write the store (overwrites ``store_path``)."""
    import zarr

    model = build_dycore(
        cfg.truncation, cfg.n_sigma_layers, cfg.dt_minutes, cfg.steps_per_output, tuple(cfg.level_indices()),
        **cfg.world_kwargs(),
    )
    jax = model["jax"]
    coords = model["coords"]
    scales_ = model["scales"]
    grid = coords.horizontal

    lat_rad = np.asarray(grid.latitudes, dtype=np.float64)
    lat_order = np.argsort(lat_rad)  # ascending latitude
    lat_deg = np.rad2deg(lat_rad[lat_order])
    lon_deg = np.mod(np.rad2deg(np.asarray(grid.longitudes, dtype=np.float64)), 360.0)
    if np.any(np.diff(lon_deg) <= 0):  # pragma: no cover - dinosaur grids start at 0
        raise RuntimeError("unexpected non-monotonic dinosaur longitudes")

    state = model["init_fn"](rng_key=jax.random.PRNGKey(cfg.seed))
    advance = model["advance"]
    interval_days = cfg.output_interval_hours / 24.0

    t0 = _time.perf_counter()
    for i in range(cfg.n_spinup_intervals):
        state, _ = advance(state)
        if progress is not None and (i + 1) % max(1, int(round(1.0 / interval_days))) == 0:
            jax.block_until_ready(state)
            progress("spinup", (i + 1) * interval_days, cfg.spinup_days)
    jax.block_until_ready(state)
    logger.info(
        "nature run %s: spin-up of %g days took %.1f s", digest, cfg.spinup_days, _time.perf_counter() - t0
    )

    times = cfg.times()
    n = cfg.n_snapshots
    nlev = len(cfg.output_sigma_levels)
    nlat, nlon = grid.nodal_shape[1], grid.nodal_shape[0]
    per_day = max(1, int(round(24 / cfg.output_interval_hours)))
    time_chunk = per_day if _BLOCK_SNAPSHOTS % per_day == 0 else 1
    # Chunks: one day of snapshots x full field; blocks are a multiple of it so appends stay aligned.
    encoding: dict[str, dict[str, Any]] = {
        name: {"dtype": "float32", "chunks": (time_chunk, nlev, nlat, nlon)} for name in _VAR_ATTRS
    }
    encoding["surface_air_pressure"]["chunks"] = (time_chunk, nlat, nlon)
    encoding["time"] = {
        "units": f"hours since {cfg.start_time.isoformat(sep=' ')}",
        "calendar": "proleptic_gregorian",
        "dtype": "int64",
    }

    attrs = _store_attrs(cfg, digest)
    diag = model["initial_diagnostics"](state)  # snapshot 0 = end of spin-up
    buffer: list[dict[str, np.ndarray]] = []
    states: dict[str, list[np.ndarray]] = {name: [] for name in STATE_FIELDS}
    state_every = cfg.state_interval_hours // cfg.output_interval_hours
    written = 0
    t1 = _time.perf_counter()
    for k in range(n):
        if k > 0:
            state, diag = advance(state)
        buffer.append(to_si(diag, scales_, lat_order))
        if k % state_every == 0:
            for name in STATE_FIELDS:
                states[name].append(np.asarray(getattr(state, name), dtype=np.float32))
        if len(buffer) == _BLOCK_SNAPSHOTS or k == n - 1:
            fields = {name: np.stack([b[name] for b in buffer]) for name in _VAR_ATTRS}
            bad = [name for name, arr in fields.items() if not np.all(np.isfinite(arr))]
            if bad:
                raise FloatingPointError(
                    f"nature run {digest} produced non-finite {bad} between {times[written]} and "
                    f"{times[written + len(buffer) - 1]}; reduce dt_minutes"
                )
            ds = _block_dataset(cfg, fields, times[written : written + len(buffer)], lat_deg, lon_deg)
            if cfg.orography is not None and written == 0:
                # static field, written with the first block only (no time dimension)
                import xarray as xr

                altitude = np.swapaxes(model["surface_altitude_m"], 0, 1)[lat_order, :].astype(np.float32)
                ds["surface_altitude"] = xr.Variable(("latitude", "longitude"), altitude, attrs=dict(_OROGRAPHY_ATTRS))
            # xarray rewrites the group attributes on every append: attach them to each block.
            ds.attrs.update(attrs)
            if written == 0:
                ds.to_zarr(store_path, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
            else:
                ds.to_zarr(store_path, append_dim="time", consolidated=False)
            written += len(buffer)
            buffer = []
            if progress is not None:
                progress("run", written * interval_days, cfg.length_days)
    logger.info(
        "nature run %s: %d snapshots (%g days) in %.1f s",
        digest,
        n,
        cfg.length_days,
        _time.perf_counter() - t1,
    )
    group = zarr.open_group(store_path, mode="r+")
    sub = group.create_group("states", overwrite=True)
    sub.attrs.update({
        "comment": "full dinosaur model states (nondimensional spectral coefficients, every sigma layer), "
        "to restart the dycore; see obscast.components.osse.nature.load_states",
        "truncation": cfg.truncation,
    })
    sub.create_array("time", data=times[::state_every].astype("datetime64[ns]").astype(np.int64))
    for name in STATE_FIELDS:
        sub.create_array(name, data=np.stack(states[name]))
    group.attrs["complete"] = True


#: Fields of dinosaur's ``primitive_equations.State`` kept in the ``states`` group, each
#: (n_states, n_layers or 1, n_modal_m, n_modal_l) float32.
STATE_FIELDS = ("vorticity", "divergence", "temperature_variation", "log_surface_pressure")


def load_states(store_path: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The full model states a nature run keeps every ``state_interval_hours``.

    Parameters
    ----------
    store_path : str or zarr store
        A store written by :func:`run_nature` (a path, or a zarr store object such as
        :meth:`obscast.components.store.storage.Store.zarr_store`).

    Returns
    -------
    times : numpy.ndarray
        ``datetime64[ns]``, shape (n_states,): valid times (a subset of the snapshot times).
    fields : dict
        :data:`STATE_FIELDS` -> (n_states, n_layers, M, L) float32 nondimensional modal
        (spectral) coefficients in dinosaur's layout; ``log_surface_pressure`` has one layer.

    Raises
    ------
    KeyError
        If the store has no ``states`` group (written by code before schema version 2).
    """
    import zarr

    group = zarr.open_group(os.fspath(store_path) if isinstance(store_path, (str, os.PathLike)) else store_path, mode="r")
    if "states" not in group:
        raise KeyError(f"{store_path}: the nature run has no 'states' group; re-run it (schema version {NATURE_SCHEMA_VERSION})")
    sub = group["states"]
    times = np.asarray(sub["time"][:]).astype("datetime64[ns]")
    return times, {name: np.asarray(sub[name][:]) for name in STATE_FIELDS}


def run_nature(cfg: NatureRunConfig, store_path: str, progress: ProgressCallback | None = None) -> str:
    """Run (or reuse) the Held-Suarez nature run and store 6-hourly truth in zarr.

    The model is integrated for ``cfg.spinup_days`` from an isothermal rest
    state (discarded), then for ``cfg.length_days`` while snapshots are
    written every ``cfg.output_interval_hours``.  Snapshots are buffered in
    blocks of 40 and appended along ``time`` inside the loop, so memory does
    not grow with the run length (one year of T42 at four levels is several
    hundred MB).

    Parameters
    ----------
    cfg : NatureRunConfig
        Run configuration.
    store_path : str
        Local path of the zarr v3 store (a directory, e.g.
        ``"gridded/nature.zarr"``).  Parent directories are created.
    progress : callable, optional
        ``progress(phase, done_days, total_days)`` with ``phase`` in
        ``{"spinup", "run"}``, called about once per simulated day during
        spin-up and after every written block.

    Returns
    -------
    str
        ``store_path``.  Open it with
        ``xarray.open_zarr(store_path, consolidated=False)``.  Fields have
        shape (time, level, latitude, longitude) = (cfg.n_snapshots,
        len(cfg.output_sigma_levels), *cfg.grid_shape), surface pressure
        (time, latitude, longitude); see the module docstring for names and
        units.

    Raises
    ------
    ModuleNotFoundError
        If ``dinosaur``/``jax`` are not installed and the store must be made
        (install the ``osse`` extra).
    FileExistsError
        If ``store_path`` exists but is not a zarr group (never deleted).
    FloatingPointError
        If the integration produces non-finite values (unstable time step).

    Notes
    -----
    Caching: when ``store_path`` holds a zarr group whose attributes carry
    ``config_hash == config_hash(cfg)`` and ``complete == True``, nothing is
    run or written.  Otherwise (other config, or an interrupted run whose
    ``complete`` flag is still ``False``) the store is deleted and
    regenerated.  The flag is written last, after all data.

    Cost measured on 2 shared CPU cores (dinosaur 1.5.1, jax 0.10, float32,
    10 layers, dt 30 min, T42): 1.5-2 s of wall time per simulated day
    (up to about 3.4 s when other processes compete for the cores), plus
    10-15 s of setup and JIT compilation per process; the store takes about
    2 MB per simulated day (four levels, 6-hourly), i.e. about 0.75 GB per
    simulated year.
    """
    store_path = os.fspath(store_path)
    digest = config_hash(cfg)
    if _is_cached(store_path, digest):
        logger.info("nature run %s: reusing complete store %s", digest, store_path)
        return store_path
    if os.path.exists(store_path):
        is_group, attrs = _store_status(store_path)
        if not is_group:
            raise FileExistsError(f"{store_path} exists and is not a zarr store; refusing to overwrite it")
        logger.warning(
            "nature run %s: replacing store %s (config_hash=%s, complete=%s)",
            digest,
            store_path,
            attrs.get("config_hash"),
            attrs.get("complete"),
        )
        if os.path.isdir(store_path):
            shutil.rmtree(store_path)
        else:
            os.remove(store_path)
    parent = os.path.dirname(os.path.abspath(store_path))
    os.makedirs(parent, exist_ok=True)
    _generate(cfg, store_path, digest, progress)
    return store_path
