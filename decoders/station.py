"""Station decoder: latent grid to arbitrary points (Aardvark-style SetConv + MLP)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from processor.grid import LatLonGrid
from processor.interp import KernelLengthscale, gaussian_gather


class StationDecoder(nn.Module):
    """Gaussian-kernel average of the latent around each point (weights normalised over cells),
    then an MLP to the station variables (Allen et al. 2025, Nature 641:1172, local decoders).

    Parameters
    ----------
    latent_channels : int
        Channels of the latent state.
    variables : list of str
        Output variables, in order.
    grid : LatLonGrid
        The latent grid.
    lengthscale_km : float, optional
        Initial kernel lengthscale in km (learnt). Default: half the grid's meridional spacing.
    hidden : int
        Hidden width of the MLP.
    """

    def __init__(
        self,
        latent_channels: int,
        variables: Sequence[str],
        grid: LatLonGrid,
        lengthscale_km: float | None = None,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        self.variables = list(variables)
        self.grid = grid
        self.lengthscale = KernelLengthscale(lengthscale_km if lengthscale_km is not None else grid.spacing_km / 2)
        self.register_buffer("grid_xyz", grid.cell_vectors(), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(latent_channels, hidden), nn.GELU(), nn.Linear(hidden, len(self.variables)))

    def forward(self, latent: torch.Tensor, latitude: torch.Tensor, longitude: torch.Tensor) -> torch.Tensor:
        """Decode at points.

        Parameters
        ----------
        latent : torch.Tensor
            (batch, latent_channels, lat, lon).
        latitude, longitude : torch.Tensor
            (batch, points) degrees, finite; ``points`` may be 0.

        Returns
        -------
        torch.Tensor
            (batch, points, variables).
        """
        lat = latitude.to(device=latent.device, dtype=latent.dtype)
        lon = longitude.to(device=latent.device, dtype=latent.dtype)
        feats = gaussian_gather(lat, lon, latent.flatten(2).transpose(1, 2), self.grid_xyz, self.lengthscale())
        return self.mlp(feats)
