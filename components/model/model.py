"""ObsCastModel: per-source encoders, fusion, conv processor, gridded and station decoders."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from obscast.decoders.gridded import GriddedDecoder
from obscast.decoders.station import StationDecoder
from obscast.encoders import build_encoder
from obscast.encoders.setconv import SetConvEncoder
from obscast.processor.convnet import ConvProcessor, ResidualBlock
from obscast.processor.grid import LatLonGrid
from obscast.processor.interp import BilinearRegridder


def _plain(obj: Any) -> Any:
    """Deep copy with numpy arrays and scalars turned into lists and Python numbers (JSON-ready)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_plain(v) for v in obj]
    return obj.item() if isinstance(obj, np.generic) else copy.deepcopy(obj)


def _gridded_values(x: torch.Tensor | dict) -> torch.Tensor:
    return x["values"] if isinstance(x, dict) else x


class ObsCastModel(nn.Module):
    """Observation-to-forecast model on a shared latent lat-lon grid.

    Every source has an encoder giving a latent contribution and a density. The contributions
    and ``log1p(density)`` of all sources (zeros for sources absent from the input) are
    concatenated and fused by a 1x1 convolution into the initial latent state; the processor
    rolls it forward by ``n_steps`` steps of Δt and the decoders map each state to gridded
    fields and, optionally, to station points.

    Parameters
    ----------
    sources : dict
        ``{name: {"type": "gridded" | "setconv", **encoder_kwargs}}``; ``grid`` and
        ``out_channels`` are supplied by the model. Gridded kwargs: ``variables``, ``in_lat``,
        ``in_lon`` (counts or coordinate lists), optional ``hidden``, ``n_layers``. SetConv kwargs:
        ``variables``, optional ``lengthscale_km``, ``pressure_levels``, ``hidden``, ``n_layers``.
    output_variables : list of str
        Variables of the gridded output, in channel order.
    out_lat, out_lon : int or sequence of float
        Output grid (see :func:`obscast.processor.grid.grid_coordinates`; 61, 120 is 3 degrees with poles).
    n_lat, n_lon : int
        Latent grid size (``n_lon`` even).
    latent_channels : int
        Channels of the latent state.
    source_channels : int, optional
        Channels of each encoder's output (default ``latent_channels``).
    processor_hidden, n_blocks : int
        Width and depth of :class:`obscast.processor.convnet.ConvProcessor`.
    decoder_hidden : int
        Hidden width of both decoders.
    station_variables : list of str, optional
        Variables of the station decoder (default ``output_variables``).
    station_lengthscale_km : float, optional
        Initial station decoder lengthscale (default half the latent grid spacing).
    residual_source : str, optional
        Name of a gridded source whose (regridded) input is added to the gridded output at every
        step, so the decoder learns the increment over persistence. Its variables must include
        every output variable. Default None (no residual). When that source is absent from the
        inputs the residual is zero and the decoder output stands alone.
    station_residual : bool or {"forecast"}
        True: also add the residual source, interpolated bilinearly to the station points, to
        the station decoder's output (its variables must then include every station variable),
        so that decoder too learns the increment (e.g. over a climatology). ``"forecast"``: add
        the model's own gridded forecast of the same step, interpolated bilinearly to the
        points (station variables must be output variables), so the station decoder learns a
        correction to the interpolated forecast; its last layer starts at zero, so the
        untrained station output equals the interpolated gridded forecast. Default False.
    cycling : bool
        Cycled analysis (docs/architecture.md): the fusion takes, besides the sources, a *background*
        (batch, output_variables, out_lat, out_lon), normally the model's own one-step (Δt)
        forecast from the previous cycle, as the normalised anomaly the gridded decoder
        produces (before the residual is added; zeros, i.e. the residual itself, at a cold
        start), encoded by a gridded encoder like any gridded source. Information from earlier
        observation windows so accumulates as in NWP data assimilation; being a supervised
        forecast, the background stays bounded through many cycles. Default False.
    analysis_blocks : int
        Residual blocks (:class:`obscast.processor.convnet.ResidualBlock`, ``latent_channels`` wide)
        applied to the fused state before it becomes the analysis. The fusion is a linear 1x1
        convolution: it can add the background and the observations but not weigh one against
        the other by the observation density, as an analysis must (data assimilation trusts
        the observations where they are dense and the background where there are none); these
        blocks make that weighting nonlinear and spread it over neighbouring cells. Default 0.

    SetConv sources whose spec has ``innovations`` (see
    :func:`obscast.components.model.assembly.innovation_map`) also see, with ``cycling``, the
    innovations of their observations against the background (regridded bilinearly to the
    latent grid): :meth:`obscast.encoders.setconv.SetConvEncoder.innovation_features`.

    Attributes
    ----------
    config : dict
        The constructor arguments as JSON-ready values; ``ObsCastModel.from_config(config)`` rebuilds
        the architecture (e.g. from metadata.json).

    Raises
    ------
    ValueError
        On an empty ``sources``, an unknown encoder type, an invalid ``residual_source``, a
        negative ``analysis_blocks``, or innovations without ``cycling``.
    """

    def __init__(
        self,
        sources: dict[str, dict[str, Any]],
        output_variables: Sequence[str],
        out_lat: int | Sequence[float],
        out_lon: int | Sequence[float],
        n_lat: int = 32,
        n_lon: int = 64,
        latent_channels: int = 32,
        source_channels: int | None = None,
        processor_hidden: int = 64,
        n_blocks: int = 4,
        decoder_hidden: int = 64,
        station_variables: Sequence[str] | None = None,
        station_lengthscale_km: float | None = None,
        residual_source: str | None = None,
        station_residual: bool = False,
        cycling: bool = False,
        analysis_blocks: int = 0,
    ) -> None:
        super().__init__()
        if not sources:
            raise ValueError("ObsCastModel needs at least one source")
        self.config = _plain(
            {
                "sources": sources, "output_variables": list(output_variables), "out_lat": out_lat, "out_lon": out_lon,
                "n_lat": n_lat, "n_lon": n_lon, "latent_channels": latent_channels, "source_channels": source_channels,
                "processor_hidden": processor_hidden, "n_blocks": n_blocks, "decoder_hidden": decoder_hidden,
                "station_variables": None if station_variables is None else list(station_variables),
                "station_lengthscale_km": station_lengthscale_km, "residual_source": residual_source,
            }
        )  # fmt: skip
        if station_residual not in (False, True, "forecast"):
            raise ValueError(f"station_residual must be a bool or 'forecast', got {station_residual!r}")
        if station_residual:  # only recorded when set, so older configs stay unchanged
            self.config["station_residual"] = station_residual
        self.cycling = bool(cycling)
        if self.cycling:
            self.config["cycling"] = True
        self.grid = LatLonGrid(n_lat, n_lon)
        self.source_channels = source_channels or latent_channels
        self.encoders = nn.ModuleDict()
        # Sorted by name: the fusion's input channels must not depend on the order of a mapping
        # (a JSON round trip of metadata may reorder it).
        for name, spec in sorted(sources.items()):
            kwargs = {k: v for k, v in spec.items() if k != "type"}
            self.encoders[name] = build_encoder(spec.get("type", ""), grid=self.grid, out_channels=self.source_channels, **kwargs)
        self.fusion = nn.Conv2d((len(sources) + int(self.cycling)) * (self.source_channels + 1), latent_channels, 1)
        if analysis_blocks < 0:
            raise ValueError(f"analysis_blocks must be >= 0, got {analysis_blocks}")
        if analysis_blocks:  # only recorded when set, so older configs stay unchanged
            self.config["analysis_blocks"] = int(analysis_blocks)
        self.analysis_net = nn.Sequential(*[ResidualBlock(latent_channels) for _ in range(analysis_blocks)])
        self.processor = ConvProcessor(latent_channels, processor_hidden, n_blocks)
        self.output_variables = list(output_variables)
        self.grid_decoder = GriddedDecoder(latent_channels, self.output_variables, self.grid, out_lat, out_lon, decoder_hidden)
        if self.cycling:
            self.background_encoder = build_encoder(
                "gridded", grid=self.grid, out_channels=self.source_channels, variables=self.output_variables,
                in_lat=list(np.asarray(self.grid_decoder.out_lat, float)), in_lon=list(np.asarray(self.grid_decoder.out_lon, float)),
            )
        #: SetConv sources fed innovations: :meth:`fuse` takes their features, not their latent.
        self.innovation_sources = [k for k, e in self.encoders.items() if isinstance(e, SetConvEncoder) and e.n_innovations]
        if self.innovation_sources:
            if not self.cycling:
                raise ValueError(f"sources {self.innovation_sources} take innovations, which need a background: set cycling")
        self.station_variables = list(station_variables) if station_variables is not None else self.output_variables
        self.station_decoder = StationDecoder(latent_channels, self.station_variables, self.grid, station_lengthscale_km, decoder_hidden)
        self.residual_source = residual_source
        if residual_source is not None:
            self._init_residual(sources, residual_source)
        self.station_residual = station_residual
        if station_residual == "forecast":
            self._init_station_forecast_residual()
        elif self.station_residual:
            self._init_station_residual()

    def _init_residual(self, sources: dict[str, dict[str, Any]], name: str) -> None:
        spec = sources.get(name)
        if spec is None or spec.get("type") != "gridded":
            raise ValueError(f"residual_source {name!r} must name a gridded source")
        enc = self.encoders[name]
        missing = [v for v in self.output_variables if v not in enc.variables]
        if missing:
            raise ValueError(f"residual_source {name!r} lacks output variables {missing}")
        self.register_buffer("residual_index", torch.tensor([enc.variables.index(v) for v in self.output_variables]), persistent=False)
        dec = self.grid_decoder
        self.residual_regrid = BilinearRegridder(enc.in_lat, enc.in_lon, dec.out_lat, dec.out_lon)

    def _init_station_residual(self) -> None:
        if self.residual_source is None:
            raise ValueError("station_residual needs a residual_source")
        enc = self.encoders[self.residual_source]
        missing = [v for v in self.station_variables if v not in enc.variables]
        if missing:
            raise ValueError(f"residual_source {self.residual_source!r} lacks station variables {missing}")
        self.register_buffer("station_residual_index", torch.tensor([enc.variables.index(v) for v in self.station_variables]), persistent=False)
        lat = np.asarray(enc.in_lat, dtype=np.float64)
        self._station_flip = bool(lat.size > 1 and lat[0] > lat[-1])
        self.register_buffer("residual_lat", torch.as_tensor(lat[::-1].copy() if self._station_flip else lat), persistent=False)
        self.register_buffer("residual_lon", torch.as_tensor(np.asarray(enc.in_lon, dtype=np.float64)), persistent=False)

    def _init_station_forecast_residual(self) -> None:
        missing = [v for v in self.station_variables if v not in self.output_variables]
        if missing:
            raise ValueError(f"station_residual='forecast' needs the station variables {missing} among the output variables")
        self.register_buffer("station_residual_index", torch.tensor([self.output_variables.index(v) for v in self.station_variables]), persistent=False)
        lat = np.asarray(self.grid_decoder.out_lat, dtype=np.float64)
        self._station_flip = bool(lat.size > 1 and lat[0] > lat[-1])
        self.register_buffer("residual_lat", torch.as_tensor(lat[::-1].copy() if self._station_flip else lat), persistent=False)
        self.register_buffer("residual_lon", torch.as_tensor(np.asarray(self.grid_decoder.out_lon, dtype=np.float64)), persistent=False)
        last = self.station_decoder.mlp[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _residual_at_points(self, x: torch.Tensor, latitude: torch.Tensor, longitude: torch.Tensor) -> torch.Tensor:
        """Bilinear interpolation of the residual source (batch, [steps,] variables, in_lat,
        in_lon) to points (batch, points) in degrees: (batch, [steps,] points,
        station_variables), the weights computed once for all steps. Periodic in longitude;
        beyond the outermost latitudes the outermost row is used."""
        x = x.index_select(-3, self.station_residual_index)
        if self._station_flip:
            x = x.flip(-2)
        src_lat, src_lon = self.residual_lat, self.residual_lon
        lat, lon = latitude.to(src_lat.dtype), longitude.to(src_lon.dtype)
        n_lat, n_lon = src_lat.numel(), src_lon.numel()
        if n_lat > 1:
            i = (torch.searchsorted(src_lat, lat.contiguous(), right=True) - 1).clamp(0, n_lat - 2)
            ti = ((lat - src_lat[i]) / (src_lat[i + 1] - src_lat[i])).clamp(0.0, 1.0)
        else:
            i, ti = torch.zeros_like(lat, dtype=torch.long), torch.zeros_like(lat)
        ext = torch.cat([src_lon, src_lon[:1] + 360.0])
        xl = src_lon[0] + torch.remainder(lon - src_lon[0], 360.0)
        j = (torch.searchsorted(ext, xl.contiguous(), right=True) - 1).clamp(0, n_lon - 1)
        tj = ((xl - ext[j]) / (ext[j + 1] - ext[j])).clamp(0.0, 1.0)
        i1 = (i + 1).clamp(max=n_lat - 1)
        j1 = (j + 1) % n_lon
        flat = x.flatten(-2)  # (batch, [steps,] variables, cells)
        extra = (1,) * (flat.dim() - 2)  # the batch's points broadcast over steps and variables

        def at(ii: torch.Tensor, jj: torch.Tensor) -> torch.Tensor:
            idx = (ii * n_lon + jj).reshape(ii.shape[0], *extra, ii.shape[1]).expand(*flat.shape[:-1], -1)
            return flat.gather(-1, idx)

        ti, tj = (t.to(x.dtype).reshape(t.shape[0], *extra, t.shape[1]) for t in (ti, tj))
        out = (1 - ti) * ((1 - tj) * at(i, j) + tj * at(i, j1)) + ti * ((1 - tj) * at(i1, j) + tj * at(i1, j1))
        return out.transpose(-1, -2)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ObsCastModel:
        """Build a model from :attr:`config` (weights are loaded separately with ``load_state_dict``)."""
        return cls(**copy.deepcopy(config))

    def _keep_mask(self, present: torch.Tensor, batch: int, p: float) -> torch.Tensor:
        """(batch, sources) float mask dropping each present source with probability ``p``,
        keeping at least one present source per sample."""
        keep = (torch.rand(batch, present.numel(), device=present.device) >= p) & present
        none = ~keep.any(dim=1)
        if none.any():
            pick = torch.multinomial(present.float().expand(batch, -1), 1).squeeze(1)
            keep = keep | (none[:, None] & nn.functional.one_hot(pick, present.numel()).bool())
        return keep.float()

    def encode(
        self, inputs: dict[str, dict | torch.Tensor], source_dropout: float = 0.0, background: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Fuse all sources (and, when cycling, the background) into the initial latent state
        (batch, latent_channels, lat, lon); see :meth:`fuse`.

        Raises
        ------
        ValueError
            If ``inputs`` names an unknown source or holds none of the model's sources.
        """
        unknown = sorted(set(inputs) - set(self.encoders))
        if unknown:
            raise ValueError(f"unknown sources {unknown}; the model has {list(self.encoders)}")
        if not any(name in inputs for name in self.encoders):
            raise ValueError(f"no source given; the model has {list(self.encoders)}")
        encoded = {
            name: self.encoders[name].features(inputs[name]) if name in self.innovation_sources else self.encoders[name](inputs[name])
            for name in self.encoders if name in inputs
        }
        return self.fuse(encoded, source_dropout, background)

    def fuse(
        self,
        encoded: dict[str, tuple[torch.Tensor, torch.Tensor]],
        source_dropout: float = 0.0,
        background: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fuse encoder outputs into the initial latent state (batch, latent_channels, lat, lon):
        a 1x1 convolution of every latent and ``log1p(density)``, then the ``analysis_blocks``.

        Parameters
        ----------
        encoded : dict
            Source name to its encoder's ``(latent, density)``: (batch, source_channels, lat,
            lon) and (batch, 1, lat, lon); a non-empty subset of the model's sources. Absent
            sources count as zeros. For the sources in :attr:`innovation_sources` the first
            element is the encoder's features instead (``SetConvEncoder.features``, batch,
            2 * n_channels, lat, lon): the MLP runs here, on them and their innovations against
            ``background``.
        source_dropout : float
            In training mode only, probability of dropping each given source per sample (never
            all of them).
        background : torch.Tensor, optional
            With ``cycling`` only: (batch, output_variables, out_lat, out_lon) normalised
            anomaly, e.g. ``forecast(...)["background"]`` of the previous cycle; None is a cold
            start (zeros). Ignored without ``cycling``.
        """
        if self.innovation_sources:
            # the background encoder's own regridder: the output grid to the latent grid
            bg_latent = None if background is None else self.background_encoder.regrid(background)[0]
            encoded = {k: (self.encoders[k].embed(x, bg_latent), den) if k in self.innovation_sources else (x, den) for k, (x, den) in encoded.items()}
        ref_latent, _ = next(iter(encoded.values()))
        batch, device = ref_latent.shape[0], ref_latent.device
        zeros = (ref_latent.new_zeros(batch, self.source_channels, *self.grid.shape), ref_latent.new_zeros(batch, 1, *self.grid.shape))
        parts = [encoded.get(name, zeros) for name in self.encoders]
        if self.training and source_dropout > 0:
            present = torch.tensor([name in encoded for name in self.encoders], device=device)
            keep = self._keep_mask(present, batch, source_dropout)
            parts = [(lat * keep[:, i, None, None, None], den * keep[:, i, None, None, None]) for i, (lat, den) in enumerate(parts)]
        if self.cycling:
            dec = self.grid_decoder
            if background is None:
                background = ref_latent.new_zeros(batch, len(self.output_variables), len(dec.out_lat), len(dec.out_lon))
            parts.append(self.background_encoder(background.to(ref_latent)))
        return self.analysis_net(self.fusion(torch.cat([t for lat, den in parts for t in (lat, torch.log1p(den))], dim=1)))

    def decode_analysis(self, latent: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The gridded fields of a latent analysis (lead 0), normalised.

        Parameters
        ----------
        latent : torch.Tensor
            (batch, latent_channels, lat, lon), e.g. from :meth:`fuse`.
        residual : torch.Tensor, optional
            The input of ``residual_source`` (batch, variables, in_lat, in_lon), added as in
            :meth:`forecast`.

        Returns
        -------
        torch.Tensor
            (batch, output_variables, out_lat, out_lon).
        """
        grid = self.grid_decoder(latent)
        if self.residual_source is not None and residual is not None:
            x = residual.to(device=grid.device, dtype=grid.dtype)
            grid = grid + self.residual_regrid(x[:, self.residual_index])[0]
        return grid

    def next_background(self, analysis: torch.Tensor) -> torch.Tensor:
        """The next cycle's background from an analysis (cycling): the gridded decoder's
        anomaly after one processor step, (batch, output_variables, out_lat, out_lon), equal to
        ``forecast(analysis, 1)["background"]``."""
        return self.grid_decoder(self.processor.step(analysis))

    def forward(
        self,
        inputs: dict[str, dict | torch.Tensor],
        n_steps: int,
        station_points: tuple[torch.Tensor, torch.Tensor] | None = None,
        source_dropout: float = 0.0,
        background: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Forecast ``n_steps`` steps of Δt from the sources in ``inputs``.

        Parameters
        ----------
        inputs : dict
            Source name to its input: a (batch, variables, in_lat, in_lon) tensor (or
            ``{"values": tensor}``) for gridded sources, an obs dict (see
            :meth:`obscast.encoders.setconv.SetConvEncoder.forward`) for SetConv sources. Any subset of
            the model's sources, at least one; all normalised.
        n_steps : int
            Number of Δt steps, >= 1.
        station_points : tuple of torch.Tensor, optional
            ``(latitude, longitude)``, each (batch, points) degrees.
        source_dropout : float
            In training mode only, probability of dropping each given source per sample (never
            all of them).
        background : torch.Tensor, optional
            With ``cycling``: the background latent state (see :meth:`fuse`).

        Returns
        -------
        dict
            ``"grid"``: (batch, n_steps, output_variables, out_lat, out_lon), step ``k`` at lead
            ``(k + 1) Δt``; ``"stations"`` when ``station_points`` is given:
            (batch, n_steps, points, station_variables); with ``cycling``, ``"analysis"``
            (batch, latent_channels, lat, lon), the fused latent state at the init time, and
            ``"background"`` (batch, output_variables, out_lat, out_lon), the first step's
            decoded anomaly (before the residual), the next cycle's background.

        Raises
        ------
        ValueError
            See :meth:`encode`; or ``n_steps`` < 1.
        """
        residual = None
        if self.residual_source is not None and self.residual_source in inputs:
            residual = _gridded_values(inputs[self.residual_source])
        latent = self.encode(inputs, source_dropout, background)
        out = self.forecast(latent, n_steps, station_points, residual)
        if self.cycling:
            out["analysis"] = latent
        return out

    def forecast(
        self,
        latent: torch.Tensor,
        n_steps: int,
        station_points: tuple[torch.Tensor, torch.Tensor] | None = None,
        residual: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Roll an initial latent state (from :meth:`encode`) forward and decode every step.

        Parameters
        ----------
        latent : torch.Tensor
            (batch, latent_channels, lat, lon).
        n_steps : int
            Number of Δt steps, >= 1.
        station_points : tuple of torch.Tensor, optional
            ``(latitude, longitude)``, each (batch, points) degrees.
        residual : torch.Tensor, optional
            The input of ``residual_source`` (batch, variables, in_lat, in_lon), added to the
            gridded output at every step (and, with ``station_residual``, to the station output
            at the points); ignored without a ``residual_source``.

        Returns
        -------
        dict
            As :meth:`forward` (``"background"`` with ``cycling``, no ``"analysis"``).

        Raises
        ------
        ValueError
            If ``n_steps`` < 1.
        """
        states = self.processor(latent, n_steps)
        batch = states.shape[0]
        flat = states.flatten(0, 1)
        grid = self.grid_decoder(flat).unflatten(0, (batch, n_steps))
        background = grid[:, 0]
        if self.residual_source is not None and residual is not None:
            x = residual.to(device=grid.device, dtype=grid.dtype)
            grid = grid + self.residual_regrid(x[:, self.residual_index])[0][:, None]
        out = {"grid": grid}
        if self.cycling:
            out["background"] = background
        if station_points is not None:
            # The station kernel and the bilinear weights depend on the points only: computed
            # once for all steps (StationDecoder.forward_steps).
            lat, lon = station_points
            out["stations"] = self.station_decoder.forward_steps(states, lat, lon)
            if self.station_residual == "forecast":
                out["stations"] = out["stations"] + self._residual_at_points(grid, lat, lon)
            elif self.station_residual and residual is not None:
                x = residual.to(device=grid.device, dtype=grid.dtype)
                out["stations"] = out["stations"] + self._residual_at_points(x, *station_points)[:, None]
        return out
