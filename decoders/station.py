"""Station decoder: latent grid to arbitrary points (Aardvark-style SetConv + MLP)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from obscast.processor.grid import EARTH_RADIUS_KM, LatLonGrid, unit_vectors
from obscast.processor.interp import MAX_KERNEL_ELEMENTS, KernelLengthscale, _sq_scaled_distance, gaussian_gather

#: Kernel weights smaller than ``exp(-SPARSE_CUTOFF / 2)`` (1.4e-11) times a point's largest
#: weight are left out of the sparse kernel of :meth:`StationDecoder.kernel`; together they are
#: below ``n_cells * 1.4e-11`` of the kept weight, far below float32 rounding.
SPARSE_CUTOFF = 50.0
#: The kernel stays dense when more than this fraction of its (point, cell) weights is kept
#: (a long lengthscale), where a dense matrix product is faster than a sparse one.
SPARSE_MAX_DENSITY = 0.2


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

    def forward_steps(self, latent: torch.Tensor, latitude: torch.Tensor, longitude: torch.Tensor) -> torch.Tensor:
        """Decode every state of a rollout at the same points.

        Equal, up to float rounding, to :meth:`forward` applied to each state; the kernel is
        computed once for all steps (:meth:`kernel`, :meth:`decode_steps`). Under autograd with
        more than ``MAX_KERNEL_ELEMENTS`` (point, cell) pairs it falls back to :meth:`forward`
        per step, whose chunks are checkpointed.

        Parameters
        ----------
        latent : torch.Tensor
            (batch, steps, latent_channels, lat, lon).
        latitude, longitude : torch.Tensor
            (batch, points) degrees, finite.

        Returns
        -------
        torch.Tensor
            (batch, steps, points, variables).
        """
        batch, steps = latent.shape[:2]
        if torch.is_grad_enabled() and latitude.numel() * self.grid_xyz.shape[1] > MAX_KERNEL_ELEMENTS:
            lat, lon = (t.repeat_interleave(steps, dim=0) for t in (latitude, longitude))
            return self(latent.flatten(0, 1), lat, lon).unflatten(0, (batch, steps))
        return self.decode_steps(latent, self.kernel(latitude, longitude))

    def kernel(self, latitude: torch.Tensor, longitude: torch.Tensor, sparse: bool = True) -> list[torch.Tensor]:
        """The normalised kernel weights of :meth:`forward`, computed once for many states.

        Row ``p`` of a batch element's matrix holds the weights ``softmax_k(-d(p, k)^2 / (2 l^2))``
        of point ``p`` over the latent cells ``k`` (great-circle distance ``d``, lengthscale ``l``),
        as :func:`obscast.processor.interp.gaussian_gather` computes them.

        Parameters
        ----------
        latitude, longitude : torch.Tensor
            (batch, points) degrees, finite.
        sparse : bool
            Without autograd, leave out the weights below ``exp(-SPARSE_CUTOFF / 2)`` times the
            point's largest one and return sparse CSR matrices (renormalised over the kept
            cells), unless more than :data:`SPARSE_MAX_DENSITY` of the weights are kept.
            Under autograd the matrices are always dense (differentiable in ``l``).

        Returns
        -------
        list of torch.Tensor
            One float32 (points, cells) matrix per batch element, sparse CSR or dense, on the
            device of the decoder.
        """
        device = self.grid_xyz.device
        lat = latitude.to(device=device, dtype=torch.float32)
        lon = longitude.to(device=device, dtype=torch.float32)
        ls = self.lengthscale()
        cells = self.grid_xyz.shape[1]
        if not sparse or torch.is_grad_enabled():
            return [torch.softmax(-0.5 * _sq_scaled_distance(la[None], lo[None], self.grid_xyz, ls)[0], dim=-1) for la, lo in zip(lat, lon)]
        with torch.autocast(device_type=device.type, enabled=False):  # float32, as _sq_scaled_distance
            return self._sparse_kernel(lat, lon, ls)

    def _sparse_kernel(self, lat: torch.Tensor, lon: torch.Tensor, ls: torch.Tensor) -> list[torch.Tensor]:
        device, cells = self.grid_xyz.device, self.grid_xyz.shape[1]
        rows = max(1, MAX_KERNEL_ELEMENTS // cells)
        scale = EARTH_RADIUS_KM / ls.float()
        out = []
        for la, lo in zip(lat, lon):
            n = la.shape[0]
            crow, col, val = [torch.zeros(1, dtype=torch.int64, device=device)], [], []
            for start in range(0, n, rows):
                # cos_angle and then -d^2 / (2 l^2) exactly as _sq_scaled_distance, but the
                # acos only where the weight can pass the cutoff (d below the nearest cell's
                # distance d0 widened to sqrt(d0^2 + SPARSE_CUTOFF l^2), with a margin).
                xyz = unit_vectors(la[start : start + rows], lo[start : start + rows])
                cos_angle = torch.matmul(xyz[None], self.grid_xyz.float())[0].clamp(-1.0, 1.0)
                near = cos_angle.max(dim=-1, keepdim=True).values
                reach = torch.sqrt((torch.acos(near) * scale) ** 2 + SPARSE_CUTOFF) / scale
                r, c = (cos_angle >= torch.cos(reach + 1e-3).clamp(min=-1.0)).nonzero(as_tuple=True)
                x = -0.5 * (torch.acos(cos_angle[r, c]) * scale) ** 2
                top = torch.full((cos_angle.shape[0],), -torch.inf, device=device).scatter_reduce(0, r, x, "amax")
                keep = x >= top[r] - 0.5 * SPARSE_CUTOFF
                r, c, x = r[keep], c[keep], x[keep]
                e = torch.exp(x - top[r])  # as torch.softmax: exp(x - max) / sum
                den = torch.zeros(cos_angle.shape[0], dtype=e.dtype, device=device).index_add_(0, r, e)
                crow.append(torch.bincount(r, minlength=cos_angle.shape[0]).cumsum(0) + crow[-1][-1])
                col.append(c)
                val.append(e / den[r])
            if int(crow[-1][-1]) > SPARSE_MAX_DENSITY * n * cells:
                out.append(torch.softmax(-0.5 * _sq_scaled_distance(la[None], lo[None], self.grid_xyz, ls)[0], dim=-1))
            else:
                with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
                    warnings.simplefilter("ignore", UserWarning)
                    out.append(torch.sparse_csr_tensor(torch.cat(crow), torch.cat(col), torch.cat(val), (n, cells), check_invariants=False))
        return out

    def decode_steps(self, latent: torch.Tensor, kernel: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decode many states at the points of a precomputed :meth:`kernel`.

        Equal, up to float rounding, to :meth:`forward` applied to each state (a Gaussian average
        is linear, so the first layer of the MLP is applied on the grid, before averaging: the
        weights sum to 1, and there are fewer cells than stations).

        Parameters
        ----------
        latent : torch.Tensor
            (batch, steps, latent_channels, lat, lon).
        kernel : list of torch.Tensor
            From :meth:`kernel`: ``batch`` (points, cells) matrices.

        Returns
        -------
        torch.Tensor
            (batch, steps, points, variables).

        Raises
        ------
        ValueError
            If ``kernel`` does not have one matrix per batch element.
        """
        batch, steps = latent.shape[:2]
        if len(kernel) != batch:
            raise ValueError(f"kernel has {len(kernel)} batch elements, latent {batch}")
        first, rest = self.mlp[0], self.mlp[1:]
        hidden = first(latent.flatten(3).transpose(2, 3))  # (batch, steps, cells, hidden)
        feats = []
        for h, w in zip(hidden, kernel):  # h: (steps, cells, hidden)
            if w.layout == torch.sparse_csr:  # a weighted sum of the kept cells per point and step
                col, offsets, weight = w.col_indices(), w.crow_indices()[:-1], w.values().to(h.dtype)
                feats.append(torch.stack([nn.functional.embedding_bag(col, hs, offsets, mode="sum", per_sample_weights=weight) for hs in h]))
            else:
                feats.append(torch.matmul(w.to(h.dtype), h))
        return rest(torch.stack(feats))
