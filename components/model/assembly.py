"""Model assembly: the constructor arguments of :class:`ObsCastModel` from an experiment's statistics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from obscast.components.data.statistics import STATIC_SOURCE, source_key, static_source_spec


def build_model_args(
    statistics: Mapping[str, Any],
    station_channels: Sequence[str],
    *,
    history: int = 1,
    n_lat: int = 32,
    n_lon: int = 64,
    latent_channels: int = 64,
    processor_hidden: int = 96,
    n_blocks: int = 3,
    decoder_hidden: int = 64,
    encoder_hidden: int = 64,
    lengthscale_km: float | None = None,
    station_lengthscale_km: float | None = None,
    station_residual: bool | str = True,
    cycling: bool = False,
    analysis_blocks: int = 0,
) -> dict[str, Any]:
    """Constructor arguments of :class:`ObsCastModel` for an experiment (JSON-ready).

    Parameters
    ----------
    statistics : dict
        From :func:`obscast.components.data.statistics.fit_statistics`; sets the sources, their variables
        and pressure layers, the output channels and grid.
    station_channels : sequence of str
        Variables of the station decoder (``ObsWindowDataset.station_channels``).
    history : int
        Observation windows per source (one SetConv encoder each).
    n_lat, n_lon, latent_channels, processor_hidden, n_blocks, decoder_hidden : int
        Latent grid and network sizes (see :class:`ObsCastModel`).
    encoder_hidden : int
        Hidden width of the SetConv MLPs.
    lengthscale_km, station_lengthscale_km : float, optional
        Initial kernel lengthscales (defaults of the encoders/decoder).
    station_residual : bool or {"forecast"}
        True: add the climatology at the stations to the station decoder's output (the decoder
        then learns anomalies, as the gridded one does); ``"forecast"``: add the gridded
        forecast interpolated to the stations (the decoder learns a correction to it).
    cycling : bool
        Cycled analysis: the previous cycle's one-step forecast (gridded normalised anomaly)
        is the background of the next analysis (see :class:`ObsCastModel`, :func:`cycle_analyses`).
    analysis_blocks : int
        Residual blocks turning the fused state into the analysis (see :class:`ObsCastModel`).

    Returns
    -------
    dict
        Keyword arguments of :class:`ObsCastModel`.
    """
    sources: dict[str, dict[str, Any]] = {STATIC_SOURCE: static_source_spec(statistics)}
    for name, st in statistics["sources"].items():
        for h in range(history):
            spec: dict[str, Any] = {"type": "setconv", "variables": list(st["variables"]), "hidden": encoder_hidden}
            if lengthscale_km is not None:
                spec["lengthscale_km"] = float(lengthscale_km)
            if st["pressure_levels"]:
                spec["pressure_levels"] = list(st["pressure_levels"])
            sources[source_key(name, h)] = spec
    g = statistics["grid"]
    return {
        "sources": sources,
        "output_variables": list(g["channels"]),
        "out_lat": list(g["latitude"]),
        "out_lon": list(g["longitude"]),
        "n_lat": n_lat,
        "n_lon": n_lon,
        "latent_channels": latent_channels,
        "processor_hidden": processor_hidden,
        "n_blocks": n_blocks,
        "decoder_hidden": decoder_hidden,
        "station_variables": list(station_channels),
        "station_lengthscale_km": station_lengthscale_km,
        "residual_source": STATIC_SOURCE,
        **({"station_residual": station_residual} if station_residual else {}),
        **({"cycling": True} if cycling else {}),
        **({"analysis_blocks": int(analysis_blocks)} if analysis_blocks else {}),
    }
