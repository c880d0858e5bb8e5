"""Table of the observed and gridded variables obscast knows, with gross limits.

Every variable is keyed by its CF standard name (CF Standard Name Table,
https://cfconventions.org/Data/cf-standard-names/current/build/cf-standard-name-table.html)
and carries its canonical SI unit (UDUNITS spelling as used by CF) and a pair of
*gross limits*. A value outside ``valid_min .. valid_max`` is physically
impossible or so implausible that it is treated as a gross error by
:func:`obscast.components.obs.qc.apply_qc`.

Sources of the limits
---------------------
Gross-limit (plausible-value) checks are the first stage of the quality
control recommended by WMO: WMO-No. 305, *Guide on the Global Data-processing
System*, Chapter 6 (quality control procedures), and WMO-No. 488, *Guide to the
Global Observing System* (2010), Part VI and Appendix VI.2 (quality control of
automatic weather station data, whose surface limits are tighter, e.g. wind
speed 0..75 m s-1). ECMWF's observation pre-processing applies the same kind of
gross checks before assimilation (IFS Documentation, Part I: Observations).
The limits below are deliberately wide, because one table serves the surface
*and* the upper air to about 1 hPa, and were checked against the record
extremes of the WMO World Weather & Climate Extremes Archive
(https://wmo.asu.edu/):

* highest surface air temperature 56.7 degC = 329.8 K (Death Valley, 1913);
  lowest -89.2 degC = 184.0 K (Vostok, 1983). The lower limit of 150 K also
  admits the coldest stratospheric/mesospheric radiosonde and satellite
  values; 350 K leaves a margin above the surface record.
* highest sea-level pressure 1083.8 hPa (Agata, Siberia, 1968); lowest
  870 hPa (Typhoon Tip, 1979): limits 850..1100 hPa.
* highest surface wind gust 113.2 m s-1 (Barrow Island, 1996). One limit,
  150 m s-1, is used for surface and upper-air wind because the reader
  tables carry both and polar-night and subtropical jets exceed 100 m s-1
  aloft; a tighter surface-only limit would be a *soft* (climatological)
  check, not a gross one. The known gross errors in the sample files (349 and
  160 m s-1) still fail.
* lowest land surface -430 m (Dead Sea shore); highest 8849 m (Everest).

Constants
---------
G0 : float
    Standard acceleration of gravity, 9.80665 m s-2, the value adopted by the
    3rd CGPM (1901) and used by WMO to define geopotential height
    (WMO-No. 8, *Guide to Instruments and Methods of Observation*, Vol. I,
    Chapter 12; WMO-No. 49 Technical Regulations, Vol. I). ``g0`` is an alias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "G0",
    "g0",
    "Variable",
    "VARIABLES",
    "geopotential_to_height",
]

#: Standard gravity [m s-2] (CGPM 1901; WMO-No. 8 Vol. I Ch. 12).
G0: float = 9.80665
#: Alias of :data:`G0`.
g0: float = G0


@dataclass(frozen=True)
class Variable:
    """One physical variable with its canonical unit and gross limits.

    Parameters
    ----------
    name : str
        CF standard name, also the column name in observation tables and the
        data-variable name in gridded datasets.
    units : str
        Canonical SI unit, UDUNITS spelling (``"K"``, ``"Pa"``, ``"m s-1"``).
    valid_min, valid_max : float
        Inclusive gross limits in ``units``; values outside are gross errors
        (see the module docstring for their sources).
    long_name : str
        Human-readable description.
    """

    name: str
    units: str
    valid_min: float
    valid_max: float
    long_name: str

    def __post_init__(self) -> None:
        if not self.valid_min < self.valid_max:
            raise ValueError(f"{self.name}: valid_min must be < valid_max")


def _table(*variables: Variable) -> dict[str, Variable]:
    return {v.name: v for v in variables}


#: Variables keyed by CF standard name. Limits: see module docstring.
VARIABLES: dict[str, Variable] = _table(
    Variable("air_temperature", "K", 150.0, 350.0, "Air temperature"),
    Variable("dew_point_temperature", "K", 150.0, 340.0, "Dew-point temperature"),
    Variable(
        "air_pressure_at_mean_sea_level", "Pa", 85000.0, 110000.0,
        "Air pressure reduced to mean sea level",
    ),
    # Stations up to about 5,000 m (Tibetan plateau, Andes) report ~530 hPa.
    Variable("surface_air_pressure", "Pa", 40000.0, 110000.0, "Surface air pressure"),
    # Vertical coordinate of TEMP/aircraft rows: radiosondes reach ~1 hPa.
    Variable("air_pressure", "Pa", 100.0, 110000.0, "Air pressure"),
    # Aircraft altitude above MSL: commercial traffic stays below ~13 km.
    Variable("altitude", "m", -500.0, 20000.0, "Altitude above mean sea level"),
    Variable("wind_speed", "m s-1", 0.0, 150.0, "Wind speed"),
    Variable(
        "wind_from_direction", "degree", 0.0, 360.0,
        "Direction the wind blows from, clockwise from true north",
    ),
    # u, v of every wind report: SYNOP (10 m), TEMP and aircraft (at a pressure), and satellite
    # winds (AMV, components/obs/readers/amv.py) at the pressure of the tracked feature.
    Variable("eastward_wind", "m s-1", -150.0, 150.0, "Eastward wind component"),
    Variable("northward_wind", "m s-1", -150.0, 150.0, "Northward wind component"),
    # -5000..400000 m2 s-2 is -510..40,790 gpm: 1000 hPa below sea level in
    # strong highs up to the ~2 hPa level.
    Variable("geopotential", "m2 s-2", -5000.0, 400000.0, "Geopotential"),
    Variable("geopotential_height", "m", -500.0, 40000.0, "Geopotential height"),
    Variable("surface_altitude", "m", -500.0, 9000.0, "Station altitude above mean sea level"),
    # Record surface dew points (~35 degC at 1000 hPa) give q ~ 0.036 kg kg-1.
    Variable("specific_humidity", "kg kg-1", 0.0, 0.05, "Specific humidity"),
    Variable("brightness_temperature", "K", 150.0, 350.0, "Brightness temperature"),
)


def geopotential_to_height(geopotential: npt.ArrayLike) -> np.ndarray:
    """Convert geopotential to geopotential height.

    Parameters
    ----------
    geopotential : array_like
        Geopotential, any shape, in m2 s-2. NaN stays NaN.

    Returns
    -------
    numpy.ndarray
        Geopotential height in (geopotential) metres, same shape, float64
        unless a float32 array was given.

    Notes
    -----
    ``Z = Phi / g0`` with ``g0 = 9.80665 m s-2`` (WMO-No. 8, Vol. I, Ch. 12).
    """
    phi = np.asarray(geopotential)
    if not np.issubdtype(phi.dtype, np.floating):
        phi = phi.astype(np.float64)
    return phi / phi.dtype.type(G0)
