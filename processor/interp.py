"""Interpolation between grids and points, shared by encoders and decoders.

* :class:`BilinearRegridder`: NaN-aware bilinear interpolation between regular lat-lon grids,
  periodic in longitude, nearest row poleward of the outermost source latitudes (gridded
  encoder, gridded decoder, residual path). Outside the network the same interpolation, with
  the same dateline and pole treatment, is :mod:`obscast.components.data.interp` (xarray).
* :func:`gaussian_scatter` / :func:`gaussian_gather`: Gaussian-kernel SetConv between scattered
  points and grid cells using chord (scatter) and great-circle (gather) distance (Gordon et al. 2020, "Convolutional Conditional
  Neural Processes", ICLR; Allen et al. 2025, "End-to-end data-driven weather prediction",
  Nature 641:1172, the Aardvark encoder and decoder).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from obscast.processor.grid import EARTH_RADIUS_KM, unit_vectors
from obscast.processor.layers import masked_fill_nan

#: Largest number of (point, cell) pairs evaluated at once by the kernel functions; about 16 MB
#: per float32 temporary.
MAX_KERNEL_ELEMENTS = 1 << 22


def _check_ascending(name: str, x: np.ndarray) -> None:
    if x.ndim != 1 or x.size < 1:
        raise ValueError(f"{name} must be a non-empty 1-D coordinate, got shape {x.shape}")
    if x.size > 1 and not np.all(np.diff(x) > 0):
        raise ValueError(f"{name} must be strictly ascending")


def _lat_weights(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour rows and weight of the upper one; clamped (nearest) beyond the source range."""
    if src.size == 1:
        zero = np.zeros(dst.size, dtype=np.int64)
        return zero, zero, np.zeros(dst.size)
    j = np.clip(np.searchsorted(src, dst, side="right") - 1, 0, src.size - 2)
    t = np.clip((dst - src[j]) / (src[j + 1] - src[j]), 0.0, 1.0)
    return j, j + 1, t


def _lon_weights(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour columns and weight of the eastern one, periodic with period 360 degrees."""
    n = src.size
    ext = np.append(src, src[0] + 360.0)
    x = src[0] + np.mod(dst - src[0], 360.0)
    j = np.clip(np.searchsorted(ext, x, side="right") - 1, 0, n - 1)
    t = np.clip((x - ext[j]) / (ext[j + 1] - ext[j]), 0.0, 1.0)
    return j, (j + 1) % n, t


def bilinear_weights(
    src_lat: Sequence[float], src_lon: Sequence[float], dst_lat: Sequence[float], dst_lon: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Sparse bilinear interpolation weights from one regular lat-lon grid to another.

    Parameters
    ----------
    src_lat, src_lon : sequence of float
        Source coordinates in degrees: latitudes strictly ascending or strictly descending (ERA5
        order), longitudes strictly ascending and spanning less than 360 degrees (e.g.
        ``[0, 360)`` or ``[-180, 180)``). Destinations beyond the source latitudes take the
        nearest row.
    dst_lat, dst_lon : sequence of float
        Destination coordinates in degrees (any longitude convention).

    Returns
    -------
    index : numpy.ndarray
        Shape (n_dst_lat * n_dst_lon, 4), int64 indices into the row-major flattened source.
    weight : numpy.ndarray
        Shape (n_dst_lat * n_dst_lon, 4), float64 weights summing to 1 per row.

    Raises
    ------
    ValueError
        If a source coordinate is not strictly monotonic as above or longitudes span 360 degrees
        or more.
    """
    src_lat, src_lon = np.asarray(src_lat, float), np.asarray(src_lon, float)
    dst_lat, dst_lon = np.asarray(dst_lat, float), np.asarray(dst_lon, float)
    descending = src_lat.size > 1 and src_lat[0] > src_lat[-1]
    _check_ascending("source latitude (either order)", src_lat[::-1] if descending else src_lat)
    _check_ascending("source longitude", src_lon)
    if src_lon[-1] - src_lon[0] >= 360.0:
        raise ValueError("source longitudes must span less than 360 degrees (no duplicated meridian)")
    i0, i1, ti = _lat_weights(src_lat[::-1] if descending else src_lat, dst_lat)
    if descending:  # rows counted from the other end
        i0, i1 = src_lat.size - 1 - i0, src_lat.size - 1 - i1
    j0, j1, tj = _lon_weights(src_lon, dst_lon)
    n = src_lon.size
    rows = [(i0, 1 - ti), (i1, ti)]
    cols = [(j0, 1 - tj), (j1, tj)]
    index = np.stack([i[:, None] * n + j[None, :] for i, _ in rows for j, _ in cols], axis=-1)
    weight = np.stack([wi[:, None] * wj[None, :] for _, wi in rows for _, wj in cols], axis=-1)
    return index.reshape(-1, 4), weight.reshape(-1, 4)


class BilinearRegridder(nn.Module):
    """NaN-aware bilinear interpolation between regular lat-lon grids, periodic in longitude.

    Missing (NaN) source values are left out and the remaining weights renormalised, so a
    destination cell is NaN-free whenever any of its four neighbours is valid.

    Parameters
    ----------
    src_lat, src_lon, dst_lat, dst_lon : sequence of float
        Coordinates in degrees, see :func:`bilinear_weights`.
    """

    def __init__(
        self, src_lat: Sequence[float], src_lon: Sequence[float], dst_lat: Sequence[float], dst_lon: Sequence[float]
    ) -> None:
        super().__init__()
        index, weight = bilinear_weights(src_lat, src_lon, dst_lat, dst_lon)
        self.src_shape = (len(src_lat), len(src_lon))
        self.dst_shape = (len(dst_lat), len(dst_lon))
        self.register_buffer("index", torch.as_tensor(index), persistent=False)
        self.register_buffer("weight", torch.as_tensor(weight, dtype=torch.float32), persistent=False)

    def _apply_weights(self, x: torch.Tensor) -> torch.Tensor:
        out = (x[..., self.index] * self.weight.to(x.dtype)).sum(-1)
        return out.reshape(*x.shape[:-1], *self.dst_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Interpolate.

        Parameters
        ----------
        x : torch.Tensor
            Shape (batch, channel, src_lat, src_lon), NaN where missing.

        Returns
        -------
        values : torch.Tensor
            Shape (batch, channel, dst_lat, dst_lon); 0 where no neighbour is valid.
        valid : torch.Tensor
            Same shape, the summed weight of valid neighbours in [0, 1] (1 where all valid).

        Raises
        ------
        ValueError
            If the trailing dimensions of ``x`` are not the source grid shape.
        """
        if tuple(x.shape[-2:]) != self.src_shape:
            raise ValueError(f"expected a field on a {self.src_shape} grid, got shape {tuple(x.shape)}")
        values, valid = masked_fill_nan(x.flatten(-2))
        num = self._apply_weights(values)
        den = self._apply_weights(valid)
        return num / den.clamp_min(1e-12), den


def _chunked(fn: Callable[..., torch.Tensor], n: int, rows: int, args: Sequence[torch.Tensor], params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Apply ``fn(*chunk_of_args, *params)`` to chunks of ``rows`` along dim 1 of each of ``args``.

    Under autograd with several chunks each chunk is checkpointed, so the (point, cell) kernel is
    recomputed in backward instead of kept for every chunk.
    """
    use_ckpt = torch.is_grad_enabled() and n > rows
    out = []
    for start in range(0, n, rows):
        chunk = [a[:, start : start + rows] for a in args]
        out.append(checkpoint(fn, *chunk, *params, use_reentrant=False) if use_ckpt else fn(*chunk, *params))
    return out


def _sq_scaled_distance(lat: torch.Tensor, lon: torch.Tensor, grid_xyz: torch.Tensor, lengthscale_km: torch.Tensor) -> torch.Tensor:
    """``(d / l)^2`` with shape (batch, points, cells) for points (batch, points) in degrees and
    cell unit vectors ``grid_xyz`` (3, cells); ``d = R acos(x . y)`` is the great-circle
    distance (float32 rounding gives about 2 km error near 0, negligible at kernel scales)."""
    with torch.autocast(device_type=lat.device.type, enabled=False):  # bf16 would cost ~500 km
        xyz = unit_vectors(lat.float(), lon.float())
        cos_angle = torch.matmul(xyz, grid_xyz.float()).clamp(-1.0, 1.0)
        return (torch.acos(cos_angle) * (EARTH_RADIUS_KM / lengthscale_km.float())) ** 2


def gaussian_scatter(
    lat: torch.Tensor,
    lon: torch.Tensor,
    features: torch.Tensor,
    grid_xyz: torch.Tensor,
    lengthscale_km: torch.Tensor,
    max_elements: int = MAX_KERNEL_ELEMENTS,
) -> torch.Tensor:
    """Kernel sums from points onto cells: ``out[b, f, k] = sum_n exp(-c(n, k)^2 / (2 l^2)) features[b, n, f]``.

    ``c`` is the chord distance between point and cell centre, ``R |x - y|`` for unit vectors
    ``x, y`` (within 1 % of the great-circle distance where the kernel is not negligible, and a
    positive-definite kernel on the sphere as the restriction of a Gaussian in R^3).

    Parameters
    ----------
    lat, lon : torch.Tensor
        Point coordinates (batch, points) in degrees, finite (set the features of padding to 0).
    features : torch.Tensor
        (batch, points, features), finite.
    grid_xyz : torch.Tensor
        Cell-centre unit vectors (3, cells), see :func:`obscast.processor.grid.unit_vectors`.
    lengthscale_km : torch.Tensor
        Scalar kernel lengthscale ``l`` in km (may require grad).
    max_elements : int
        Chunk size in (point, cell) pairs per batch.

    Returns
    -------
    torch.Tensor
        (batch, features, cells); zeros when there are no points.
    """
    b, n, f = features.shape
    k = grid_xyz.shape[1]
    out = features.new_zeros(b, f, k)
    if n == 0:
        return out

    def fn(la: torch.Tensor, lo: torch.Tensor, fe: torch.Tensor, ls: torch.Tensor) -> torch.Tensor:
        # Chord distance c = |x - y| = sqrt(2 (1 - x . y)) on the unit sphere, so the exponent
        # -c^2 R^2 / (2 l^2) = a (x . y - 1) with a = (R / l)^2 is one matrix product: no arccos
        # (2.5x faster than the great-circle form). The chord is within 1 % of the great-circle
        # distance out to 5 lengthscales of 625 km, where the weight is below 4e-6. Below an
        # exponent of -80 (w < 2e-35) the weight is exactly 0: cells no observation reaches stay
        # exactly zero, and there are no float32 denormals, which are very slow on CPUs.
        with torch.autocast(device_type=la.device.type, enabled=False):  # bf16 would cost ~500 km
            a = (EARTH_RADIUS_KM / ls.float()) ** 2
            arg = torch.matmul(unit_vectors(la.float(), lo.float()) * a, grid_xyz.float()).sub_(a)
            w = torch.threshold(arg, -80.0, float("-inf")).exp_()
            return torch.einsum("bnk,bnf->bfk", w, fe.float())

    rows = max(1, max_elements // max(1, b * k))
    for part in _chunked(fn, n, rows, [lat, lon, features], [lengthscale_km]):
        out = out + part
    return out


def gaussian_gather(
    lat: torch.Tensor,
    lon: torch.Tensor,
    grid_values: torch.Tensor,
    grid_xyz: torch.Tensor,
    lengthscale_km: torch.Tensor,
    max_elements: int = MAX_KERNEL_ELEMENTS,
) -> torch.Tensor:
    """Normalised kernel average from cells to points (weights ``softmax_k(-d^2 / (2 l^2))``).

    Parameters
    ----------
    grid_values : torch.Tensor
        (batch, cells, features).
    lat, lon, grid_xyz, lengthscale_km, max_elements
        As in :func:`gaussian_scatter` (points (batch, points) in degrees, cell unit vectors
        (3, cells), scalar lengthscale in km, chunk size in (point, cell) pairs per batch).

    Returns
    -------
    torch.Tensor
        (batch, points, features); the softmax keeps weights finite for any lengthscale.
    """
    b, k, f = grid_values.shape
    p = lat.shape[1]
    if p == 0:
        return grid_values.new_zeros(b, 0, f)

    def fn(la: torch.Tensor, lo: torch.Tensor, ls: torch.Tensor, gv: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(-0.5 * _sq_scaled_distance(la, lo, grid_xyz, ls), dim=-1)
        return torch.bmm(w, gv)

    rows = max(1, max_elements // max(1, b * k))
    return torch.cat(_chunked(fn, p, rows, [lat, lon], [lengthscale_km, grid_values]), dim=1)


class KernelLengthscale(nn.Module):
    """Learnable positive kernel lengthscale, parametrised by its logarithm.

    Parameters
    ----------
    init_km : float
        Initial lengthscale in km, > 0.

    Raises
    ------
    ValueError
        If ``init_km`` is not positive.
    """

    def __init__(self, init_km: float) -> None:
        super().__init__()
        if not init_km > 0:
            raise ValueError(f"lengthscale must be positive, got {init_km} km")
        self.log_km = nn.Parameter(torch.tensor(float(np.log(init_km))))

    def forward(self) -> torch.Tensor:
        """The lengthscale in km, a scalar tensor."""
        return self.log_km.exp()
