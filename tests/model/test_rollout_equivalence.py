"""ObsCastModel.forecast (station kernel and bilinear weights computed once per rollout, sparse
station kernel without autograd) against a step-by-step reference built from the public
per-state methods: processor.step, grid_decoder, StationDecoder.forward and bilinear_weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from obscast.components.model.model import ObsCastModel
from obscast.processor.interp import bilinear_weights

OUT_LAT = list(np.linspace(-84.0, 84.0, 8))
OUT_LON = list(np.arange(0.0, 360.0, 30.0))
VARS = ["t", "u", "ps"]


def _model(station_residual: bool | str, seed: int = 0) -> ObsCastModel:
    torch.manual_seed(seed)
    model = ObsCastModel(
        {"clim": {"type": "gridded", "variables": VARS + ["s"], "in_lat": OUT_LAT, "in_lon": OUT_LON}},
        VARS, OUT_LAT, OUT_LON, n_lat=8, n_lon=16, latent_channels=8, processor_hidden=8, n_blocks=2,
        decoder_hidden=8, station_variables=["ps", "t"], residual_source="clim", station_residual=station_residual,
        cycling=True,
    )  # fmt: skip
    with torch.no_grad():  # every weight random, also those that start at zero in training
        for name, p in model.named_parameters():
            if not name.endswith("log_km"):
                p.uniform_(-0.5, 0.5)
    return model.eval()


def _points(batch: int, n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lat = torch.rand(batch, n, generator=g) * 180.0 - 90.0
    lon = torch.rand(batch, n, generator=g) * 540.0 - 180.0  # both longitude conventions, beyond 360
    lat[:, :3] = torch.tensor([89.9, -89.9, 0.0])  # poles (beyond the outermost rows) and a cell edge
    lon[:, :3] = torch.tensor([359.99, -0.01, 180.0])
    return lat, lon


def _bilinear_at_points(field: torch.Tensor, lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
    """(variables, OUT_LAT, OUT_LON) to (points, variables) with bilinear_weights, point by point."""
    flat = field.flatten(1).double()
    rows = []
    for la, lo in zip(lat.tolist(), lon.tolist()):
        index, weight = bilinear_weights(OUT_LAT, OUT_LON, [la], [lo])
        rows.append((flat[:, torch.as_tensor(index[0])] * torch.as_tensor(weight[0])).sum(-1))
    return torch.stack(rows).to(field.dtype)


def _reference(model: ObsCastModel, latent: torch.Tensor, n_steps: int, points, residual: torch.Tensor) -> dict[str, torch.Tensor]:
    """One step at a time with the public per-state methods."""
    lat, lon = points
    clim = model.residual_regrid(residual[:, model.residual_index])[0]
    grids, stations = [], []
    for _ in range(n_steps):
        latent = model.processor.step(latent)
        anomaly = model.grid_decoder(latent)
        grid = anomaly + clim
        st = model.station_decoder(latent, lat, lon)
        sv = [model.output_variables.index(v) for v in model.station_variables]
        if model.station_residual == "forecast":
            st = st + torch.stack([_bilinear_at_points(g[sv], la, lo) for g, la, lo in zip(grid, lat, lon)])
        elif model.station_residual:
            rv = [model.encoders["clim"].variables.index(v) for v in model.station_variables]
            st = st + torch.stack([_bilinear_at_points(r[rv], la, lo) for r, la, lo in zip(residual, lat, lon)])
        grids.append(grid)
        stations.append(st)
        if len(grids) == 1:
            background = anomaly
    return {"grid": torch.stack(grids, 1), "stations": torch.stack(stations, 1), "background": background}


@pytest.mark.parametrize("station_residual", ["forecast", True])
@pytest.mark.parametrize("grad", [False, True])
def test_forecast_equals_stepwise_reference(station_residual: bool | str, grad: bool) -> None:
    model = _model(station_residual)
    g = torch.Generator().manual_seed(2)
    latent = torch.randn(2, 8, 8, 16, generator=g)
    residual = torch.randn(2, 4, len(OUT_LAT), len(OUT_LON), generator=g)
    points = _points(2, 40)
    with torch.no_grad():
        ref = _reference(model, latent, 5, points, residual)
    with torch.set_grad_enabled(grad):
        out = model.forecast(latent, 5, points, residual)
    assert set(out) == {"grid", "stations", "background"}
    assert out["stations"].shape == (2, 5, 40, 2)
    for key in out:
        torch.testing.assert_close(out[key].detach(), ref[key], rtol=1e-5, atol=1e-5)
    if grad:  # the station output stays differentiable in the kernel lengthscale
        out["stations"].sum().backward()
        assert model.station_decoder.lengthscale.log_km.grad is not None
        assert model.station_decoder.lengthscale.log_km.grad.abs() > 0


@pytest.mark.parametrize("lengthscale_km", [150.0, 400.0, 20000.0])
def test_station_kernel_sparse_equals_dense(lengthscale_km: float) -> None:
    """Sparse (short lengthscale) or dense fallback (long one): the weights of gaussian_gather."""
    model = _model("forecast")
    dec = model.station_decoder
    with torch.no_grad():
        dec.lengthscale.log_km.fill_(float(np.log(lengthscale_km)))
        lat, lon = _points(1, 300, seed=3)
        sparse = dec.kernel(lat, lon)[0]
        dense = dec.kernel(lat, lon, sparse=False)[0]
    assert sparse.layout == (torch.sparse_csr if lengthscale_km < 1000 else torch.strided)
    torch.testing.assert_close(sparse.to_dense(), dense, rtol=0, atol=1e-6)
    torch.testing.assert_close(sparse.to_dense().sum(-1), torch.ones(300), rtol=0, atol=1e-6)
    if lengthscale_km < 1000:  # the sparse kernel keeps few cells per point
        assert sparse.values().numel() < 0.5 * dense.numel()

