"""Unit and convention conversions shared by the observation readers and the simulator."""

from __future__ import annotations

import numpy as np

#: Decimals kept in latitude/longitude (BUFR carries at most 1e-7 degree).
_DEGREE_DECIMALS = 9


def wind_components(
    speed: np.ndarray, direction: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Eastward and northward wind from speed and meteorological direction.

    Parameters
    ----------
    speed : numpy.ndarray
        Wind speed, shape (n,), m s-1.
    direction : numpy.ndarray
        Direction the wind blows *from*, degrees clockwise from true north,
        shape (n,).

    Returns
    -------
    u, v : numpy.ndarray
        Eastward and northward components, shape (n,), m s-1, float64;
        NaN where either input is NaN.

    Notes
    -----
    ``u = -speed * sin(direction)``, ``v = -speed * cos(direction)``: the
    meteorological convention: direction is where the wind blows *from*, in
    degrees true (WMO-No. 306 *Manual on Codes*, BUFR Table B element
    0 11 001; WMO-No. 8, Vol. I, Ch. 5). A north wind (360 deg) gives
    ``v < 0``; a west wind (270 deg) ``u > 0``.
    """
    speed = np.asarray(speed, dtype=np.float64)
    rad = np.deg2rad(np.asarray(direction, dtype=np.float64))
    return -speed * np.sin(rad), -speed * np.cos(rad)


def wind_speed_direction(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wind speed and meteorological direction from eastward and northward wind.

    The inverse of :func:`wind_components`.

    Parameters
    ----------
    u, v : numpy.ndarray
        Eastward and northward wind, same shape (n,), m s-1.

    Returns
    -------
    speed : numpy.ndarray
        ``hypot(u, v)``, shape (n,), m s-1, float64.
    direction : numpy.ndarray
        Direction the wind blows *from*, degrees clockwise from true north
        in [0, 360), shape (n,), float64: ``(180 + atan2(u, v)) mod 360``
        (a west wind, ``u > 0``, gives 270; a north wind, ``v < 0``, gives 0;
        calm, ``atan2(0, 0) = 0``, gives 180). NaN where either input is NaN.
    """
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    direction = np.mod(180.0 + np.rad2deg(np.arctan2(u, v)), 360.0)
    return np.hypot(u, v), np.where(direction >= 360.0, 0.0, direction)


def normalise_longitude(lon: np.ndarray, keep_impossible: bool = False) -> np.ndarray:
    """Normalise longitudes to [-180, 180).

    Parameters
    ----------
    lon : numpy.ndarray
        Longitudes, degree east, any shape and range.
    keep_impossible : bool, optional
        Return values with ``|lon| > 360`` unchanged (the readers of observation files): such a
        value is no longitude but a decimal-shifted one (1234.5 for 123.45) or a fill value
        (-9999), and must reach quality control, which quarantines it as ``bad_coordinates``
        (:mod:`obscast.components.obs.qc`), rather than become a plausible position.

    Returns
    -------
    numpy.ndarray
        Same shape, float64, in [-180, 180) and rounded to 1e-9 degree; 180
        maps to -180, NaN stays NaN, no negative zero (with ``keep_impossible``,
        values with ``|lon| > 360`` unchanged).
    """
    lon = np.asarray(lon, dtype=np.float64)
    out = np.round(np.mod(lon + 180.0, 360.0) - 180.0, _DEGREE_DECIMALS) + 0.0  # no -0.0
    with np.errstate(invalid="ignore"):
        out = np.where(out >= 180.0, out - 360.0, out)
        return np.where(np.abs(lon) > 360.0, lon, out) if keep_impossible else out


#: ICAO standard atmosphere (ICAO Doc 7488/3; ISO 2533): sea-level pressure [Pa] and temperature
#: [K], tropospheric lapse rate [K m-1], specific gas constant of dry air [J kg-1 K-1], standard
#: gravity [m s-2], and the tropopause (11,000 m geopotential) pressure [Pa].
_ISA_P0, _ISA_T0, _ISA_LAPSE, _ISA_R, _ISA_G0 = 101325.0, 288.15, 0.0065, 287.05287, 9.80665
_ISA_H11 = 11000.0
_ISA_T11 = _ISA_T0 - _ISA_LAPSE * _ISA_H11  # 216.65 K
_ISA_P11 = _ISA_P0 * (_ISA_T11 / _ISA_T0) ** (_ISA_G0 / (_ISA_R * _ISA_LAPSE))  # 22632.06 Pa


def pressure_from_flight_level(flight_level: np.ndarray) -> np.ndarray:
    """Static pressure of a flight level (pressure altitude) in the ICAO standard atmosphere.

    Parameters
    ----------
    flight_level : numpy.ndarray
        Pressure altitude [m], any shape: BUFR 0 07 010 ``flightLevel`` of aircraft reports
        (AMDAR template 3 11 010). NaN stays NaN.

    Returns
    -------
    numpy.ndarray
        Pressure [Pa], same shape, float64.

    Notes
    -----
    A flight level *is* a pressure expressed as the height of that pressure in the ICAO
    standard atmosphere (ICAO Doc 7488/3, ISO 2533:1975), so the inversion is exact:
    ``p = p0 (1 - L h / T0) ** (g0 / (R L))`` up to 11,000 m and
    ``p = p11 exp(-g0 (h - 11000) / (R T11))`` above (isothermal layer, valid to 20,000 m),
    with p0 = 101325 Pa, T0 = 288.15 K, L = 0.0065 K m-1, R = 287.05287 J kg-1 K-1,
    g0 = 9.80665 m s-2, T11 = 216.65 K, p11 = 22632.06 Pa.
    """
    h = np.asarray(flight_level, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        low = _ISA_P0 * np.power(np.maximum(1.0 - _ISA_LAPSE * h / _ISA_T0, 0.0), _ISA_G0 / (_ISA_R * _ISA_LAPSE))
        high = _ISA_P11 * np.exp(-_ISA_G0 * (h - _ISA_H11) / (_ISA_R * _ISA_T11))
        return np.where(h <= _ISA_H11, low, high)
