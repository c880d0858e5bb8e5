"""The OSSE's observation error model: Gaussian noise, gross errors and missing reports.

See the module docstring of :mod:`obscast.components.osse.simulate` ("Error model") for what
each kind draws; :class:`ErrorModel` holds the standard deviations and fractions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from obscast.components.obs.conversions import wind_components, wind_speed_direction
from obscast.components.obs.variables import VARIABLES

__all__ = ["GROSS_OFFSETS", "ErrorModel"]

#: Observation kinds simulated, in this order (it seeds each kind's random stream).
KINDS: tuple[str, ...] = ("synop", "temp", "aircraft", "satellite")

#: Gross-error replacement: ``VARIABLES[name].valid_max + U(lo, hi)``, in the variable's unit.
GROSS_OFFSETS: dict[str, tuple[float, float]] = {
    "surface_air_pressure": (1000.0, 5000.0),
    "air_temperature": (10.0, 50.0),
    "geopotential_height": (1000.0, 5000.0),
    "wind_speed": (10.0, 50.0),
    "brightness_temperature": (10.0, 50.0),
}

#: Error variables per kind, in draw order (see module docstring).
_ERROR_VARIABLES: dict[str, tuple[str, ...]] = {
    "synop": ("surface_air_pressure", "air_temperature", "wind_speed"),
    "temp": ("air_temperature", "geopotential_height", "wind_speed"),
    "aircraft": ("air_temperature", "wind_speed"),
    "satellite": ("brightness_temperature",),
    "amv": ("wind_speed",),  # satellite winds (components/osse/amv.py), simulated on request
}


class ErrorModel(BaseModel):
    """Random errors of the simulated observations (see module docstring).

    Attributes
    ----------
    air_temperature : float
        Noise standard deviation of air temperature, K (default 1.0).
    wind_component : float
        Noise standard deviation of each of ``u`` and ``v``, m s-1 (2.0).
    surface_air_pressure : float
        Noise standard deviation of surface pressure, Pa (100).
    geopotential_height : float
        Noise standard deviation of geopotential height, m (15).
    brightness_temperature : float
        Noise standard deviation of brightness temperature, K (0.5).
    gross_error_fraction : float
        Probability, per row and error variable, of a gross error (0.005).
    missing_fraction : float
        Probability that a whole report is missing (0.05).
    seed : int
        Seed of the random generators (results are deterministic given it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    air_temperature: float = Field(default=1.0, ge=0.0)
    wind_component: float = Field(default=2.0, ge=0.0)
    surface_air_pressure: float = Field(default=100.0, ge=0.0)
    geopotential_height: float = Field(default=15.0, ge=0.0)
    brightness_temperature: float = Field(default=0.5, ge=0.0)
    gross_error_fraction: float = Field(default=0.005, ge=0.0, le=1.0)
    missing_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    seed: int = 0

    def std(self, column: str) -> float:
        """Noise standard deviation for an observation-table column.

        Parameters
        ----------
        column : str
            ``air_temperature``, ``eastward_wind``, ``northward_wind`` (both
            give ``wind_component``), ``surface_air_pressure``,
            ``geopotential_height`` or ``brightness_temperature``.

        Returns
        -------
        float
            Standard deviation in the column's unit.

        Raises
        ------
        AttributeError
            Any other column.
        """
        if column in ("eastward_wind", "northward_wind"):
            return self.wind_component
        return float(getattr(self, column))




def _rng(seed: int, kind: str, t: int) -> np.random.Generator:
    return np.random.default_rng([seed, (KINDS + ("amv",)).index(kind), t])


def _gross_value(rng: np.random.Generator, name: str, n: int) -> np.ndarray:
    lo, hi = GROSS_OFFSETS[name]
    return VARIABLES[name].valid_max + rng.uniform(lo, hi, n)


def _observe(kind: str, truth: dict[str, np.ndarray], em: ErrorModel, rng: np.random.Generator
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Noisy values and gross flags of one group; ``truth`` holds the observed variables."""
    n = len(next(iter(truth.values())))
    obs: dict[str, np.ndarray] = {}
    for name in ("surface_air_pressure", "air_temperature", "geopotential_height",
                 "eastward_wind", "northward_wind", "brightness_temperature"):
        if name in truth:
            obs[name] = truth[name] + rng.normal(0.0, em.std(name), n)
    if "eastward_wind" in obs:
        obs["wind_speed"], obs["wind_from_direction"] = wind_speed_direction(
            obs["eastward_wind"], obs["northward_wind"])
    gross: dict[str, np.ndarray] = {}
    for name in _ERROR_VARIABLES[kind]:
        flag = rng.random(n) < em.gross_error_fraction
        value = _gross_value(rng, name, n)
        gross[name] = flag
        obs[name] = np.where(flag, value, obs[name])
    if "wind_speed" in gross:
        u, v = wind_components(obs["wind_speed"], obs["wind_from_direction"])
        hit = gross["wind_speed"]
        obs["eastward_wind"] = np.where(hit, u, obs["eastward_wind"])
        obs["northward_wind"] = np.where(hit, v, obs["northward_wind"])
    return obs, gross


def _drop_missing(
    design: pd.DataFrame, em: ErrorModel, rng: np.random.Generator, report: str
) -> tuple[pd.DataFrame, int, int]:
    """Drop whole reports (rows sharing ``design[report]``); returns (kept, n_reports, n_missing)."""
    reports = pd.unique(design[report].to_numpy())
    missing = reports[rng.random(len(reports)) < em.missing_fraction]
    keep = ~np.isin(design[report].to_numpy(), missing)
    return design[keep].reset_index(drop=True), len(reports), len(missing)


