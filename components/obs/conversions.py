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


def normalise_longitude(lon: np.ndarray) -> np.ndarray:
    """Normalise longitudes to [-180, 180).

    Parameters
    ----------
    lon : numpy.ndarray
        Longitudes, degree east, any shape and range.

    Returns
    -------
    numpy.ndarray
        Same shape, float64, in [-180, 180) and rounded to 1e-9 degree; 180
        maps to -180, NaN stays NaN, no negative zero.
    """
    out = np.round(np.mod(lon + 180.0, 360.0) - 180.0, _DEGREE_DECIMALS) + 0.0  # no -0.0
    with np.errstate(invalid="ignore"):
        return np.where(out >= 180.0, out - 360.0, out)
