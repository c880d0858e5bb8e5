"""Tests of the model components: grid, padding, encoders, processor, decoders, ObsCastModel."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from obscast.decoders import GriddedDecoder, StationDecoder
from obscast.encoders import ENCODERS, GriddedEncoder, SetConvEncoder, build_encoder, pressure_from_height
from obscast.processor.convnet import ConvProcessor
from obscast.processor.grid import LatLonGrid, great_circle_distance_km, unit_vectors
from obscast.processor.interp import BilinearRegridder, gaussian_gather, gaussian_scatter
from obscast.processor.layers import SphericalPad2d
from obscast.components.model.model import ObsCastModel

B, N = 2, 1000
GRID = LatLonGrid(32, 64)
OUT_LAT, OUT_LON = 61, 120  # 3 degrees, poles included


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seeded, single-threaded: these small ops gain little from threads, and on a shared
    2-core machine two OpenMP threads per process slowed the training test up to 20x."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_obs(b: int = B, n: int = N, v: int = 2) -> dict:
    return {"latitude": torch.rand(b, n) * 180 - 90, "longitude": torch.rand(b, n) * 360, "values": torch.randn(b, n, v)}


def smooth_fields(b: int, v: int, lat: np.ndarray, lon: np.ndarray) -> torch.Tensor:
    """Random smooth fields (b, v, lat, lon) with unit standard deviation."""
    phi = torch.deg2rad(torch.as_tensor(lat, dtype=torch.float32))[:, None]
    lam = torch.deg2rad(torch.as_tensor(lon, dtype=torch.float32))[None]
    out = torch.zeros(b, v, len(lat), len(lon))
    for m in range(1, 4):
        for n in range(3):
            amp, phase = torch.randn(b, v, 1, 1) / (m + n), torch.rand(b, v, 1, 1) * 2 * math.pi
            out += amp * torch.cos(m * lam + phase) * torch.cos(phi) ** m * torch.cos(n * phi)
    return out / out.std()


def small_model(**kwargs) -> ObsCastModel:
    defaults = dict(n_lat=16, n_lon=32, latent_channels=16, processor_hidden=32, n_blocks=2, decoder_hidden=32)
    return ObsCastModel(**(defaults | kwargs))


# ---------------------------------------------------------------- grid, padding, ICAO


def test_grid_coordinates():
    assert GRID.latitude[0] == pytest.approx(-90 + 180 / 64) and GRID.latitude[-1] == pytest.approx(90 - 180 / 64)
    assert np.all(np.diff(GRID.latitude) > 0)
    assert GRID.longitude[0] == 0 and GRID.longitude[1] == pytest.approx(5.625)
    coords = GRID.as_tensor()
    assert coords.shape == (2, 32, 64)
    assert great_circle_distance_km(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(0.0), torch.tensor(180.0)) == pytest.approx(
        math.pi * 6371, rel=1e-5
    )


def test_spherical_pad_matches_the_sphere():
    """Ghost cells beyond the poles and the date line hold the field at the same physical point."""
    grid, p = LatLonGrid(8, 16), 2
    d = 180 / grid.n_lat
    lat = torch.as_tensor(np.concatenate([grid.latitude[0] - d * np.arange(p, 0, -1), grid.latitude, grid.latitude[-1] + d * np.arange(1, p + 1)]))
    lon = torch.as_tensor(np.concatenate([grid.longitude[-p:] - 360, grid.longitude, grid.longitude[:p] + 360]))
    # Cartesian coordinates extended beyond |lat| = 90 by the same formula are the reflected points.
    expected = unit_vectors(*torch.meshgrid(lat, lon, indexing="ij")).permute(2, 0, 1)[None]
    field = unit_vectors(*torch.meshgrid(torch.as_tensor(grid.latitude), torch.as_tensor(grid.longitude), indexing="ij"))
    padded = SphericalPad2d(p)(field.permute(2, 0, 1)[None])
    assert padded.shape == (1, 3, 8 + 2 * p, 16 + 2 * p)
    torch.testing.assert_close(padded, expected, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="even"):
        SphericalPad2d(1)(torch.zeros(1, 1, 4, 7))


def test_icao_standard_atmosphere():
    p = pressure_from_height(torch.tensor([0.0, 11000.0, 20000.0, float("nan")]))
    assert p[0].item() == pytest.approx(101325.0, rel=1e-6)
    assert p[1].item() == pytest.approx(22632.0, rel=1e-4)
    assert p[2].item() == pytest.approx(5474.9, rel=1e-4)  # ICAO Doc 7488 table value
    assert torch.isnan(p[3])
    assert pressure_from_height(np.array([5000.0])).item() == pytest.approx(54019.9, rel=1e-4)


# ---------------------------------------------------------------- processor


def test_processor_rollout_shape_and_identity_start():
    proc = ConvProcessor(32, hidden=64, n_blocks=4)
    z = torch.randn(B, 32, 32, 64)
    out = proc(z, 3)
    assert out.shape == (B, 3, 32, 32, 64)
    torch.testing.assert_close(out[:, 0], z)  # zero-initialised output projection
    with pytest.raises(ValueError):
        proc(z, 0)


def test_processor_longitude_rotation_equivariance():
    proc = ConvProcessor(8, hidden=16, n_blocks=2)
    for param in proc.parameters():  # make the step non-trivial
        torch.nn.init.normal_(param, std=0.2)
    z = torch.randn(2, 8, 16, 32)
    for k in (1, 5, 16):
        torch.testing.assert_close(proc(z.roll(k, dims=-1), 2), proc(z, 2).roll(k, dims=-1), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- encoders


def test_build_encoder_registry():
    assert set(ENCODERS) == {"setconv", "gridded"}
    with pytest.raises(ValueError, match="'graph'.*gridded, setconv"):
        build_encoder("graph", variables=["t"])


def test_setconv_shapes_and_density():
    enc = SetConvEncoder(["t", "u"], GRID, 32)
    latent, density = enc(random_obs())
    assert latent.shape == (B, 32, 32, 64) and density.shape == (B, 1, 32, 64)
    assert torch.isfinite(latent).all()
    # One observation at (45N, 90E): density high next to it, ~0 at the antipode.
    one = {"latitude": torch.tensor([[45.0]]), "longitude": torch.tensor([[90.0]]), "values": torch.ones(1, 1, 2)}
    _, dens = enc(one)
    near = dens[0, 0, np.abs(GRID.latitude - 45).argmin(), np.abs(GRID.longitude - 90).argmin()]
    far = dens[0, 0, np.abs(GRID.latitude + 45).argmin(), np.abs(GRID.longitude - 270).argmin()]
    assert near > 0.5 and far < 1e-6


def test_setconv_empty_and_padding_rows():
    enc = SetConvEncoder(["t", "u"], GRID, 16)
    latent, density = enc(random_obs(n=0))
    assert latent.shape == (B, 16, 32, 64) and not latent.any() and not density.any()
    obs = random_obs(n=50)
    obs["mask"] = torch.ones(B, 50, dtype=torch.bool)
    obs["mask"][1] = False
    obs["latitude"][1] = float("nan")  # padding may hold anything
    latent, density = enc(obs)
    assert not latent[1].any() and not density[1].any() and density[0].sum() > 0


def test_setconv_nan_contributes_nothing():
    enc = SetConvEncoder(["t", "u"], GRID, 16)
    obs = random_obs(n=100)
    with_nan = {k: torch.cat([v, v[:, :1]], dim=1) for k, v in obs.items()}
    with_nan["values"][:, -1] = float("nan")
    for a, b in zip(enc(obs), enc(with_nan)):
        torch.testing.assert_close(a, b)
    # A point with only "u" missing adds density (it has a valid "t") but leaves "u" alone.
    partial = {k: v.clone() for k, v in with_nan.items()}
    partial["values"][:, -1, 0] = 1.0
    assert (enc(partial)[1] >= enc(obs)[1]).all() and not torch.equal(enc(partial)[1], enc(obs)[1])


def test_setconv_pressure_levels_and_height():
    levels = [85000.0, 50000.0, 25000.0]
    enc = SetConvEncoder(["t", "u"], GRID, 16, pressure_levels=levels)
    obs = random_obs(n=200)
    height = torch.rand(B, 200) * 10000
    by_pressure = enc(dict(obs, pressure=pressure_from_height(height)))
    by_height = enc(dict(obs, pressure=torch.full((B, 200), float("nan")), height=height))
    for a, b in zip(by_pressure, by_height):
        torch.testing.assert_close(a, b)
    assert by_pressure[0].shape == (B, 16, 32, 64)
    with pytest.raises(ValueError, match="pressure"):
        enc(obs)


def test_gridded_encoder_shapes_and_nan():
    enc = GriddedEncoder(["t", "z"], OUT_LAT, OUT_LON, GRID, 32)
    x = torch.randn(B, 2, OUT_LAT, OUT_LON)
    latent, density = enc(x)
    assert latent.shape == (B, 32, 32, 64) and density.shape == (B, 1, 32, 64)
    torch.testing.assert_close(density, torch.ones_like(density))
    x[1] = float("nan")
    latent, density = enc({"values": x})
    assert torch.isfinite(latent).all() and not latent[1].any() and not density[1].any()
    with pytest.raises(ValueError):
        enc(torch.randn(B, 3, OUT_LAT, OUT_LON))


def test_bilinear_regridder_periodic_and_identity():
    src_lat, src_lon = np.linspace(-90, 90, OUT_LAT), np.arange(OUT_LON) * 3.0
    field = torch.cos(torch.deg2rad(torch.as_tensor(src_lon, dtype=torch.float32)))[None, None, None].expand(1, 1, OUT_LAT, -1)
    dst_lon = np.array([358.5, 0.0, 1.5, -1.5])  # across the date line
    out, valid = BilinearRegridder(src_lat, src_lon, [0.0], dst_lon)(field)
    expected = torch.cos(torch.deg2rad(torch.as_tensor(dst_lon, dtype=torch.float32)))
    torch.testing.assert_close(out[0, 0, 0], expected, atol=2e-3, rtol=0)
    assert torch.all(valid == 1)
    x = torch.randn(1, 2, OUT_LAT, OUT_LON)
    torch.testing.assert_close(BilinearRegridder(src_lat, src_lon, src_lat, src_lon)(x)[0], x)
    # Descending (ERA5-order) source latitudes give the same result as the flipped field.
    dst_lat, dst_lon = GRID.latitude, GRID.longitude
    torch.testing.assert_close(
        BilinearRegridder(src_lat[::-1], src_lon, dst_lat, dst_lon)(x.flip(-2))[0], BilinearRegridder(src_lat, src_lon, dst_lat, dst_lon)(x)[0]
    )


def test_kernel_chunking_matches_single_chunk():
    """Chunked (checkpointed) kernel sums equal the one-chunk result, values and gradients."""
    xyz = GRID.cell_vectors()
    obs = random_obs(n=100)
    feats = torch.randn(B, 100, 3)
    results = []
    for max_elements in (1 << 30, B * 2048 * 32):  # one chunk, then four
        ls = torch.tensor(700.0, requires_grad=True)
        grid_values = torch.randn(B, 2048, 4, generator=torch.Generator().manual_seed(1)).requires_grad_()
        out = gaussian_scatter(obs["latitude"], obs["longitude"], feats, xyz, ls, max_elements)
        back = gaussian_gather(obs["latitude"], obs["longitude"], grid_values, xyz, ls, max_elements)
        (out.square().mean() + back.square().mean()).backward()
        results.append((out, back, ls.grad, grid_values.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert results[0][2] != 0


# ---------------------------------------------------------------- decoders


def test_decoders_shapes():
    z = torch.randn(B, 32, 32, 64)
    dec = GriddedDecoder(32, ["t", "z"], GRID, OUT_LAT, OUT_LON)
    assert dec(z).shape == (B, 2, OUT_LAT, OUT_LON)
    st = StationDecoder(32, ["t2m", "ps", "u10"], GRID)
    assert st(z, torch.rand(B, 300) * 180 - 90, torch.rand(B, 300) * 360).shape == (B, 300, 3)
    assert st(z, torch.zeros(B, 0), torch.zeros(B, 0)).shape == (B, 0, 3)


# ---------------------------------------------------------------- model

SOURCES = {
    "era5": {"type": "gridded", "variables": ["t850", "z500"], "in_lat": OUT_LAT, "in_lon": OUT_LON},
    "synop": {"type": "setconv", "variables": ["t2m", "ps"]},
    "sonde": {"type": "setconv", "variables": ["t", "u"], "pressure_levels": [85000.0, 50000.0, 25000.0]},
}


def test_model_full_size_shapes_absent_and_empty_sources():
    model = ObsCastModel(SOURCES, ["t850", "z500"], OUT_LAT, OUT_LON, latent_channels=32)
    sonde = dict(random_obs(), pressure=torch.rand(B, N) * 9e4 + 1e4)
    inputs = {"era5": torch.randn(B, 2, OUT_LAT, OUT_LON), "synop": random_obs(), "sonde": sonde}
    points = (torch.rand(B, 40) * 180 - 90, torch.rand(B, 40) * 360)
    out = model(inputs, 2, station_points=points)
    assert out["grid"].shape == (B, 2, 2, OUT_LAT, OUT_LON) and out["stations"].shape == (B, 2, 40, 2)
    only_synop = model({"synop": random_obs()}, 1)  # other sources absent
    assert only_synop["grid"].shape == (B, 1, 2, OUT_LAT, OUT_LON) and "stations" not in only_synop
    empty = model({"synop": random_obs(n=0)}, 1)
    assert torch.isfinite(empty["grid"]).all()
    with pytest.raises(ValueError, match="unknown sources"):
        model({"amsu": random_obs()}, 1)
    with pytest.raises(ValueError, match="no source"):
        model({}, 1)


def test_model_config_roundtrip_and_residual_persistence():
    g = LatLonGrid(16, 32)
    sources = {"ana": {"type": "gridded", "variables": ["a", "b"], "in_lat": list(g.latitude), "in_lon": list(g.longitude)}}
    model = small_model(sources=sources, output_variables=["b"], out_lat=list(g.latitude), out_lon=list(g.longitude), residual_source="ana")
    x = torch.randn(3, 2, 16, 32)
    out = model({"ana": x}, 2)["grid"]
    torch.testing.assert_close(out, x[:, None, 1:].expand(-1, 2, -1, -1, -1))  # untrained = persistence
    clone = ObsCastModel.from_config(json.loads(json.dumps(model.config)))
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone({"ana": x}, 2)["grid"], out)
    with pytest.raises(ValueError, match="residual_source"):
        small_model(sources=sources, output_variables=["c"], out_lat=16, out_lon=32, residual_source="ana")


def test_source_dropout_never_drops_all():
    model = small_model(sources={"a": SOURCES["synop"], "b": SOURCES["synop"], "c": SOURCES["synop"]}, output_variables=["t2m"], out_lat=16, out_lon=32)
    present = torch.tensor([True, False, True])
    keep = model._keep_mask(present, 64, 1.0)
    assert torch.all(keep.sum(1) == 1) and not keep[:, 1].any()
    keep = model._keep_mask(present, 256, 0.5)
    assert torch.all(keep.sum(1) >= 1) and 0 < keep[:, 0].mean() < 1
    model.train()
    out = model({"a": random_obs(n=20), "c": random_obs(n=20)}, 1, source_dropout=0.5)
    assert out["grid"].shape == (B, 1, 1, 16, 32)


def test_training_reduces_loss():
    """A few Adam steps learn "shift east by one cell" on a fixed batch of smooth fields."""
    g = LatLonGrid(16, 32)
    lat, lon = list(g.latitude), list(g.longitude)
    sources = {"ana": {"type": "gridded", "variables": ["a", "b"], "in_lat": lat, "in_lon": lon}}
    model = small_model(sources=sources, output_variables=["a", "b"], out_lat=lat, out_lon=lon, residual_source="ana")
    x = smooth_fields(4, 2, g.latitude, g.longitude)
    y = x.roll(1, dims=-1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss_fn() -> torch.Tensor:
        return (model({"ana": x}, 1)["grid"][:, 0] - y).pow(2).mean()

    with torch.no_grad():
        before = loss_fn().item()
    for _ in range(20):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = loss_fn().item()
    print(f"training loss {before:.4f} -> {after:.4f}")
    assert after < 0.5 * before, (before, after)


def test_model_rebuilt_from_reordered_config_gives_same_output():
    """The fusion must not depend on the order of the sources mapping (metadata JSON may sort keys)."""
    torch.manual_seed(0)
    grid_src = {"type": "gridded", "variables": ["a", "b"], "in_lat": 9, "in_lon": 16}
    obs_src = {"type": "setconv", "variables": ["a"]}
    kw = dict(output_variables=["a", "b"], out_lat=9, out_lon=16, n_lat=8, n_lon=16, latent_channels=8, processor_hidden=8, n_blocks=1, decoder_hidden=8)
    m1 = ObsCastModel(sources={"z_grid": grid_src, "a_obs": obs_src}, **kw).eval()
    m2 = ObsCastModel(sources={"a_obs": obs_src, "z_grid": grid_src}, **kw).eval()
    m2.load_state_dict(m1.state_dict())
    inputs = {
        "z_grid": torch.randn(1, 2, 9, 16),
        "a_obs": {"latitude": torch.tensor([[10.0, -20.0]]), "longitude": torch.tensor([[5.0, 100.0]]), "values": torch.randn(1, 2, 1)},
    }
    with torch.no_grad():
        torch.testing.assert_close(m1(inputs, n_steps=1)["grid"], m2(inputs, n_steps=1)["grid"])


def test_cycling_background_enters_the_analysis():
    """With ``cycling`` the fusion also encodes a gridded background (the previous forecast's
    anomaly), the forecast returns its first step's anomaly as the next background, and the
    config round-trips."""
    model = small_model(sources={"synop": SOURCES["synop"]}, output_variables=["t2m"], out_lat=16, out_lon=32, cycling=True)
    obs = random_obs(n=50)
    cold = model.encode({"synop": obs})
    assert cold.shape == (B, model.fusion.out_channels, *model.grid.shape)
    torch.testing.assert_close(model.encode({"synop": obs}, background=torch.zeros(B, 1, 16, 32)), cold)
    bg = torch.randn(B, 1, 16, 32)
    warm = model.encode({"synop": obs}, background=bg)
    assert (warm - cold).abs().max() > 1e-3  # the background enters the analysis
    with torch.no_grad():  # make the zero-initialised output layers non-trivial
        model.processor.out[-1].weight.normal_(0, 0.1)
        for p in model.grid_decoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    out = model({"synop": obs}, 2, background=bg)
    torch.testing.assert_close(out["analysis"], warm)
    assert out["background"].shape == (B, 1, 16, 32)
    torch.testing.assert_close(out["background"], model.next_background(out["analysis"]))
    torch.testing.assert_close(out["background"], out["grid"][:, 0])  # no residual source: the anomaly is the output
    clone = ObsCastModel.from_config(json.loads(json.dumps(model.config)))
    clone.load_state_dict(model.state_dict())
    assert clone.cycling and model.config["cycling"] is True
    torch.testing.assert_close(clone({"synop": obs}, 2, background=bg)["grid"], out["grid"])
    plain = small_model(sources={"synop": SOURCES["synop"]}, output_variables=["t2m"], out_lat=16, out_lon=32)
    assert "cycling" not in plain.config and "background" not in plain({"synop": obs}, 1)


def test_analysis_blocks_follow_the_fusion():
    """``analysis_blocks`` residual blocks turn the fused state into the analysis (so the
    weighting of background against observations can depend nonlinearly on both); the count
    round-trips through the config, older configs stay unchanged, a negative count is an error."""
    kwargs = dict(sources={"synop": SOURCES["synop"]}, output_variables=["t2m"], out_lat=16, out_lon=32, cycling=True)
    model = small_model(analysis_blocks=2, **kwargs)
    assert len(model.analysis_net) == 2 and model.config["analysis_blocks"] == 2
    assert "analysis_blocks" not in small_model(**kwargs).config
    obs, bg = random_obs(n=50), torch.randn(B, 1, 16, 32)
    parts = (model.encoders["synop"](obs), model.background_encoder(bg))
    with torch.no_grad():
        fused = model.fusion(torch.cat([t for lat, den in parts for t in (lat, torch.log1p(den))], dim=1))
        analysis = model.encode({"synop": obs}, background=bg)
    torch.testing.assert_close(analysis, model.analysis_net(fused))
    assert (analysis - fused).abs().max() > 1e-3  # the blocks change the state
    clone = ObsCastModel.from_config(json.loads(json.dumps(model.config)))
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone.encode({"synop": obs}, background=bg), analysis)
    with pytest.raises(ValueError, match="analysis_blocks"):
        small_model(analysis_blocks=-1, **kwargs)


def test_station_residual_forecast_starts_at_the_interpolated_grid():
    g = LatLonGrid(16, 32)
    lat, lon = list(g.latitude), list(g.longitude)
    sources = {"ana": {"type": "gridded", "variables": ["a", "b"], "in_lat": lat, "in_lon": lon}}
    model = small_model(sources=sources, output_variables=["a", "b"], out_lat=lat, out_lon=lon, residual_source="ana",
                        station_variables=["b"], station_residual="forecast")
    x = torch.randn(2, 2, 16, 32)
    # points at grid nodes and half way between two nodes in longitude (across the date line too)
    i, j = torch.tensor([[3, 7, 10]]).expand(2, -1), torch.tensor([[0, 5, 31]]).expand(2, -1)
    plat = torch.as_tensor(g.latitude, dtype=torch.float32)[i]
    plon = torch.as_tensor(g.longitude, dtype=torch.float32)[j] + torch.tensor([0.0, 0.0, 360.0 / 64])
    out = model({"ana": x}, 2, station_points=(plat, plon))
    grid = out["grid"][:, :, 1]  # (batch, step, lat, lon) of "b"
    want = torch.stack([grid[:, :, 3, 0], grid[:, :, 7, 5], 0.5 * (grid[:, :, 10, 31] + grid[:, :, 10, 0])], dim=-1)
    torch.testing.assert_close(out["stations"][..., 0], want, rtol=1e-5, atol=1e-5)
    assert model.config["station_residual"] == "forecast"
    with torch.no_grad():  # a trained correction moves the stations off the interpolated grid
        model.station_decoder.mlp[-1].bias.fill_(1.0)
    moved = model({"ana": x}, 2, station_points=(plat, plon))["stations"][..., 0]
    torch.testing.assert_close(moved, want + 1.0, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="station_residual"):
        small_model(sources=sources, output_variables=["a"], out_lat=lat, out_lon=lon, station_variables=["b"], station_residual="forecast")


def test_innovations_are_observation_minus_background():
    """An innovation channel is the observed value minus the scaled background channel it is
    paired with, where observed; it fades to zero away from the observations, and only the
    paired background channel enters it."""
    grid = LatLonGrid(8, 16)
    enc = SetConvEncoder(["surface_air_pressure", "brightness_temperature_ch1"], grid, 4, innovations=[[0, 1, 2.0]])
    assert enc.n_innovations == 1 and enc.mlp[0].in_channels == 2 * 2 + 1
    lat, lon = float(grid.latitude[3]), float(grid.longitude[5])
    obs = {"latitude": torch.tensor([[lat]]), "longitude": torch.tensor([[lon]]), "values": torch.tensor([[[1.5, 0.3]]])}
    x, density = (t.detach() for t in enc.features(obs))
    cold = enc.innovation_features(x, None)
    weight = float(density[0, 0, 3, 5])
    assert cold.shape == (1, 1, 8, 16)
    assert float(cold[0, 0, 3, 5]) == pytest.approx(1.5 * (1 - math.exp(-weight)), rel=1e-4)
    assert float(cold[0, 0, 4, 13].abs()) < 1e-6  # the antipode: no observation, no innovation
    bg = torch.zeros(1, 3, 8, 16)
    bg[:, 1] = 0.75  # scaled by 2: exactly the observation
    assert float(enc.innovation_features(x, bg)[0, 0, 3, 5].abs()) < 1e-4
    other = bg.clone()
    other[:, [0, 2]] = torch.randn(1, 2, 8, 16)
    torch.testing.assert_close(enc.innovation_features(x, other), enc.innovation_features(x, bg))
    latent, _ = enc(obs, bg)
    torch.testing.assert_close(latent, enc.embed(x, bg))
    assert (latent - enc(obs)[0]).abs().max() > 0  # the background reaches the latent
    with pytest.raises(ValueError, match="innovation channels"):
        SetConvEncoder(["t"], grid, 4, innovations=[[1, 0, 1.0]])


def test_innovation_map_pairs_levels_and_units():
    """Each observed channel is compared with the output channel of the same quantity nearest
    in log-pressure (sigma x 1000 hPa), rescaled between the two normalisations; geopotential
    height is geopotential / g0; satellite radiances have no counterpart."""
    from obscast.components.model.assembly import innovation_map
    from obscast.encoders.setconv import G0

    stats = {
        "grid": {
            "channels": ["air_temperature_sigma025", "air_temperature_sigma085", "geopotential_sigma025", "geopotential_sigma085", "surface_air_pressure"],
            "std": [2.0, 3.0, 100.0, 200.0, 500.0],
        },
        "sources": {
            "temp": {"variables": ["air_temperature", "geopotential_height"], "pressure_levels": [85000.0, 30000.0], "std": [[1.0, 10.0], [2.0, 20.0]]},
            "synop": {"variables": ["surface_air_pressure", "air_temperature"], "pressure_levels": None, "std": [[250.0, 1.5]]},
            "satellite": {"variables": ["brightness_temperature_ch1"], "pressure_levels": None, "std": [[1.0]]},
        },
    }
    temp = innovation_map(stats, "temp")
    assert [(c, o) for c, o, _ in temp] == [(0, 1), (1, 0), (2, 3), (3, 2)]
    np.testing.assert_allclose([k for _, _, k in temp], [3.0, 1.0, 200.0 / G0 / 10.0, 100.0 / G0 / 20.0])
    assert innovation_map(stats, "synop") == [[0, 4, 2.0], [1, 1, 2.0]]  # surface T: the lowest level
    assert innovation_map(stats, "satellite") == []
    with pytest.raises(KeyError):
        innovation_map(stats, "aircraft")
