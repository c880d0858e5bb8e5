"""Gridded encoder: a field on a regular lat-lon grid onto the latent grid."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from obscast.processor.grid import LatLonGrid, grid_coordinates
from obscast.processor.interp import BilinearRegridder
from obscast.processor.layers import pointwise_mlp


class GriddedEncoder(nn.Module):
    """NaN-aware bilinear regridding (periodic in longitude) followed by a pointwise MLP.

    Parameters
    ----------
    variables : list of str
        Channel names of the input field, in order.
    in_lat, in_lon : int or sequence of float
        Source grid, see :func:`obscast.processor.grid.grid_coordinates`.
    grid : LatLonGrid
        The latent grid.
    out_channels : int
        Latent channels produced.
    hidden : int
        Hidden width of the MLP.
    n_layers : int
        Number of 1x1 convolutions (bias-free, so missing data gives a zero latent).

    Raises
    ------
    ValueError
        If the source coordinates are not monotonic (see :func:`obscast.processor.interp.bilinear_weights`).
    """

    def __init__(
        self,
        variables: Sequence[str],
        in_lat: int | Sequence[float],
        in_lon: int | Sequence[float],
        grid: LatLonGrid,
        out_channels: int,
        hidden: int = 64,
        n_layers: int = 2,
    ) -> None:
        super().__init__()
        self.variables = list(variables)
        self.in_lat, self.in_lon = grid_coordinates(in_lat, in_lon)
        self.grid = grid
        self.out_channels = out_channels
        self.regrid = BilinearRegridder(self.in_lat, self.in_lon, grid.latitude, grid.longitude)
        self.mlp = pointwise_mlp(2 * len(self.variables), hidden, out_channels, n_layers, bias=False)

    def forward(self, x: torch.Tensor | dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a gridded field.

        Parameters
        ----------
        x : torch.Tensor or dict
            (batch, variables, in_lat, in_lon), normalised, NaN where missing; or a dict holding
            it under ``"values"``.

        Returns
        -------
        latent : torch.Tensor
            (batch, out_channels, lat, lon).
        density : torch.Tensor
            (batch, 1, lat, lon): mean over variables of the valid interpolation weight, 1 where
            the input is valid, 0 where it is all missing.

        Raises
        ------
        ValueError
            If the input shape does not match the variables and source grid.
        """
        if isinstance(x, dict):
            x = x["values"]
        if x.ndim != 4 or x.shape[1] != len(self.variables):
            raise ValueError(f"expected (batch, {len(self.variables)}, lat, lon), got {tuple(x.shape)}")
        values, valid = self.regrid(x.to(device=self.regrid.weight.device, dtype=torch.float32))
        latent = self.mlp(torch.cat([values, valid], dim=1))
        return latent, valid.mean(dim=1, keepdim=True)
