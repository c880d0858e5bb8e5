"""Building blocks on the lat-lon grid: spherical padding, spherical convolution, pointwise MLP."""

from __future__ import annotations

import torch
from torch import nn


class SphericalPad2d(nn.Module):
    """Pad a (batch, channel, lat, lon) field as a field on the sphere.

    Longitude is periodic, so columns are padded circularly. Across a pole, the ghost row that
    lies ``k`` rows beyond the pole (latitude ``90 + (k - 1/2) d`` for a cell-centred grid of
    spacing ``d``) is the same physical point as the ``k``-th row counted from the pole
    (latitude ``90 - (k - 1/2) d``) on the opposite meridian (longitude + 180 degrees). Hence
    the ghost rows are the rows next to the pole in mirrored order, rolled by ``n_lon / 2``
    columns. Zero or reflect padding would instead invent a wall at the pole and break the
    symmetry of the sphere. Scalars continue exactly; the components of a vector (e.g. wind)
    change sign across the pole, which learned latent features need not care about.

    Rows must be ascending or descending in latitude on a cell-centred grid (no point on the
    pole), as in :class:`obscast.processor.grid.LatLonGrid`.

    Parameters
    ----------
    padding : int
        Number of ghost cells on each of the four sides, >= 0.

    Raises
    ------
    ValueError
        In ``forward``, if ``n_lon`` is odd or ``padding`` exceeds ``n_lat`` or ``n_lon``.
    """

    def __init__(self, padding: int) -> None:
        super().__init__()
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding = int(padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad ``x`` of shape (batch, channel, lat, lon) to (batch, channel, lat + 2p, lon + 2p)."""
        p = self.padding
        if p == 0:
            return x
        n_lat, n_lon = x.shape[-2:]
        if n_lon % 2:
            raise ValueError(f"spherical padding needs an even number of longitudes, got {n_lon}")
        if p > n_lat or p > n_lon:
            raise ValueError(f"padding {p} exceeds the grid {n_lat}x{n_lon}")
        half = n_lon // 2
        first = torch.roll(x[..., :p, :].flip(-2), half, dims=-1)  # beyond the pole of row 0
        last = torch.roll(x[..., -p:, :].flip(-2), half, dims=-1)  # beyond the pole of the last row
        x = torch.cat([first, x, last], dim=-2)  # poles first, on the unpadded width
        return torch.cat([x[..., -p:], x, x[..., :p]], dim=-1)  # then periodic longitude


class SphericalConv2d(nn.Module):
    """Convolution with :class:`SphericalPad2d` "same" padding: (B, C_in, H, W) -> (B, C_out, H, W).

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts.
    kernel_size : int
        Odd kernel size.
    bias : bool
        Whether the convolution has a bias.

    Raises
    ------
    ValueError
        If ``kernel_size`` is even.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.pad = SphericalPad2d(kernel_size // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to ``x`` (batch, in_channels, lat, lon); returns (batch, out_channels, lat, lon)."""
        return self.conv(self.pad(x))


def pointwise_mlp(in_channels: int, hidden: int, out_channels: int, n_layers: int = 2, bias: bool = True) -> nn.Sequential:
    """MLP applied independently at each grid cell (1x1 convolutions with GELU in between).

    Parameters
    ----------
    in_channels, hidden, out_channels : int
        Channel counts.
    n_layers : int
        Number of 1x1 convolutions, >= 1 (1 gives a linear map).
    bias : bool
        With ``bias=False`` a zero input gives exactly a zero output (GELU(0) = 0), which the
        encoders use so that cells without data contribute nothing.

    Returns
    -------
    torch.nn.Sequential
        Maps (batch, in_channels, lat, lon) to (batch, out_channels, lat, lon).

    Raises
    ------
    ValueError
        If ``n_layers`` < 1.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    sizes = [in_channels] + [hidden] * (n_layers - 1) + [out_channels]
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers.append(nn.Conv2d(sizes[i], sizes[i + 1], 1, bias=bias))
        if i < n_layers - 1:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divide ``channels`` (statistics over the whole field,
    so it commutes with longitude rotation)."""
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def masked_fill_nan(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``x`` into (values with NaN replaced by 0, float validity mask 1/0), same shapes."""
    valid = ~torch.isnan(x)
    return torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device)), valid.to(x.dtype)


__all__ = ["SphericalPad2d", "SphericalConv2d", "pointwise_mlp", "group_norm", "masked_fill_nan"]
