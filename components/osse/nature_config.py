"""The nature run's configuration (``osse.nature``): numerics, period, stored levels and the world.

Split from :mod:`obscast.components.osse.nature` (which runs it and re-exports these names):
:class:`NatureRunConfig`, :class:`OrographyConfig` (an idealised mountain or ridge) and
:func:`config_hash`, the key under which a nature run is cached. Importing this module needs
neither JAX nor dinosaur.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from obscast.components.osse.dycore import HS_DELTA_T_Y_K

__all__ = ["GRID_SHAPES", "NATURE_SCHEMA_VERSION", "NatureRunConfig", "OrographyConfig", "config_hash"]

#: Bump when the numerics or the store layout change, so cached stores made by
#: older code are regenerated (it enters :func:`config_hash`).
NATURE_SCHEMA_VERSION = 2

#: Gaussian grid (n_latitude, n_longitude) of each supported triangular
#: truncation, as built by ``dinosaur.spherical_harmonic.Grid.T<N>()``
#: (quadratic, alias-free grids: 4 * gaussian_nodes longitudes).
GRID_SHAPES: dict[str, tuple[int, int]] = {
    "T21": (32, 64),
    "T31": (48, 96),
    "T42": (64, 128),
    "T85": (128, 256),
}

class OrographyConfig(BaseModel):
    """An idealised mountain in the nature run (``osse.nature.orography``).

    The Held-Suarez world is zonally and hemispherically symmetric; a mountain breaks both,
    so a model that learned *where* rather than *what* can be caught by moving it
    (:meth:`rotated`, :meth:`mirrored`).  Shapes are those of
    :func:`obscast.components.osse.dycore.idealised_orography`.

    Attributes
    ----------
    shape : {"gaussian", "ridge"}
        ``"gaussian"``: isolated circular mountain ``H exp(-(r / W)^2)``; ``"ridge"``: a
        north-south ridge ``H exp(-(x / W)^2 - (y / L)^2)`` (x zonal, y meridional distance).
    latitude_deg : float
        Centre latitude, degrees north, in [-90, 90].
    longitude_deg : float
        Centre longitude, degrees east (any convention; normalised to [0, 360)).
    height_m : float
        Peak height before spectral filtering, m (0 < H <= 8000).
    width_km : float
        e-folding half-width ``W``, km (> 0; resolve it: at T21 the grid spacing is ~625 km).
    length_km : float or None
        e-folding half-length ``L`` along a ridge, km; required for ``"ridge"``, not allowed
        for ``"gaussian"``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: Literal["gaussian", "ridge"] = Field(default="gaussian", description="'gaussian' (circular mountain) or 'ridge' (north-south ridge)")
    latitude_deg: float = Field(default=45.0, ge=-90.0, le=90.0, description="centre latitude, degrees_north")
    longitude_deg: float = Field(default=90.0, description="centre longitude, degrees_east (normalised to [0, 360))")
    height_m: float = Field(default=2000.0, gt=0.0, le=8000.0, description="peak surface height before spectral filtering, m")
    width_km: float = Field(default=1500.0, gt=0.0, description="e-folding half-width, km")
    length_km: float | None = Field(default=None, gt=0.0, description="e-folding half-length along a ridge, km (ridge only)")

    @field_validator("longitude_deg")
    @classmethod
    def _wrap_longitude(cls, value: float) -> float:
        return float(np.mod(value, 360.0))

    @model_validator(mode="after")
    def _check_shape(self) -> OrographyConfig:
        if self.shape == "ridge" and self.length_km is None:
            raise ValueError("orography.shape 'ridge' needs length_km (e-folding half-length along the ridge, km)")
        if self.shape == "gaussian" and self.length_km is not None:
            raise ValueError("orography.length_km is for shape 'ridge' only; a 'gaussian' mountain is circular")
        return self

    def rotated(self, degrees: float) -> OrographyConfig:
        """The same mountain moved ``degrees`` east in longitude."""
        return self.model_copy(update={"longitude_deg": float(np.mod(self.longitude_deg + degrees, 360.0))})

    def mirrored(self) -> OrographyConfig:
        """The same mountain mirrored to the other hemisphere (latitude -> -latitude)."""
        return self.model_copy(update={"latitude_deg": -self.latitude_deg})


class NatureRunConfig(BaseModel):
    """Configuration of a Held-Suarez nature run.

    Attributes
    ----------
    truncation : {"T21", "T31", "T42", "T85"}
        Spectral triangular truncation; sets the Gaussian grid (see
        :data:`GRID_SHAPES`, T42 -> 64 latitudes x 128 longitudes).  T21 is
        too coarse for a realistic storm track; use it for tests only.
    n_sigma_layers : int
        Number of equidistant sigma layers of the model (boundaries
        ``linspace(0, 1, n + 1)``, mid-points ``(k + 0.5) / n``).
    output_sigma_levels : list of float
        Sigma values written to the store; each must be a model layer
        mid-point (no vertical interpolation is done).  Stored ascending
        (top to bottom).  Default ``[0.25, 0.45, 0.65, 0.85]`` (roughly 250,
        450, 650 and 850 hPa).
    dt_minutes : float
        Model time step in minutes; must divide ``output_interval_hours``.
    spinup_days : float
        Simulated days integrated and discarded before the first snapshot;
        baroclinic eddies from a rest state saturate after about 80 days, so
        keep at least 100 for a realistic climate.  Must be a multiple of
        the output interval.
    length_days : float
        Simulated days stored after spin-up; must be a multiple of the output
        interval.  The store holds ``length_days * 24 / output_interval_hours``
        snapshots, the first one being the state at the end of spin-up.
    output_interval_hours : int
        Interval between stored snapshots, hours.
    state_interval_hours : int
        Interval between the full model states (spectral, every layer) kept in the store's
        ``states`` group (:func:`load_states`), hours; a multiple of ``output_interval_hours``.
        The classical NWP baseline (:mod:`obscast.components.nwp`) starts its forecasts and
        estimates its background-error covariance from them. About 0.46 MB per state at T42.
    seed : int
        Seed of the JAX PRNG key that places the initial surface-pressure
        perturbation (different seeds give different weather).
    start_time : datetime
        Valid time of the first stored snapshot (end of spin-up), naive UTC.
        Timezone-aware values are converted to UTC.
    orography : OrographyConfig or None
        An idealised mountain (stored as ``surface_altitude``); None (default) is
        today's flat Held-Suarez world.
    equilibrium_warming_k : float
        Shift of the area-mean surface Held-Suarez radiative-equilibrium temperature, K
        (default 0; e.g. 4 for a warm climate).  Moves ``maxT`` (see
        :func:`obscast.components.osse.dycore.held_suarez_temperatures`).
    equator_pole_contrast_k : float
        Equator-to-pole contrast ``dTy`` of the surface equilibrium temperature, K (default
        60, Held & Suarez 1994); changing it keeps the area mean (``maxT`` moves by a third
        of the change).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    truncation: Literal["T21", "T31", "T42", "T85"] = "T42"
    n_sigma_layers: int = Field(default=10, ge=2, le=100)
    output_sigma_levels: list[float] = Field(default_factory=lambda: [0.25, 0.45, 0.65, 0.85], min_length=1)
    dt_minutes: float = Field(default=30.0, gt=0.0)
    spinup_days: float = Field(default=120.0, ge=0.0)
    length_days: float = Field(default=60.0, gt=0.0)
    output_interval_hours: PositiveInt = 6
    state_interval_hours: PositiveInt = 24
    seed: int = 0
    start_time: datetime = datetime(2000, 1, 1, 0, 0)
    orography: OrographyConfig | None = Field(default=None, description="idealised mountain; None = flat world")
    equilibrium_warming_k: float = Field(
        default=0.0, ge=-30.0, le=30.0, description="shift of the mean surface Held-Suarez equilibrium temperature, K"
    )
    equator_pole_contrast_k: float = Field(
        default=HS_DELTA_T_Y_K, ge=0.0, le=150.0, description="equator-to-pole contrast dTy of the surface equilibrium temperature, K"
    )

    @field_validator("start_time")
    @classmethod
    def _naive_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    @field_validator("output_sigma_levels")
    @classmethod
    def _sorted_unique(cls, value: list[float]) -> list[float]:
        if any(not (0.0 < s < 1.0) for s in value):
            raise ValueError(f"output_sigma_levels must lie in (0, 1), got {value}")
        out = sorted(set(float(s) for s in value))
        if len(out) != len(value):
            raise ValueError(f"output_sigma_levels has duplicates: {value}")
        return out

    @model_validator(mode="after")
    def _check_consistency(self) -> NatureRunConfig:
        self.level_indices()  # raises ValueError when a level is not a mid-point
        interval_min = self.output_interval_hours * 60.0
        if not _is_integer(interval_min / self.dt_minutes):
            raise ValueError(
                f"dt_minutes={self.dt_minutes} must divide output_interval_hours*60={interval_min:g}"
            )
        if self.state_interval_hours % self.output_interval_hours:
            raise ValueError(
                f"state_interval_hours={self.state_interval_hours} must be a multiple of "
                f"output_interval_hours={self.output_interval_hours}"
            )
        for name in ("spinup_days", "length_days"):
            n = getattr(self, name) * 24.0 / self.output_interval_hours
            if not _is_integer(n):
                raise ValueError(
                    f"{name}={getattr(self, name)} must be a multiple of output_interval_hours="
                    f"{self.output_interval_hours} h"
                )
        return self

    # ------------------------------------------------------------------ helpers
    @property
    def grid_shape(self) -> tuple[int, int]:
        """(n_latitude, n_longitude) of the output grid."""
        return GRID_SHAPES[self.truncation]

    @property
    def steps_per_output(self) -> int:
        """Model time steps between two stored snapshots."""
        return int(round(self.output_interval_hours * 60.0 / self.dt_minutes))

    @property
    def n_spinup_intervals(self) -> int:
        """Number of output intervals integrated during spin-up."""
        return int(round(self.spinup_days * 24.0 / self.output_interval_hours))

    @property
    def n_snapshots(self) -> int:
        """Number of stored snapshots (length of the ``time`` axis)."""
        return int(round(self.length_days * 24.0 / self.output_interval_hours))

    def sigma_centers(self) -> np.ndarray:
        """Sigma at the mid-points of the model's equidistant layers, shape (n_sigma_layers,)."""
        n = self.n_sigma_layers
        return (np.arange(n) + 0.5) / n

    def level_indices(self) -> list[int]:
        """Model layer index (0 = top) of each output sigma level.

        Raises
        ------
        ValueError
            If an output level is not within 1e-6 of a layer mid-point.
        """
        centers = self.sigma_centers()
        idx = []
        for s in self.output_sigma_levels:
            k = int(np.argmin(np.abs(centers - s)))
            if abs(centers[k] - s) > 1e-6:
                raise ValueError(
                    f"output sigma level {s} is not a mid-point of the {self.n_sigma_layers} "
                    f"equidistant layers {np.round(centers, 6).tolist()}"
                )
            idx.append(k)
        return idx

    def world_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`obscast.components.osse.dycore.build_dycore` that set
        the world (orography and Held-Suarez knobs); pass them wherever the nature run's
        dycore is rebuilt (e.g. the NWP baseline) so it runs in the same world."""
        return {
            "orography": self.orography,
            "equilibrium_warming_k": self.equilibrium_warming_k,
            "equator_pole_contrast_k": self.equator_pole_contrast_k,
        }

    def times(self) -> np.ndarray:
        """Valid times of the stored snapshots, ``datetime64[ns]``, shape (n_snapshots,)."""
        t0 = np.datetime64(self.start_time, "ns")
        step = np.timedelta64(self.output_interval_hours, "h").astype("timedelta64[ns]")
        return t0 + step * np.arange(self.n_snapshots)


def _is_integer(x: float, tol: float = 1e-9) -> bool:
    return abs(x - round(x)) < tol * max(1.0, abs(x))


def config_hash(cfg: NatureRunConfig) -> str:
    """Stable identifier of a nature-run configuration.

    Parameters
    ----------
    cfg : NatureRunConfig
        Configuration.

    Returns
    -------
    str
        First 16 hex digits of the SHA-256 of the canonical JSON of ``cfg``
        (sorted keys) together with :data:`NATURE_SCHEMA_VERSION`.  It does
        not depend on the installed dinosaur/JAX versions (those are recorded
        in the store attributes instead).  The world keys (:data:`_WORLD_KEYS`)
        enter only when they differ from their defaults, so a flat, unwarmed
        world keeps the hash it had before they existed (its cached store stays valid).
    """
    config = cfg.model_dump(mode="json")
    for name in _WORLD_KEYS:
        if config[name] == NatureRunConfig.model_fields[name].default:
            del config[name]
    payload = {"schema": NATURE_SCHEMA_VERSION, "config": config}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: Keys that select the world (orography, climate knobs): hashed only when not default.
_WORLD_KEYS = ("orography", "equilibrium_warming_k", "equator_pole_contrast_k")


