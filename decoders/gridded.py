"""Gridded decoder: latent grid to output fields on a regular lat-lon grid."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from obscast.processor.grid import LatLonGrid, grid_coordinates
from obscast.processor.interp import BilinearRegridder
from obscast.processor.layers import SphericalConv2d


class GriddedDecoder(nn.Module):
    """Conv head on the latent grid, then bilinear periodic interpolation to the output grid.

    The last layer starts at zero, so an untrained decoder predicts 0 (the normalised mean, i.e.
    climatology), or persistence when the model adds a residual input.

    Parameters
    ----------
    latent_channels : int
        Channels of the latent state.
    variables : list of str
        Output variables, in channel order.
    grid : LatLonGrid
        The latent grid.
    out_lat, out_lon : int or sequence of float
        Output grid, see :func:`obscast.processor.grid.grid_coordinates`.
    hidden : int
        Hidden channels of the head.
    """

    def __init__(
        self,
        latent_channels: int,
        variables: Sequence[str],
        grid: LatLonGrid,
        out_lat: int | Sequence[float],
        out_lon: int | Sequence[float],
        hidden: int = 64,
    ) -> None:
        super().__init__()
        self.variables = list(variables)
        self.grid = grid
        self.out_lat, self.out_lon = grid_coordinates(out_lat, out_lon)
        self.head = nn.Sequential(SphericalConv2d(latent_channels, hidden, 3), nn.GELU(), nn.Conv2d(hidden, len(self.variables), 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.regrid = BilinearRegridder(grid.latitude, grid.longitude, self.out_lat, self.out_lon)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Decode (batch, latent_channels, lat, lon) to (batch, variables, out_lat, out_lon)."""
        return self.regrid(self.head(latent))[0]
