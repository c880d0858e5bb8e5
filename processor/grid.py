"""The latent lat-lon grid and great-circle geometry shared by encoders, processor and decoders."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

#: Mean Earth radius in km (IUGG mean radius R1 = 6371.0088 km, Moritz 2000, Geodetic Reference
#: System 1980), rounded as usual to 6371 km.
EARTH_RADIUS_KM = 6371.0


class LatLonGrid:
    """Regular cell-centred latitude-longitude grid.

    Cell centres are at ``latitude[i] = -90 + (i + 1/2) * 180 / n_lat`` (ascending, no point on
    the poles) and ``longitude[j] = j * 360 / n_lon`` (degrees east in ``[0, 360)``).

    Parameters
    ----------
    n_lat, n_lon : int
        Number of rows (latitudes) and columns (longitudes), both >= 1.

    Attributes
    ----------
    latitude : numpy.ndarray
        Shape (n_lat,), degrees north, ascending.
    longitude : numpy.ndarray
        Shape (n_lon,), degrees east, ascending from 0.

    Raises
    ------
    ValueError
        If ``n_lat`` or ``n_lon`` is smaller than 1.
    """

    def __init__(self, n_lat: int, n_lon: int) -> None:
        if int(n_lat) < 1 or int(n_lon) < 1:
            raise ValueError(f"grid needs n_lat >= 1 and n_lon >= 1, got {n_lat}x{n_lon}")
        self.n_lat = int(n_lat)
        self.n_lon = int(n_lon)
        d = 180.0 / self.n_lat
        self.latitude = -90.0 + d / 2 + d * np.arange(self.n_lat, dtype=np.float64)
        self.longitude = (360.0 / self.n_lon) * np.arange(self.n_lon, dtype=np.float64)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_lat, n_lon)``."""
        return self.n_lat, self.n_lon

    @property
    def spacing_km(self) -> float:
        """Meridional cell size in km (``EARTH_RADIUS_KM * pi / n_lat``)."""
        return EARTH_RADIUS_KM * math.pi / self.n_lat

    def as_tensor(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        """Cell-centre coordinates as a tensor.

        Returns
        -------
        torch.Tensor
            Shape (2, n_lat, n_lon): ``[0]`` latitude, ``[1]`` longitude, both in degrees.
        """
        lat = torch.as_tensor(self.latitude, dtype=dtype, device=device)
        lon = torch.as_tensor(self.longitude, dtype=dtype, device=device)
        return torch.stack(torch.meshgrid(lat, lon, indexing="ij"))

    def cell_vectors(self) -> torch.Tensor:
        """Unit vectors of the cell centres, row-major: float32 tensor (3, n_lat * n_lon)."""
        lat, lon = self.as_tensor(torch.float64).reshape(2, -1)
        return unit_vectors(lat, lon).T.float().contiguous()

    def to_dict(self) -> dict[str, int]:
        """Plain description ``{"n_lat": ..., "n_lon": ...}`` (for metadata.json)."""
        return {"n_lat": self.n_lat, "n_lon": self.n_lon}

    def __repr__(self) -> str:
        return f"LatLonGrid(n_lat={self.n_lat}, n_lon={self.n_lon})"


def grid_coordinates(lat: int | Sequence[float], lon: int | Sequence[float]) -> tuple[list[float], list[float]]:
    """Coordinates of a regular source grid given as counts or explicit values.

    Parameters
    ----------
    lat : int or sequence of float
        An int ``n`` means ``n`` latitudes from -90 to 90 inclusive (WeatherBench/ERA5 style,
        e.g. 61 for 3 degrees); otherwise the latitudes in degrees, strictly ascending or
        strictly descending.
    lon : int or sequence of float
        An int ``n`` means ``j * 360 / n`` for ``j < n``; otherwise the longitudes in degrees,
        ascending in ``[0, 360)``.

    Returns
    -------
    tuple of list of float
        Latitudes and longitudes in degrees.

    Raises
    ------
    ValueError
        If an int count is below 2 (latitude) or 1 (longitude).
    """
    if isinstance(lat, (int, np.integer)):
        if lat < 2:
            raise ValueError(f"need at least 2 latitudes, got {lat}")
        lat = np.linspace(-90.0, 90.0, int(lat))
    if isinstance(lon, (int, np.integer)):
        if lon < 1:
            raise ValueError(f"need at least 1 longitude, got {lon}")
        lon = np.arange(int(lon)) * 360.0 / int(lon)
    return [float(x) for x in lat], [float(x) for x in lon]


def great_circle_distance_km(lat1: torch.Tensor, lon1: torch.Tensor, lat2: torch.Tensor, lon2: torch.Tensor) -> torch.Tensor:
    """Great-circle distance by the haversine formula (Sinnott 1984, Sky & Telescope 68:159).

    Parameters
    ----------
    lat1, lon1, lat2, lon2 : torch.Tensor
        Degrees; any shapes that broadcast together.

    Returns
    -------
    torch.Tensor
        Distance in km on a sphere of radius :data:`EARTH_RADIUS_KM`, the broadcast shape.
    """
    p1, p2 = torch.deg2rad(lat1), torch.deg2rad(lat2)
    dlat = p2 - p1
    dlon = torch.deg2rad(lon2 - lon1)
    a = torch.sin(dlat / 2) ** 2 + torch.cos(p1) * torch.cos(p2) * torch.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * torch.asin(torch.sqrt(a.clamp(0.0, 1.0)))


def unit_vectors(lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
    """Earth-centred unit vectors of points given in degrees.

    Parameters
    ----------
    lat, lon : torch.Tensor
        Degrees, same shape ``S``.

    Returns
    -------
    torch.Tensor
        Shape ``S + (3,)``: (x, y, z) with z towards the north pole.
    """
    phi, lam = torch.deg2rad(lat), torch.deg2rad(lon)
    return torch.stack([torch.cos(phi) * torch.cos(lam), torch.cos(phi) * torch.sin(lam), torch.sin(phi)], dim=-1)


def latitude_weights(latitude: Sequence[float] | np.ndarray) -> np.ndarray:
    """Area weights of the rows of a latitude-longitude grid, normalised to mean 1.

    The one latitude weight of obscast (loss, verification, baselines). Each row stands for the
    band between the midpoints to its neighbours; the outermost bands reach the poles (±90°),
    so a row *on* a pole gets the area of its polar cap rather than zero, and a cell-centred
    grid gets exactly its cells' areas. The weight is the band's area, ``sin φ_north - sin φ_south``
    (area on the sphere between two latitudes), as in WeatherBench 2 (Rasp et al. 2024, JAMES 16,
    e2023MS004019) and GraphCast's ``normalized_latitude_weights``.

    Parameters
    ----------
    latitude : array-like
        Shape (n_lat,), degrees north, strictly monotonic (ascending or descending), within
        [-90, 90].

    Returns
    -------
    numpy.ndarray
        Shape (n_lat,), float64, mean 1, in the order of ``latitude``.

    Raises
    ------
    ValueError
        If ``latitude`` is empty, not strictly monotonic or outside [-90, 90].
    """
    lat = np.asarray(latitude, dtype=float)
    if lat.ndim != 1 or lat.size == 0:
        raise ValueError(f"latitude must be a non-empty 1-D array, got shape {lat.shape}")
    if np.any(np.abs(lat) > 90.0):
        raise ValueError("latitude must lie within [-90, 90] degrees")
    if lat.size == 1:
        return np.ones(1)
    d = np.diff(lat)
    if not (np.all(d > 0) or np.all(d < 0)):
        raise ValueError("latitude must be strictly monotonic")
    asc = lat if d[0] > 0 else lat[::-1]
    edges = np.concatenate([[-90.0], (asc[1:] + asc[:-1]) / 2.0, [90.0]])
    area = np.diff(np.sin(np.deg2rad(edges)))
    w = area / area.mean()
    return w if d[0] > 0 else w[::-1]
