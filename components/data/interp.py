"""Bilinear interpolation from a regular latitude-longitude grid to points (outside the model).

The one bilinear interpolation of obscast outside the network: the station truth of the
datasets, the observation operator of the OSSE simulator, the gridded forecast at the stations
in verification and the analysis benchmark all call this module. (Inside the network the same
interpolation is written in torch, :class:`obscast.processor.interp.BilinearRegridder`, with the
same treatment of the dateline and the poles.)

Treatment of the edges, the same everywhere:

* **Longitude is periodic.** The grid is padded with one column, a copy of its first column at
  ``longitude[0] + 360``, and point longitudes (any convention) are mapped into
  ``[longitude[0], longitude[0] + 360)``; a point between the last column and the dateline thus
  interpolates between the last and the first column.
* **Poleward of the outermost latitudes: nearest row.** Point latitudes are clamped to the
  grid's latitude range, so a point between the outermost row and the pole takes the values
  of that row interpolated in longitude only (Gaussian and cell-centred grids have no row on
  the pole; on a grid with rows at ±90 nothing is clamped).

Two entry points giving the same numbers (up to float rounding):

* :func:`interp_to_points`: ``xarray.DataArray.interp`` (linear) on the padded grid, for
  DataArrays;
* :class:`PointInterpolator`: the same interpolation with its weights precomputed once per set
  of points, as four (index, weight) pairs per point, to apply to many fields, e.g. every time
  step of a nature run (a gather and three multiply-adds per value). This is the fast path: its
  set-up costs about a millisecond where ``DataArray.interp`` costs ~10 ms per call, which
  matters where the points change every time step (the OSSE simulator).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse
import xarray as xr

#: From this many fields on, :class:`PointInterpolator` applies its weights as one sparse product.
_SPARSE_FIELDS = 16

def _grid_axes(latitude: Sequence[float] | np.ndarray, longitude: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lat = np.asarray(latitude, dtype=np.float64)
    lon = np.asarray(longitude, dtype=np.float64)
    if lat.ndim != 1 or lat.size < 2:
        raise ValueError(f"the grid needs at least 2 latitudes in a 1-D coordinate, got shape {lat.shape}")
    d = np.diff(lat)
    if not (np.all(d > 0) or np.all(d < 0)):
        raise ValueError("grid latitudes must be strictly monotonic")
    if lon.ndim != 1 or lon.size < 1:
        raise ValueError(f"the grid needs a non-empty 1-D longitude coordinate, got shape {lon.shape}")
    if lon.size > 1 and not np.all(np.diff(lon) > 0):
        raise ValueError("grid longitudes must be strictly ascending")
    if lon[-1] - lon[0] >= 360.0:
        raise ValueError("grid longitudes must span less than 360 degrees (no duplicated meridian)")
    return lat, lon


def point_coordinates(
    grid_latitude: Sequence[float] | np.ndarray,
    grid_longitude: Sequence[float] | np.ndarray,
    latitude: Sequence[float] | np.ndarray,
    longitude: Sequence[float] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Point coordinates as the interpolation uses them: latitude clamped, longitude wrapped.

    Parameters
    ----------
    grid_latitude, grid_longitude : array-like
        Grid coordinates in degrees (see :class:`PointInterpolator`).
    latitude, longitude : array-like
        Point coordinates in degrees, same shape ``(P,)``; any longitude convention.

    Returns
    -------
    tuple of numpy.ndarray
        ``(P,)`` latitudes clamped to the grid's latitude range and ``(P,)`` longitudes in
        ``[grid_longitude[0], grid_longitude[0] + 360]``; NaN stays NaN (the point's values
        come out NaN).

    Raises
    ------
    ValueError
        If the grid coordinates are invalid or the point arrays differ in shape.
    """
    glat, glon = _grid_axes(grid_latitude, grid_longitude)
    lat = np.asarray(latitude, dtype=np.float64)
    lon = np.asarray(longitude, dtype=np.float64)
    if lat.shape != lon.shape or lat.ndim != 1:
        raise ValueError(f"point latitude and longitude must be 1-D of one shape, got {lat.shape} and {lon.shape}")
    lat = np.clip(lat, glat.min(), glat.max())
    lon = glon[0] + np.mod(lon - glon[0], 360.0)
    return lat, lon


def pad_longitude(da: xr.DataArray, dim: str = "longitude") -> xr.DataArray:
    """Append a copy of the first column at ``longitude[0] + 360`` (periodic padding).

    Parameters
    ----------
    da : xarray.DataArray
        Any dims including ``dim``, ascending in ``dim``.
    dim : str
        Name of the longitude dim (degrees).

    Returns
    -------
    xarray.DataArray
        One more element along ``dim``.
    """
    first = da.isel({dim: [0]})
    first = first.assign_coords({dim: first[dim].values + 360.0})
    return xr.concat([da, first], dim=dim)


def interp_to_points(
    da: xr.DataArray,
    latitude: Sequence[float] | np.ndarray,
    longitude: Sequence[float] | np.ndarray,
    point_dim: str = "point",
    lat_dim: str = "latitude",
    lon_dim: str = "longitude",
) -> xr.DataArray:
    """Bilinear interpolation of a gridded DataArray to points, by ``DataArray.interp``.

    Parameters
    ----------
    da : xarray.DataArray
        Dims ``(..., lat_dim, lon_dim)`` in any order, on a regular grid (latitude strictly
        monotonic, longitude strictly ascending spanning less than 360 degrees).
    latitude, longitude : array-like
        ``(P,)`` point coordinates in degrees, any longitude convention.
    point_dim : str
        Name of the new dim along the points.
    lat_dim, lon_dim : str
        Names of the grid's latitude and longitude dims.

    Returns
    -------
    xarray.DataArray
        ``da``'s other dims and ``point_dim`` (last), float; coordinates ``latitude`` and
        ``longitude`` along ``point_dim`` hold the points as given. Linear interpolation
        propagates NaN from any of the four neighbours.

    Raises
    ------
    ValueError
        As :func:`point_coordinates`.
    """
    lat, lon = point_coordinates(da[lat_dim].values, da[lon_dim].values, latitude, longitude)
    where = {lat_dim: xr.DataArray(lat, dims=point_dim), lon_dim: xr.DataArray(lon, dims=point_dim)}
    out = pad_longitude(da, lon_dim).interp(where, method="linear")
    return out.assign_coords({
        lat_dim: (point_dim, np.asarray(latitude, np.float64)),
        lon_dim: (point_dim, np.asarray(longitude, np.float64)),
    })


def _axis_weights(coord: np.ndarray, targets: np.ndarray, periodic: bool) -> tuple[np.ndarray, np.ndarray]:
    """Linear-interpolation nodes and weights along one axis: ``(P, 2)`` node indices and
    ``(P, 2)`` weights (row sums 1). ``targets`` come from :func:`point_coordinates` (inside the
    padded axis); the fractional node position is the linear interpolant of the node index, as
    ``DataArray.interp`` on the padded grid would give it."""
    n = coord.size
    xp = np.append(coord, coord[0] + 360.0) if periodic else coord
    pos = np.arange(xp.size, dtype=np.float64)
    if xp[0] > xp[-1]:  # descending latitudes
        xp, pos = xp[::-1], pos[::-1]
    r = np.interp(targets, xp, pos)  # NaN for a NaN target: its weights are NaN
    i0 = np.clip(np.floor(np.nan_to_num(r)), 0, xp.size - 2).astype(np.int64)
    t = r - i0
    i1 = (i0 + 1) % n if periodic else i0 + 1
    return np.stack([i0, i1], axis=1), np.stack([1.0 - t, t], axis=1)


class PointInterpolator:
    """Bilinear interpolation from one regular lat-lon grid to fixed points, weights precomputed.

    Gives the numbers of :func:`interp_to_points` (up to float rounding; edges as in the module
    docstring) with the weights kept as four neighbours per point.

    Parameters
    ----------
    grid_latitude : array-like
        ``(n_lat,)`` degrees, strictly ascending or strictly descending, at least 2 rows.
    grid_longitude : array-like
        ``(n_lon,)`` degrees, strictly ascending, spanning less than 360 degrees (e.g.
        ``[0, 360)`` or ``[-180, 180)``).
    latitude, longitude : array-like
        ``(P,)`` point coordinates in degrees, any longitude convention.

    Attributes
    ----------
    index : numpy.ndarray
        ``(P, 4)`` int64 indices into the row-major flattened ``(n_lat * n_lon)`` grid.
    weight : numpy.ndarray
        ``(P, 4)`` float64 weights, non-negative, summing to 1 per point.

    Raises
    ------
    ValueError
        As :func:`point_coordinates`.
    """

    def __init__(
        self,
        grid_latitude: Sequence[float] | np.ndarray,
        grid_longitude: Sequence[float] | np.ndarray,
        latitude: Sequence[float] | np.ndarray,
        longitude: Sequence[float] | np.ndarray,
    ) -> None:
        glat, glon = _grid_axes(grid_latitude, grid_longitude)
        lat, lon = point_coordinates(glat, glon, latitude, longitude)
        self.grid_shape = (glat.size, glon.size)
        self.latitude = np.asarray(latitude, np.float64)
        self.longitude = np.asarray(longitude, np.float64)
        i, wi = _axis_weights(glat, lat, periodic=False)
        j, wj = _axis_weights(glon, lon, periodic=True)
        n = glon.size
        self.index = np.stack([i[:, a] * n + j[:, b] for a in (0, 1) for b in (0, 1)], axis=1)
        self.weight = np.stack([wi[:, a] * wj[:, b] for a in (0, 1) for b in (0, 1)], axis=1)

    @property
    def n_points(self) -> int:
        """Number of points ``P``."""
        return len(self.index)

    def __call__(self, values: np.ndarray | xr.DataArray, point_dim: str = "point") -> np.ndarray | xr.DataArray:
        """Interpolate fields to the points.

        Parameters
        ----------
        values : numpy.ndarray or xarray.DataArray
            ``(..., n_lat, n_lon)`` on the grid given at construction (a DataArray with dims
            ``latitude`` and ``longitude`` last).
        point_dim : str
            DataArrays only: name of the points dim of the result.

        Returns
        -------
        numpy.ndarray or xarray.DataArray
            ``(..., P)``; float32 for float32 input (weights rounded to float32), else float64.
            NaN in a neighbour with nonzero weight gives NaN.

        Raises
        ------
        ValueError
            If the trailing dims are not the grid's shape.
        """
        if isinstance(values, xr.DataArray):
            lead = [d for d in values.dims if d not in ("latitude", "longitude")]
            arr = self(values.transpose(*lead, "latitude", "longitude").values)
            coords = {k: v for k, v in values.coords.items() if set(v.dims) <= set(lead)}
            coords |= {"latitude": (point_dim, self.latitude), "longitude": (point_dim, self.longitude)}
            return xr.DataArray(arr, dims=(*lead, point_dim), coords=coords, attrs=values.attrs)
        values = np.asarray(values)
        if tuple(values.shape[-2:]) != self.grid_shape:
            raise ValueError(f"expected fields on the {self.grid_shape} grid, got shape {values.shape}")
        dtype = np.float32 if values.dtype == np.float32 else np.float64
        lead = values.shape[:-2]
        flat = values.reshape(-1, self.grid_shape[0] * self.grid_shape[1]).astype(dtype, copy=False)
        if flat.shape[0] >= _SPARSE_FIELDS:  # many fields: one sparse product, ~5x faster than gathers
            return np.asarray(flat @ self._sparse(dtype)).reshape(*lead, self.n_points)
        w = self.weight.astype(dtype)
        out = flat[:, self.index[:, 0]] * w[:, 0]
        for k in (1, 2, 3):
            out += flat[:, self.index[:, k]] * w[:, k]
        return out.reshape(*lead, self.n_points)

    def _sparse(self, dtype: type) -> scipy.sparse.csr_matrix:
        """The weights as a sparse ``(n_lat * n_lon, P)`` matrix (cached per dtype)."""
        cache = self.__dict__.setdefault("_sparse_cache", {})
        if dtype not in cache:
            n_cells = self.grid_shape[0] * self.grid_shape[1]
            rows = np.repeat(np.arange(self.n_points), 4)
            w = scipy.sparse.csr_matrix((self.weight.ravel().astype(dtype), (rows, self.index.ravel())), shape=(self.n_points, n_cells))
            cache[dtype] = w.T.tocsr()
        return cache[dtype]


__all__ = ["PointInterpolator", "interp_to_points", "pad_longitude", "point_coordinates"]
