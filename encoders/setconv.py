"""SetConv encoder: scattered observations onto the latent grid (Aardvark-style).

Each observation spreads onto every grid cell with a Gaussian weight of its chord distance
(Gordon et al. 2020, "Convolutional Conditional Neural Processes", ICLR; Allen et al. 2025,
"End-to-end data-driven weather prediction", Nature 641:1172). Per variable (and pressure layer)
the encoder forms a density channel ``sum_n w`` and a value channel
``sum_n w v / (sum_n w + eps)``; a pointwise MLP maps them to the latent channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from obscast.processor.grid import LatLonGrid
from obscast.processor.interp import KernelLengthscale, gaussian_scatter
from obscast.processor.layers import masked_fill_nan, pointwise_mlp

# ICAO Standard Atmosphere (ICAO Doc 7488/3, Manual of the ICAO Standard Atmosphere, 1993).
G0 = 9.80665  # standard gravity, m s-2
R_AIR = 287.05287  # specific gas constant of dry air, J kg-1 K-1
T0 = 288.15  # sea-level temperature, K
P0 = 101325.0  # sea-level pressure, Pa
#: Layer bases (geopotential metres) and temperature lapse rates (K m-1) up to 80 km.
ISA_LAYERS = ((0.0, -0.0065), (11000.0, 0.0), (20000.0, 0.001), (32000.0, 0.0028), (47000.0, 0.0), (51000.0, -0.0028), (71000.0, -0.002))


def _isa_bases() -> list[tuple[float, float, float, float]]:
    """(base height, lapse rate, base temperature, base pressure) for each ISA layer."""
    out, t, p = [], T0, P0
    for i, (h, lapse) in enumerate(ISA_LAYERS):
        out.append((h, lapse, t, p))
        if i + 1 < len(ISA_LAYERS):
            dh = ISA_LAYERS[i + 1][0] - h
            t_next = t + lapse * dh
            p = p * np.exp(-G0 * dh / (R_AIR * t)) if lapse == 0 else p * (t / t_next) ** (G0 / (R_AIR * lapse))
            t = t_next
    return out


_ISA = _isa_bases()


def pressure_from_height(height_m: torch.Tensor | np.ndarray | float) -> torch.Tensor:
    """Pressure of the ICAO Standard Atmosphere at a geopotential height (ICAO Doc 7488/3).

    ``p = p_b (T_b / (T_b + L_b (h - h_b)))^(g0 / (R L_b))`` in layers with lapse rate
    ``L_b != 0`` and ``p = p_b exp(-g0 (h - h_b) / (R T_b))`` in isothermal layers, with
    ``T0 = 288.15 K``, ``p0 = 101325 Pa``, ``g0 = 9.80665 m s-2``, ``R = 287.05287 J kg-1 K-1``.
    Gives 101325 Pa at 0 m and 22632 Pa at 11000 m. Aircraft heights (pressure altitude) are
    defined through this same atmosphere, so the inversion is exact for them.

    Parameters
    ----------
    height_m : torch.Tensor or array-like
        Geopotential height in metres, any shape; valid about -5 km to 80 km (below 0 the
        tropospheric formula is extrapolated). NaN gives NaN.

    Returns
    -------
    torch.Tensor
        Pressure in Pa, the shape of ``height_m`` (float32 unless the input is a float tensor).
    """
    h = torch.as_tensor(height_m)
    if not h.is_floating_point():
        h = h.float()
    p = torch.full_like(h, float("nan"))
    for i, (hb, lapse, tb, pb) in enumerate(_ISA):
        dh = h - hb
        if lapse == 0:
            layer_p = pb * torch.exp(-G0 * dh / (R_AIR * tb))
        else:
            layer_p = pb * (tb / (tb + lapse * dh)) ** (G0 / (R_AIR * lapse))
        in_layer = h >= hb if i > 0 else torch.ones_like(h, dtype=torch.bool)
        p = torch.where(in_layer, layer_p, p)
    return torch.where(torch.isnan(h), h, p)


class SetConvEncoder(nn.Module):
    """Gaussian-kernel SetConv from scattered observations to the latent grid.

    Parameters
    ----------
    variables : list of str
        Names of the observed variables, in the order of the last axis of ``obs["values"]``.
    grid : LatLonGrid
        The latent grid.
    out_channels : int
        Latent channels produced.
    lengthscale_km : float, optional
        Initial kernel lengthscale in km (learnt, kept positive through its logarithm). Default:
        the grid's meridional spacing (625 km on a 32x64 grid).
    pressure_levels : sequence of float, optional
        Layer centres in Pa for vertical profiles (sondes, aircraft). Each variable x layer is
        then a separate channel and each observation goes to the layer nearest in log-pressure.
    hidden : int
        Hidden width of the pointwise MLP.
    n_layers : int
        Number of 1x1 convolutions in the MLP.
    eps : float
        Added to the density in the value channel ``sum w v / (sum w + eps)``.
    innovations : sequence of (int, int, float), optional
        Innovation channels (observation minus background), one per entry ``(channel, output,
        scale)``: value channel ``channel`` of this encoder (``variable * n_layers + layer``)
        minus ``scale`` times output channel ``output`` of the model's background (a normalised
        anomaly), see :meth:`innovation_features`. They are extra inputs of the MLP. Built by
        :func:`obscast.components.model.assembly.innovation_map`; default none.

    Raises
    ------
    ValueError
        On no ``variables``, empty ``pressure_levels`` or an innovation channel out of range.

    Notes
    -----
    The MLP has no bias, so cells without any data get an exactly zero latent; density channels
    enter the MLP as ``log1p(density)`` to stay O(1) under dense observation clusters.
    """

    def __init__(
        self,
        variables: Sequence[str],
        grid: LatLonGrid,
        out_channels: int,
        lengthscale_km: float | None = None,
        pressure_levels: Sequence[float] | None = None,
        hidden: int = 64,
        n_layers: int = 2,
        eps: float = 1e-5,
        innovations: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        if not variables:
            raise ValueError("SetConvEncoder needs at least one variable")
        self.variables = list(variables)
        self.grid = grid
        self.out_channels = out_channels
        self.eps = eps
        self.pressure_levels = None if pressure_levels is None else [float(p) for p in pressure_levels]
        n_layers_v = 1 if self.pressure_levels is None else len(self.pressure_levels)
        if n_layers_v < 1:
            raise ValueError("pressure_levels must not be empty")
        self.n_channels = len(self.variables) * n_layers_v
        self.lengthscale = KernelLengthscale(lengthscale_km if lengthscale_km is not None else grid.spacing_km)
        self.register_buffer("grid_xyz", grid.cell_vectors(), persistent=False)
        if self.pressure_levels is not None:
            self.register_buffer("log_levels", torch.log(torch.tensor(self.pressure_levels)), persistent=False)
        self.innovations = [(int(c), int(o), float(k)) for c, o, k in (innovations or [])]
        bad = [c for c, _, _ in self.innovations if not 0 <= c < self.n_channels]
        if bad:
            raise ValueError(f"innovation channels {bad} outside the encoder's {self.n_channels} value channels")
        self.register_buffer("innovation_channel", torch.tensor([c for c, _, _ in self.innovations], dtype=torch.long), persistent=False)
        self.register_buffer("innovation_output", torch.tensor([o for _, o, _ in self.innovations], dtype=torch.long), persistent=False)
        self.register_buffer("innovation_scale", torch.tensor([k for _, _, k in self.innovations], dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.mlp = pointwise_mlp(2 * self.n_channels + len(self.innovations), hidden, out_channels, n_layers, bias=False)

    @property
    def n_innovations(self) -> int:
        """Number of innovation channels (0 without ``innovations``)."""
        return len(self.innovations)

    def innovation_features(self, x: torch.Tensor, background: torch.Tensor | None) -> torch.Tensor:
        """Innovations on the latent grid: the observations minus the background, where observed.

        For entry ``(channel, output, scale)`` of ``innovations``:
        ``d = (v_channel - scale * b_output) * (1 - exp(-sum_n w))``, with ``v`` the kernel-weighted
        mean of the normalised observations (:meth:`features`), ``b`` the background and
        ``sum_n w`` that channel's observation density. This is the innovation ``y - H(x_b)`` of
        data assimilation (e.g. Kalnay 2003, *Atmospheric Modeling, Data Assimilation and
        Predictability*, ch. 5) taken after the SetConv average rather than at each observation:
        ``H`` is the background's anomaly at the nearest output level, rescaled from the output's
        to the observations' normalisation (both are anomalies from a training climatology,
        so the climatologies cancel); it tends to 0 where the channel has no observation.

        Parameters
        ----------
        x : torch.Tensor
            (batch, 2 * n_channels, lat, lon), :meth:`features`' first output.
        background : torch.Tensor or None
            (batch, output channels, lat, lon) normalised anomaly on the latent grid; None: zero
            (a cold start, the climatology).

        Returns
        -------
        torch.Tensor
            (batch, n_innovations, lat, lon), dimensionless (the observations' normalisation).
        """
        c = self.n_channels
        density = torch.expm1(x[:, self.innovation_channel])
        value = x[:, c + self.innovation_channel]
        if background is not None:
            value = value - self.innovation_scale.to(x.dtype) * background[:, self.innovation_output].to(x.dtype)
        return value * (1.0 - torch.exp(-density))

    def embed(self, x: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
        """The MLP on the features ``x`` (batch, 2 * n_channels, lat, lon) and, with
        ``innovations``, on :meth:`innovation_features` of ``background``: (batch, out_channels, lat, lon)."""
        if self.innovations:
            x = torch.cat([x, self.innovation_features(x, background)], dim=1)
        return self.mlp(x)

    def _layer_onehot(self, obs: dict, shape: torch.Size, device: torch.device) -> torch.Tensor | None:
        """(batch, points, layers) one-hot of the nearest layer in log-pressure, or None."""
        if self.pressure_levels is None:
            return None
        if "pressure" not in obs and "height" not in obs:
            raise ValueError("a SetConvEncoder with pressure_levels needs obs['pressure'] (Pa) or obs['height'] (m)")
        nan = torch.full(shape, float("nan"), device=device)
        p = obs["pressure"].to(device=device, dtype=torch.float32) if "pressure" in obs else nan
        if "height" in obs:
            p = torch.where(torch.isnan(p), pressure_from_height(obs["height"].to(device=device, dtype=torch.float32)), p)
        ok = torch.isfinite(p) & (p > 0)
        logp = torch.log(torch.where(ok, p, torch.ones_like(p)))
        layer = (logp[..., None] - self.log_levels).abs().argmin(-1)
        onehot = nn.functional.one_hot(layer, len(self.pressure_levels)).to(torch.float32)
        return onehot * ok[..., None]

    def features(self, obs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Everything of :meth:`forward` before the MLP: the Gaussian scatter of the observations.

        ``self.embed(x)`` with ``x, density = self.features(obs)`` is ``forward(obs)``. With the
        kernel lengthscale frozen, ``x`` depends on the observations only and can be cached
        (:class:`obscast.components.training.trainer.FeatureCache`).

        Parameters
        ----------
        obs : dict
            As :meth:`forward`.

        Returns
        -------
        x : torch.Tensor
            (batch, 2 * n_channels, lat, lon): ``log1p(sum_n w)`` per channel, then the
            normalised values ``sum_n w v / (sum_n w + eps)``.
        density : torch.Tensor
            (batch, 1, lat, lon): ``sum_n w`` over points with at least one valid value.

        Raises
        ------
        ValueError
            As :meth:`forward`.
        """
        lat, lon, values = obs["latitude"], obs["longitude"], obs["values"]
        device = self.grid_xyz.device
        if values.ndim != 3 or values.shape[-1] != len(self.variables):
            raise ValueError(f"values must be (batch, points, {len(self.variables)}), got {tuple(values.shape)}")
        lat = lat.to(device=device, dtype=torch.float32)
        lon = lon.to(device=device, dtype=torch.float32)
        values, valid = masked_fill_nan(values.to(device=device, dtype=torch.float32))
        point_ok = torch.isfinite(lat) & torch.isfinite(lon)
        if obs.get("mask") is not None:
            point_ok = point_ok & obs["mask"].to(device=device, dtype=torch.bool)
        valid = valid * point_ok[..., None]
        onehot = self._layer_onehot(obs, lat.shape, device)
        if onehot is not None:  # channel index = variable * n_levels + level
            valid = (valid[..., :, None] * onehot[..., None, :]).flatten(-2)
            values = values.repeat_interleave(len(self.pressure_levels), dim=-1)
        any_valid = (valid.sum(-1, keepdim=True) > 0).to(valid.dtype)
        features = torch.cat([valid, valid * values, any_valid], dim=-1)
        zero = torch.zeros((), device=device)
        lat, lon = torch.where(point_ok, lat, zero), torch.where(point_ok, lon, zero)
        sums = gaussian_scatter(lat, lon, features, self.grid_xyz, self.lengthscale())
        c = self.n_channels
        dens, weighted = sums[:, :c], sums[:, c : 2 * c]
        x = torch.cat([torch.log1p(dens), weighted / (dens + self.eps)], dim=1)
        h, w = self.grid.shape
        return x.reshape(x.shape[0], 2 * c, h, w), sums[:, 2 * c :].reshape(-1, 1, h, w)

    def forward(self, obs: dict, background: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode observations.

        Parameters
        ----------
        obs : dict
            ``latitude``, ``longitude``: (batch, points) degrees; ``values``: (batch, points,
            variables), normalised, NaN where missing; optional ``mask``: (batch, points) bool,
            False for padding; with ``pressure_levels``: ``pressure`` (batch, points) Pa and/or
            ``height`` (batch, points) m, used where pressure is NaN. Points with non-finite
            coordinates or no usable pressure are ignored. ``points`` may be 0.
        background : torch.Tensor, optional
            With ``innovations``: the background on the latent grid, see :meth:`innovation_features`.

        Returns
        -------
        latent : torch.Tensor
            (batch, out_channels, lat, lon); exactly 0 where no observation reaches.
        density : torch.Tensor
            (batch, 1, lat, lon): ``sum_n w`` over points with at least one valid value.

        Raises
        ------
        ValueError
            If ``values`` does not have one column per variable, or pressure is required but absent.
        """
        x, density = self.features(obs)
        return self.embed(x, background), density
