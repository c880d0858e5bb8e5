"""Residual convolutional processor stepping the latent state forward by a fixed Δt."""

from __future__ import annotations

import torch
from torch import nn

from obscast.processor.layers import SphericalConv2d, group_norm


class ResidualBlock(nn.Module):
    """Pre-norm residual block ``x + conv(gelu(conv(gelu(norm(x)))))`` with spherical padding.

    Parameters
    ----------
    channels : int
        Channel count (in = out).
    kernel_size : int
        Odd convolution kernel size.
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            group_norm(channels),
            nn.GELU(),
            SphericalConv2d(channels, channels, kernel_size),
            nn.GELU(),
            SphericalConv2d(channels, channels, kernel_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, lat, lon) -> same shape."""
        return x + self.net(x)


class ConvProcessor(nn.Module):
    """Residual conv network on the latent grid: ``latent(t + Δt) = latent(t) + f(latent(t))``.

    There is no absolute position embedding and all convolutions use
    :class:`obscast.processor.layers.SphericalPad2d`, so the network commutes with rotations in longitude
    by whole cells (rolling the input rolls the output). The output projection starts at zero,
    so an untrained step is the identity (persistence in latent space).

    Parameters
    ----------
    channels : int
        Latent channels (input and output).
    hidden : int
        Channels inside the residual blocks.
    n_blocks : int
        Number of residual blocks.
    kernel_size : int
        Odd convolution kernel size.
    """

    def __init__(self, channels: int, hidden: int = 64, n_blocks: int = 4, kernel_size: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.inp = nn.Conv2d(channels, hidden, 1)
        self.blocks = nn.Sequential(*[ResidualBlock(hidden, kernel_size) for _ in range(n_blocks)])
        self.out = nn.Sequential(group_norm(hidden), nn.GELU(), nn.Conv2d(hidden, channels, 1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def step(self, latent: torch.Tensor) -> torch.Tensor:
        """Advance by one Δt: (batch, channel, lat, lon) -> (batch, channel, lat, lon)."""
        return latent + self.out(self.blocks(self.inp(latent)))

    def forward(self, latent: torch.Tensor, n_steps: int) -> torch.Tensor:
        """Autoregressive rollout.

        Parameters
        ----------
        latent : torch.Tensor
            Initial state (batch, channel, lat, lon).
        n_steps : int
            Number of steps, >= 1.

        Returns
        -------
        torch.Tensor
            (batch, n_steps, channel, lat, lon); index ``k`` is the state at ``(k + 1) Δt``.

        Raises
        ------
        ValueError
            If ``n_steps`` < 1.
        """
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        states = []
        for _ in range(n_steps):
            latent = self.step(latent)
            states.append(latent)
        return torch.stack(states, dim=1)
